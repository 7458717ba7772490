"""Capture a twin's state before scoring and put it back exactly afterwards, even on exceptions.

Scorers change a lot for a moment: precision, train/eval mode, requires_grad, the parameter values
themselves (SynFlow makes them non-negative), masks. Instead of undoing each change, we keep the
original tensor objects and reinstate them: no copy of the model is made, and the values come back
bit for bit (a float64 -> float32 round trip would not). This only holds if scoring never writes into
the original storage, so sessions replace `.data` with fresh tensors before modifying anything
(`own_data`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from ..twin import Twin


@dataclass
class TwinState:
    float_dtype: torch.dtype
    training: bool
    params: dict[str, tuple[torch.Tensor, bool, torch.Tensor | None]]  # data, requires_grad, grad
    buffers: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]


def capture(twin: Twin) -> TwinState:
    params = {name: (p.data, p.requires_grad, p.grad) for name, p in twin.onnx_parameters().items()}
    buffers = {name: b.data for name, b in twin.onnx_buffers().items()}
    return TwinState(twin.ctx.float_dtype, twin.training, params, buffers, dict(twin.masks()))


@torch.no_grad()
def restore(twin: Twin, state: TwinState) -> None:
    twin.ctx.float_dtype = state.float_dtype
    for name, p in twin.onnx_parameters().items():
        data, requires_grad, grad = state.params[name]
        p.grad = None  # first: a grad of the scoring dtype would clash with the restored data
        p.data = data
        p.requires_grad_(requires_grad)
        p.grad = grad
    for name, b in twin.onnx_buffers().items():
        b.data = state.buffers[name]
    for name in twin.onnx_parameters():
        twin.set_mask(name, state.masks.get(name))  # same dtype and device: the very same tensor
    twin.train(state.training)


@contextlib.contextmanager
def preserved(twin: Twin) -> Iterator[TwinState]:
    """Everything scoring may touch comes back as it was when the block exits, however it exits."""
    state = capture(twin)
    try:
        yield state
    finally:
        restore(twin, state)


def own_data(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """Give `tensor` fresh storage holding `value` (never shared with the captured original)."""
    shared = value.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
    tensor.data = value.clone(memory_format=torch.contiguous_format) if shared else value.contiguous()
