"""The graph rewrite: slice every tensor a removed channel indexes, and the sizes that name counts.

Names, opset, IR version, metadata and node order are the input's; only sliced constants, rewritten
sizes (Conv group, Reshape shape entries, Split sizes) and the now stale value_info change.
`zeroed()` builds the reference the rewrite must equal: the original graph with the removed channels'
parameters (producer filters and biases, norm scale and shift, per-channel Add/Mul constants) zero.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import OnnxPruneError
from ..graph.constants import tensor_constants
from .groups import ChannelGraph


def kept_positions(cg: ChannelGraph, removed: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """(tensor, axis) -> bool per position (kept); refuses to empty an axis."""
    kept = {key: ~removed[channels] for key, channels in cg.keys().items()}
    empty = [key for key, k in kept.items() if not k.any()]
    if empty:
        raise OnnxPruneError(f"removing these channels would leave no channel in {empty[0][0]} axis {empty[0][1]}")
    return kept


def rewrite(cg: ChannelGraph, removed: np.ndarray) -> onnx.ModelProto:
    """A dense, physically smaller copy of cg.model without the `removed` channels (bool per channel)."""
    if removed[cg.frozen].any():
        raise OnnxPruneError("a frozen channel cannot be removed")
    kept = kept_positions(cg, removed)
    arrays: dict[str, np.ndarray] = {}
    consts = tensor_constants(cg.model.graph)
    for (name, axis), keep in sorted(kept.items()):
        arrays[name] = np.compress(keep, arrays.get(name, consts[name]), axis=axis)
    for fix in cg.fixes:
        if fix.kind == "const":
            value = arrays.setdefault(fix.target, consts[fix.target].copy())
            value.reshape(-1)[fix.index] = int((~removed[cg.channel[fix.ids]]).sum())
    model = onnx.ModelProto()
    model.CopyFrom(cg.model)
    _store(model.graph, arrays)
    for fix in cg.fixes:
        if fix.kind == "attr":
            _set_attr(model.graph.node[fix.index], fix.attr, int((~removed[cg.channel[fix.ids]]).sum()), fix.pos)
    del model.graph.value_info[:]  # channel counts changed; runtimes re-infer
    return model


def zeroed(cg: ChannelGraph, removed: np.ndarray) -> onnx.ModelProto:
    """The original model with the removed channels' parameters set to zero (the exactness reference)."""
    consts = tensor_constants(cg.model.graph)
    arrays: dict[str, np.ndarray] = {}
    for s in cg.slices:
        if s.role == "param":
            gone = removed[cg.channel[s.ids]]
            if gone.any():
                value = arrays.setdefault(s.tensor, consts[s.tensor].copy())
                index = [slice(None)] * value.ndim
                index[s.axis] = gone
                value[tuple(index)] = 0
    model = onnx.ModelProto()
    model.CopyFrom(cg.model)
    _store(model.graph, arrays)
    return model


def _store(graph: onnx.GraphProto, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays back in place (initializers, Constant values, old-IR graph.input shapes)."""
    for tensor in graph.initializer:
        if tensor.name in arrays:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(arrays[tensor.name], order="C"), tensor.name))
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in arrays:
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(numpy_helper.from_array(np.asarray(arrays[node.output[0]], order="C"), a.t.name))
    for value in graph.input:
        if value.name in arrays:
            dims = value.type.tensor_type.shape.dim
            for d, n in zip(dims, arrays[value.name].shape):
                d.dim_value = n


def _set_attr(node: onnx.NodeProto, name: str, value: int, pos: int) -> None:
    for a in node.attribute:
        if a.name == name:
            if pos < 0:
                a.i = value
            else:
                a.ints[pos] = value
            return
    node.attribute.append(helper.make_attribute(name, value))
