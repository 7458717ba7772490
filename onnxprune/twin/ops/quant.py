"""Quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul.

Scales and zero points are a scalar, a vector along `axis` (per-axis), or blocks of `block_size`
along `axis` (blocked, opset 21). Rounding is to nearest even (torch.round, numpy's rint).
"""

from __future__ import annotations

import torch

from ..registry import register
from ..tensors import FLOAT8_TYPES, SUBBYTE_TYPES, readable, to_float8, to_subbyte, torch_dtype

_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.uint16: (0, 65535), torch.int16: (-32768, 32767)}


def _along(value, x, axis, block_size):
    """Scale / zero point broadcastable to x."""
    if value.numel() == 1:
        return value.reshape(())
    axis %= x.dim()
    if not block_size:
        dims = [1] * x.dim()
        dims[axis] = value.numel()
        return value.reshape(dims)
    return value.repeat_interleave(block_size, dim=axis).narrow(axis, 0, x.shape[axis])


def _quantize(x, scale, zero_point, axis, saturate, block_size, output_dtype, precision):
    dtype = zero_point.dtype if zero_point is not None else torch_dtype(output_dtype) if output_dtype else torch.uint8
    s = _along(scale, x, axis, block_size)
    q = x.to(torch_dtype(precision)) / s.to(torch_dtype(precision)) if precision else x / s
    if dtype in FLOAT8_TYPES.values():  # float8 targets ignore the zero point, as onnx's reference does
        return to_float8(q, dtype, bool(saturate))
    q = torch.round(q)
    if zero_point is not None:
        q = q + _along(readable(zero_point), x, axis, block_size)
    if dtype in SUBBYTE_TYPES.values():
        return to_subbyte(q, dtype, saturate=True)
    return q.clamp(*_RANGE[dtype]).to(dtype)


@register("QuantizeLinear", since=10)
def quantize_linear(x, scale, zero_point=None, *, axis=1, saturate=1, block_size=0, output_dtype=0,
                    precision=0):  # axis: since 13, saturate: 19, block_size/output_dtype: 21, precision: 23
    return _quantize(x, scale, zero_point, axis, saturate, block_size, output_dtype, precision)


@register("DequantizeLinear", since=10)
def dequantize_linear(x, scale, zero_point=None, *, axis=1, block_size=0, output_dtype=0, ctx):
    # Computed in float32 (float64 when the scale is: the twin's float64 mode), then cast to the output
    # type (the scale's unless output_dtype says otherwise), as onnx's reference does.
    work = torch.promote_types(torch.float32, scale.dtype)
    v = readable(x).to(work)
    if zero_point is not None and x.dtype not in FLOAT8_TYPES.values():
        v = v - _along(readable(zero_point), x, axis, block_size).to(work)
    y = v * _along(scale, x, axis, block_size).to(work)
    return y.to(ctx.dtype(output_dtype) if output_dtype else scale.dtype)


@register("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x):
    hi, lo = torch.clamp(x.max(), min=0), torch.clamp(x.min(), max=0)
    scale = torch.where(hi == lo, torch.ones_like(hi), hi - lo) / 255
    zero_point = torch.round(torch.clamp(-lo / scale, 0, 255))
    y = torch.clamp(torch.round(x / scale) + zero_point, 0, 255)
    return y.to(torch.uint8), scale.to(x.dtype), zero_point.to(torch.uint8)


def _centred(x, zero_point):
    v = readable(x).to(torch.int32)
    return v - readable(zero_point).to(torch.int32) if zero_point is not None else v


@register("MatMulInteger", since=10)
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    return torch.matmul(_centred(a, a_zero_point), _centred(b, b_zero_point))


@register("QLinearMatMul", since=10)
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None):
    acc = torch.matmul(_centred(a, a_zero_point), _centred(b, b_zero_point))
    y = acc * (a_scale * b_scale / y_scale)
    dtype = y_zero_point.dtype if y_zero_point is not None else a.dtype
    if y_zero_point is not None:
        y = y + y_zero_point
    info = torch.iinfo(dtype)
    return torch.round(y).clamp(info.min, info.max).to(dtype)
