"""Layer collapse (SynFlow paper, Fig. 1 shape): the fraction of layers pruned away entirely, per method.

For the paper's CIFAR VGG-16 and ResNet-20 (Kaiming init, exported to ONNX), prune at compressions
0.5..6 with random, magnitude, SNIP, GraSP and SynFlow, all global, and count the weight tensors left
with no weight: once one layer is empty the network computes a constant. SNIP and GraSP need data;
here they get standard Gaussian inputs with uniformly random labels (everything stays data-free).

    .venv/bin/python scripts/layer_collapse.py --small     # docs/figures/layer_collapse.{png,csv}
    .venv/bin/python scripts/layer_collapse.py --plot-only # redraw from the CSV
"""

from __future__ import annotations

from _common import (COLORS, CIFAR_SHAPE, LABELS, NETWORKS, Timer, cifar_twin, collapsed, compressions,
                     critical_compression, layer_kept, log, max_safe_compression, parser, plt, prune,
                     random_batches, read_csv, save_figure, set_threads, write_csv)

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


def run_network(net: str, args) -> list[dict]:
    twin = cifar_twin(net, seed=args.seed)
    batches = random_batches(CIFAR_SHAPE, n_batches=1, batch_size=args.batch_size, seed=args.seed)
    rows = []
    for method in args.methods:
        kwargs = {"batches": batches} if method in DATA_METHODS else {}
        if method == "synflow":
            kwargs["iterations"] = args.iterations
        for c in compressions(args.step, args.max_compression, args.step):
            with Timer() as t:
                result = prune(twin, method, c, seed=args.seed, **kwargs)
            layers = layer_kept(result)
            rows.append({
                "network": net, "method": method, "compression": c, "density": 10.0 ** -c,
                "iterations": result.iterations, "total": result.total, "kept": result.kept,
                "layers": len(layers), "collapsed": collapsed(result),
                "frac_collapsed": round(collapsed(result) / len(layers), 6),
                "critical_compression": round(critical_compression(s for _, s, _ in layers), 4),
                "seconds": round(t.seconds, 3)})
            log(f"{net:9s} {method:8s} c={c:<4} collapsed {rows[-1]['collapsed']:2d}/{len(layers)}"
                f"  {t.seconds:6.1f}s")
    return rows


def summary(rows: list[dict]) -> dict[tuple[str, str], str]:
    """(network, method) -> max compression on the grid reached without any collapsed layer."""
    points: dict[tuple[str, str], list] = {}
    for r in rows:
        points.setdefault((r["network"], r["method"]), []).append((float(r["compression"]), int(r["collapsed"])))
    return {key: max_safe_compression(p) for key, p in points.items()}


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
                    label=f"{LABELS[method]} (max without collapse: {safe[(net, method)]})")
        critical = float(mine[0]["critical_compression"])
        ax.axvline(critical, color="k", ls=":", lw=1)
        ax.text(critical, 0.5, " 1 weight/layer", rotation=90, va="center", ha="right", fontsize=8)
        ax.set(title=f"{NETWORKS[net][0]} (CIFAR-10 shape, Kaiming init)", xlabel="compression (log10 ×)",
               ylabel="fraction of layers fully pruned", ylim=(-0.03, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
    fig.suptitle("Layer collapse at initialization (SNIP/GraSP on random Gaussian inputs, random labels)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    args = options().parse_args()
    set_threads(args.threads)
    if args.small:
        args.step, args.batch_size = max(args.step, 0.5), min(args.batch_size, 100)
    csv_path, png_path = args.out / "layer_collapse.csv", args.out / "layer_collapse.png"
    if args.plot_only:
        rows = read_csv(csv_path)
    else:
        with Timer() as t:
            rows = [row for net in args.networks for row in run_network(net, args)]
        write_csv(csv_path, rows)
        log(f"total {t.seconds:.0f}s")
    size = plot(rows, png_path)
    for (net, method), value in summary(rows).items():
        log(f"max compression without collapse  {net:9s} {method:8s} {value}")
    log(f"wrote {csv_path} and {png_path} ({size // 1024} KB)")


if __name__ == "__main__":
    main()
