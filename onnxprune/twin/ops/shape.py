"""Layout and shape ops: Identity, Reshape, Flatten, Transpose, Concat, Squeeze/Unsqueeze, Shape,
Gather, Slice, Constant, ConstantOfShape, Cast, Dropout."""

from __future__ import annotations

import math

import torch

from ..registry import register
from ..tensors import FLOAT8_TYPES, SUBBYTE_TYPES, int_list, readable, to_float8, to_subbyte, to_torch


@register("Identity")
def identity(x):
    return x


@register("Reshape", since=5)
def reshape(x, shape, *, allowzero=0):
    dims = int_list(shape)
    if not allowzero:  # 0 copies the input's dim at that position
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@register("Flatten", since=1)
def flatten(x, *, axis):
    axis = axis + x.dim() if axis < 0 else axis  # axis may equal the rank: (prod(shape), 1)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))  # explicit: 0-sized dims


@register("Transpose", since=1)
def transpose(x, *, perm):
    return x.permute(perm if perm else list(reversed(range(x.dim()))))


@register("Concat", since=4)
def concat(*xs, axis):
    return torch.cat(xs, dim=axis)


@register("Squeeze", since=1)
def squeeze_attr(x, *, axes):
    return _squeeze(x, axes)


@register("Squeeze", since=13)
def squeeze(x, axes=None):
    return _squeeze(x, int_list(axes) if axes is not None else None)


def _squeeze(x, axes):
    if not axes:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


@register("Unsqueeze", since=1)
def unsqueeze_attr(x, *, axes):
    return _unsqueeze(x, axes)


@register("Unsqueeze", since=13)
def unsqueeze(x, axes):
    return _unsqueeze(x, int_list(axes))


def _unsqueeze(x, axes):
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@register("Shape", since=1)
def shape(x, *, start=0, end=None):
    return torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


@register("Size", since=1)
def size(x):
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@register("Gather", since=1)
def gather(x, indices, *, axis):
    axis = axis % x.dim()
    idx = torch.where(indices < 0, indices + x.shape[axis], indices).long()
    return x.index_select(axis, idx.reshape(-1)).reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


@register("Slice", since=1)
def slice_attr(x, *, axes, ends, starts):
    return _slice(x, starts, ends, axes, None)


@register("Slice", since=10)
def slice_(x, starts, ends, axes=None, steps=None):
    return _slice(x, int_list(starts), int_list(ends), int_list(axes) if axes is not None else None,
                  int_list(steps) if steps is not None else None)


def _slice(x, starts, ends, axes, steps):
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        size = x.shape[axis]
        if step > 0:
            start, end = (max(0, min(size, v + size if v < 0 else v)) for v in (start, end))
            x = x.narrow(axis, start, max(0, end - start))[(slice(None),) * axis + (slice(None, None, step),)]
        else:  # negative steps: start clamps to [0, size-1], end to [-1, size-1] (INT_MAX is not special)
            start = max(0, min(size - 1, start + size if start < 0 else start))
            end = max(-1, min(size - 1, end + size if end < 0 else end))
            count = max(0, (start - end + (-step) - 1) // (-step)) if size else 0
            idx = torch.arange(start, start + step * count, step, device=x.device) if count else \
                torch.zeros(0, dtype=torch.long, device=x.device)
            x = x.index_select(axis, idx)
    return x


@register("Constant", since=1)
def constant(*, ctx, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             sparse_value=None, value_string=None, value_strings=None):
    return ctx.promote(_constant(value, sparse_value, value_float, value_floats, value_int, value_ints))


def _constant(value, sparse_value, value_float, value_floats, value_int, value_ints):
    if value is not None:
        return to_torch(value)
    if sparse_value is not None:
        return to_torch(sparse_value)
    if value_float is not None or value_floats is not None:
        return torch.tensor(value_float if value_floats is None else value_floats, dtype=torch.float32)
    if value_int is not None or value_ints is not None:
        return torch.tensor(value_int if value_ints is None else value_ints, dtype=torch.int64)
    raise TypeError("string values have no torch equivalent")


@register("ConstantOfShape", since=9)
def constant_of_shape(shape, *, value, ctx):
    fill = to_torch(value) if value is not None else torch.zeros(1, dtype=torch.float32)
    return ctx.promote(fill.reshape(()).to(shape.device).expand(int_list(shape)).clone())


def _cast(x, dtype, saturate, round_mode):
    if x.dtype == dtype:
        return x
    x = readable(x)
    if dtype in FLOAT8_TYPES.values():
        return to_float8(x, dtype, bool(saturate), round_mode)
    if dtype in SUBBYTE_TYPES.values():
        return to_subbyte(x, dtype)
    return x.to(dtype)


@register("Cast", since=6)
def cast(x, *, to, ctx, saturate=1, round_mode="up"):  # saturate: since 19, round_mode: since 24
    return _cast(x, ctx.dtype(to), saturate, round_mode)


@register("CastLike", since=15)
def cast_like(x, like, *, saturate=1, round_mode="up"):
    return _cast(x, like.dtype, saturate, round_mode)


@register("Dropout", since=1)
def dropout_attr(x, *, ratio, ctx, n_outputs, is_test=0, seed=None, consumed_inputs=None):
    return _dropout(x, ratio, ctx.training and not is_test, n_outputs)


@register("Dropout", since=12)
def dropout(x, ratio=None, training_mode=None, *, ctx, n_outputs, seed=None):
    training = bool(training_mode) if training_mode is not None else ctx.training
    return _dropout(x, float(ratio) if ratio is not None else 0.5, training, n_outputs)


def _dropout(x, ratio, training, n_outputs):
    if not training or ratio == 0:
        y, mask = x, torch.ones_like(x, dtype=torch.bool)
    else:
        mask = torch.rand_like(x, dtype=torch.float32) >= ratio
        y = x * mask / (1 - ratio)
    return (y, mask) if n_outputs > 1 else y
