"""The reference SynFlow loop: the paper's algorithm on a plain torch nn.Module, independent of onnxprune.

A test-support module like zoo.py: tests import it as a plain module (`from synflow_reference import
...`; pytest puts tests/ on sys.path), and so do scripts/bench_synflow.py and scripts/bench_zoo.py
(they put tests/ on sys.path themselves). It is what the twin's SynFlow is checked against
(tests/test_prune_synflow.py) and what the benchmarks time onnxprune against:

    reference_synflow(model, shape, density, iterations, *, device="cpu", copy=True)
        -> (masks: {"<module>.weight": bool tensor}, ties: int)
    reference_copy(model) -> nn.Module        the recipe's model (float64, eval, |every tensor|)
    jaccard(a, b) -> float                    overlap of two {name: bool mask} dicts
"""

from __future__ import annotations

import copy as _copy

import numpy as np
import torch
from torch import nn

ONNX_BN_EPS = float(np.float32(1e-5))  # ONNX stores BatchNormalization.epsilon as a float32 attribute


def _reference_model(model: nn.Module, device="cpu", copy: bool = True) -> nn.Module:
    """float64, eval mode, on `device`, BatchNorm's epsilon at the float32 value the ONNX file holds
    (see reference_synflow). A deep copy unless copy=False (then `model` itself is converted)."""
    model = (_copy.deepcopy(model) if copy else model).to(device=device, dtype=torch.float64).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = ONNX_BN_EPS
    return model


@torch.no_grad()
def _linearize(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer made non-negative (Synaptic-Flow's `linearize`); returns the signs."""
    signs = {}
    for name, tensor in model.state_dict().items():  # params and buffers (BN statistics too), sharing storage
        signs[name] = torch.sign(tensor)
        tensor.abs_()
    return signs


@torch.no_grad()
def _nonlinearize(model: nn.Module, signs: dict[str, torch.Tensor]) -> None:
    for name, tensor in model.state_dict().items():
        tensor.mul_(signs[name])


def reference_copy(model: nn.Module) -> nn.Module:
    """The reference recipe's model: float64, eval, |every parameter and buffer|, and BatchNorm's
    epsilon at the float32 value the ONNX file holds (see reference_synflow)."""
    model = _reference_model(model)
    _linearize(model)
    return model


def reference_synflow(model: nn.Module, shape, density: float, iterations: int, *, device="cpu",
                      copy: bool = True) -> tuple[dict[str, torch.Tensor], int]:
    """SynFlow as the paper and its code (Synaptic-Flow: Pruners/pruners.py, prune.py) define it,
    written here on the native torch module, independently of onnxprune.

    Every parameter and buffer made non-negative for each scoring pass and its sign restored after
    (the code's linearize/nonlinearize), eval mode, all-ones input of batch 1 (`shape` excludes the
    batch), float64, scores |θ ⊙ ∂R/∂θ| of the Conv2d/Linear weights with R the sum of the output,
    exponential schedule, and each iteration a kthvalue threshold over ALL scores (pruned ones score
    0) with `score <= threshold` pruned; the masks multiply the weights in place (they only shrink).

    Returns the masks ("<module>.weight" -> bool, in module order) and the threshold ties of the last
    pruning iteration (entries pruned beyond the count by `<=`). The model is deep-copied first unless
    copy=False (the benchmarks, to keep the peak memory that of one model; `model` is then converted
    to float64 on `device` and left masked).

    One deliberate alignment: BatchNorm's epsilon is set to the float32 value the ONNX file holds
    (1e-5 is not a float32). The two nets are then the same function and score bit for bit alike.
    With torch's exact 1e-5 the scores differ by ~2e-12 relative; on these nets the masks measured
    the same either way, but a near-tie flipped early would be amplified by the iterations.
    """
    model = _reference_model(model, device, copy)
    weights = {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    x = torch.ones((1, *shape), dtype=torch.float64, device=device)
    ties = 0
    for k in range(1, iterations + 1):
        with torch.no_grad():
            for n, w in weights.items():
                w.mul_(masks[n])  # the masked layer's weight (masks only shrink, so in place is the same)
        signs = _linearize(model)
        model.zero_grad()
        model(x).sum().backward()
        scores = {n: (w.grad * w).detach().abs() for n, w in weights.items()}
        _nonlinearize(model, signs)
        del signs
        flat = torch.cat([s.reshape(-1) for s in scores.values()])
        prune = int((1.0 - density ** (k / iterations)) * flat.numel())
        if prune >= 1:
            threshold = torch.kthvalue(flat, prune).values
            for n, s in scores.items():
                masks[n].copy_(s > threshold)
            ties = int((flat == threshold).sum()) - 1
        del flat, scores
    return {n: m.bool() for n, m in masks.items()}, ties


def jaccard(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    return inter / union if union else 1.0
