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

from _common import (NETWORKS, Timer, cifar_twin, collapsed, compressions, critical_compression, feasible,
                     layer_kept, log, max_safe_compression, parser, plt, prunable_total, prune, read_csv,
                     save_figure, set_threads, write_csv)

COLORS = {1: "tab:red", 10: "tab:orange", 100: "tab:blue"}
FLOOR = 1e-7  # where empty layers are drawn on the log density axis


def options():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--network", default="vgg16", choices=list(NETWORKS))
    p.add_argument("--iterations", nargs="+", type=int, default=[1, 10, 100])
    p.add_argument("--max-compression", type=float, default=6.0)
    p.add_argument("--step", type=float, default=None, help="compression step (default 0.25; --small 0.5)")
    p.add_argument("--at", type=float, default=None,
                   help="compression of the per-layer panel (default: where 1 iteration first collapses)")
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


def default_at(curves: dict[int, list[tuple[float, int]]]) -> float:
    """The smallest compression where the fewest-iterations run has a collapsed layer (else the largest)."""
    fewest = curves[min(curves)]
    return next((c for c, k in fewest if k), fewest[-1][0])


def plot(rows: list[dict], path, at: float | None) -> int:
    curves = collapse_curve(rows)
    runs = by_run(rows)
    at = at if at is not None else default_at(curves)
    net = rows[0]["network"]
    sizes = [int(r["size"]) for r in runs[next(iter(runs))]]
    fig, (ax_c, ax_d) = plt.subplots(1, 2, figsize=(11, 4.0), gridspec_kw={"width_ratios": [1, 1.35]})
    for n, pts in curves.items():
        ax_c.plot([c for c, _ in pts], [k for _, k in pts], marker="o", ms=3.5, color=COLORS.get(n),
                  label=f"{n} iteration{'s' * (n > 1)} (max without collapse: {max_safe_compression(pts)})")
    ax_c.axvline(critical_compression(sizes), color="k", ls=":", lw=1)
    ax_c.axvline(at, color="gray", ls="--", lw=0.8)
    ax_c.set(xlabel="compression (log10 ×)", ylabel=f"collapsed layers (of {len(sizes)})",
             title=f"SynFlow on {NETWORKS[net][0]}: layers fully pruned")
    ax_c.legend(fontsize=8, loc="upper left")
    ax_c.grid(alpha=0.3)
    for n in curves:
        layers = runs.get((n, at))
        if not layers:
            continue
        dens = [float(r["density"]) for r in layers]
        xs = range(len(dens))
        ax_d.plot(xs, [max(d, FLOOR) for d in dens], marker="o", ms=4, color=COLORS.get(n), label=f"{n} it.")
        empty = [i for i, d in enumerate(dens) if d == 0]
        ax_d.scatter(empty, [FLOOR] * len(empty), marker="x", s=60, color=COLORS.get(n), zorder=3)
    ax_d.axhline(10 ** -at, color="gray", ls="--", lw=0.8, label=f"overall density 10^-{at:g}")
    ax_d.set_yscale("log")
    ax_d.set_ylim(FLOOR / 3, 1.5)
    ax_d.set_xticks(range(len(sizes)), [f"{i}\n{s / 1e3:.0f}k" if s < 1e6 else f"{i}\n{s / 1e6:.1f}M"
                                        for i, s in enumerate(sizes)], fontsize=7)
    ax_d.set(xlabel="layer (index, weights)", ylabel="fraction of the layer kept (× = empty)",
             title=f"per-layer density at compression {at:g}")
    ax_d.legend(fontsize=8, loc="lower left")
    ax_d.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    args = options().parse_args()
    set_threads(args.threads)
    args.step = args.step or (0.5 if args.small else 0.25)
    csv_path, png_path = args.out / "iterations.csv", args.out / "iterations.png"
    if args.plot_only:
        rows = read_csv(csv_path)
    else:
        with Timer() as t:
            rows = run(args)
        write_csv(csv_path, rows)
        log(f"total {t}")
    size = plot(rows, png_path, args.at)
    for n, pts in collapse_curve(rows).items():
        log(f"iterations={n:<3d} collapsed per compression {pts}  max without collapse {max_safe_compression(pts)}")
    log(f"wrote {csv_path} and {png_path} ({size // 1024} KB)")


if __name__ == "__main__":
    main()
