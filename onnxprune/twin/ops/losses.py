"""Training losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

torch's nll_loss has ONNX's semantics: per-class weights, an ignored target value, and a "mean" that
divides by the summed weights of the targets not ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register

TORCH_NO_IGNORE = -100  # torch's default; ONNX's "no ignore_index" (targets are class indices >= 0)


def _nll(log_prob, target, weight, ignore_index, reduction):
    ignore = TORCH_NO_IGNORE if ignore_index is None else ignore_index
    return F.nll_loss(log_prob, target.long(), weight, ignore_index=ignore, reduction=reduction)


@register("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(x, target, weight=None, *, ignore_index=None, reduction):
    return _nll(x, target, weight, ignore_index, reduction)


@register("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(x, target, weight=None, *, ignore_index=None, reduction, n_outputs):
    log_prob = torch.log_softmax(x, dim=1)
    loss = _nll(log_prob, target, weight, ignore_index, reduction)
    return (loss, log_prob) if n_outputs > 1 else loss
