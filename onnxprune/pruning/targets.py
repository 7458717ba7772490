"""Which tensors are prunable: the constant sources of Conv / ConvTranspose / Gemm / MatMul weights."""

from __future__ import annotations

import fnmatch
from typing import Iterable

from ..twin import Twin


def prunable_tensors(twin: Twin, *, prune_bias: bool = False, exclude: Iterable[str] = ()) -> list[str]:
    """Source tensor names, in graph order, each once (a tensor tied to several slots is one entry).

    Weights are Conv/ConvTranspose W, Gemm B (and A when constant), MatMul's constant operand; biases
    join only with `prune_bias`. A name matching any fnmatch glob in `exclude` stays dense. Only float
    parameters qualify (an integer, e.g. quantized, weight has no gradient and no score).
    """
    params = twin.onnx_parameters()
    roles = ("weight", "bias") if prune_bias else ("weight",)
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    names: list[str] = []
    for use in twin.weight_uses:
        if use.role in roles and use.source in params and use.source not in names:
            if not any(fnmatch.fnmatchcase(use.source, pattern) for pattern in patterns):
                names.append(use.source)
    return names
