"""Which twin parameters train, and the masks that keep pruned weights at zero.

Masks come from the file itself: a zero in a prunable weight (a source of twin.weight_uses with role
"weight") is a pruned entry and stays zero, whoever pruned it. Biases are not masked: a zero bias is
indistinguishable from a freshly initialized one.

The twin holds every float initializer as a Parameter, including graph constants that are not weights
in the usual sense: Clip bounds, a Div by 255, a Pow exponent. Those stay fixed. What trains: the
weight-slot sources (Conv/ConvTranspose/Gemm/MatMul weights and biases), the scale and bias of
normalization layers, PRelu slopes, and any other float tensor with more than one entry that receives
a gradient (an Add of a per-channel bias after a MatMul, as tf2onnx writes Dense).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..graph import roles


def masks_from_zeros(twin) -> tuple[int, int]:
    """Mask every prunable weight that holds zeros; returns (kept, total) over prunable weights."""
    params = twin.onnx_parameters()
    names = dict.fromkeys(u.source for u in twin.weight_uses if u.role == "weight" and u.source in params)
    kept = total = 0
    for name in names:
        nonzero = params[name].detach() != 0
        kept += int(nonzero.sum())
        total += nonzero.numel()
        if not bool(nonzero.all()):
            twin.set_mask(name, nonzero)
    return kept, total


def _named_trainables(twin) -> set[str]:
    return {use.source for use in twin.weight_uses} | twin.facts.sources_with_role(*roles.AFFINE)


def freeze_constants(twin, probe: torch.Tensor, outputs: Sequence[int] | None = None) -> list[str]:
    """Set requires_grad=False on parameters that are not trained (see module doc) or that get no
    gradient on `probe` through the `outputs` the objective reads (positions; all by default):
    DistributedDataParallel requires every trained parameter to get one. Returns the frozen names.
    The probe runs in eval mode, so BatchNorm statistics do not move."""
    named = _named_trainables(twin)
    params = twin.onnx_parameters()
    for name, param in params.items():
        param.requires_grad_(name in named or param.numel() > 1)
    was_training = twin.training
    twin.eval()
    try:
        out = twin(*probe) if isinstance(probe, (list, tuple)) else twin(probe)
        out = out if isinstance(out, tuple) else (out,)
        read = [out[k] for k in (range(len(out)) if outputs is None else outputs)]
        read = [o.float().sum() for o in read if o.is_floating_point() and o.requires_grad]
        if read:
            sum(read).backward()
    finally:
        twin.train(was_training)
    frozen = []
    for name, param in params.items():
        if param.grad is None:
            param.requires_grad_(False)
            frozen.append(name)
        param.grad = None
    return frozen
