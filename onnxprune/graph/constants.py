"""The one reader of constant values: initializers (dense and sparse), Constant nodes (every value
attribute) and ConstantOfShape of a constant shape. numpy only (no torch), so `info` stays light."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """Densify a SparseTensorProto (linear [NNZ] or coordinate [NNZ, rank] int64 indices)."""
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    shape = tuple(sparse.dims)
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), shape) if indices.size else indices.reshape(-1)
    dense[indices] = values
    return dense.reshape(shape)


# Constant's value attributes and the numpy type each list form takes (the spec's element types).
_LIST_TYPES = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
               "value_ints": np.int64, "value_string": object, "value_strings": object}


def constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A Constant node's value, whichever attribute holds it (None for a malformed node)."""
    if node.op_type != "Constant" or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name == "sparse_value":
        return sparse_to_dense(attr.sparse_tensor)
    if attr.name in _LIST_TYPES:
        value = helper.get_attribute_value(attr)
        if attr.name.startswith("value_string"):
            value = [v.decode() if isinstance(v, bytes) else v for v in (value if isinstance(value, list) else [value])]
            value = value if attr.name == "value_strings" else value[0]
        return np.asarray(value, dtype=_LIST_TYPES[attr.name])
    return None


def filled_value(node: onnx.NodeProto, shape: np.ndarray) -> np.ndarray:
    """ConstantOfShape(shape): its `value` (a one-element tensor, default float 0) repeated."""
    value = next((a.t for a in node.attribute if a.name == "value"), None)
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    return np.full(tuple(int(d) for d in np.asarray(shape).reshape(-1)), fill[0], dtype=fill.dtype)


def constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | onnx.SparseTensorProto | None:
    """A Constant node's value as an initializer named like its output (sparse stays sparse)."""
    if node.op_type != "Constant" or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "sparse_value":
        out = onnx.SparseTensorProto()
        out.CopyFrom(attr.sparse_tensor)
        out.values.name = node.output[0]
        return out
    value = constant_value(node)
    if value is None or value.dtype == object:
        return None
    out = onnx.TensorProto()
    out.CopyFrom(attr.t) if attr.name == "value" else out.CopyFrom(numpy_helper.from_array(value))
    out.name = node.output[0]
    return out


def stored_tensors(graph: onnx.GraphProto) -> dict[str, tuple[str, np.ndarray]]:
    """Top-level constants by name: (storage, value), storage "dense" | "sparse" (initializers) or
    "node" (a Constant, or a ConstantOfShape of a constant shape)."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    for tensor in graph.initializer:
        out[tensor.name] = ("dense", numpy_helper.to_array(tensor))
    for sparse in graph.sparse_initializer:
        out[sparse.values.name] = ("sparse", sparse_to_dense(sparse))
    for node in graph.node:
        value = constant_value(node)
        if value is None and node.op_type == "ConstantOfShape" and node.input and node.input[0] in out:
            value = filled_value(node, out[node.input[0]][1])
        if value is not None and value.dtype != object:  # string constants are never weights
            out[node.output[0]] = ("node", value)
    return out


def tensor_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Constants held as a TensorProto in the graph (dense initializers, Constant nodes' `value`):
    the ones a rewrite can resize in place."""
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return arrays
