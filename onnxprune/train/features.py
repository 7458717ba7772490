"""Layer-by-layer recovery (`train --teacher --feature-weight W`): each pruned layer learns the
original's output at the channels it kept.

A channel-pruned file records which positions each step removed (structured/record.py), so the
original's output of a Conv, Gemm or MatMul, restricted to the output channels the pruned layer kept,
is exactly what that layer computed before pruning: a target per layer, not one at the end (FitNets,
Romero et al. 2015; the per-layer reconstruction of channel pruning, He et al. 2017, learnt end to
end). A model with a sparse output (a detector's map is mostly background) gets a dense signal
through every layer. Each layer's term is the per-sample mean squared error over the teacher's
variance at that layer (scale-free, summed over samples like the output terms), averaged over layers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import onnx
import torch

from ..errors import OnnxPruneError, arg
from ..graph import attr
from ..structured.record import compose, kept_index, recorded
from ..structured.tensors import resizable

# per op: (weight input, weight axis that is the output channel, output axis it becomes)
_LAYERS = {"Conv": lambda node: (1, 0, 1), "MatMul": lambda node: (1, 1, -1),
           "Gemm": lambda node: (1, 0 if attr(node, "transB", 0) else 1, 1)}


@dataclass
class Tap:
    name: str  # the layer's output, named alike in both graphs
    axis: int  # its channel axis
    kept: torch.Tensor  # the teacher's positions along `axis` that the student computes


def layer_taps(student: onnx.ModelProto, teacher: onnx.ModelProto) -> list[Tap]:
    """A tap per Conv / Gemm / MatMul of the student whose weight is a constant of both files, with the
    channels the student's record (past the teacher's own) says it kept."""
    mine, theirs = recorded(student), recorded(teacher)
    if mine[:len(theirs)] != theirs:
        raise OnnxPruneError(f"layer targets ({arg('feature_weight')}, {arg('reconstruct')}) need the teacher the "
                             f"model was pruned from: the model's record of removed channels does not continue "
                             f"the teacher's")
    weights = resizable(teacher.graph)
    entries = compose(mine[len(theirs):], {n: v.shape for n, v in weights.items()}, lambda n: n)
    by_tensor: dict[str, list[dict]] = {}
    for e in entries:
        by_tensor.setdefault(e["tensor"], []).append(e)
    theirs_out = {n.output[0]: n for n in teacher.graph.node if n.output}
    taps = []
    for node in student.graph.node:
        other = theirs_out.get(node.output[0]) if node.output else None
        if node.op_type not in _LAYERS or other is None or other.op_type != node.op_type:
            continue
        w_input, w_axis, out_axis = _LAYERS[node.op_type](node)
        weight = node.input[w_input] if len(node.input) > w_input else ""
        if weight not in weights or list(other.input)[w_input:w_input + 1] != [weight] or weights[weight].ndim < 2:
            continue
        kept = kept_index(weights[weight].shape, by_tensor.get(weight, []))[w_axis]
        taps.append(Tap(node.output[0], out_axis, torch.from_numpy(np.asarray(kept, np.int64))))
    return taps


def wrap_steps(names: set[str], wrap) -> Callable:
    """A `Twin.overridden` change giving each step whose first output is in `names` the handler
    `wrap(name, handler in force)` returns."""
    return lambda step: wrap(step.outputs[0], step.fn) if step.outputs[0] in names else None


class FeatureMatch:
    """The layer terms of the loss: tap both twins' layers while `tapped`, then `loss()` after each pair
    of forwards (the student's and the teacher's on the same batch)."""

    def __init__(self, taps: list[Tap], weight: float):
        self.taps, self.weight = taps, weight
        self.student: dict[str, torch.Tensor] = {}
        self.teacher: dict[str, torch.Tensor] = {}
        self.checked = False

    @contextlib.contextmanager
    def tapped(self, student, teacher) -> Iterator["FeatureMatch"]:
        with student.overridden(self._tap(self.student), nested=False), \
                teacher.overridden(self._tap(self.teacher), nested=False):
            yield self

    def _tap(self, store: dict[str, torch.Tensor]):
        def record(name, fn):
            def tapped(*inputs):
                out = fn(*inputs)
                store[name] = out[0] if isinstance(out, tuple) else out
                return out
            return tapped
        return wrap_steps({t.name for t in self.taps}, record)

    def loss(self) -> torch.Tensor:
        """weight * the mean over layers of sum over samples of (mean squared error / teacher variance)."""
        if not self.checked:  # a layer whose shapes disagree (a graph the record does not describe) is left out
            self.taps = [t for t in self.taps if (pair := self._pair(t))[0].shape == pair[1].shape]
            self.checked = True
            if not self.taps:
                raise OnnxPruneError(f"{arg('feature_weight')}: no layer of the model matches the teacher's")
        terms = []
        for tap in self.taps:
            s, t = self._pair(tap)
            per_sample = (s.float() - t.float()).pow(2).reshape(s.shape[0], -1).mean(1)
            terms.append(per_sample.sum() / (t.float().var() + 1e-12))
        return self.weight * torch.stack(terms).mean()

    def _pair(self, tap: Tap) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.teacher[tap.name]
        return self.student[tap.name], t.index_select(tap.axis % t.dim(), tap.kept.to(t.device))
