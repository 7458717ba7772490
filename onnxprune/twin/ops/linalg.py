"""Linear algebra beyond Gemm/MatMul: Einsum, Det."""

from __future__ import annotations

import functools

import torch

from ..registry import register


@functools.lru_cache(maxsize=None)
def _equation(text: str) -> str:
    return text.replace(" ", "")  # ONNX allows spaces around terms; torch's parser does not


@register("Einsum", since=12)
def einsum(*xs, equation):
    return torch.einsum(_equation(equation), *xs)


@register("Det", since=11)
def det(x):
    return torch.linalg.det(x)
