"""The reference an approximate file is judged against (`verify --reference` of `prune --approximate`).

Exact removals equal the original with the removed channels' parameters zeroed (record.zero_removed).
A LayerNormalization that lost channels normalizes over the kept ones only, which no zeroing
reproduces: here it becomes the same normalization written out with a 0/1 mask over its channels
(mean and variance summed over kept channels, divided by their count), so the reference computes
what the pruned file should, in the original's shapes. A ReduceMean over channels that lost some
(a hand-written norm) becomes the mean of its input masked to the kept positions, times the count
over the kept count, and so does a ReduceSum whose readers divide it by the width (the pruned file
divides by the kept count instead): the record names each such node and the positions it lost. A
padded Conv whose removed constant channels were folded into its bias computes as if those channels
were padded with their own value, not 0: the reference pads them so (edge mode), the rest with 0.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph import attr
from .producers import PADDED_FOLD
from .rules_per_channel import MEAN_STATISTICS, NORM_STATISTICS
from .tensors import resizable

JUDGED = {NORM_STATISTICS, MEAN_STATISTICS, PADDED_FOLD}  # the approximate rules whose reference this module builds


def masked_norms(model: onnx.ModelProto, entries: list[dict]) -> onnx.ModelProto:
    """A copy of `model` where each LayerNormalization whose (1-D: last-axis) scale lost entries
    normalizes over the kept entries only."""
    removed = {e["tensor"]: e["removed"] for e in entries if e["axis"] == 0}
    consts = resizable(model.graph)

    def replace(graph: onnx.GraphProto, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        scale = node.input[1] if node.op_type == "LayerNormalization" and len(node.input) > 1 else ""
        if scale not in removed or consts[scale].ndim != 1:
            return None
        return _masked(graph, node, len(consts[scale]), removed[scale])
    return _replaced(model, replace)


def _replaced(model: onnx.ModelProto, replace) -> onnx.ModelProto:
    """A copy of `model` whose nodes `replace(graph, node)` may swap for a list of nodes (None: kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        nodes.extend(replace(out.graph, node) or [node])
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _keep_mask(entry: dict) -> np.ndarray:
    """1 at the kept positions of a recorded site's channel axis, 0 at the removed; shaped to broadcast
    over the axes after it."""
    mask = np.ones((entry["width"],) + (1,) * (entry["rank"] - 1 - entry["axis"]), np.float32)
    mask[entry["removed"]] = 0
    return mask


def _masked(graph: onnx.GraphProto, node: onnx.NodeProto, width: int, gone: list[int]) -> list[onnx.NodeProto]:
    """LayerNormalization(x) over kept channels: d = (x - sum(x m) / k) m, y = d / sqrt(sum(d d) / k + eps)
    * scale + bias, with m the 0/1 mask and k the kept count."""
    mask = np.ones(width, np.float32)
    mask[gone] = 0
    p = f"{node.name or node.output[0]}_masked"
    constants = {f"{p}_mask": mask, f"{p}_count": np.float32(mask.sum()), f"{p}_axes": np.array([-1], np.int64),
                 f"{p}_eps": np.float32(attr(node, "epsilon", 1e-5))}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 else ""
    steps = [("Mul", [x, f"{p}_mask"], "xm"), ("ReduceSum", [f"{p}_xm", f"{p}_axes"], "sum"),
             ("Div", [f"{p}_sum", f"{p}_count"], "mean"), ("Sub", [x, f"{p}_mean"], "centred"),
             ("Mul", [f"{p}_centred", f"{p}_mask"], "d"), ("Mul", [f"{p}_d", f"{p}_d"], "squares"),
             ("ReduceSum", [f"{p}_squares", f"{p}_axes"], "total"), ("Div", [f"{p}_total", f"{p}_count"], "var"),
             ("Add", [f"{p}_var", f"{p}_eps"], "vareps"), ("Sqrt", [f"{p}_vareps"], "std"),
             ("Div", [f"{p}_d", f"{p}_std"], "normed"), ("Mul", [f"{p}_normed", scale], "scaled")]
    made = [helper.make_node(op, inputs, [f"{p}_{out}"]) for op, inputs, out in steps]
    last = f"{p}_scaled"
    if bias:
        made.append(helper.make_node("Add", [last, bias], [f"{p}_shifted"]))
        last = f"{p}_shifted"
    made.append(helper.make_node("Identity", [last], [node.output[0]]))
    return made


def kept_means(model: onnx.ModelProto, means: list[dict]) -> onnx.ModelProto:
    """A copy of `model` where each recorded ReduceMean (`means`: record.masked_means entries of one
    step) averages only the kept positions."""
    by_node = {m["node"]: m for m in means}

    def replace(graph: onnx.GraphProto, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        m = by_node.get(node.output[0]) if node.op_type in ("ReduceMean", "ReduceSum") and node.output else None
        if m is None:
            return None
        mask, p = _keep_mask(m), f"{node.output[0]}_masked"
        graph.initializer.extend([numpy_helper.from_array(mask, f"{p}_mask"),
                                  numpy_helper.from_array(np.float32(m["width"] / mask.sum()), f"{p}_ratio")])
        mean = onnx.NodeProto()
        mean.CopyFrom(node)
        mean.input[0], mean.output[0] = f"{p}_x", f"{p}_mean"
        return [helper.make_node("Mul", [node.input[0], f"{p}_mask"], [f"{p}_x"]), mean,
                helper.make_node("Mul", [f"{p}_mean", f"{p}_ratio"], [node.output[0]])]
    return _replaced(model, replace)


def edge_padded(model: onnx.ModelProto, borders: list[dict]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` where each recorded padded Conv (`borders`: record.padded_borders entries of one
    step) pads its removed input channels with their edge value and the others with 0, then convolves
    unpadded; and the recorded Convs it could not write so (auto_pad, or opset < 11: no Pad input)."""
    by_node = {b["node"]: b for b in borders}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    unwritten = []

    def replace(graph: onnx.GraphProto, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        b = by_node.get(node.output[0]) if node.op_type == "Conv" and node.output else None
        if b is None:
            return None
        pads = attr(node, "pads")
        if opset < 11 or not pads or attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            unwritten.append(b["node"])
            return None
        half, keep, p = len(pads) // 2, _keep_mask(b), f"{node.output[0]}_bordered"
        graph.initializer.extend([
            numpy_helper.from_array(keep, f"{p}_keep"), numpy_helper.from_array(1 - keep, f"{p}_gone"),
            numpy_helper.from_array(np.array([0, 0, *pads[:half], 0, 0, *pads[half:]], np.int64), f"{p}_pads")])
        conv = onnx.NodeProto()
        conv.CopyFrom(node)
        conv.input[0] = f"{p}_x"
        for a in conv.attribute:
            if a.name == "pads":
                a.ints[:] = [0] * len(pads)
        return [helper.make_node("Mul", [node.input[0], f"{p}_keep"], [f"{p}_kept"]),
                helper.make_node("Mul", [node.input[0], f"{p}_gone"], [f"{p}_removed"]),
                helper.make_node("Pad", [f"{p}_kept", f"{p}_pads"], [f"{p}_zero_padded"]),
                helper.make_node("Pad", [f"{p}_removed", f"{p}_pads"], [f"{p}_edge_padded"], mode="edge"),
                helper.make_node("Add", [f"{p}_zero_padded", f"{p}_edge_padded"], [f"{p}_x"]), conv]
    return _replaced(model, replace), unwritten
