"""Gemm, MatMul."""

from __future__ import annotations

import torch

from ..registry import register


@register("Gemm", since=1)
def gemm(a, b, c=None, *, alpha, beta, transA, transB, broadcast=None):
    a = a.transpose(0, 1) if transA else a
    b = b.transpose(0, 1) if transB else b
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


@register("MatMul", since=1)
def matmul(a, b):
    return torch.matmul(a, b)
