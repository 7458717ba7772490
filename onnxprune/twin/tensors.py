"""Conversions between ONNX tensors, numpy and torch, and the element-type table."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper

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
# float8 types: torch holds and casts them (no arithmetic, as in ONNX, where only Cast, the quantize ops
# and data movement take them); numpy holds them as ml_dtypes arrays, exchanged bit for bit.
FLOAT8_TYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT8E4M3FN: torch.float8_e4m3fn,
    TensorProto.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz,
    TensorProto.FLOAT8E5M2: torch.float8_e5m2,
    TensorProto.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
    TensorProto.FLOAT8E8M0: torch.float8_e8m0fnu,
}
TORCH_DTYPES.update(FLOAT8_TYPES)
# 2- and 4-bit integers: one value per byte, in a tensor whose dtype is torch's 1-byte shell type of
# that width (a tag torch computes nothing with); the byte holds the value as int8 / uint8 would.
SUBBYTE_TYPES: dict[int, torch.dtype] = {
    TensorProto.INT4: torch.int4, TensorProto.UINT4: torch.uint4,
    TensorProto.INT2: torch.int2, TensorProto.UINT2: torch.uint2,
}
TORCH_DTYPES.update(SUBBYTE_TYPES)
_SUBBYTE_RANGE = {torch.int4: (torch.int8, -8, 7), torch.uint4: (torch.uint8, 0, 15),
                  torch.int2: (torch.int8, -2, 1), torch.uint2: (torch.uint8, 0, 3)}
_ML_FLOAT8 = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fnuz": torch.float8_e4m3fnuz,
              "float8_e5m2": torch.float8_e5m2, "float8_e5m2fnuz": torch.float8_e5m2fnuz,
              "float8_e8m0fnu": torch.float8_e8m0fnu}
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
ONNX_TYPES = {v: k for k, v in TORCH_DTYPES.items()}


def to_torch(array: np.ndarray) -> torch.Tensor:
    """numpy -> torch, keeping the dtype; copies so the tensor owns writable memory."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        raise TypeError("string tensors have no torch equivalent")
    if array.dtype.name == "float4_e2m1fn":
        raise TypeError("float4e2m1 tensors have no torch equivalent (torch packs two per byte)")
    if array.dtype.name == "bfloat16":  # ml_dtypes bfloat16 from onnx
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    if array.dtype.name in ("int4", "uint4", "int2", "uint2"):  # ml_dtypes: values via int8 / uint8
        carrier = np.int8 if array.dtype.name.startswith("int") else np.uint8
        return torch.from_numpy(array.astype(carrier)).view(getattr(torch, array.dtype.name))
    if array.dtype.name in _ML_FLOAT8:
        return torch.from_numpy(array.view(np.uint8).copy()).view(_ML_FLOAT8[array.dtype.name])
    return torch.from_numpy(np.array(array, copy=True))


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: onnx's ml_dtypes one, value for value
        return tensor.float().numpy().astype(helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16))
    if tensor.dtype in _SUBBYTE_RANGE:
        np_type = helper.tensor_dtype_to_np_dtype(ONNX_TYPES[tensor.dtype])
        return tensor.view(_SUBBYTE_RANGE[tensor.dtype][0]).numpy().astype(np_type)
    if tensor.dtype in FLOAT8_TYPES.values():
        return tensor.view(torch.uint8).numpy().view(helper.tensor_dtype_to_np_dtype(ONNX_TYPES[tensor.dtype]))
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


# Largest finite value of each float8 type that Cast saturates to.
_FLOAT8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e4m3fnuz: 240.0, torch.float8_e5m2: 57344.0,
               torch.float8_e5m2fnuz: 57344.0}
# torch saturates float8_e4m3fn on overflow; ONNX without saturation gives NaN beyond the value that
# still rounds (to nearest even) to 448. The other types already overflow to inf / NaN in torch.
_E4M3FN_OVERFLOW = 464.0


def to_float8(x: torch.Tensor, dtype: torch.dtype, saturate: bool, round_mode: str = "up") -> torch.Tensor:
    """ONNX Cast to a float8 type (round to nearest even; `saturate` clamps to the largest finite)."""
    if dtype == torch.float8_e8m0fnu:
        return _to_e8m0(x, saturate, round_mode)
    x = x.float()
    if saturate:
        return x.clamp(-_FLOAT8_MAX[dtype], _FLOAT8_MAX[dtype]).to(dtype)  # NaN stays NaN
    y = x.to(dtype)
    if dtype == torch.float8_e4m3fn:
        y = torch.where(x.abs() > _E4M3FN_OVERFLOW, torch.tensor(float("nan"), device=x.device).to(dtype), y)
    return y


def _to_e8m0(x: torch.Tensor, saturate: bool, round_mode: str) -> torch.Tensor:
    """A power of two from float32's exponent bits, rounded as onnx.numpy_helper.to_float8e8m0 does."""
    bits = x.float().view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    special = exponent == 0xFF  # NaN / inf: the NaN code
    if round_mode == "nearest":
        guard, rest, lsb = (bits & 0x400000) != 0, (bits & 0x3FFFFF) != 0, exponent > 0
        up = guard & (rest | lsb)
    elif round_mode == "up":
        up = (bits & 0x7FFFFF) != 0
    else:
        up = torch.zeros_like(special)
    up = up & ~special
    if saturate:
        up = up & (exponent != 0xFE)
    exponent = torch.where(special, 0xFF, exponent + up.int())
    return exponent.to(torch.uint8).view(torch.float8_e8m0fnu)


def readable(tensor: torch.Tensor) -> torch.Tensor:
    """A 2/4-bit tensor's values as int8 / uint8 (a view); any other tensor unchanged."""
    carrier = _SUBBYTE_RANGE.get(tensor.dtype)
    return tensor.view(carrier[0]) if carrier else tensor


def to_subbyte(values: torch.Tensor, dtype: torch.dtype, saturate: bool = False) -> torch.Tensor:
    """Numbers as a 2/4-bit tensor, explicitly (not through torch's float -> int conversion, which is
    undefined out of range and has changed between torch versions). Integers wrap modulo 2**bits, as
    Cast's spec says. Floats truncate toward zero; out of range (NaN and inf included) ONNX leaves the
    result undefined and onnx's reference (ml_dtypes >= 0.7) gives 0, which the backend cases expect.
    `saturate` (QuantizeLinear) clamps to the type's range instead."""
    carrier, lo, hi = _SUBBYTE_RANGE[dtype]
    if values.is_floating_point():
        v = readable(values).double().trunc()
        v = v.clamp(lo, hi).nan_to_num(0.0) if saturate else torch.where((v >= lo) & (v <= hi), v, 0.0)
        return v.to(carrier).view(dtype)
    v = readable(values).to(torch.int64)
    v = v.clamp(lo, hi) if saturate else (v - lo) % (hi - lo + 1) + lo
    return v.to(carrier).view(dtype)
