"""Conv and ConvTranspose."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register
from .padding import explicit_pads, filled, symmetric, torch_pad

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@register("Conv", since=1)
def conv(x, w, b=None, *, auto_pad, dilations, group, kernel_shape, pads, strides):
    n = w.dim() - 2
    kernel = kernel_shape or list(w.shape[2:])
    strides, dilations = filled(strides, n), filled(dilations, n)
    pad = explicit_pads(auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    same = symmetric(pad)
    if same is None:
        x, same = F.pad(x, torch_pad(pad)), [0] * n
    return _CONV[n](x, w, b, strides, same, dilations, group)


@register("ConvTranspose", since=1)
def conv_transpose(x, w, b=None, *, auto_pad, dilations, group, kernel_shape, output_padding, output_shape,
                   pads, strides):
    n = w.dim() - 2
    kernel = kernel_shape or list(w.shape[2:])
    strides, dilations = filled(strides, n), filled(dilations, n)
    out_pad = filled(output_padding, n, 0)
    in_sizes = x.shape[2:]
    if output_shape:  # pads follow from the requested size (ONNX spec formula)
        pads = []
        total = [s * (i - 1) + o + ((k - 1) * d + 1) - t
                 for s, i, o, k, d, t in zip(strides, in_sizes, out_pad, kernel, dilations, output_shape[-n:])]
        upper = auto_pad != "SAME_LOWER"
        pads = [t // 2 if upper else t - t // 2 for t in total] + [t - t // 2 if upper else t // 2 for t in total]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [s * (i - 1) + o + ((k - 1) * d + 1) - i * s
                 for s, i, o, k, d in zip(strides, in_sizes, out_pad, kernel, dilations)]
        upper = auto_pad == "SAME_UPPER"
        pads = [t // 2 if upper else t - t // 2 for t in total] + [t - t // 2 if upper else t // 2 for t in total]
    else:
        pads = filled(pads, 2 * n, 0)
    y = _CONV_T[n](x, w, b, strides, 0, out_pad, group, dilations)
    # Crop the padding off the full transposed output (pads may be asymmetric or negative).
    index = [slice(None), slice(None)]
    for i in range(n):
        index.append(slice(pads[i], y.shape[2 + i] - pads[i + n]))
    return y[tuple(index)]
