"""Pooling: MaxPool, AveragePool, LpPool, their global forms, MaxUnpool.

Every windowed pool goes through `_padded`: the input is padded explicitly (ONNX pads may be asymmetric
or wider than half the kernel, which torch's `padding=` refuses) plus, in ceil_mode, enough extra cells
at the end for the last window, so the torch kernels then run with padding 0 and floor rounding. This
is how onnxruntime counts too: explicit pad cells count for `count_include_pad`, ceil-mode cells never.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import register
from .padding import explicit_pads, filled, torch_pad

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def output_sizes(in_sizes, kernel, strides, dilations, pads, ceil_mode) -> list[int]:
    """ONNX pool output size; in ceil_mode a last window starting in the end padding is dropped."""
    n, sizes = len(in_sizes), []
    for i, (size, k, s, d) in enumerate(zip(in_sizes, kernel, strides, dilations)):
        span = size + pads[i] + pads[i + n] - d * (k - 1) - 1
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + pads[i]:
            out -= 1
        sizes.append(out)
    return sizes


def _padded(x, pads, extra, value):
    """x padded by ONNX `pads` (value) and then by `extra` cells at each dim's end (value too)."""
    n = len(extra)
    full = list(pads[:n]) + [p + e for p, e in zip(pads[n:], extra)]
    return F.pad(x, torch_pad(full), value=value) if any(full) else x


def _geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode):
    n = len(kernel_shape)
    strides, dilations = filled(strides, n), filled(dilations, n)
    in_sizes = list(x.shape[2:])
    pads = explicit_pads(auto_pad, pads, in_sizes, kernel_shape, strides, dilations)
    out = output_sizes(in_sizes, kernel_shape, strides, dilations, pads, ceil_mode)
    # cells the last window needs beyond the padded input (ceil mode), or too many (floor: negative, 0)
    extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - (i + pads[j] + pads[j + n]))
             for j, (o, s, d, k, i) in enumerate(zip(out, strides, dilations, kernel_shape, in_sizes))]
    return n, strides, dilations, pads, extra


def _window_mean(x, kernel, strides, dilations):
    """Mean over each (dilated) window of an already padded input."""
    n = len(kernel)
    if set(dilations) == {1}:
        return _AVG[n](x, kernel, strides, 0, False, True)
    c = x.shape[1]
    weight = torch.full((c, 1, *kernel), 1.0 / math.prod(kernel), dtype=x.dtype, device=x.device)
    return _CONV[n](x, weight, None, strides, 0, dilations, c)


@register("MaxPool", since=1)
def max_pool(x, *, auto_pad, ceil_mode=0, dilations=None, kernel_shape, pads, storage_order=0, strides,
             n_outputs):
    n, strides, dilations, pads, extra = _geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    xp = _padded(x, pads, extra, float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min)
    if n_outputs == 1:
        return _MAX[n](xp, kernel_shape, strides, 0, dilations)
    y, idx = _MAX[n](xp, kernel_shape, strides, 0, dilations, return_indices=True)
    return y, _onnx_indices(idx, x.shape, xp.shape, pads, storage_order)


def _onnx_indices(idx, in_shape, padded_shape, pads, storage_order):
    """torch's per-plane indices into the padded input -> ONNX's indices into the whole input tensor
    (N, C and the spatial dims flattened together, row-major or, storage_order 1, column-major)."""
    n = len(in_shape) - 2
    coords, rest = [], idx
    for size in reversed(padded_shape[2:]):
        coords.insert(0, rest % size)
        rest = rest // size
    coords = [c - p for c, p in zip(coords, pads[:n])]
    sizes = list(in_shape[2:])
    if storage_order:  # column-major over the spatial dims: the first varies fastest
        flat, stride = torch.zeros_like(idx), 1
        for c, size in zip(coords, sizes):
            flat, stride = flat + c * stride, stride * size
    else:
        flat = torch.zeros_like(idx)
        for c, size in zip(coords, sizes):
            flat = flat * size + c
    planes = torch.arange(in_shape[0] * in_shape[1], device=idx.device).reshape(in_shape[0], in_shape[1], *[1] * n)
    return flat + planes * math.prod(sizes)


@register("AveragePool", since=1)
def average_pool(x, *, auto_pad, ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape, pads, strides):
    n, strides, dilations, pads, extra = _geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    # mean over all cells / share of cells that count: padding zeros add nothing to the sum
    total = _window_mean(_padded(x, pads, extra, 0.0), kernel_shape, strides, dilations)
    if not any(pads) and not any(extra):
        return total
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    counted = F.pad(ones, torch_pad(pads), value=float(count_include_pad)) if any(pads) else ones
    counted = _padded(counted, [0] * (2 * n), extra, 0.0)
    return total / _window_mean(counted, kernel_shape, strides, dilations)


@register("LpPool", since=1)
def lp_pool(x, *, auto_pad, ceil_mode=0, dilations=None, kernel_shape, p, pads, strides):
    # (sum |x|^p)^(1/p) over each window; padding contributes zeros.
    n, strides, dilations, pads, extra = _geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    powered = _padded(x.abs() ** p, pads, extra, 0.0)
    return (_window_mean(powered, kernel_shape, strides, dilations) * math.prod(kernel_shape)) ** (1.0 / p)


@register("GlobalAveragePool", since=1)
def global_average_pool(x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool", since=1)
def global_max_pool(x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalLpPool", since=1)
def global_lp_pool(x, *, p):
    return (x.abs() ** p).sum(dim=tuple(range(2, x.dim())), keepdim=True) ** (1.0 / p)


@register("MaxUnpool", since=9)
def max_unpool(x, indices, output_shape=None, *, kernel_shape, pads, strides):
    # Scatter each value to its (whole-tensor) flat index in a zero tensor of the output shape.
    n = len(kernel_shape)
    strides, pads = filled(strides, n), filled(pads, 2 * n, 0)
    if output_shape is not None:
        shape = [int(v) for v in output_shape.tolist()]
    else:
        shape = list(x.shape[:2]) + [(i - 1) * s + k - pads[j] - pads[j + n]
                                     for j, (i, s, k) in enumerate(zip(x.shape[2:], strides, kernel_shape))]
    out = torch.zeros(math.prod(shape), dtype=x.dtype, device=x.device)
    return out.scatter(0, indices.reshape(-1).long(), x.reshape(-1)).reshape(shape)
