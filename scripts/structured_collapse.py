"""Structured layer collapse: how far channel pruning cuts MACs before some layer is down to its last channel.

The channel analogue of layer_collapse.py. For the paper's CIFAR VGG-16 and ResNet-20 (Kaiming init,
exported to ONNX), `onnxprune.structured.prune_channels` removes whole channels with a MAC target
(`macs=F`, the fraction of Conv/Gemm/MatMul MACs kept), `scope="global"`, `min_layer_density=0`, with
random, magnitude, SNIP, GraSP (one shot; SNIP/GraSP fed standard Gaussian inputs with uniformly random
labels, as in layer_collapse.py) and SynFlow (100 iterations). The engine's channel score is the sum of
its weights' scores, so its "random" ranks channels by a sum of uniform draws, which grows with the
channel's weight count; a control, "uchan" (one uniform draw per channel, then the engine's `select`),
is the plain random-channel baseline. A "layer" is one channel group of the
analysis: a Conv's output channels, or, in ResNet-20, a whole stage's residual stream (channels tied
by the identity-shortcut Adds are removed together).

prune_channels never removes a layer's last channel (select.py: every sliced axis keeps at least one
position, whatever `min_layer_density`), so a layer cannot empty and the graph cannot disconnect.
"Collapse" here is a layer reduced to that floor, one channel; the script also records whether the
MAC target could still be met (past the floor it cannot) and, as in layer_collapse.py, whether an
input-output path of kept weights is left (SynFlow's R on the masked twin; always yes with a floor
of one channel, checked anyway).

One-shot methods score once: their channel scores do not depend on the target, so each target is one
`select` on those scores, which is what `prune_channels(iterations=1)` does; `check` proves it equal to
prune_channels at one point. SynFlow is one prune_channels call per target.

    .venv/bin/python scripts/structured_collapse.py --small      # docs/figures/structured_collapse.{png,csv}
    (--small: SynFlow, 100 iterations a point, on a factor-2 grid (factor 4 on VGG-16) and stopped after two
     targets with a layer at 1 channel; the other methods on the full factor-sqrt(2) grid)
    .venv/bin/python scripts/structured_collapse.py              # every method on the full grid
    .venv/bin/python scripts/structured_collapse.py --plot-only  # redraw from the CSV
"""

from __future__ import annotations

import math

import numpy as np
import torch

from _common import (COLORS, CIFAR_SHAPE, LABELS, NETWORKS, Timer, clear_masks, disconnected, log, parser, plt,
                     random_batches, rows_per_network, save_figure, set_threads, write_csv)
from models.torch_nets import export, kaiming_init

# "rand" is the engine's: per-weight uniform scores summed per channel, so a channel's score grows with
# its weight count; "uchan" is a control, not an engine method: one uniform score per channel.
METHODS = ("rand", "uchan", "mag", "snip", "grasp", "synflow")
DATA_METHODS = {"snip", "grasp"}
MARKERS = ("o", "P", "s", "D", "^", "v")
COLORS = {**COLORS, "uchan": "tab:brown"}
LABELS = {**LABELS, "rand": "Random (engine: sum per channel)", "uchan": "Random (uniform per channel)"}


def options():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--max-reduction", type=float, default=1024.0, help="deepest MAC reduction on the grid")
    p.add_argument("--iterations", type=int, default=100, help="SynFlow iterations (paper: 100)")
    p.add_argument("--batch-size", type=int, default=100, help="random samples for SNIP/GraSP")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the existing CSV")
    return p


def grid(max_reduction: float, per_octave: int) -> list[float]:
    """MAC fractions kept: 2^(-k/per_octave) down to 1/max_reduction."""
    n = int(math.floor(per_octave * math.log2(max_reduction) + 1e-9))
    return [2.0 ** (-k / per_octave) for k in range(1, n + 1)]


# ----- the analysis' layers ---------------------------------------------------------------------------
def layers(cg) -> list[tuple[str, np.ndarray]]:
    """(label, prunable channel ids) per layer: the channels sharing a home layer (select.home_layers);
    labelled by the first weight tensor whose output axis they index. Layers with no prunable channel
    (the classifier's logits, frozen as a graph output) are left out."""
    from onnxprune.structured.select import home_layers

    home = home_layers(cg)
    weights = {t.node for t in cg.terms if t.kind == "weights"}  # weight terms are named by tensor
    names: dict[int, str] = {}
    for (name, axis), channels in cg.keys().items():
        if axis == 0 and name in weights:
            names.setdefault(int(home[channels[0]]), name)
    out = []
    for h in np.unique(home[home >= 0]).tolist():
        members = np.flatnonzero((home == h) & ~cg.frozen)
        if len(members):
            out.append((names.get(h, f"layer{h}"), members))
    return out


def floor_removal(cg, groups) -> np.ndarray:
    """Every prunable channel removed but the first of each layer: the deepest any method can go."""
    removed = ~cg.frozen.copy()
    for _, members in groups:
        removed[members[0]] = False
    return removed


# ----- scoring ------------------------------------------------------------------------------------------
class Pruner:
    """Channels removed for one (network, method) at any MAC fraction, from the structured engine."""

    def __init__(self, model, cg, method: str, args, batches):
        from onnxprune.twin import Twin

        self.model, self.cg, self.method, self.args = model, cg, method, args
        self.kwargs = {"batches": batches} if method in DATA_METHODS else {}
        self.twin = Twin(model).eval()
        self.scores = None
        if method == "uchan":
            self.scores = np.random.default_rng(args.seed).random(cg.n_channels)
        elif method != "synflow":
            self.scores = self._one_shot_scores()

    def _one_shot_scores(self) -> np.ndarray:
        """What prune_channels' single iteration computes: the engine's weight scores on the dense
        twin (same seed, float64), summed per channel."""
        from onnxprune.pruning import prunable_tensors, score
        from onnxprune.structured.score import channel_scores

        clear_masks(self.twin)
        names = prunable_tensors(self.twin)
        generator = torch.Generator().manual_seed(self.args.seed)
        ws = score(self.twin, self.method, names, input_shapes={}, precision=torch.float64, generator=generator,
                   **self.kwargs)
        return channel_scores(self.cg, {k: v.double().cpu().numpy() for k, v in ws.items()})

    def removed(self, fraction: float) -> np.ndarray:
        from onnxprune.structured import prune_channels, select

        if self.scores is not None:
            return select(self.cg, self.scores, fraction, "macs", min_fraction=0.0)
        result = prune_channels(self.model, method="synflow", macs=fraction, iterations=self.args.iterations,
                                min_layer_density=0.0, seed=self.args.seed)
        if result.graph.n_channels != self.cg.n_channels:
            raise RuntimeError("prune_channels' analysis numbers channels differently from analyze()")
        return result.removed

    def check(self, fraction: float) -> None:
        """The one-shot shortcut gives prune_channels' removed channels exactly (raises otherwise)."""
        from onnxprune.structured import prune_channels

        if self.scores is None or self.method == "uchan":
            return
        theirs = prune_channels(self.model, method=self.method, macs=fraction, min_layer_density=0.0,
                                seed=self.args.seed, **self.kwargs).removed
        if not np.array_equal(self.removed(fraction), theirs):
            raise RuntimeError(f"{self.method}: one-shot selection differs from prune_channels' at macs={fraction}")
        log(f"  check: {self.method} channels at macs={fraction:.4g} equal prune_channels'")

    def connected(self, removed: np.ndarray) -> bool:
        """An input-output path of kept weights is left (the removed channels masked on the twin)."""
        from onnxprune.pruning import prunable_tensors
        from onnxprune.structured.score import masks

        clear_masks(self.twin)
        for name, mask in masks(self.cg, removed, set(prunable_tensors(self.twin))).items():
            self.twin.set_mask(name, torch.from_numpy(mask))
        try:
            return not disconnected(self.twin)
        finally:
            clear_masks(self.twin)


def run_network(net: str, args) -> list[dict]:
    from onnxprune.structured import analyze, cost

    model = export(kaiming_init(NETWORKS[net][1](), seed=args.seed), CIFAR_SHAPE)  # as _common.cifar_twin
    cg = analyze(model)
    groups = layers(cg)
    macs_total = cost(cg, np.zeros(cg.n_channels, bool), "macs")[1]
    weights_total = cost(cg, np.zeros(cg.n_channels, bool), "weights")[1]
    floor_fraction = cost(cg, floor_removal(cg, groups), "macs")[0] / macs_total
    log(f"{net}: {cg.n_channels} channels ({int(cg.frozen.sum())} frozen), {len(groups)} layers, "
        f"{macs_total / cg.batch / 1e6:.1f} M MACs a sample; one channel per layer keeps {floor_fraction:.3g} "
        f"(x{1 / floor_fraction:.0f})")
    batches = random_batches(CIFAR_SHAPE, n_batches=1, batch_size=args.batch_size, seed=args.seed)
    rows = []
    for method in args.methods:
        with Timer() as t:
            pruner = Pruner(model, cg, method, args, batches)
        log(f"{net:9s} {method:8s} setup {t.seconds:.1f}s")
        points = grid(args.max_reduction, 2)
        if method == "synflow" and args.small:  # 100 iterations a point: factor 2, on VGG-16 factor 4
            points = grid(args.max_reduction, 1)[1::2] if net == "vgg16" else grid(args.max_reduction, 1)
        points = [f for f in points if f >= floor_fraction * 0.999] or points[:1]
        run_of_floors = 0
        if not (args.small and net == "vgg16" and method in DATA_METHODS):  # a second slow scoring pass
            pruner.check(points[len(points) // 2])
        for i, fraction in enumerate(points):
            if method == "synflow" and args.small and run_of_floors >= 2:
                log(f"{net:9s} {method:8s} --small: stopped after two targets with a layer at 1 channel")
                break
            with Timer() as t:
                removed = pruner.removed(fraction)
            kept_macs = cost(cg, removed, "macs")[0] / macs_total
            kept_weights = cost(cg, removed, "weights")[0] / weights_total
            kept = [int((~removed[members]).sum()) for _, members in groups]
            at_floor = [name for (name, members), k in zip(groups, kept) if k <= 1 < len(members)]
            # with a floor of one channel every path survives; re-proved cheaply on ResNet-20, and on
            # VGG-16 (a forward/backward each) at the deepest point only under --small
            check_path = not (args.small and net == "vgg16" and i != len(points) - 1 and method != "synflow")
            rows.append({
                "network": net, "method": method,
                "iterations": (args.iterations if method == "synflow" else 1),
                "target_macs": round(fraction, 8), "kept_macs": round(kept_macs, 8),
                "reduction": round(1 / kept_macs, 3), "target_met": int(kept_macs <= fraction * (1 + 1e-9)),
                "kept_weights": round(kept_weights, 8), "layers": len(groups), "at_floor": len(at_floor),
                "frac_at_floor": round(len(at_floor) / len(groups), 6), "min_kept": min(kept),
                "first_at_floor": at_floor[0] if at_floor else "",
                "connected": int(pruner.connected(removed)) if check_path else "",
                "floor_macs": round(floor_fraction, 8), "seconds": round(t.seconds, 3)})
            write_csv(args.out / "structured_collapse.partial.csv", rows)  # a later failure loses nothing
            r = rows[-1]
            run_of_floors = run_of_floors + 1 if at_floor else 0
            log(f"{net:9s} {method:8s} target 1/{1 / fraction:<7.1f} kept MACs 1/{r['reduction']:<8.1f} "
                f"at floor {len(at_floor):2d}/{len(groups)} min kept {min(kept):3d}"
                f"{'' if r['target_met'] else '  target missed'}{'  DISCONNECTED' if r['connected'] == 0 else ''}"
                f"  {t.seconds:6.1f}s")
    return rows


def summary(rows: list[dict]) -> dict[tuple[str, str], tuple[str, int]]:
    """(network, method) -> (largest MAC reduction reached with no layer at its floor at it or at any
    shallower target, the number of grid points)."""
    out = {}
    for key in dict.fromkeys((r["network"], r["method"]) for r in rows):
        mine = sorted((r for r in rows if (r["network"], r["method"]) == key), key=lambda r: -float(r["target_macs"]))
        best = None
        for r in mine:
            if int(r["at_floor"]):
                break
            best = float(r["reduction"])
        if best is None:
            text = f"< {_x(float(mine[0]['reduction']))}"
        else:
            text = f"{'≥ ' if best == float(mine[-1]['reduction']) else ''}{_x(best)}"
        out[key] = (text, len(mine))
    return out


def _x(reduction: float) -> str:
    return f"{reduction:.0f}×" if reduction >= 100 else f"{reduction:.3g}×"


def plot(rows: list[dict], path) -> int:
    nets = list(dict.fromkeys(r["network"] for r in rows))
    safe = summary(rows)
    fig, axes = plt.subplots(1, len(nets), figsize=(5.6 * len(nets), 5.0), squeeze=False)
    for ax, net in zip(axes[0], nets):
        mine = [r for r in rows if r["network"] == net]
        for i, method in enumerate(dict.fromkeys(r["method"] for r in mine)):
            pts = sorted((1 / float(r["target_macs"]), float(r["frac_at_floor"]), int(r["target_met"]))
                         for r in mine if r["method"] == method)
            its = int(next(r["iterations"] for r in mine if r["method"] == method) or 1)
            name = LABELS[method] + (f" ({its} it.)" if method == "synflow" else "")
            ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker=MARKERS[i % len(MARKERS)],
                    ms=max(4.5, 8 - 0.8 * i), lw=max(1.3, 4.0 - 0.6 * i), alpha=0.85, color=COLORS[method],
                    label=f"{name}: {safe[(net, method)][0]}")
            missed = [(x, y) for x, y, met in pts if not met]
            ax.scatter([x for x, _ in missed], [y for _, y in missed], marker="x", s=22, color="k", lw=1, zorder=5)
        ax.scatter([], [], marker="x", s=22, color="k", lw=1, label="× MAC target not reachable")
        floor = 1 / float(mine[0]["floor_macs"])
        ax.axvline(floor, color="k", ls=":", lw=1)
        ax.text(floor, 0.5, "1 channel per layer ", rotation=90, va="center", ha="right", fontsize=7.5)
        ax.set_xscale("log", base=2)
        ax.set(title=f"{NETWORKS[net][0]} (CIFAR-10 shape, Kaiming init)",
               xlabel="MAC reduction asked (1 / fraction kept)",
               ylabel="fraction of layers down to 1 channel", ylim=(-0.03, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.2, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  title="max MAC reduction with no layer at 1 channel (at or below it on the grid)",
                  title_fontsize=7.2)
    fig.suptitle("Structured (channel) layer collapse at initialization: prune_channels(macs=F, min_layer_density=0)\n"
                 "No layer can lose its last channel (engine floor), so collapse = a layer left with 1 channel; "
                 "SNIP/GraSP on random inputs/labels", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    args = options().parse_args()
    set_threads(args.threads)
    csv_path, png_path = args.out / "structured_collapse.csv", args.out / "structured_collapse.png"
    rows = rows_per_network(args, csv_path, run_network)
    size = plot(rows, png_path)
    for (net, method), (text, n) in summary(rows).items():
        log(f"max MAC reduction with no layer at 1 channel  {net:9s} {method:8s} {text}  ({n} points)")
    log(f"wrote {csv_path} and {png_path} ({size // 1024} KB)")


if __name__ == "__main__":
    main()
