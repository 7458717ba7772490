"""How a channel pruning reads: the per-layer table, the summary lines and the per-layer plot.

Everything here renders the dict `onnxprune.structured.summary` builds, the same one --report writes,
so the table and the JSON cannot disagree. The table and figure come from onnxprune/report.py's
helpers, the ones weight-level pruning prints and plots with.
"""

from __future__ import annotations

from typing import Any

from ..report import layer_figure, layer_table, save_layer_plot

Report = dict[str, Any]


def print_table(report: Report, console) -> None:
    """One row per Conv/Gemm/MatMul node: output channels and MACs per sample, before -> after, and
    what bound its width (budget, floor, frozen)."""
    layers = report["layers"]
    total = {key: sum(layer[key] or 0 for layer in layers) for key in ("channels", "kept", "macs", "macs_kept")}
    columns = [("layer", "left", "total"), *zip(("channels", "MACs", "MACs kept"), ("right",) * 3, _cells(total)),
               ("limit", "left", "")]
    title = f"{report['method']}: channels, keep {report['target']:.4g} of {_objective(report)}"
    rows = [(layer["name"], *_cells(layer), layer["limit"]) for layer in layers]
    console.print(layer_table(title, columns, rows))


def _cells(layer: Report) -> tuple[str, str, str]:
    """channels before -> after, MACs before -> after, fraction of MACs kept."""
    return (_arrow(layer["channels"], layer["kept"]), _arrow(layer["macs"], layer["macs_kept"], "{:,.0f}"),
            f"{_fraction(layer['macs_kept'], layer['macs']):.3f}")


def summary_lines(report: Report) -> list[str]:
    macs, weights = report["macs"], report["weights"]
    lines = [f"channels: {report['removed']} of {report['channels']} removed ({report['frozen']} frozen)",
             f"MACs kept: {_fraction(macs['kept'], macs['total']):.3f} ({macs['kept']:.4g} of {macs['total']:.4g})",
             f"weights kept: {_fraction(weights['kept'], weights['total']):.3f}",
             f"MACs in prunable layers: {report['coverage']:.3f}"]
    for reason, n in sorted(report["frozen_reasons"].items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"frozen: {n} channel(s): {reason}")
    if "approximate" in report:
        approx = report["approximate"]
        for rule, n in approx["channels"].items():
            lines.append(f"approximate: {n} channel(s) removed by {rule}")
        if approx["deviation"]:
            worst = max(approx["deviation"].items(), key=lambda kv: kv[1])
            lines.append(f"approximate: output '{worst[0]}' moved by {worst[1]:.3g} (relative L2 to the original with "
                         "the removed channels zeroed, random inputs, before recovery: train --teacher recovers it)")
        else:
            lines.append("approximate: no channel needed an approximate rule; the result is exact")
    if "latency" in report:
        t = report["latency"]
        lines.append(f"onnxruntime CPU, batch {t['batch']}, median of {t['runs']}: {t['dense_ms']:.2f} ms dense, "
                     f"{t['pruned_ms']:.2f} ms pruned ({t['speedup']:.2f}x)")
    if "latency_fit" in report:
        fit = report["latency_fit"]
        lines.append(f"latency kept (onnxruntime CPU, batch 1, one thread): target {fit['target']:.3g}, predicted "
                     f"{fit['predicted']:.3f} by the search, measured {fit['measured']:.3f}")
    if not report["removed"]:
        lines.append("warning: no channel could be removed; the output is the input graph")
    return lines


NOT_FASTER = 1.05  # below this speed-up the difference is within what repeated medians vary by here


def warnings_for(report: Report) -> list[str]:
    """The one-line warnings a pipeline must see, even with -q: a target not reached (--best-effort),
    a measured speed-up that is none."""
    out = []
    if not report.get("target_reached", True):
        kept = report["macs"] if report["objective"] == "macs" else report["weights"]
        out.append(f"warning: the target {report['target']:.4g} was not reached (--best-effort): "
                   f"{_fraction(kept['kept'], kept['total']):.3f} kept")
    if (line := latency_warning(report)) is not None:
        out.append(line)
    return out


def latency_warning(report: Report) -> str | None:
    """One line when --benchmark measured the pruned model no faster than the dense one."""
    t = report.get("latency")
    if t is None or t["speedup"] >= NOT_FASTER:
        return None
    return (f"warning: the pruned model is not faster in onnxruntime ({t['speedup']:.2f}x: {t['dense_ms']:.3g} ms "
            f"dense, {t['pruned_ms']:.3g} ms pruned, CPU, batch {t['batch']}); widths that CPU kernels run "
            f"well may help (--round-to 8 or 16)")


def plot_layers(report: Report, path) -> None:
    """Per layer, side by side: the fraction of output channels kept and the fraction of MACs kept."""
    layers = report["layers"]
    fig, ax = layer_figure(len(layers))
    x = range(len(layers))
    ax.bar([i - 0.2 for i in x], [_fraction(la["kept"], la["channels"]) for la in layers], 0.4,
           color="tab:blue", label="channels kept")
    ax.bar([i + 0.2 for i in x], [_fraction(la["macs_kept"], la["macs"]) for la in layers], 0.4,
           color="tab:orange", label="MACs kept")
    if report["objective"] == "macs":  # a weight target is not a fraction of these bars
        ax.axhline(report["target"], color="gray", linestyle="--", label=f"target {report['target']:.3g}")
    ax.set_ylim(0, 1.3)  # headroom: the legend sits above the full-height bars
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    ax.set_ylabel("fraction kept")
    ax.set_title(f"{report['method']}, keep {report['target']:.3g} of {_objective(report)}: kept per layer")
    ax.legend(loc="upper center", ncols=3)
    save_layer_plot(fig, ax, [la["name"] for la in layers], path)


def _objective(report: Report) -> str:
    return "MACs" if report["objective"] == "macs" else "prunable weights"


def _arrow(before, after, fmt: str = "{:,}") -> str:
    """"before -> after"; "-" where a node has no output channel to count."""
    return "-" if before is None else f"{fmt.format(before)} -> {fmt.format(after)}"


def _fraction(kept, total) -> float:
    return kept / total if total else 1.0  # nothing there: nothing was removed either
