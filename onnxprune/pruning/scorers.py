"""Scoring methods, one small class each, behind one interface.

A scorer is a context manager over a twin (a "session"): entering it prepares the twin (precision,
mode, masks, for SynFlow the non-negative parameters and linearized ops), leaving it puts everything
back exactly, however it is left (see state.py). Inside, `scores()` returns one score tensor per
prunable tensor and `prune(j, idx)` removes entries from later scoring, so an iterative loop pays the
preparation once. `score(twin, method, ...)` is the one-shot form: {onnx_name: score tensor}.

Higher scores are kept. Scores of pruned entries are meaningless (the loop never reads them).

| method   | score                      | data | notes                                          |
|----------|----------------------------|------|------------------------------------------------|
| synflow  | abs(θ ⊙ ∂R/∂θ)             | no   | R = sum of float outputs, |θ|, all-ones input  |
| mag      | abs(θ)                     | no   |                                                |
| rand     | uniform [0, 1)             | no   | seeded                                         |
| snip     | abs(θ ⊙ g) / Σ abs(θ ⊙ g)  | yes  | Lee et al. 2019                                |
| grasp    | θ ⊙ Hg (signed)            | yes  | Wang et al. 2020, temperature 200              |
| loss     | abs(θ ⊙ g)                 | yes  | Lubana & Dick 2021, loss preservation          |
| gradnorm | abs(θ ⊙ Hg)                | yes  | Lubana & Dick 2021, gradient-norm preservation |

GraSP's sign: the paper removes the weights with the largest S(−θ) = −θ ⊙ Hg (removing them reduces
the gradient norm least, or increases it). Keeping the smallest −θ ⊙ Hg is keeping the largest θ ⊙ Hg,
so the score here is θ ⊙ Hg, signed, ranked like every other score (the Synaptic-Flow code does the
same: `p.grad * p.data`, top kept). Taking its absolute value would be a different method.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Sequence

import torch

from .. import choices
from ..errors import ScoringError, arg
from ..graph import roles
from ..twin import Twin
from .alive import Alive
from .inputs import batch_loss, float_outputs, materialize, ones_feeds
from .linearize import linearized, renormalized
from .state import own_data, preserved
from .targets import prunable_tensors

GRASP_TEMPERATURE = 200.0  # GraSP divides logits by 200 (the paper's code); Lubana & Dick reuse it
GRASP_EPS = 1e-10


class Scorer:
    """A scoring session over `names` (prunable tensors) of `twin`; see the module docstring."""

    name = ""
    needs_data = False
    default_iterations = 1

    def __init__(self, twin: Twin, names: Sequence[str], *, batches: Iterable[Any] | None = None,
                 input_shapes: dict | None = None, input_values: dict | None = None,
                 precision: torch.dtype = torch.float64, generator: torch.Generator | None = None,
                 train_mode: bool = False):
        if precision not in (torch.float32, torch.float64):
            raise ScoringError("precision must be torch.float32 or torch.float64")
        self.twin, self.names = twin, list(names)
        self.batches = materialize(batches, self.name) if self.needs_data else None
        self.input_shapes, self.input_values = input_shapes, input_values
        self.precision, self.train_mode = precision, train_mode
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self._stack: contextlib.ExitStack | None = None

    # ----- session -------------------------------------------------------------------------------
    def __enter__(self) -> "Scorer":
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(preserved(self.twin))
        try:
            self.setup()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @torch.no_grad()
    def setup(self) -> None:
        """Precision, mode, gradients only where scored, masks of our own (the loop edits them)."""
        twin = self.twin
        twin.set_precision(self.precision)
        twin.train(self.train_mode)
        for name, p in twin.onnx_parameters().items():
            p.requires_grad_(name in self.names)
        for b in twin.onnx_buffers().values():
            if b.is_floating_point():  # train mode updates BN statistics in place: not the originals
                own_data(b, b.data)
        self.params = [twin.parameter(n) for n in self.names]
        for name, p in zip(self.names, self.params):
            current = twin.mask(name)
            start = torch.ones_like(p) if current is None else current.clone(memory_format=torch.contiguous_format)
            twin.set_mask(name, start)
        self.masks = [twin.mask(n) for n in self.names]

    @torch.no_grad()
    def prune(self, j: int, flat_index: torch.Tensor) -> None:
        """Entries `flat_index` of tensor j are pruned from now on."""
        self.masks[j].view(-1)[flat_index] = 0

    def scores(self) -> list[torch.Tensor]:
        """One score tensor per prunable tensor, shaped like it."""
        return self.dense()

    def alive_scores(self, alive: Alive, out: torch.Tensor) -> torch.Tensor:
        """Scores of the entries `alive` lists (pruned ones still listed score anything: the loop
        hides them), concatenated into `out`; returns a view of it."""
        for d, a, dst in zip(self.dense(), alive.segments(), alive.segments(out)):
            gather(d.detach().reshape(-1), a, dst)
        return out[:alive.size]

    def dense(self) -> list[torch.Tensor]:
        raise NotImplementedError

    # ----- helpers -------------------------------------------------------------------------------
    def grads(self, value: torch.Tensor, create_graph: bool = False) -> list[torch.Tensor]:
        if not value.requires_grad:  # e.g. a graph whose output is its input: every score would be 0
            raise ScoringError(f"{self.name}: the model's outputs do not depend on its prunable weights")
        grads = torch.autograd.grad(value, self.params, allow_unused=True, create_graph=create_graph)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    def loss(self, batch: Any, temperature: float = 1.0) -> torch.Tensor:
        return batch_loss(self.twin, batch, self.params[0].device, temperature=temperature)

    def gradient(self, temperature: float = 1.0) -> list[torch.Tensor]:
        """Sum over batches of the loss gradient (each batch's loss is its mean)."""
        total = [torch.zeros_like(p) for p in self.params]
        for batch in self.batches:
            for t, g in zip(total, self.grads(self.loss(batch, temperature))):
                t.add_(g.detach())
        return total

    def hessian_gradient(self, temperature: float) -> list[torch.Tensor]:
        """Hg: the gradient of stop(g)·g, with g the summed loss gradient (GraSP's recipe)."""
        stopped = self.gradient(temperature)
        total = [torch.zeros_like(p) for p in self.params]
        for batch in self.batches:
            g = self.grads(self.loss(batch, temperature), create_graph=True)
            dot = sum((s * gi).sum() for s, gi in zip(stopped, g))
            if dot.requires_grad:
                for t, h in zip(total, self.grads(dot)):
                    t.add_(h.detach())
        return total

    def theta(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.params]


def gather(src: torch.Tensor, index: torch.Tensor, dst: torch.Tensor) -> None:
    """dst = src[index] without allocating (unless the dtypes differ, e.g. a float16 tensor)."""
    if src.dtype == dst.dtype:
        torch.index_select(src, 0, index, out=dst)
    else:
        dst.copy_(src.index_select(0, index))


def _finite(scores: list[torch.Tensor], method: str, precision: torch.dtype) -> list[torch.Tensor]:
    """Scores unchanged, or ScoringError on inf/nan (one float64 sum per tensor: a single pass)."""
    if not all(bool(torch.isfinite(s.sum(dtype=torch.float64))) for s in scores):
        dtype = str(precision).replace("torch.", "")
        hint = f"; score in float64 ({arg('precision')} float64)" if precision != torch.float64 else ""
        raise ScoringError(f"{method} scores are not finite (inf or nan) in {dtype}{hint}")
    return scores


class Magnitude(Scorer):
    name = "mag"

    def dense(self):
        return _finite([t.abs() for t in self.theta()], self.name, self.precision)


class Random(Scorer):
    name = "rand"

    def dense(self):
        return [torch.rand(p.shape, generator=self.generator, dtype=p.dtype).to(p.device) for p in self.params]


class LossPreservation(Scorer):
    """|θ ⊙ g|: first-order change of the loss when a weight is removed (SNIP without normalization)."""

    name = "loss"
    needs_data = True

    def dense(self):
        return _finite([(t * g).abs() for t, g in zip(self.theta(), self.gradient())], self.name, self.precision)


class SNIP(LossPreservation):
    """|θ ⊙ g| normalized to sum 1 over all prunable weights, as SNIP's connection sensitivity."""

    name = "snip"

    def dense(self):
        scores = super().dense()
        total = sum(s.sum() for s in scores)
        return [s / total for s in scores] if total > 0 else scores


class GraSP(Scorer):
    """θ ⊙ Hg, signed (see the module docstring for the sign), normalized by |Σ| as GraSP's code."""

    name = "grasp"
    needs_data = True

    def dense(self):
        hg = self.hessian_gradient(GRASP_TEMPERATURE)
        scores = _finite([t * h for t, h in zip(self.theta(), hg)], self.name, self.precision)
        norm = abs(sum(s.sum() for s in scores)) + GRASP_EPS
        return [s / norm for s in scores]


class GradNormPreservation(Scorer):
    """|θ ⊙ Hg|: change of the gradient norm when a weight is removed (Lubana & Dick's measure,
    with GraSP's temperature as their code uses)."""

    name = "gradnorm"
    needs_data = True

    def dense(self):
        hg = self.hessian_gradient(GRASP_TEMPERATURE)
        return _finite([(t * h).abs() for t, h in zip(self.theta(), hg)], self.name, self.precision)


class SynFlow(Scorer):
    """Data-free: R = sum of the float outputs of the linearized network with |θ| on an all-ones input.

    Pruned entries are zeroed in the session's own non-negative copies instead of masked, so each
    iteration runs no mask multiplication; only unpruned entries' scores are formed (alive gather).

    In float64, a flow that float64 cannot hold (R or a gradient inf/nan on the first scoring: deep
    attention stacks, recurrences, products of signals) switches the session, for good, to the
    renormalized flow (linearize.py `renormalized`); `renormalized` then is True. Pruning only lowers
    the flow, so a session whose first scoring is finite stays exact. float32 follows the same rule
    within its narrower range (scripts/synflow_precision.py: renormalizing from the start would weigh
    residual branches apart, Jaccard 0.58 against float64 on ResNet-20).
    """

    name = "synflow"
    default_iterations = 100

    @torch.no_grad()
    def setup(self):
        twin = self.twin
        twin.set_precision(self.precision)
        twin.eval()
        stats, selectors = twin.facts.slot_inputs(roles.STAT), _selector_constants(twin)
        for name, p in twin.onnx_parameters().items():
            p.requires_grad_(name in self.names)
            keeps_sign = name in selectors or not bool(torch.isfinite(p.data).all())
            own_data(p, p.data if keeps_sign else p.data.abs())  # the session prunes its own copy
        for name, b in twin.onnx_buffers().items():
            if name in stats:
                own_data(b, b.data.abs())
        self.params = [twin.parameter(n) for n in self.names]
        for name, p in zip(self.names, self.params):
            mask = twin.mask(name)
            if mask is not None:  # fold earlier pruning into our copy; no multiply per forward
                p.data.mul_(mask)
                twin.set_mask(name, None)
        device = self.params[0].device
        self.feeds = ones_feeds(twin, self.input_shapes, self.input_values, device=device)
        self._stack.enter_context(linearized(twin))
        self.renormalized = False
        self._decided = False  # exact or renormalized: settled by the first scoring

    @torch.no_grad()
    def prune(self, j, flat_index):
        self.params[j].data.view(-1)[flat_index] = 0

    def _forward_backward(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = float_outputs(self.twin.run(self.feeds))
        if not outputs:
            raise ScoringError("synflow needs a float output: the model has none")
        r = sum(o.sum() for o in outputs)
        if not bool(torch.isfinite(r)):
            return r, []
        return r, self.grads(r)

    def flow(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """R and ∂R/∂θ for the prunable tensors."""
        r, grads = self._forward_backward()
        if not self._decided:
            self._decided = True
            # the scores' sums, once: a finite gradient times θ may still overflow
            exact = grads and all(bool(torch.isfinite((p.detach() * g).sum(dtype=torch.float64)))
                                  for p, g in zip(self.params, grads))
            if not exact:
                self._stack.enter_context(renormalized(self.twin))
                self.renormalized = True
                r, grads = self._forward_backward()
        if not grads:
            where = _first_non_finite(self.twin, self.feeds)
            raise ScoringError(f"synflow: R is {float(r.detach())} in {str(self.precision).replace('torch.', '')}"
                               f"{where}: the flow is not finite")
        return r, grads

    def dense(self):
        _, grads = self.flow()
        return _finite([(p.detach() * g).abs() for p, g in zip(self.params, grads)], self.name, self.precision)

    def alive_scores(self, alive, out):
        """|θ ⊙ ∂R/∂θ| at the listed entries only: their |θ| ride along with the list (a payload), so
        an iteration gathers just the gradient, into preallocated memory."""
        _, grads = self.flow()
        with torch.no_grad():
            theta = alive.payload("synflow.theta", lambda: self._gathered_theta(alive, out))
            out = out[:alive.size]
            for p, g, a, dst in zip(self.params, grads, alive.segments(), alive.segments(out)):
                if a.numel() == p.numel():
                    dst.copy_(g.reshape(-1))
                else:
                    gather(g.reshape(-1), a, dst)
            out.mul_(theta).abs_()
            return _finite([out], self.name, self.precision)[0]

    def _gathered_theta(self, alive: Alive, like: torch.Tensor) -> torch.Tensor:
        theta = torch.empty(alive.size, dtype=like.dtype, device=like.device)
        for p, a, dst in zip(self.params, alive.segments(), alive.segments(theta)):
            gather(p.detach().reshape(-1), a, dst)
        return theta


def _first_non_finite(twin: Twin, feeds) -> str:
    """", first at node 'NAME' (OP)": where the flow first leaves the finite numbers ("" if nowhere)."""
    found: list = []  # the first NodeProto

    def watch(step):
        fn = step.fn  # the handler in force (the linearized one)

        def run(*args):
            result = fn(*args)
            values = result if isinstance(result, (tuple, list)) else (result,)
            if not found and any(isinstance(v, torch.Tensor) and v.is_floating_point() and
                                 not bool(torch.isfinite(v).all()) for v in values):
                found.append(step.node)
            return result
        return run

    with torch.no_grad(), twin.overridden(watch, nested=False):
        twin.run(feeds)
    return f", first at node '{found[0].name or found[0].output[0]}' ({found[0].op_type})" if found else ""


def _selector_constants(twin: Twin) -> set[str]:
    """Constants that select or bound values instead of scaling them: read only by Max, Min, Where,
    Clip or a comparison (a max reduction's -inf identity, a clamp bound, a mask threshold). SynFlow
    makes every parameter non-negative; these are no parameters, and |-inf| = +inf would turn the flow
    into inf, then nan (magika's jax2tf export). They keep their values, as do constants holding
    inf or nan (additive attention masks)."""
    facts = twin.facts
    return {name for name, reads in facts.constant_reads().items()
            if reads and all(i >= 0 and facts.nodes[i].op_type in SELECTING for i, _ in reads)}


SELECTING = frozenset({"Max", "Min", "Where", "Clip", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"})


SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in
                                    (SynFlow, Magnitude, Random, SNIP, GraSP, LossPreservation,
                                     GradNormPreservation)}
METHODS = choices.METHODS
DATA_METHODS = tuple(name for name, cls in SCORERS.items() if cls.needs_data)  # scored on (inputs, labels)
# choices.py holds torch-free copies for the CLI; a scorer added or renamed here must be named there too.
if tuple(SCORERS) != METHODS or DATA_METHODS != choices.DATA_METHODS:
    raise ImportError(f"onnxprune.choices disagrees with the scorers: METHODS {choices.METHODS} vs {tuple(SCORERS)}, "
                      f"DATA_METHODS {choices.DATA_METHODS} vs {DATA_METHODS}")


def scorer(method: str) -> type[Scorer]:
    """The scorer class of `method`: the one place a method name is checked."""
    try:
        return SCORERS[method]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        if isinstance(method, str) and method in choices.CHANNEL_METHODS:
            raise ScoringError(f"{arg('method')} {method} ranks whole channels: use it with "
                               f"{arg('structure')} channel") from None
        raise ScoringError(f"unknown {arg('method')} {method!r} (choose from {', '.join(METHODS)})") from None


def score(twin: Twin, method: str, names: Sequence[str] | None = None, **options: Any) -> dict[str, torch.Tensor]:
    """One-shot scores {onnx_name: tensor} of `names` (default: the prunable tensors); the twin is
    left exactly as it was. Options as `Scorer`: batches, input_shapes, precision, generator, ..."""
    names = list(names) if names is not None else prunable_tensors(twin)
    if not names:
        raise ScoringError("the model has no prunable weights")
    with scorer(method)(twin, names, **options) as session:
        return {n: s.detach() for n, s in zip(names, session.scores())}
