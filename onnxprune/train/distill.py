"""Label-free recovery (`train --teacher`): the pruned model learns its original's outputs.

The teacher is the original file's twin, frozen (eval mode, no gradients), on the student's device and,
under torchrun, on every process; both see the same batch. The loss is summed over samples, like the
labelled objective, output by output (graph/outputs.py says what each output is):
- class scores: T^2 * KL(teacher || student) of the softened distributions (Hinton et al. 2015),
  from logits, probabilities or log-probabilities alike; an output of class scores per position
  ([N, T, C]: a recognizer's per-timestep characters) is one distribution per position, its KL
  averaged over the positions of a sample;
- an output made by a Sigmoid (a detector's map, multi-label scores): the mean per-element KL between
  the teacher's and the student's Bernoulli distributions. Squared error there vanishes where the
  student's Sigmoid saturates (its gradient carries p(1-p)); the KL's gradient at the Sigmoid's
  input is p - q, so a saturated wrong pixel still learns;
- any other float output: the per-sample mean squared error divided by the teacher output's variance
  over the batch, so outputs of different scales weigh alike.
`weights` scales each output's term (`--loss-weights`; 1 each by default, 0 leaves an output out).
`alpha` mixes in the labelled cross-entropy where labels exist: (1 - alpha) * distillation + alpha * CE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .loop import Objective, first_output


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _log_probs(x: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """[N, positions, C] log-probabilities, softened by `temperature` (one position for [N, C])."""
    x = x.float().reshape(x.shape[0], -1, x.shape[-1])
    if kind == "probs":
        x = x.clamp_min(1e-12).log()
    return F.log_softmax(x / temperature, dim=-1)


def _bernoulli_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Per element KL(Bernoulli(q) || Bernoulli(p)), probabilities clamped off 0 and 1 (float32)."""
    eps = 1e-7
    q, p = teacher.float().clamp(eps, 1 - eps), student.float().clamp(eps, 1 - eps)
    return q * (q.log() - p.log()) + (1 - q) * ((1 - q).log() - (1 - p).log())


@dataclass
class Distillation:
    kinds: Sequence[str]  # per graph output, in order: "logits" | "probs" | "log_probs" | "bernoulli" | "values"
    temperature: float = 1.0
    alpha: float = 0.0
    labelled: Objective | None = None
    weights: Sequence[float] | None = None  # per graph output (None: 1 each)

    def __call__(self, student, teacher, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=y.device)
        weights = self.weights or [1.0] * len(self.kinds)
        for s, t, kind, weight in zip(_as_tuple(student), _as_tuple(teacher), self.kinds, weights):
            if not s.is_floating_point() or weight == 0:
                continue
            if kind == "bernoulli":
                term = _bernoulli_kl(t, s).reshape(s.shape[0], -1).mean(1).sum()
            elif kind == "values":
                per_sample = (s.float() - t.float()).pow(2).reshape(s.shape[0], -1).mean(1)
                term = per_sample.sum() / (t.float().var() + 1e-12)
            else:
                lt = _log_probs(t, kind, self.temperature)
                ls = _log_probs(s, kind, self.temperature)
                kl = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1).mean(1)
                term = self.temperature ** 2 * kl.sum()
            total = total + weight * term
        if self.alpha > 0 and self.labelled is not None:
            return (1 - self.alpha) * total + self.alpha * self.labelled(first_output(student), y)
        return total
