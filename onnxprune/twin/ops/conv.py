"""Conv and ConvTranspose."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import UnsupportedOpError
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
    n = w.dim() - 2  # kernel_shape, when given, equals w's spatial shape
    strides, dilations = filled(strides, n), filled(dilations, n)
    out_pad = filled(output_padding, n, 0)
    # The full transposed convolution (every cell an input reaches), then crop `head` cells at the start
    # and fit the end to the output size: cells beyond the full output (output_padding, a larger
    # output_shape) receive no input, only the bias.
    y = _CONV_T[n](x, w, None, strides, 0, 0, group, dilations)
    full = list(y.shape[2:])
    heads, sizes = _transpose_geometry(auto_pad, pads, output_shape, full, x.shape[2:], strides, out_pad)
    y = F.pad(y, torch_pad([-h for h in heads] + [s - (f - h) for s, f, h in zip(sizes, full, heads)]))
    return y if b is None else y + b.reshape(-1, *[1] * n)


def _transpose_geometry(auto_pad, pads, output_shape, full, in_sizes, strides, out_pad):
    """(cells cropped at the start, output size) per spatial dim, as the spec and onnxruntime compute
    them: a requested output_shape or SAME padding crops the (non-negative) excess of the full output,
    the odd cell at the end for SAME_UPPER, at the start otherwise."""
    n = len(full)
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sizes = list(output_shape[-n:]) if output_shape else [i * s for i, s in zip(in_sizes, strides)]
        totals = [max(0, f + a - t) for f, a, t in zip(full, out_pad, sizes)]
        heads = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        if not output_shape:
            sizes = [f + a - t for f, a, t in zip(full, out_pad, totals)]
        return heads, sizes
    pads = filled(pads, 2 * n, 0)
    return pads[:n], [f + a - pads[i] - pads[i + n] for i, (f, a) in enumerate(zip(full, out_pad))]


@register("ConvInteger", since=10)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad, dilations, group, kernel_shape, pads,
                 strides):
    # (x - x_zp) conv (w - w_zp) accumulated in int32. Computed in float64, which holds every such
    # sum exactly (|products| < 2^16, so 2^37 terms fit in the 53-bit mantissa), then converted.
    xd = x.double() - (x_zero_point.double() if x_zero_point is not None else 0)
    wd = w.double()
    if w_zero_point is not None:
        wd = wd - w_zero_point.double().reshape(-1, *[1] * (w.dim() - 1))
    y = conv(xd, wd, auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
             strides=strides)
    return y.round().to(torch.int32)


@register("DeformConv", since=19)
def deform_conv(x, w, offset, b=None, mask=None, *, dilations, group, kernel_shape, offset_group, pads, strides):
    # torchvision's kernel (2-D only): the same bilinear sampling, zero outside the input. It infers
    # group from w and offset_group from the offset's channels; explicit padding keeps asymmetric pads.
    from torchvision.ops import deform_conv2d

    if x.dim() != 4:
        raise UnsupportedOpError(f"DeformConv on {x.dim() - 2}-D inputs (only 2-D is supported)")
    pads = filled(pads, 4, 0)
    x = F.pad(x, torch_pad(pads)) if any(pads) else x
    return deform_conv2d(x, offset, w, b, stride=tuple(filled(strides, 2)), dilation=tuple(filled(dilations, 2)),
                         mask=mask)
