"""Conversions between ONNX tensors, numpy and torch, and the element-type table."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

# ONNX element type -> torch dtype, for the types torch can hold.
TORCH_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT8: torch.int8,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64,
    TensorProto.UINT8: torch.uint8,
    TensorProto.UINT16: torch.uint16,
    TensorProto.UINT32: torch.uint32,
    TensorProto.UINT64: torch.uint64,
    TensorProto.BOOL: torch.bool,
}
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
ONNX_TYPES = {v: k for k, v in TORCH_DTYPES.items()}


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


def to_torch(array: np.ndarray) -> torch.Tensor:
    """numpy -> torch, keeping the dtype; copies so the tensor owns writable memory."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        raise TypeError("string tensors have no torch equivalent")
    if array.dtype.name == "bfloat16":  # ml_dtypes bfloat16 from onnx
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


def torch_dtype(elem_type: int) -> torch.dtype:
    try:
        return TORCH_DTYPES[elem_type]
    except KeyError:
        name = helper.tensor_dtype_to_string(elem_type)
        raise TypeError(f"element type {name} has no torch equivalent") from None


def int_list(t: torch.Tensor | None) -> list[int]:
    """An int64 shape/axes/sizes input as a Python list (a scalar counts as one element; None as [])."""
    return [int(v) for v in t.reshape(-1).tolist()] if t is not None else []
