"""What a prune run did, per layer: rows, multiply-accumulates, the table, the JSON report, the plot.

A layer is one prunable source tensor (a Conv/ConvTranspose/Gemm/MatMul weight, or a bias with
--prune-bias); tied tensors are one layer whose MACs sum over every use.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from .graph import attr, roles

SPARSITY_NOTE = (
    "Unstructured sparsity buys a smaller file, not a faster onnxruntime session: onnxruntime densifies "
    "sparse initializers at load, so memory and speed match the dense model. Use --format dense for "
    "tools that ignore sparse initializers.")


@dataclass
class LayerRow:
    name: str
    op: str  # the consuming op type(s), e.g. "Conv" or "MatMul x2" for a tied tensor
    shape: tuple[int, ...]
    params: int
    kept: int
    storage: str = "dense"  # "sparse" | "dense" in the written file
    macs: int | None = None  # multiply-accumulates for one sample with all weights (None: unknown)
    macs_kept: int | None = None  # ... with only the kept weights (unstructured: each weight is reused alike)

    @property
    def density(self) -> float:
        return self.kept / self.params if self.params else 1.0


@dataclass
class Report:
    method: str
    target_density: float
    prunable: int
    kept: int
    layers: list[LayerRow]
    iterations: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)  # schedule, scope, precision, seed, format...
    input: dict[str, Any] = field(default_factory=dict)  # path, sha256, bytes
    output: dict[str, Any] = field(default_factory=dict)
    # Does the output still depend on the input through kept weights (None: not decided)? Decided
    # from the graph's paths, so emptied residual branches whose skip path carries on are told apart.
    connected: bool | None = None

    @property
    def density(self) -> float:
        return self.kept / self.prunable if self.prunable else 1.0

    @property
    def compression(self) -> float:
        return -math.log10(self.target_density)

    @property
    def collapsed(self) -> list[str]:
        """Layers with no weight left: the network is cut there (layer collapse)."""
        return [row.name for row in self.layers if row.params and row.kept == 0]

    @property
    def left_dense(self) -> list[str]:
        return [row.name for row in self.layers if row.params and row.kept == row.params]

    def macs(self) -> dict[str, int] | None:
        if not self.layers or any(row.macs is None for row in self.layers):
            return None
        return {"dense": sum(r.macs for r in self.layers), "remaining": sum(r.macs_kept for r in self.layers)}

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for row in self.layers:
            item = asdict(row)
            item["shape"] = list(row.shape)
            item["density"] = row.density
            layers.append(item)
        return {
            "onnxprune_version": _version(),
            "versions": library_versions(),
            "method": self.method,
            "compression": self.compression,
            "target_density": self.target_density,
            "achieved_density": self.density,
            "prunable_params": self.prunable,
            "kept_params": self.kept,
            "iterations": self.iterations,
            "seconds": round(self.seconds, 4),
            **self.settings,
            "macs": self.macs(),
            "collapsed_layers": self.collapsed,
            "output_depends_on_input": self.connected,
            "dense_layers": self.left_dense,
            "input": self.input,
            "output": self.output,
            "layers": layers,
        }


def _version() -> str:
    from . import __version__

    return __version__


def library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__}


# ----- rows and MACs -----------------------------------------------------------------------------
def layer_rows(twin, names: list[str], masks: Mapping[str, torch.Tensor],
               macs: Mapping[str, int] | None = None, storage: Mapping[str, str] | None = None) -> list[LayerRow]:
    ops: dict[str, list[str]] = {}
    for use in twin.weight_uses:
        ops.setdefault(use.source, []).append(use.op_type)
    params = twin.onnx_parameters()
    rows = []
    for name in names:
        shape = tuple(params[name].shape)
        total = math.prod(shape)
        kept = int(masks[name].count_nonzero()) if name in masks else total
        dense_macs = (macs or {}).get(name)
        rows.append(LayerRow(name, _op_label(ops.get(name, [])), shape, total, kept,
                             (storage or {}).get(name, "dense"), dense_macs,
                             None if dense_macs is None else dense_macs * kept // max(total, 1)))
    return rows


def _op_label(ops: list[str]) -> str:
    kinds = sorted(set(ops))
    if len(ops) == 1:
        return ops[0]
    return ", ".join(f"{k} x{ops.count(k)}" if ops.count(k) > 1 else k for k in kinds) or "?"


@torch.no_grad()
def layer_macs(twin, feeds: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Dense MACs per source tensor for the given inputs, from the shapes each Conv/Gemm/MatMul sees.

    Runs the twin once, recording the shapes at every weight-consuming node (handlers are wrapped
    for the run and restored after). A bias counts one add per output element.
    """
    shapes = _node_shapes(twin, feeds)
    macs: dict[str, int] = {}
    for use in twin.weight_uses:
        seen = shapes.get(use.node)
        if seen is None:
            continue
        node, inputs, out = seen
        count = out_numel = math.prod(out)
        if use.role == "weight":
            count = _weight_macs(node, inputs, out_numel)
        if count is not None:
            macs[use.source] = macs.get(use.source, 0) + count
    return macs


def _weight_macs(node, inputs, out_numel: int) -> int | None:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul (every output element's dot product)."""
    x, w = inputs[0], inputs[1]
    if x is None or w is None:
        return None
    if node.op_type == "Conv":  # each output element: Cin/group * kernel weights
        return out_numel * math.prod(w[1:])
    if node.op_type == "ConvTranspose":  # each input element scatters into Cout/group * kernel outputs
        return math.prod(x) * math.prod(w[1:])
    if node.op_type == "Gemm":
        return out_numel * (x[0] if attr(node, "transA", 0) else x[-1])
    return out_numel * x[-1]  # MatMul: the contraction is A's last dim


def _node_shapes(twin, feeds) -> dict[str, tuple[Any, list, tuple]]:
    """(node, input shapes, first output shape) of every top-level MAC-counting node, from one run."""
    seen = {}

    def recording(step):
        if not roles.counts_macs(step.node.op_type):
            return None

        def run(*args, _fn=step.fn, _node=step.node):
            result = _fn(*args)
            first = result[0] if isinstance(result, tuple) else result
            seen[_node.name or _node.output[0]] = (
                _node, [tuple(a.shape) if isinstance(a, torch.Tensor) else None for a in args], tuple(first.shape))
            return result
        return run

    was_training = twin.training
    twin.eval()  # a train-mode run would update BatchNorm running statistics
    try:
        with twin.overridden(recording, nested=False):
            twin.run(feeds)
    finally:
        twin.train(was_training)
    return seen


# ----- output --------------------------------------------------------------------------------------
def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def stdout_console():
    """The console tables print on: the terminal's width, or 120 columns into a pipe or a file."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)


def layer_table(title: str, columns: Sequence[tuple[str, str, str]], rows: Iterable[Sequence[str]],
                styles: Iterable[str | None] | None = None):
    """The per-layer table both prune modes print: `columns` are (header, justify, footer), the
    footer holding the totals; one row of cells per layer."""
    from rich.table import Table

    table = Table(title=title, show_footer=True)
    for header, justify, footer in columns:
        table.add_column(header, justify=justify, footer=footer)
    for cells, style in zip(rows, styles or itertools.repeat(None)):
        table.add_row(*cells, style=style)
    return table


def print_table(report: Report, console, *, sizes: tuple[int, int] | None = None) -> None:
    """Per-layer table, totals, file sizes, warnings and the note on what sparsity buys."""
    title = (f"{report.method}: compression {report.compression:g} "
             f"(keep {report.target_density:.4g} of prunable weights)")
    columns = [("tensor", "left", "total"), ("op", "left", ""), ("shape", "left", ""),
               ("params", "right", f"{report.prunable:,}"), ("kept", "right", f"{report.kept:,}"),
               ("density", "right", f"{report.density:.4%}"), ("storage", "left", "")]
    rows = [(row.name, row.op, "x".join(map(str, row.shape)), f"{row.params:,}", f"{row.kept:,}",
             f"{row.density:.4%}", row.storage) for row in report.layers]
    collapsed = set(report.collapsed)
    console.print(layer_table(title, columns, rows, ["red" if row.name in collapsed else None
                                                     for row in report.layers]))
    macs = report.macs()
    if macs:
        console.print(f"MACs per sample: {macs['dense']:,} dense, {macs['remaining']:,} on kept weights")
    if sizes:
        before, after = sizes
        console.print(f"file size: {human_bytes(before)} -> {human_bytes(after)} "
                      f"({before / max(after, 1):.1f}x smaller)")
    per = report.settings.get("seconds_per_iteration")
    cost = (f" ({per:.3g} s per iteration; one forward+backward "
            f"{report.settings['forward_backward_seconds']:.3g} s)" if per else "")
    console.print(f"{report.iterations} iteration(s) in {report.seconds:.2f} s{cost} on {report.prunable:,} "
                  "prunable weights", highlight=False)
    for line in warnings_for(report):
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    console.print(SPARSITY_NOTE, highlight=False)


def warnings_for(report: Report) -> list[str]:
    lines = []
    if report.collapsed and report.connected is False:
        lines.append(f"layer collapse cuts the output off from the input (it no longer depends on it): "
                     f"{len(report.collapsed)} layer(s) pruned to zero: {', '.join(report.collapsed)}")
    elif report.collapsed:
        lines.append(f"{len(report.collapsed)} layer(s) pruned to zero but bypassed (skip paths still connect "
                     f"the output to the input): {', '.join(report.collapsed)}")
    if report.left_dense:
        lines.append(f"{len(report.left_dense)} layer(s) left dense: {', '.join(report.left_dense)}")
    return lines


def write_json(report: Report, path) -> None:
    from . import io

    io.write_json(report.to_dict(), path)


def layer_figure(n_layers: int):
    """(figure, axes) sized for `n_layers` bars, drawn by Agg alone: no pyplot state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.35 * n_layers + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_layer_plot(fig, ax, names: Sequence[str], path) -> None:
    """Layer names under the bars, then the PNG, written atomically."""
    from .io import atomic_path

    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_density(report: Report, path) -> None:
    """Per-layer density bars on a log axis; collapsed layers are drawn red at the axis floor."""
    densities = [row.density for row in report.layers]
    positive = [d for d in densities if d > 0]
    floor = min(positive + [report.target_density]) / 10
    fig, ax = layer_figure(len(densities))
    heights = [d if d > 0 else floor for d in densities]
    colors = ["tab:red" if d == 0 else "tab:blue" for d in densities]
    ax.bar(range(len(heights)), heights, color=colors)
    ax.axhline(report.target_density, color="gray", linestyle="--", label=f"target {report.target_density:.3g}")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1.5)
    ax.set_ylabel("density (fraction kept)")
    ax.set_title(f"{report.method}, compression {report.compression:g}: density per layer (red: collapsed)")
    ax.legend()
    save_layer_plot(fig, ax, [row.name for row in report.layers], path)
