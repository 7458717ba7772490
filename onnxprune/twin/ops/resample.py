"""Resampling: Resize and Upsample.

Resize is separable: each resized axis maps output position y to a source coordinate x (by
coordinate_transformation_mode), takes the n input samples nearest x (edge-clamped) and sums them
with the mode's coefficients (nearest, linear, cubic; antialiased kernels widen when downsampling).
The per-axis indices and coefficients depend only on sizes and attributes, so they are computed once
per shape in float64 (as onnx's reference does) and cached.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import register
from ..tensors import int_list


def _source_coords(mode, y, scale, in_size, out_size, roi):
    """Source coordinate of each output position, and which positions fall outside (crop modes)."""
    out_real = scale * in_size
    if mode == "align_corners":
        return (np.zeros_like(y) if out_real == 1 else y * (in_size - 1) / (out_real - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "tf_crop_and_resize":
        span = (roi[1] - roi[0]) * (in_size - 1)
        x = np.full_like(y, span / 2) if out_real == 1 else y * span / (out_real - 1)
        x = x + roi[0] * (in_size - 1)
        return x, (x < 0) | (x > in_size - 1)
    if mode == "pytorch_half_pixel":
        return (np.full_like(y, -0.5) if out_real == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":  # centre the (rounded) output on the input's centre
        offset = in_size / 2 * (1 - out_size / out_real)
        return offset + (y + 0.5) / scale - 0.5, None
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _nearest(r, nearest_mode):
    lower = {"round_prefer_floor": r <= 0.5, "round_prefer_ceil": r < 0.5,
             "floor": np.ones_like(r, bool), "ceil": np.zeros_like(r, bool)}[nearest_mode]
    lower = lower & (r != 1)  # an exact source position (ratio 1) takes that sample
    return np.stack([lower, ~lower], -1).astype(np.float64)


def _cubic(r, a):
    s = 1 - r
    return np.stack([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                     ((a + 2) * r - (a + 3)) * r * r + 1,
                     ((a + 2) * s - (a + 3)) * s * s + 1,
                     ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a], -1)


def _cubic_kernel(x, a):
    x = np.abs(x)
    near = (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    far = a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _antialiased(r, scale, support, kernel):
    """Kernel stretched by 1/scale when downsampling, normalized to sum 1."""
    scale = min(scale, 1.0)
    start = int(np.floor(-support / scale) + 1)
    taps = np.arange(start, 2 - start)
    w = kernel((taps[None, :] - r[:, None]) * scale)
    return w / w.sum(-1, keepdims=True)


def _coefficients(r, scale, mode, nearest_mode, a, antialias):
    if mode == "nearest":
        return _nearest(r, nearest_mode)
    if mode == "linear":
        if antialias:
            return _antialiased(r, scale, 1, lambda x: np.clip(1 - np.abs(x), 0, 1))
        return np.stack([1 - r, r], -1)
    if antialias:
        return _antialiased(r, scale, 2, lambda x: _cubic_kernel(x, a))
    return _cubic(r, a)


@functools.lru_cache(maxsize=256)
def _axis_plan(in_size, out_size, scale, roi, coord_mode, mode, nearest_mode, a, antialias, exclude_outside):
    """(indices [out, n], weights [out, n], extrapolated mask [out] or None) for one axis."""
    y = np.arange(out_size, dtype=np.float64)
    x, outside = _source_coords(coord_mode, y, scale, in_size, out_size, roi)
    base = np.floor(x)
    r = np.where(x == base, 1.0, x - base)  # ratio in (0, 1]: prefer the sample left of x
    w = _coefficients(r, scale, mode, nearest_mode, a, antialias)
    n = w.shape[-1]
    # The n samples nearest x (ties to the smaller index), as onnx's reference picks them.
    pad = math.ceil(n / 2)
    xp = x + pad
    p = np.floor(xp).astype(np.int64)
    frac = xp - p
    if n % 2 == 0:
        start = p + np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        start = p + np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    idx = start[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_size), 0.0, w)
        total = w.sum(-1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, in_size - 1), w, outside


def _resize_axis(x, axis, plan, extrapolation_value):
    idx, w, outside = plan
    out, n = idx.shape
    shape = (1,) * axis + (out, n) + (1,) * (x.dim() - axis - 1)
    if np.all(np.count_nonzero(w, axis=1) == 1) and np.all(w.max(axis=1) == 1):
        # nearest: copy the one sample (a weighted sum would turn a neighbour's inf into NaN)
        y = x.index_select(axis, torch.from_numpy(idx[np.arange(out), w.argmax(1)]).to(x.device))
    else:
        gathered = x.index_select(axis, torch.from_numpy(idx.reshape(-1)).to(x.device)).unflatten(axis, (out, n))
        y = (gathered * torch.from_numpy(w).to(x.device, x.dtype).reshape(shape)).sum(axis + 1)
    if outside is not None and outside.any():
        mask = torch.from_numpy(outside).to(x.device).reshape(shape[:axis + 1] + shape[axis + 2:])
        y = torch.where(mask, torch.tensor(extrapolation_value, dtype=y.dtype, device=y.device), y)
    return y


def _targets(x, scales, sizes, axes, policy):
    """Per resized axis: (axis, output size, scale used for coordinates)."""
    rank = x.dim()
    axes = [a % rank for a in axes] if axes else list(range(rank))
    if sizes:
        ratios = [sizes[i] / x.shape[a] for i, a in enumerate(axes)]
        if policy in ("not_larger", "not_smaller"):
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            return [(a, int(scale * x.shape[a] + 0.5), scale) for a in axes]
        return [(a, sizes[i], ratios[i]) for i, a in enumerate(axes)]
    return [(a, int(scales[i] * x.shape[a]), scales[i]) for i, a in enumerate(axes)]


def _resize(x, roi, scales, sizes, *, mode, coordinate_transformation_mode, nearest_mode, cubic_coeff_a,
            exclude_outside, extrapolation_value, antialias, axes, keep_aspect_ratio_policy):
    targets = _targets(x, scales, sizes, axes, keep_aspect_ratio_policy)
    half = len(roi) // 2
    y = x if x.is_floating_point() else x.double()
    for i, (axis, out_size, scale) in enumerate(targets):
        pair = (roi[i], roi[i + half]) if roi else (0.0, 1.0)
        if out_size == y.shape[axis] and math.isclose(scale, 1.0) and pair == (0.0, 1.0):
            continue  # identity along this axis
        plan = _axis_plan(y.shape[axis], out_size, float(scale), pair, coordinate_transformation_mode, mode,
                          nearest_mode, float(cubic_coeff_a), bool(antialias), bool(exclude_outside))
        y = _resize_axis(y, axis, plan, extrapolation_value)
    if not x.is_floating_point():  # integer images: round and saturate, as onnx casts back
        info = torch.iinfo(x.dtype)
        y = y.round().clamp(info.min, info.max).to(x.dtype)
    return y


def _floats(t):
    return [float(v) for v in t.reshape(-1).tolist()] if t is not None else []


@register("Resize", since=11)
def resize(x, roi=None, scales=None, sizes=None, *, mode, coordinate_transformation_mode, nearest_mode,
           cubic_coeff_a, exclude_outside, extrapolation_value, antialias=0, axes=None,
           keep_aspect_ratio_policy="stretch"):  # the last three: attributes since opset 18
    return _resize(x, _floats(roi), _floats(scales), int_list(sizes), mode=mode,
                   coordinate_transformation_mode=coordinate_transformation_mode, nearest_mode=nearest_mode,
                   cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside,
                   extrapolation_value=extrapolation_value, antialias=antialias, axes=axes,
                   keep_aspect_ratio_policy=keep_aspect_ratio_policy)


def _upsample(x, scales, mode):
    """Resize-10 and Upsample: asymmetric coordinates, nearest rounds down (integer scales repeat)."""
    return _resize(x, [], scales, [], mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="floor",
                   cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, antialias=0, axes=None,
                   keep_aspect_ratio_policy="stretch")


@register("Resize", since=10)
def resize_10(x, scales, *, mode):
    return _upsample(x, _floats(scales), mode)


@register("Upsample", since=7)
def upsample_7(x, *, mode, scales):
    return _upsample(x, list(scales), mode)


@register("Upsample", since=9)
def upsample(x, scales, *, mode):
    return _upsample(x, _floats(scales), mode)


# ----- GridSample / AffineGrid ------------------------------------------------------------------------
_GRID_MODES = {"linear": "bilinear", "cubic": "bicubic"}  # opset 20 names -> torch's (= opset 16's)


@register("GridSample", since=16)
def grid_sample(x, grid, *, align_corners, mode, padding_mode):
    return F.grid_sample(x, grid.to(x.dtype), _GRID_MODES.get(mode, mode), padding_mode, bool(align_corners))


@register("AffineGrid", since=20)
def affine_grid(theta, size, *, align_corners):
    return F.affine_grid(theta, int_list(size), bool(align_corners))
