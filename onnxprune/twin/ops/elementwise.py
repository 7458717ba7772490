"""Elementwise arithmetic: unary and broadcasting binary ops, registered from tables."""

from __future__ import annotations

import torch

from ..registry import add, register

UNARY = {
    "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Sign": torch.sign,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos,
    "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh,
    "Acosh": torch.acosh, "Atanh": torch.atanh, "Erf": torch.erf, "Not": torch.logical_not,
    "IsNaN": torch.isnan, "Round": torch.round,
}

BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul,
    "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor,
    "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
    "LessOrEqual": torch.le,
}

for _op, _fn in {**UNARY, **BINARY}.items():
    add(_op, _fn)


@register("Div")
def div(a, b):
    # ONNX integer division truncates toward zero (C semantics), torch's `/` would return floats.
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


@register("Pow")
def pow_(x, y):
    return torch.pow(x, y.to(x.dtype) if x.is_floating_point() else y).to(x.dtype)


def _folded(fn):
    """A variadic op (Sum, Max, Min) as a left fold of its broadcasting binary form."""
    def handler(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return handler


for _op, _fn in {"Sum": torch.add, "Max": torch.maximum, "Min": torch.minimum}.items():
    add(_op, _folded(_fn))


@register("Mean")
def mean(*xs):
    return _folded(torch.add)(*xs) / len(xs)
