"""Layer collapse (SynFlow paper, Fig. 1 shape): the fraction of layers pruned away entirely, per method.

For the paper's CIFAR VGG-16 and ResNet-20 (Kaiming init, exported to ONNX), prune at compressions
0.5..6 with random, magnitude, SNIP, GraSP and SynFlow, all global, and count the weight tensors left
with no weight. In a chain (VGG) one empty layer cuts every path: the output no longer depends on
the input. In a ResNet an empty layer inside a residual branch is bypassed by the identity shortcut,
so the script also records whether any input-output path of unpruned weights is left. SNIP and GraSP need data;
here they get standard Gaussian inputs with uniformly random labels (everything stays data-free).

    .venv/bin/python scripts/layer_collapse.py --small     # docs/figures/layer_collapse.{png,csv}
    (--small skips re-proving the one-shot shortcut with SNIP/GraSP on VGG-16, two slow scoring passes)
    .venv/bin/python scripts/layer_collapse.py --plot-only # redraw from the CSV
"""

from __future__ import annotations

import torch

from _common import (COLORS, CIFAR_SHAPE, LABELS, NETWORKS, Timer, cifar_twin, clear_masks, compressions,
                     critical_compression, disconnected, feasible, log, max_safe_compression, parser, plt,
                     prunable_total, prune, random_batches, rows_per_network, save_figure, set_threads,
                     write_csv)
from onnxprune.pruning import score, select_masks

METHODS = ("rand", "mag", "snip", "grasp", "synflow")
DATA_METHODS = {"snip", "grasp"}
MARKERS = ("o", "s", "D", "^", "v")


def options():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--max-compression", type=float, default=6.0)
    p.add_argument("--step", type=float, default=0.5)
    p.add_argument("--iterations", type=int, default=100, help="SynFlow iterations (paper: 100)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="random samples for SNIP/GraSP (the paper uses 10 per class: 100)")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the existing CSV")
    return p


class Pruner:
    """Masks for one (network, method) at any compression, from the engine.

    SynFlow iterates, so each compression is one `prune_twin` call. The other methods are one-shot
    (one scoring pass, then the top `round(total × density)` kept): their scores do not depend on the
    compression, so they are computed once with the engine's `score` and each compression is one
    `select_masks`, which is what `prune_twin(iterations=1)` does; `check` proves it on one point.
    """

    def __init__(self, twin, method: str, args, batches):
        self.twin, self.method, self.args = twin, method, args
        self.kwargs = {"batches": batches} if method in DATA_METHODS else {}
        self.scores = None
        if method != "synflow":
            clear_masks(twin)
            generator = torch.Generator().manual_seed(args.seed)  # prune_twin seeds `rand` the same way
            self.scores = score(twin, method, precision=torch.float64, generator=generator, **self.kwargs)

    def masks(self, c: float) -> dict[str, torch.Tensor]:
        if self.scores is None:
            return prune(self.twin, "synflow", c, iterations=self.args.iterations, seed=self.args.seed).masks
        total = sum(s.numel() for s in self.scores.values())
        masks = select_masks(self.scores, round(total * 10.0 ** -c))
        clear_masks(self.twin)
        for name, mask in masks.items():
            self.twin.set_mask(name, mask)
        return masks

    def check(self, c: float) -> None:
        """The shortcut gives prune_twin's masks exactly (raises otherwise)."""
        if self.scores is None:
            return
        mine = self.masks(c)
        theirs = prune(self.twin, self.method, c, seed=self.args.seed, **self.kwargs).masks
        bad = [n for n in mine if not torch.equal(mine[n], theirs[n])]
        if bad:
            raise RuntimeError(f"{self.method}: one-shot masks differ from prune_twin's at c={c} on {bad}")
        log(f"  check: {self.method} masks at c={c} equal prune_twin's")


def run_network(net: str, args) -> list[dict]:
    twin = cifar_twin(net, seed=args.seed)
    batches = random_batches(CIFAR_SHAPE, n_batches=1, batch_size=args.batch_size, seed=args.seed)
    grid = feasible(compressions(args.step, args.max_compression, args.step), prunable_total(twin))
    rows = []
    for method in args.methods:
        with Timer() as t:
            pruner = Pruner(twin, method, args, batches)
        log(f"{net:9s} {method:8s} setup {t.seconds:.1f}s")
        # proving the shortcut costs a second scoring pass: --small skips it for slow scorers on VGG
        if not (args.small and net == "vgg16" and method in DATA_METHODS):
            pruner.check(grid[len(grid) // 2])
        for c in grid:
            with Timer() as t:
                masks = pruner.masks(c)
            layers = [(n, m.numel(), int(m.sum())) for n, m in masks.items()]
            n_collapsed = sum(kept == 0 for _, _, kept in layers)
            rows.append({
                "network": net, "method": method, "compression": c, "density": 10.0 ** -c,
                "iterations": args.iterations if method == "synflow" else 1,
                "total": sum(s for _, s, _ in layers), "kept": sum(k for _, _, k in layers),
                "layers": len(layers), "collapsed": n_collapsed,
                "frac_collapsed": round(n_collapsed / len(layers), 6),
                "disconnected": int(disconnected(twin)),
                "critical_compression": round(critical_compression(s for _, s, _ in layers), 4),
                "seconds": round(t.seconds, 3)})
            write_csv(args.out / "layer_collapse.partial.csv", rows)  # a later failure loses nothing
            log(f"{net:9s} {method:8s} c={c:<4} collapsed {n_collapsed:2d}/{len(layers)}"
                f"{'  disconnected' if rows[-1]['disconnected'] else ''}  {t.seconds:6.1f}s")
    clear_masks(twin)
    return rows


def summary(rows: list[dict]) -> dict[tuple[str, str], tuple[str, str]]:
    """(network, method) -> max grid compression (without an empty layer, still connected)."""
    layers: dict[tuple[str, str], list] = {}
    paths: dict[tuple[str, str], list] = {}
    for r in rows:
        key, c = (r["network"], r["method"]), float(r["compression"])
        layers.setdefault(key, []).append((c, int(r["collapsed"])))
        paths.setdefault(key, []).append((c, int(r["disconnected"])))
    return {key: (max_safe_compression(layers[key]), max_safe_compression(paths[key])) for key in layers}


def plot(rows: list[dict], path) -> int:
    nets = list(dict.fromkeys(r["network"] for r in rows))
    safe = summary(rows)
    fig, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.0), squeeze=False)
    for ax, net in zip(axes[0], nets):
        mine = [r for r in rows if r["network"] == net]
        for i, method in enumerate(dict.fromkeys(r["method"] for r in mine)):
            pts = [(float(r["compression"]), float(r["frac_collapsed"])) for r in mine if r["method"] == method]
            # overlapping lines (all at zero early on) stay visible: wide first, narrow last, own markers
            ax.plot([c for c, _ in pts], [f for _, f in pts], marker=MARKERS[i % len(MARKERS)], ms=9 - 1.2 * i,
                    lw=4.5 - 0.8 * i, alpha=0.85, color=COLORS[method],
                    label=f"{LABELS[method]}: {safe[(net, method)][0]} / {safe[(net, method)][1]}")
            cut = [(float(r["compression"]), float(r["frac_collapsed"])) for r in mine
                   if r["method"] == method and int(r["disconnected"])]
            ax.scatter([c for c, _ in cut], [f for _, f in cut], marker="x", s=22, color="k", lw=1, zorder=5)
        ax.scatter([], [], marker="x", s=22, color="k", lw=1, label="× no input-output path left")
        critical = float(mine[0]["critical_compression"])
        ax.axvline(critical, color="k", ls=":", lw=1)
        ax.text(critical, 0.02, "1 weight per layer ", rotation=90, va="bottom", ha="right", fontsize=7.5)
        ax.set(title=f"{NETWORKS[net][0]} (CIFAR-10 shape, Kaiming init)", xlabel="compression (log10 ×)",
               ylabel="fraction of layers fully pruned", ylim=(-0.03, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left", title="max compression: no empty layer / connected",
                  title_fontsize=7.5)
    fig.suptitle("Layer collapse at initialization (SNIP/GraSP on random Gaussian inputs, random labels)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    args = options().parse_args()
    set_threads(args.threads)
    csv_path, png_path = args.out / "layer_collapse.csv", args.out / "layer_collapse.png"
    rows = rows_per_network(args, csv_path, run_network)
    size = plot(rows, png_path)
    for (net, method), (no_empty, connected) in summary(rows).items():
        log(f"max compression  {net:9s} {method:8s} no empty layer {no_empty:6s} still connected {connected}")
    log(f"wrote {csv_path} and {png_path} ({size // 1024} KB)")


if __name__ == "__main__":
    main()
