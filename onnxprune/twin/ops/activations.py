"""Elementwise activations and Softmax. Names here are the ones SynFlow linearizes (see prune/)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import add, register

for _op, _fn in {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
                 "Softsign": F.softsign, "Mish": F.mish}.items():
    add(_op, _fn)


@register("LeakyRelu")
def leaky_relu(x, *, alpha):
    return F.leaky_relu(x, alpha)


@register("PRelu")
def prelu(x, slope):
    return torch.where(x < 0, x * slope, x)


@register("Elu")
def elu(x, *, alpha):
    return F.elu(x, alpha)


@register("Selu")
def selu(x, *, alpha, gamma):
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@register("Celu")
def celu(x, *, alpha):
    return F.celu(x, alpha)


@register("HardSigmoid")
def hard_sigmoid(x, *, alpha, beta):
    return torch.clamp(alpha * x + beta, 0, 1)


@register("HardSwish")
def hard_swish(x):
    # alpha = 1/6 exactly, as the spec's formula says (its function body's float32 attribute rounds it).
    return x * torch.clamp(x / 6 + 0.5, 0, 1)


@register("Swish", since=24)
def swish(x, *, alpha):
    return x * torch.sigmoid(alpha * x)


@register("Shrink", since=9)
def shrink(x, *, bias, lambd):
    # integer inputs are allowed: compute in their type (bias and lambd are whole there by contract)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x))).to(x.dtype)


@register("Softplus")
def softplus(x):
    return torch.log1p(torch.exp(-x.abs())) + torch.clamp(x, min=0)  # stable log(1 + e^x)


@register("Gelu", since=20)
def gelu(x, *, approximate):
    return F.gelu(x, approximate=approximate)


@register("ThresholdedRelu")
def thresholded_relu(x, *, alpha):
    return torch.where(x > alpha, x, torch.zeros_like(x))


@register("Clip", since=1)
def clip_attrs(x, *, min, max):  # noqa: A002 (ONNX attribute names)
    return torch.clamp(x, min, max)


@register("Clip", since=11)
def clip(x, lo=None, hi=None):
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return x


def _coerced(fn):
    """Softmax-family before opset 13: flatten to 2-D at `axis`, apply over the tail, reshape back."""
    def handler(x, *, axis):
        shape = x.shape
        axis = axis % x.dim() if x.dim() else 0
        flat = x.reshape(math.prod(shape[:axis]), -1)
        return fn(flat, dim=-1).reshape(shape)
    return handler


for _op, _fn in {"Softmax": torch.softmax, "LogSoftmax": torch.log_softmax}.items():
    add(_op, _coerced(_fn), since=1)
    add(_op, lambda x, *, axis, _fn=_fn: _fn(x, dim=axis), since=13)


def _hardmax(x, *, dim):
    # the first maximum wins (ties), as torch.argmax and the spec both do
    return F.one_hot(x.argmax(dim=dim), x.shape[dim]).movedim(-1, dim).to(x.dtype)


add("Hardmax", _coerced(_hardmax), since=1)


@register("Hardmax", since=13)
def hardmax(x, *, axis):
    return _hardmax(x, dim=axis)


# ----- onnxruntime's contrib GELU family (com.microsoft), found in graphs ORT optimized and saved. -------
# onnx has no schema for these, so no defaults are filled in: the handlers state onnxruntime's.
MS = "com.microsoft"


@register("Gelu", domain=MS)
def ms_gelu(x):
    return F.gelu(x)


@register("BiasGelu", domain=MS)
def ms_bias_gelu(x, bias):
    return F.gelu(x + bias)


@register("FastGelu", domain=MS)
def ms_fast_gelu(x, bias=None):
    return F.gelu(x if bias is None else x + bias, approximate="tanh")


@register("QuickGelu", domain=MS)
def ms_quick_gelu(x, *, alpha=1.702):
    return x * torch.sigmoid(alpha * x)
