"""The prune loop: score, keep the schedule's count of the best unpruned entries, repeat.

State between iterations is, per prunable tensor, the flat indices still unpruned ("alive"). It only
shrinks: an iteration scores the alive entries (SynFlow forms no other score), selects among them and
tells the scorer which entries left. Nothing proportional to the whole model is copied per iteration,
and the threshold search only ever sees unpruned scores (see masks.py). The masks set on the twin at
the end are explicit boolean tensors; `kept` is exactly round(total × density).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from ..choices import SCHEDULES, SCOPES
from ..errors import ScoringError, arg
from ..twin import Twin
from .alive import Alive
from .masks import select_pruned
from .scorers import scorer
from .targets import prunable_tensors


@dataclass
class PruneResult:
    masks: dict[str, torch.Tensor]  # bool, one per prunable tensor, same shape
    prunable: list[str]
    total: int  # prunable params
    kept: int  # == round(total * density) exactly
    iterations: int
    seconds: float
    method: str = ""
    per_tensor: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (kept, size)
    # Cost of the loop: seconds per iteration, and of them the scoring pass (for SynFlow one forward +
    # backward of the linearized twin plus the gather of alive gradients); the rest is selection.
    seconds_per_iteration: float = 0.0
    scoring_seconds_per_iteration: float = 0.0
    renormalized: bool = False  # SynFlow's flow left float64's range and was renormalized (linearize.py)


def schedule_fraction(density: float, k: int, iterations: int, schedule: str = "exponential") -> float:
    """Fraction kept after iteration k of N: density**(k/N) (exponential) or 1 - (1-density)·k/N (linear)."""
    if schedule not in SCHEDULES:
        raise ScoringError(f"unknown {arg('schedule')} {schedule!r} (choose from {', '.join(SCHEDULES)})")
    t = k / iterations
    return density ** t if schedule == "exponential" else 1.0 - (1.0 - density) * t


def keep_schedule(total: int, density: float, iterations: int, schedule: str = "exponential") -> list[int]:
    """Kept count after each iteration k = 1..N: density**(k/N) (exponential) or 1 - (1-density)·k/N
    (linear) of `total`, never increasing, the last exactly round(total × density)."""
    counts, previous = [], total
    for k in range(1, iterations + 1):
        fraction = schedule_fraction(density, k, iterations, schedule)
        # Synaptic-Flow prunes int((1 - fraction) * total) entries; following its rounding on the way
        # keeps iterative masks on the reference's trajectory (one weight more or less early on
        # changes every later score).
        previous = min(previous, total - int((1.0 - fraction) * total))
        counts.append(previous)
    counts[-1] = round(total * density)
    return counts


def _check(method: str, density: float, iterations: int | None, scope: str, min_layer_density: float) -> int:
    default_iterations = scorer(method).default_iterations  # checks the method name
    if not 0.0 <= density <= 1.0 or math.isnan(density):
        raise ScoringError(f"{arg('density')} must be in [0, 1] (the fraction kept), got {density}")
    if scope not in SCOPES:
        raise ScoringError(f"unknown {arg('scope')} {scope!r} (choose from {', '.join(SCOPES)})")
    if not 0.0 <= min_layer_density <= 1.0:
        raise ScoringError(f"{arg('min_layer_density')} must be in [0, 1], got {min_layer_density}")
    n = default_iterations if iterations is None else int(iterations)
    if n < 1:
        raise ScoringError(f"{arg('iterations')} must be at least 1, got {iterations}")
    return n


def _shuffled(masks: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """The ablation: same count per tensor, positions at random (a real permutation of each mask)."""
    out = []
    for m in masks:
        perm = torch.randperm(m.numel(), generator=generator).to(m.device)
        out.append(m.reshape(-1)[perm].reshape(m.shape))
    return out


@dataclass
class _Plan:
    """What one prune_twin call works on, checked before any scoring starts."""

    names: list[str]
    sizes: list[int]
    shapes: list[tuple[int, ...]]
    counts: list[int]  # kept after each iteration
    floors: list[int]  # per-tensor minimum kept (min_layer_density)
    alive: Alive

    @property
    def total(self) -> int:
        return sum(self.sizes)


def _plan(twin: Twin, density: float, n_iter: int, schedule: str, prune_bias: bool, exclude: Iterable[str],
          min_layer_density: float) -> _Plan:
    names = prunable_tensors(twin, prune_bias=prune_bias, exclude=exclude)
    if not names:
        quantized = [n.name or n.output[0] for n in twin.model.graph.node if n.op_type == "DequantizeLinear"]
        hint = (f"; weights behind DequantizeLinear ('{quantized[0]}'...) are quantized: prune the float model "
                "before quantizing") if quantized else ""
        raise ScoringError(f"the model has no prunable weights (Conv/ConvTranspose/Gemm/MatMul constants){hint}")
    params = [twin.parameter(n) for n in names]
    sizes, shapes = [p.numel() for p in params], [tuple(p.shape) for p in params]
    total = sum(sizes)
    counts = keep_schedule(total, density, n_iter, schedule)
    if counts[-1] < 1:
        raise ScoringError(f"density {density:.3g} keeps round({total} x {density:.3g}) = 0 of {total} prunable "
                           f"weights: fewer than one weight would remain (compression at most "
                           f"~{math.log10(2 * total):.2f} here)")
    alive = Alive([_unpruned(twin, n) for n in names], sizes, params[0].device)
    if counts[-1] > alive.total:
        now = alive.total / total
        compression = f", compression {-math.log10(now):.3g}" if now > 0 else ""
        raise ScoringError(f"the model already keeps {alive.total} of {total} prunable weights (density {now:.4g}"
                           f"{compression}); density {density:.4g} would keep {counts[-1]}: pruning only removes "
                           f"weights, ask for a density of at most {now:.4g}")
    floors = [min(math.ceil(round(min_layer_density * n, 9)), c) for n, c in zip(sizes, alive.counts)]
    if sum(floors) > counts[-1]:
        raise ScoringError(f"{arg('min_layer_density')} {min_layer_density} needs {sum(floors)} weights but density "
                           f"{density} keeps {counts[-1]}")
    return _Plan(names, sizes, shapes, counts, floors, alive)


def _unpruned(twin: Twin, name: str) -> torch.Tensor | None:
    """Entries still unpruned: not masked, and not exactly zero. A file pruned before stores its pruned
    weights as zeros (no mask), and re-pruning it must count them as pruned (None: all unpruned)."""
    mask, weight = twin.mask(name), twin.parameter(name).detach()
    nonzero = weight != 0
    if mask is not None:
        return nonzero & (mask != 0)
    return None if bool(nonzero.all()) else nonzero


def _iterate(session, plan: _Plan, scope: str, invert: bool, precision: torch.dtype,
             progress: Callable[[int, int], None] | None) -> tuple[float, float]:
    """Run the schedule; returns (loop seconds, of which scoring seconds)."""
    alive = plan.alive
    buffer = torch.empty(alive.size, dtype=precision, device=alive.index.device)  # reused every iteration
    if progress is not None:  # k = 0: the loop starts now, so a progress bar can time iteration 1
        progress(0, len(plan.counts))
    start, scoring = time.perf_counter(), 0.0
    for k, count in enumerate(plan.counts, start=1):
        tick = time.perf_counter()
        scores = session.alive_scores(alive, buffer)  # finite: scorers raise on inf / nan (a device sync)
        scoring += time.perf_counter() - tick
        if invert:  # Synaptic-Flow's v / v²: rank by 1/score; a zero score ranks highest (but below
            scores.reciprocal_().nan_to_num_(posinf=torch.finfo(scores.dtype).max)  # pruned ones' +inf)
        alive.hide_dead(scores)
        pruned = select_pruned(scores, alive.lengths, min(count, alive.total), scope, plan.sizes, plan.floors,
                               alive.counts)
        for j, index in enumerate(alive.remove(pruned)):
            if index.numel():
                session.prune(j, index)
        if progress is not None:
            progress(k, len(plan.counts))
    return time.perf_counter() - start, scoring


def prune_twin(twin: Twin, *, method: str = "synflow", density: float, iterations: int | None = None,
               schedule: str = "exponential", scope: str = "global", prune_bias: bool = False,
               exclude: Iterable[str] = (), min_layer_density: float = 0.0, batches: Iterable[Any] | None = None,
               input_shapes: dict[str, tuple[int, ...]] | None = None, precision: torch.dtype = torch.float64,
               seed: int = 0, shuffle: bool = False, invert: bool = False,
               progress: Callable[[int, int], None] | None = None, input_values: dict | None = None,
               train_mode: bool = False) -> PruneResult:
    """Prune the twin's prunable tensors to `density` (fraction kept) and set the masks on it.

    Entries an existing mask already prunes, and weights that are exactly zero (an already pruned
    file), stay pruned and count as pruned; a density above what is left is refused. Everything else
    about the twin is left as it was. Extra keywords beyond the contract: `input_values` (SynFlow:
    explicit tensors for non-float inputs), `train_mode` (data scorers run the twin in train mode,
    e.g. BatchNorm on batch statistics; default eval, as Synaptic-Flow). `progress(k, n)` is called
    with k = 0 when the loop starts and after each iteration k = 1..n.
    """
    start = time.perf_counter()
    n_iter = _check(method, density, iterations, scope, min_layer_density)
    plan = _plan(twin, density, n_iter, schedule, prune_bias, exclude, min_layer_density)
    generator = torch.Generator().manual_seed(seed)
    with scorer(method)(twin, plan.names, batches=batches, input_shapes=input_shapes, input_values=input_values,
                        precision=precision, generator=generator, train_mode=train_mode) as session:
        loop_seconds, scoring = _iterate(session, plan, scope, invert, precision, progress)
        renormalized = bool(getattr(session, "renormalized", False))
    masks = plan.alive.masks(plan.sizes, plan.shapes)
    if shuffle:
        masks = _shuffled(masks, generator)
    masks = dict(zip(plan.names, masks))
    for name, mask in masks.items():
        twin.set_mask(name, mask)
    per_tensor = {n: (c, size) for n, c, size in zip(plan.names, plan.alive.counts, plan.sizes)}
    return PruneResult(masks, plan.names, plan.total, plan.alive.total, n_iter, time.perf_counter() - start,
                       method, per_tensor, loop_seconds / n_iter, scoring / n_iter, renormalized)
