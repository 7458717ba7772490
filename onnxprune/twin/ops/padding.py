"""Padding shared by Conv, ConvTranspose and the pools: ONNX pads/auto_pad -> torch F.pad order."""

from __future__ import annotations

import math


def explicit_pads(auto_pad: str, pads, in_sizes, kernel, strides, dilations) -> list[int]:
    """ONNX [x1_begin, x2_begin, ..., x1_end, x2_end, ...] for the spatial dims."""
    n = len(in_sizes)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins + ends
    if auto_pad == "VALID" or not pads:
        return [0] * (2 * n)
    return list(pads)


def torch_pad(pads: list[int]) -> list[int]:
    """ONNX begin/end layout -> F.pad's (last dim first, begin, end) layout."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def symmetric(pads: list[int]) -> list[int] | None:
    """Per-dim padding when begin == end everywhere (torch can pad inside the kernel call)."""
    n = len(pads) // 2
    return list(pads[:n]) if list(pads[:n]) == list(pads[n:]) else None


def filled(values, n: int, default: int = 1) -> list[int]:
    return list(values) if values else [default] * n
