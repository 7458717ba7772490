"""The graph rewrite: slice every tensor a removed channel indexes, and the sizes that name counts.

Names, opset, IR version, metadata and node order are the input's; only sliced constants, rewritten
sizes (Conv group, Reshape shape entries, Split sizes) and the now stale value_info change; a shape
constant shared by readers that need different sizes gives each such reader its own copy ("<name>_prunedK").
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
    copies: dict[tuple[str, tuple], np.ndarray] = {}  # (shared constant, its reader) -> that reader's copy
    for fix in cg.fixes:
        if fix.kind == "const":
            store_in = copies if fix.copy else arrays
            key = (fix.target, fix.reader) if fix.copy else fix.target
            if fix.folded is not None:
                consts.setdefault(fix.target, fix.folded)
            value = store_in.setdefault(key, consts[fix.target].copy())
            value.reshape(-1)[fix.index] = int((~removed[cg.channel[fix.ids]]).sum())
    model = onnx.ModelProto()
    model.CopyFrom(cg.model)
    store(model.graph, arrays)
    _store_copies(model.graph, copies, consts)
    for fix in cg.fixes:
        if fix.kind == "attr":
            _set_attr(model.graph.node[fix.index], fix.attr, int((~removed[cg.channel[fix.ids]]).sum()), fix.pos)
    del model.graph.value_info[:]  # channel counts changed; runtimes re-infer
    return model


def zeroed(cg: ChannelGraph, removed: np.ndarray) -> onnx.ModelProto:
    """The original model with the removed channels' parameters set to zero (the exactness reference)."""
    from .record import removed_parameters, zero_removed

    return zero_removed(cg.model, removed_parameters(cg, removed))


def store(graph: onnx.GraphProto, arrays: dict[str, np.ndarray]) -> None:
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


def _store_copies(graph: onnx.GraphProto, copies: dict, consts: dict) -> None:
    """Give each reader of a shared shape constant whose entries changed its own initializer."""
    taken = {t.name for t in graph.initializer} | {v.name for v in graph.input} | \
        {o for n in graph.node for o in n.output}
    for (name, (index, slot)), value in sorted(copies.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if np.array_equal(value, consts[name]):
            continue  # nothing kept fewer: the shared original is right
        k = 0
        while f"{name}_pruned{k}" in taken:
            k += 1
        taken.add(f"{name}_pruned{k}")
        tensor = numpy_helper.from_array(np.asarray(value, order="C"), f"{name}_pruned{k}")
        graph.initializer.append(tensor)
        if any(v.name == name for v in graph.input):  # declared like its original (IR 3 lists initializers)
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        graph.node[index].input[slot] = f"{name}_pruned{k}"


def _set_attr(node: onnx.NodeProto, name: str, value: int, pos: int) -> None:
    for a in node.attribute:
        if a.name == name:
            if pos < 0:
                a.i = value
            else:
                a.ints[pos] = value
            return
    node.attribute.append(helper.make_attribute(name, value))
