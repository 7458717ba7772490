"""Pooling: MaxPool, AveragePool, the global pools, LpPool."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register
from .padding import explicit_pads, filled, symmetric, torch_pad

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _window(x, kernel_shape, strides, dilations, auto_pad, pads):
    n = len(kernel_shape)
    strides, dilations = filled(strides, n), filled(dilations, n)
    return n, strides, dilations, explicit_pads(auto_pad, pads, x.shape[2:], kernel_shape, strides, dilations)


@register("MaxPool", since=1)
def max_pool(x, *, auto_pad, ceil_mode=0, dilations=None, kernel_shape, pads, storage_order=0, strides,
             n_outputs):
    n, strides, dilations, pad = _window(x, kernel_shape, strides, dilations, auto_pad, pads)
    same = symmetric(pad)
    if same is None or any(2 * p > k for p, k in zip(same, kernel_shape)):
        x, same = F.pad(x, torch_pad(pad), value=float("-inf")), [0] * n
    if n_outputs > 1:
        y, idx = _MAX[n](x, kernel_shape, strides, same, dilations, bool(ceil_mode), return_indices=True)
        return y, idx
    return _MAX[n](x, kernel_shape, strides, same, dilations, bool(ceil_mode))


@register("AveragePool", since=1)
def average_pool(x, *, auto_pad, ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape, pads, strides):
    n, strides, dilations, pad = _window(x, kernel_shape, strides, dilations, auto_pad, pads)
    same = symmetric(pad)
    if same is not None and all(2 * p <= k for p, k in zip(same, kernel_shape)) and set(dilations) == {1}:
        return _AVG[n](x, kernel_shape, strides, same, bool(ceil_mode), bool(count_include_pad))
    # General case: pad explicitly and divide window sums by the count of (real or counted) cells.
    xp = F.pad(x, torch_pad(pad))
    ones = F.pad(torch.ones_like(x[:1, :1]), torch_pad(pad), value=float(count_include_pad))
    total = _AVG[n](xp, kernel_shape, strides, 0, bool(ceil_mode), True)
    count = _AVG[n](ones, kernel_shape, strides, 0, bool(ceil_mode), True)
    return total / count


@register("GlobalAveragePool", since=1)
def global_average_pool(x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool", since=1)
def global_max_pool(x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)
