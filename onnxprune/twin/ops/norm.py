"""Normalizations: BatchNormalization, LayerNormalization, InstanceNormalization, GroupNormalization, LRN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register


@register("BatchNormalization", since=1)
def batch_norm(x, scale, bias, mean, var, *, epsilon, momentum, ctx, n_outputs, spatial=None, is_test=None,
               consumed_inputs=None, training_mode=None):
    # The twin trains with batch statistics and updates the running buffers in place (torch's rule,
    # unbiased variance); ONNX momentum is the weight of the old value, torch's of the new one.
    # Statistics are read detached: an exporter may tie a running_var to a gamma of equal value, and
    # autograd must not see the in-place update of a tensor that is also a parameter.
    training = ctx.training or bool(training_mode)
    y = F.batch_norm(x, mean.detach(), var.detach(), scale, bias, training, 1.0 - momentum, epsilon)
    return (y, mean, var) if n_outputs > 1 else y


@register("InstanceNormalization", since=1)
def instance_norm(x, scale, bias, *, epsilon):
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


@register("LayerNormalization", since=17)
def layer_norm(x, scale, bias=None, *, axis, epsilon, stash_type, n_outputs):
    axis = axis % x.dim()
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(((x - mean) ** 2).mean(dim=dims, keepdim=True) + epsilon)
    y = (x - mean) * inv_std * scale
    if bias is not None:
        y = y + bias
    return (y, mean, inv_std) if n_outputs > 1 else y


@register("GroupNormalization", since=21)
def group_norm(x, scale, bias, *, epsilon, num_groups, stash_type):
    return F.group_norm(x, num_groups, scale, bias, epsilon)


@register("LRN", since=1)
def lrn(x, *, alpha, beta, bias, size):
    return F.local_response_norm(x, size, alpha, beta, bias)
