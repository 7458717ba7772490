"""Normalizations: BatchNormalization, LayerNormalization, InstanceNormalization, GroupNormalization, LRN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register


@register("BatchNormalization", since=1)
def batch_norm(x, scale, bias, mean, var, *, epsilon, momentum, ctx, n_outputs, spatial=None, is_test=None,
               consumed_inputs=None, training_mode=None):
    if training_mode and not ctx.training:
        return _batch_norm_node_training(x, scale, bias, mean, var, epsilon, momentum, n_outputs)
    # The twin trains with batch statistics and updates the running buffers in place (torch's rule,
    # unbiased variance); ONNX momentum is the weight of the old value, torch's of the new one.
    # Statistics are read detached: an exporter may tie a running_var to a gamma of equal value, and
    # autograd must not see the in-place update of a tensor that is also a parameter.
    y = F.batch_norm(x, mean.detach(), var.detach(), scale, bias, ctx.training and ctx.batch_statistics,
                     1.0 - momentum if ctx.bn_momentum is None else ctx.bn_momentum, epsilon)
    return (y, mean, var) if n_outputs > 1 else y


def _batch_norm_node_training(x, scale, bias, mean, var, epsilon, momentum, n_outputs):
    """A node with training_mode=1 in an inference twin: the spec's outputs, inputs left untouched
    (batch statistics with the population variance, running statistics as new tensors)."""
    dims = [0] + list(range(2, x.dim()))
    batch_mean, batch_var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
    y = F.batch_norm(x, batch_mean, batch_var, scale, bias, False, 0.0, epsilon)
    if n_outputs == 1:
        return y
    return y, mean * momentum + batch_mean * (1 - momentum), var * momentum + batch_var * (1 - momentum)


@register("InstanceNormalization", since=1)
def instance_norm(x, scale, bias, *, epsilon):
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


def _stashed(x, stash_type):
    """Statistics of float16/bfloat16 inputs in float32 when stash_type is 1 (the schema default)."""
    low = x.dtype in (torch.float16, torch.bfloat16)
    return x.float() if (low and stash_type == 1) else x


@register("LayerNormalization", since=17)
def layer_norm(x, scale, bias=None, *, axis, epsilon, stash_type, n_outputs):
    dims = tuple(range(axis % x.dim(), x.dim()))
    xs = _stashed(x, stash_type)
    mean = xs.mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(((xs - mean) ** 2).mean(dim=dims, keepdim=True) + epsilon)
    y = ((xs - mean) * inv_std).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return (y, mean, inv_std) if n_outputs > 1 else y


@register("RMSNormalization", since=23)
def rms_norm(x, scale, *, axis, epsilon, stash_type):
    dims = tuple(range(axis % x.dim(), x.dim()))
    xs = _stashed(x, stash_type)
    return (xs * torch.rsqrt((xs * xs).mean(dim=dims, keepdim=True) + epsilon)).to(x.dtype) * scale


@register("GroupNormalization", since=18)
def group_norm_18(x, scale, bias, *, epsilon, num_groups, stash_type=1):
    # opset 18: one scale and bias per group (opset 21 made them per channel)
    per_group = x.shape[1] // num_groups
    return group_norm(x, scale.repeat_interleave(per_group), bias.repeat_interleave(per_group),
                      epsilon=epsilon, num_groups=num_groups, stash_type=stash_type)


@register("GroupNormalization", since=21)
def group_norm(x, scale, bias, *, epsilon, num_groups, stash_type):
    return F.group_norm(_stashed(x, stash_type), num_groups, eps=epsilon).to(x.dtype) * _channels(scale, x) \
        + _channels(bias, x)


def _channels(v, x):
    """A per-channel vector shaped to broadcast against NC... input x."""
    return v.reshape(-1, *[1] * (x.dim() - 2))


@register("MeanVarianceNormalization", since=9)
def mean_variance_norm(x, *, axes):
    # the spec's function body: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)
    mean = x.mean(dim=tuple(axes), keepdim=True)
    std = ((x * x).mean(dim=tuple(axes), keepdim=True) - mean * mean).sqrt()
    return (x - mean) / (std + 1e-9)


@register("LpNormalization", since=1)
def lp_norm(x, *, axis, p):
    norm = x.abs().pow(p).sum(dim=axis, keepdim=True).pow(1.0 / p)
    return x / torch.where(norm == 0, torch.ones_like(norm), norm)  # a zero vector stays zero (as ORT)


@register("LRN", since=1)
def lrn(x, *, alpha, beta, bias, size):
    # square sums over channels [c - floor((size-1)/2), c + ceil((size-1)/2)]; torch's
    # local_response_norm centres even windows the other way.
    c = x.shape[1]
    squares = F.pad(x * x, (0, 0) * (x.dim() - 2) + ((size - 1) // 2, size // 2))
    sums = sum(squares[:, i:i + c] for i in range(size))
    return x / (bias + alpha / size * sums) ** beta
