"""Elementwise arithmetic: unary and broadcasting binary ops, registered from tables."""

from __future__ import annotations

import torch

from ..registry import add, register

class _Sqrt(torch.autograd.Function):
    """torch.sqrt whose gradient at 0 is 0, not 0 * inf = NaN: a magnitude sqrt(re^2 + im^2) of a
    silent frame (DNSMOS' in-graph spectrogram) would otherwise turn every gradient above it into NaN.
    The forward is torch.sqrt's, bit for bit."""

    @staticmethod
    def forward(ctx, x):
        out = torch.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.where(out > 0, grad / (2 * out), torch.zeros_like(grad))


UNARY = {
    "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": _Sqrt.apply,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Sign": torch.sign,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos,
    "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh,
    "Acosh": torch.acosh, "Atanh": torch.atanh, "Erf": torch.erf, "Not": torch.logical_not,
    "IsNaN": torch.isnan, "Round": torch.round,
}


def _div(a, b):
    # ONNX integer division truncates toward zero (C semantics), torch's `/` would return floats.
    return a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")


BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div,
    "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor,
    "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
    "LessOrEqual": torch.le,
    "BitwiseAnd": torch.bitwise_and, "BitwiseOr": torch.bitwise_or, "BitwiseXor": torch.bitwise_xor,
}

# torch has few CPU kernels for uint16/32/64 (no add, compare, shift, remainder): compute those in a
# wider signed type and cast back. Exact for uint16/32; uint64 goes through int64, which is exact for
# wrapping +, -, * and for values below 2**63.
_WIDER = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


def unsigned_safe(fn):
    def handler(*xs):
        wide = _WIDER.get(xs[0].dtype)
        if wide is None:
            return fn(*xs)
        out = fn(*(x.to(wide) for x in xs))
        return out if out.dtype == torch.bool else out.to(xs[0].dtype)
    return handler


for _op, _fn in UNARY.items():
    add(_op, _fn)
for _op, _fn in BINARY.items():
    add(_op, unsigned_safe(_fn))
add("BitwiseNot", unsigned_safe(torch.bitwise_not))


@register("Mod", since=10)
def mod(a, b, *, fmod):
    # fmod=0: the result takes the divisor's sign (Python's %, torch.remainder); fmod=1: the dividend's.
    return unsigned_safe(torch.fmod if fmod else torch.remainder)(a, b)


@register("BitShift", since=11)
def bit_shift(x, y, *, direction):
    shift = torch.bitwise_left_shift if direction == "LEFT" else torch.bitwise_right_shift
    return unsigned_safe(shift)(x, y)


@register("IsInf", since=10)
def is_inf(x, *, detect_negative, detect_positive):
    return (torch.isposinf(x) & bool(detect_positive)) | (torch.isneginf(x) & bool(detect_negative))


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
    add(_op, unsigned_safe(_folded(_fn)))


@register("Mean")
def mean(*xs):
    return _folded(torch.add)(*xs) / len(xs)
