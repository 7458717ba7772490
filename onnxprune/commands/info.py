"""`onnxprune info MODEL.onnx`: per-layer density and storage of any ONNX model, and its op counts.

Works on the graph alone (no twin), so it also describes models with ops the twin cannot run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # onnx and numpy load on use: `onnxprune --help` stays fast
    import onnx


def describe(model: onnx.ModelProto) -> dict[str, Any]:
    """Layers (every Conv/ConvTranspose/Gemm/MatMul weight and bias source), storage, totals, op counts."""
    import numpy as np

    from ..graph import weight_uses
    from ..graph.constants import stored_tensors

    stored = stored_tensors(model.graph)
    uses: dict[str, list] = {}
    for use in weight_uses(model.graph):
        uses.setdefault(use.source, []).append(use)
    layers = []
    for name, its_uses in uses.items():
        if name not in stored:
            continue  # made at run time from a computed shape: no stored values to count
        storage, value = stored[name]
        nonzero = int(np.count_nonzero(value))
        layers.append({"name": name, "op": ", ".join(sorted({u.op_type for u in its_uses})),
                       "role": its_uses[0].role, "shape": list(value.shape), "params": int(value.size),
                       "nonzero": nonzero, "density": nonzero / value.size if value.size else 1.0,
                       "storage": storage, "dtype": str(value.dtype)})
    weights = [row for row in layers if row["role"] == "weight"]
    params = sum(r["params"] for r in weights)
    nonzero = sum(r["nonzero"] for r in weights)
    all_values = [v for _, v in stored.values()]
    return {
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(model.graph.node),
        "op_counts": dict(Counter(n.op_type for n in model.graph.node).most_common()),
        "initializers": {"dense": len(model.graph.initializer), "sparse": len(model.graph.sparse_initializer)},
        "tensor_params": int(sum(v.size for v in all_values)),  # logical entries, zeros included
        **_stored_counts(model.graph),
        "weight_params": params,
        "weight_nonzero": nonzero,
        "weight_density": nonzero / params if params else 1.0,
        "compression": math.log10(params / nonzero) if params and nonzero else None,  # not -0.0 when dense
        "layers": layers,
    }


def _stored_counts(graph: onnx.GraphProto) -> dict[str, int]:
    """What the file holds: a sparse initializer stores its kept values plus one index each, not its
    logical size (which `tensor_params` counts)."""
    from math import prod

    dense = sum(prod(t.dims) for t in graph.initializer)
    sparse_values = sum(prod(t.values.dims) for t in graph.sparse_initializer)
    sparse_indices = sum(prod(t.indices.dims) for t in graph.sparse_initializer)
    return {"stored_values": int(dense + sparse_values), "sparse_values": int(sparse_values),
            "sparse_indices": int(sparse_indices)}


def print_info(info: dict[str, Any], path: Path, console) -> None:
    from rich.table import Table

    from ..report import human_bytes

    size = path.stat().st_size
    opsets = ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
    console.print(f"{path}: {human_bytes(size)}, IR version {info['ir_version']}, opset {opsets}"
                  + (f", produced by {info['producer']}" if info["producer"] else ""), highlight=False)
    table = Table(show_footer=True)
    table.add_column("tensor", footer="weights")
    table.add_column("op")
    table.add_column("role")
    table.add_column("shape")
    table.add_column("params", justify="right", footer=f"{info['weight_params']:,}")
    table.add_column("nonzero", justify="right", footer=f"{info['weight_nonzero']:,}")
    table.add_column("density", justify="right", footer=f"{info['weight_density']:.4%}")
    table.add_column("storage")
    for row in info["layers"]:
        table.add_row(row["name"], row["op"], row["role"], "x".join(map(str, row["shape"])), f"{row['params']:,}",
                      f"{row['nonzero']:,}", f"{row['density']:.4%}", row["storage"])
    console.print(table)
    if info["compression"] is not None:
        console.print(f"weight compression {info['compression']:.3g} (10**-c of weights non-zero)")
    inits = info["initializers"]
    sparse = (f" ({info['sparse_values']:,} kept values and {info['sparse_indices']:,} indices in sparse ones)"
              if inits["sparse"] else "")
    console.print(f"initializers: {inits['dense']} dense, {inits['sparse']} sparse; "
                  f"{info['tensor_params']:,} values in all, {info['stored_values']:,} stored{sparse}",
                  highlight=False)
    ops = ", ".join(f"{op} {n}" for op, n in info["op_counts"].items())
    console.print(f"{info['nodes']} nodes: {ops}", highlight=False)


@click.command("info")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info(model: Path, as_json: bool) -> None:
    """Per-layer density (dense or sparse storage) and op counts of any ONNX model, pruned or not."""
    import sys

    from rich.console import Console

    from ..io import load_model

    description = describe(load_model(model, allow_quantized=True))  # describing is not pruning
    if as_json:
        click.echo(json.dumps({"path": str(model), "bytes": model.stat().st_size, **description}, indent=2))
        return
    print_info(description, model, Console(width=None if sys.stdout.isatty() else 120))
