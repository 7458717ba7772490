"""Why SynFlow iterates (SynFlow paper, Fig. 5 / Sec. 6): 1 vs 10 vs 100 iterations on VGG-16.

One SynFlow pass scores weights on the dense network; pruning then cuts the largest layers hardest,
and nothing corrects the scores, so at high compression the biggest layers empty out. Re-scoring after
each small pruning step (exponential schedule) lets the conservation law rebalance the layers. For each
iteration count and compression this records the kept fraction of every layer (weight tensor); the
figure shows collapsed layers vs compression and the per-layer densities at one compression.

    .venv/bin/python scripts/iterations.py --small      # docs/figures/iterations.{png,csv}
    .venv/bin/python scripts/iterations.py --plot-only  # redraw from the CSV
"""

from __future__ import annotations

from _common import (rows_for, NETWORKS, Timer, cifar_twin, collapsed, compressions, critical_compression, feasible,
                     layer_kept, log, max_safe_compression, parser, plt, prunable_total, prune, save_figure, set_threads)

COLORS = {1: "tab:red", 10: "tab:orange", 100: "tab:blue"}
FLOOR = 1e-7  # where empty layers are drawn on the log density axis


def options():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--network", default="vgg16", choices=list(NETWORKS))
    p.add_argument("--iterations", nargs="+", type=int, default=[1, 10, 100])
    p.add_argument("--max-compression", type=float, default=6.0)
    p.add_argument("--step", type=float, default=None, help="compression step (default 0.25; --small 0.5)")
    p.add_argument("--at", type=float, nargs="+", default=None,
                   help="compressions of the per-layer panels (default: where each iteration count but the "
                        "largest first collapses a layer)")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the existing CSV")
    return p


def run(args) -> list[dict]:
    twin = cifar_twin(args.network, seed=args.seed)
    rows = []
    for n in args.iterations:
        for c in feasible(compressions(args.step, args.max_compression, args.step), prunable_total(twin)):
            with Timer() as t:
                result = prune(twin, "synflow", c, iterations=n, seed=args.seed)
            for index, (name, size, kept) in enumerate(layer_kept(result)):
                rows.append({"network": args.network, "iterations": n, "compression": c, "layer_index": index,
                             "layer": name, "size": size, "kept": kept, "density": kept / size,
                             "seconds": round(t.seconds, 3)})
            log(f"{args.network} iterations={n:<3d} c={c:<4} collapsed {collapsed(result):2d}/{len(result.prunable)}"
                f"  {t.seconds:6.1f}s")
    return rows


def by_run(rows: list[dict]) -> dict[tuple[int, float], list[dict]]:
    """(iterations, compression) -> that run's layer rows in layer order."""
    runs: dict[tuple[int, float], list[dict]] = {}
    for r in rows:
        runs.setdefault((int(r["iterations"]), float(r["compression"])), []).append(r)
    return runs


def collapse_curve(rows: list[dict]) -> dict[int, list[tuple[float, int]]]:
    curves: dict[int, list[tuple[float, int]]] = {}
    for (n, c), layers in sorted(by_run(rows).items()):
        curves.setdefault(n, []).append((c, sum(int(r["kept"]) == 0 for r in layers)))
    return curves


def default_at(curves: dict[int, list[tuple[float, int]]]) -> list[float]:
    """Where each iteration count but the largest first collapses a layer (what iterating buys)."""
    firsts = [next((c for c, k in curves[n] if k), None) for n in sorted(curves)[:-1]]
    return sorted({c for c in firsts if c is not None}) or [curves[max(curves)][-1][0]]


def plot_collapse(ax, curves, sizes, ats, net) -> None:
    for n, pts in curves.items():
        ax.plot([c for c, _ in pts], [k for _, k in pts], marker="o", ms=3.5, color=COLORS.get(n),
                label=f"{n} iteration{'s' * (n > 1)} (max without collapse: {max_safe_compression(pts)})")
    ax.axvline(critical_compression(sizes), color="k", ls=":", lw=1)
    for at in ats:
        ax.axvline(at, color="gray", ls="--", lw=0.8)
    ax.set(xlabel="compression (log10 ×)", ylabel=f"collapsed layers (of {len(sizes)})",
           title=f"SynFlow on {NETWORKS[net][0]}: layers fully pruned")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)


def plot_densities(ax, runs, curves, sizes, at) -> None:
    for n in curves:
        layers = runs.get((n, at))
        if not layers:
            continue
        dens = [float(r["density"]) for r in layers]
        # later (more iterations) lines are drawn thinner on top, so equal densities stay visible
        ax.plot(range(len(dens)), [max(d, FLOOR) for d in dens], marker="o", ms=4, color=COLORS.get(n),
                lw=3.5 - 1.2 * sorted(curves).index(n), label=f"{n} it.")
        empty = [i for i, d in enumerate(dens) if d == 0]
        ax.scatter(empty, [FLOOR] * len(empty), marker="x", s=60, color=COLORS.get(n), zorder=3)
    ax.axhline(10 ** -at, color="gray", ls="--", lw=0.8, label=f"overall density 10^-{at:g}")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 3, 30)  # headroom for the legend
    ax.set_xticks(range(len(sizes)), [f"{i}\n{s / 1e3:.0f}k" if s < 1e6 else f"{i}\n{s / 1e6:.1f}M"
                                      for i, s in enumerate(sizes)], fontsize=6.5)
    ax.set(xlabel="layer (index, weights)", ylabel="fraction of the layer kept (× = empty)",
           title=f"per-layer density at compression {at:g}")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.grid(alpha=0.3, which="both")


def plot(rows: list[dict], path, ats: list[float] | None) -> int:
    curves, runs = collapse_curve(rows), by_run(rows)
    ats = ats or default_at(curves)
    sizes = [int(r["size"]) for r in runs[next(iter(runs))]]
    fig, axes = plt.subplots(1, 1 + len(ats), figsize=(5.2 + 6 * len(ats), 4.0),
                             gridspec_kw={"width_ratios": [1] + [1.2] * len(ats)})
    plot_collapse(axes[0], curves, sizes, ats, rows[0]["network"])
    for ax, at in zip(axes[1:], ats):
        plot_densities(ax, runs, curves, sizes, at)
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    args = options().parse_args()
    set_threads(args.threads)
    args.step = args.step or (0.5 if args.small else 0.25)
    csv_path, png_path = args.out / "iterations.csv", args.out / "iterations.png"
    rows = rows_for(args, csv_path, run)
    size = plot(rows, png_path, args.at)
    for n, pts in collapse_curve(rows).items():
        log(f"iterations={n:<3d} collapsed per compression {pts}  max without collapse {max_safe_compression(pts)}")
    log(f"wrote {csv_path} and {png_path} ({size // 1024} KB)")


if __name__ == "__main__":
    main()
