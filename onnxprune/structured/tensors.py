"""The constants a channel rewrite may resize, and writing resized values back.

Initializers and Constant nodes' values are resized in place. torch's exporter keeps one copy of
tensors that are equal at export (fresh zero biases, unit norm scales) and feeds the other readers
through Identity nodes; slicing that one tensor for every reader would tie unrelated channels (every
zero bias of a BERT export reads the embeddings' LayerNorm bias). So the output of an Identity of a
shared constant counts as a constant of its own: resized, its Identity reads a new initializer
"<source>_prunedK", and the source stays as it was for its other readers.

A ConstantOfShape of a constant shape (Caffe2's light models hold every weight so) is a weight too:
resized, it keeps its fill and reads the new shape; given other values, it becomes a Constant.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph.constants import filled_value, tensor_constants


def resizable(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Name -> value of every constant a rewrite can resize (see the module docstring)."""
    arrays = tensor_constants(graph)
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in arrays:
            arrays[node.output[0]] = filled_value(node, arrays[node.input[0]])
    shared = _shared_inputs(graph)
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in arrays and node.input[0] in shared:
            arrays.setdefault(node.output[0], arrays[node.input[0]])
    return arrays


def store(graph: onnx.GraphProto, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays back in place (initializers, Constant values, old-IR graph.input shapes, Identity
    copies of shared constants)."""
    originals = resizable(graph)
    for tensor in graph.initializer:
        if tensor.name in arrays:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(arrays[tensor.name], order="C"), tensor.name))
    taken = names(graph)
    shared, stored = _shared_inputs(graph), {t.name: t for t in graph.initializer}
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.output[0] in arrays:
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(numpy_helper.from_array(np.asarray(arrays[node.output[0]], order="C"), a.t.name))
        elif node.op_type == "ConstantOfShape" and node.output[0] in arrays:
            _refill(graph, index, arrays[node.output[0]], taken, shared, stored)
        elif node.op_type == "Identity" and node.output[0] in originals and node.input[0] in originals and \
                (node.output[0] in arrays or node.input[0] in arrays):  # this copy, or its source, resized
            add_copy(graph, node.input[0], arrays.get(node.output[0], originals[node.output[0]]), index, 0, taken)
    for value in graph.input:
        if value.name in arrays:
            dims = value.type.tensor_type.shape.dim
            for d, n in zip(dims, arrays[value.name].shape):
                d.dim_value = n


def _shared_inputs(graph: onnx.GraphProto) -> set[str]:
    """Names that more than one node input reads."""
    seen, shared = set(), set()
    for node in graph.node:
        for name in node.input:
            (shared if name in seen else seen).add(name)
    return shared


def _refill(graph: onnx.GraphProto, index: int, value: np.ndarray, taken: set[str], shared: set[str],
            stored: dict[str, onnx.TensorProto]) -> None:
    """ConstantOfShape node `index` now yields `value`: a new shape when it is still its fill, else a
    Constant of that value (same output name)."""
    node = graph.node[index]
    fill = filled_value(node, np.ones(1, np.int64))[0]
    value = np.asarray(value)
    if value.size and (value == fill).all():
        shape = np.array(value.shape, np.int64)
        own = stored.get(node.input[0]) if node.input[0] not in shared else None
        if own is not None:
            own.CopyFrom(numpy_helper.from_array(shape, own.name))  # its only reader: resized in place
        else:
            add_copy(graph, node.input[0], shape, index, 0, taken)
        return
    graph.node[index].CopyFrom(helper.make_node("Constant", [], list(node.output), node.name,
                                                value=numpy_helper.from_array(np.asarray(value, order="C"))))


def names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {v.name for v in graph.input} | \
        {o for n in graph.node for o in n.output}


def add_copy(graph: onnx.GraphProto, name: str, value: np.ndarray, index: int, slot: int, taken: set[str]) -> None:
    """Input `slot` of node `index` reads a new initializer "<name>_prunedK" holding `value`."""
    k = 0
    while f"{name}_pruned{k}" in taken:
        k += 1
    taken.add(f"{name}_pruned{k}")
    tensor = numpy_helper.from_array(np.asarray(value, order="C"), f"{name}_pruned{k}")
    graph.initializer.append(tensor)
    if any(v.name == name for v in graph.input):  # declared like its original (IR 3 lists initializers)
        graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    graph.node[index].input[slot] = tensor.name
