"""Where masks meet the file: pruned tensors go back into a copy of the input model.

Only tensor storage changes. The graph, opset, IR version, names and metadata are the input's (the
model is copied, never rebuilt with `make_model`, which would stamp a newer IR version than
onnxruntime loads). A pruned tensor is stored either dense (exact zeros) or as a
`graph.sparse_initializer`: a SparseTensorProto of the non-zero values plus their int64 linear
indices, which onnxruntime densifies at load.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from .choices import FORMATS
from .graph.constants import sparse_to_dense
from .graph.rewrite import declare_as_inputs
from .twin.tensors import FLOAT_TYPES, to_numpy

INDEX_BYTES = 8  # one int64 linear index per stored value


def sparse_is_smaller(array: np.ndarray) -> bool:
    """Values + int64 indices take fewer bytes than the dense tensor (float32: below 1/3 density)."""
    nnz = int(np.count_nonzero(array))
    return array.ndim > 0 and nnz * (array.itemsize + INDEX_BYTES) < array.size * array.itemsize


def to_sparse(array: np.ndarray, name: str) -> onnx.SparseTensorProto:
    """SparseTensorProto with linear int64 indices in ascending order (what the checker requires)."""
    flat = array.reshape(-1)
    indices = np.flatnonzero(flat).astype(np.int64)  # -0.0 counts as zero, NaN as non-zero
    values = numpy_helper.from_array(flat[indices], name)
    return helper.make_sparse_tensor(values, numpy_helper.from_array(indices), list(array.shape))


def write_back(model: onnx.ModelProto, tensors: Mapping[str, np.ndarray], *, fmt: str = "auto") -> onnx.ModelProto:
    """A copy of `model` with each named tensor replaced (its dtype kept); see the module docstring.

    fmt: "sparse" stores every given tensor sparse, "dense" every one dense, "auto" whichever is
    smaller. With "auto", a tensor whose values did not change is left exactly as it was (so writing
    back every tensor of a twin only touches the changed ones); "sparse"/"dense" also re-store it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for name, array in tensors.items():
        found = _locate(graph, name)
        if found is None:
            raise KeyError(f"'{name}' is not an initializer or Constant output of the model")
        kind, item = found
        array = _as_stored(np.asarray(array), _elem_type(kind, item), _dims(kind, item, array), name)
        sparse = array.ndim > 0 and (fmt == "sparse" or (fmt == "auto" and sparse_is_smaller(array)))
        target = "sparse" if sparse else "dense"
        if kind != "node" and (fmt == "auto" or kind == target) and _unchanged(kind, item, array):
            continue  # same values: keep the storage as it is (no all-zero BN mean turned sparse)
        new = to_sparse(array, name) if sparse else numpy_helper.from_array(array, name)
        if kind == target:  # same storage: replace in place, keeping the tensor's position
            doc = item.values.doc_string if sparse else item.doc_string
            item.CopyFrom(new)
            (item.values if sparse else item).doc_string = doc
            continue
        _remove(graph, kind, item)
        (graph.sparse_initializer if sparse else graph.initializer).append(new)
        if kind == "node":  # a Constant node made an initializer
            declare_as_inputs(graph, out.ir_version, [(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                                       list(array.shape))])
    return out


def twin_tensors(twin, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Masked values of the twin's parameters, in each tensor's ONNX dtype, ready for `write_back`.

    With names=None: every parameter plus the float buffers that are initializers (BatchNorm running
    statistics after training); folded Constant nodes that are not weights are left out so that
    write-back does not turn them into initializers.
    """
    params = twin.onnx_parameters()
    if names is None:
        stored = {t.name for t in twin.model.graph.initializer} | {
            t.values.name for t in twin.model.graph.sparse_initializer}
        buffers = {n: b for n, b in twin.onnx_buffers().items()
                   if n in stored and twin.elem_types.get(n) in FLOAT_TYPES}
        names = list(params) + list(buffers)
    else:
        names, buffers = list(names), twin.onnx_buffers()
    out = {}
    with torch.no_grad():
        for name in names:
            if name in params:
                value, mask = params[name], twin.mask(name)
                if mask is not None:  # where(), not value * mask: a pruned negative weight is +0.0, not -0.0
                    value = torch.where(mask.bool(), value, torch.zeros((), dtype=value.dtype, device=value.device))
            else:
                value = buffers[name]
            np_dtype = helper.tensor_dtype_to_np_dtype(twin.elem_types[name])
            out[name] = to_numpy(value).astype(np_dtype, copy=False)
    return out


# ----- locating and replacing tensors ------------------------------------------------------------
def _locate(graph: onnx.GraphProto, name: str):
    for tensor in graph.initializer:
        if tensor.name == name:
            return "dense", tensor
    for sparse in graph.sparse_initializer:
        if sparse.values.name == name:
            return "sparse", sparse
    for node in graph.node:
        if node.op_type in ("Constant", "ConstantOfShape") and node.output and node.output[0] == name:
            return "node", node
    return None


def _elem_type(kind: str, item) -> int | None:
    if kind == "dense":
        return item.data_type
    if kind == "sparse":
        return item.values.data_type
    for attr in item.attribute:  # Constant value= / ConstantOfShape value= carry a tensor
        if attr.type == onnx.AttributeProto.TENSOR:
            return attr.t.data_type
    return None  # Constant with value_float(s) (float32) or ConstantOfShape without value (float32)


def _dims(kind: str, item, array: np.ndarray) -> tuple[int, ...]:
    if kind in ("dense", "sparse"):
        return tuple(item.dims)
    return array.shape  # a Constant node's output shape is what the twin computed


def _as_stored(array: np.ndarray, elem_type: int | None, dims: tuple[int, ...], name: str) -> np.ndarray:
    if tuple(array.shape) != tuple(dims):
        raise ValueError(f"'{name}': new value has shape {tuple(array.shape)}, the model's tensor {tuple(dims)}")
    np_dtype = helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else np.dtype(np.float32)
    return np.require(array.astype(np_dtype, copy=False), requirements="C")  # ascontiguousarray makes 0-d 1-d


def _unchanged(kind: str, item, array: np.ndarray) -> bool:
    old = numpy_helper.to_array(item) if kind == "dense" else sparse_to_dense(item)
    return old.dtype == array.dtype and old.shape == array.shape and old.tobytes() == array.tobytes()


def _remove(graph: onnx.GraphProto, kind: str, item) -> None:
    if kind == "dense":
        graph.initializer.remove(item)
    elif kind == "sparse":
        graph.sparse_initializer.remove(item)
    else:  # a Constant / ConstantOfShape node becomes an initializer of the same name
        graph.node.remove(item)
        if item.op_type == "ConstantOfShape":
            _drop_if_unused(graph, item.input[0])


def _drop_if_unused(graph: onnx.GraphProto, name: str) -> None:
    """The shape input of a replaced ConstantOfShape, if nothing else reads it (ORT warns otherwise)."""
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    if name in used or any(i.name == name for i in graph.input):
        return
    for tensor in graph.initializer:
        if tensor.name == name:
            graph.initializer.remove(tensor)
            return
