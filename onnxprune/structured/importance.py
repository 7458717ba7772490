"""Channel importance for trained networks: group magnitude, normalization scale, first-order Taylor.

score.py sums per-weight scores into channels, the right thing for pruning at initialization. On
trained weights a raw sum lets big slices drown small ones (the 25 Gemm columns behind a Flatten
outweigh the producing 5x5 filter) and big layers drown small ones. The criteria here compare alike:

| criterion | a channel's score                                                        | data |
|-----------|--------------------------------------------------------------------------|------|
| l1, l2    | mean over the weight tensors it indexes (producing filters, consumers'   | no   |
|           | input slices) of its slice's Lp norm divided by that tensor's mean norm  |      |
| bn        | |scale| of the normalization on the channel over that tensor's mean;     | no   |
|           | channels with no such scale (no BN, or BN folded into the Conv) take l2  |      |
| taylor    | first-order estimate of how far removal moves the outputs (below)        | yes  |

Taylor: removing a channel is exactly zeroing its parameter slices (`Slice.role == "param"`: filter,
bias, norm scale and shift), so to first order the outputs move by df = -J·theta_c. For a random
direction r, g = d(r·f)/d(theta) gives (theta_c·g)² = (r·df)², whose mean over r is |df|²: the squared
distance to the unpruned outputs, with no labels. For class scores (logits by the graph:
graph/outputs.py) r is the Fisher sample softmax(z) - onehot(y), y drawn from the model's own prediction,
whose mean of (r·dz)² is dz'Fz, twice the KL divergence to second order. Each output is divided by its
batch standard deviation first (its row chunk's, where a big batch runs in chunks: ACTIVATION_BUDGET),
so outputs of different scales weigh alike. (The gradient of the distance itself is zero at the
unpruned weights, so it cannot rank anything.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from ..choices import CHANNEL_METHODS
from ..graph import GraphFacts, roles
from ..graph.constants import stored_tensors
from ..graph.outputs import output_kinds as read_kinds
from .groups import ChannelGraph
from .score import channel_scores, per_position

if TYPE_CHECKING:
    import torch

PROJECTIONS = 8  # random directions per batch (one backward each): the estimate's spread falls as 1/sqrt
# Activations one taylor pass may hold, bytes (values, gradients and what autograd saves, about 3x
# the values): a batch that would need more runs in row chunks whose per-direction sums add up
# before squaring. PP-OCRv4's detector at 320x320 in float64 took 64 rows past 24 GB (killed).
ACTIVATION_BUDGET = 2 * 2**30


def importance(cg: ChannelGraph, method: str, *, batches: Iterable[Any] | None = None, seed: int = 0,
               precision: "torch.dtype | None" = None, output_kinds: Mapping[str, str] | None = None) -> np.ndarray:
    """One score per channel (higher is kept) by a criterion of CHANNEL_METHODS; `output_kinds`
    (taylor): what outputs hold where the graph cannot tell (graph/outputs.py)."""
    assert method in CHANNEL_METHODS, method
    if method == "taylor":
        return taylor(cg, batches, seed=seed, precision=precision, output_kinds=output_kinds)
    facts = GraphFacts(cg.model.graph)
    values = {name: value for name, (_, value) in stored_tensors(cg.model.graph).items()}
    weights = {n: values[n] for n in facts.sources_with_role(roles.WEIGHT) if n in values}
    magnitude = group_norm(cg, weights, p=1 if method == "l1" else 2)
    if method in ("l1", "l2"):
        return magnitude
    scales = {n: values[n] for n in facts.sources_with_role(roles.SCALE) if n in values}
    scale = group_norm(cg, scales, p=1)
    return np.where(np.isnan(scale), magnitude, scale)


def group_norm(cg: ChannelGraph, tensors: dict[str, np.ndarray], p: int) -> np.ndarray:
    """Per channel, the mean over `tensors` it indexes of its slice's Lp norm over the tensor's mean
    norm; NaN for a channel in none of them (no positions, or frozen-only tensors never sliced)."""
    total = np.zeros(cg.n_channels)
    count = np.zeros(cg.n_channels)
    for (name, axis), channels in cg.keys().items():
        if name not in tensors:
            continue
        sums = per_position(np.abs(np.asarray(tensors[name], dtype=np.float64)) ** p, axis)
        present, index = np.unique(channels, return_inverse=True)
        norm = np.bincount(index, weights=sums, minlength=len(present)) ** (1.0 / p)
        mean = norm.mean()
        total[present] += norm / mean if mean > 0 else 1.0
        count[present] += 1
    with np.errstate(invalid="ignore"):
        return total / count


def taylor(cg: ChannelGraph, batches: Iterable[Any] | None, *, seed: int = 0,
           precision: "torch.dtype | None" = None, output_kinds: Mapping[str, str] | None = None) -> np.ndarray:
    """Sum over batches and random output directions of (sum of theta * grad over the channel's
    parameter slices)²; see the module docstring. Scored in `precision` (default float64). A head
    declared "values" in `output_kinds` gets plain random directions, which see a shift common to
    every score (the Fisher directions of class scores sum to 0 over the classes: blind to it)."""
    import torch  # only here: the magnitude criteria and the analysis need no torch
    from ..errors import DataError, arg
    from ..pruning.inputs import batch_feeds
    from ..twin import Twin

    if batches is None:
        raise DataError(f"taylor scores channels on data: give {arg('data')}, an .npz with x_train")
    twin = Twin(cg.model).eval()
    twin.set_precision(precision or torch.float64)
    params = twin.onnx_parameters()
    sliced = {(s.tensor, s.axis): cg.channel[s.ids] for s in cg.slices if s.role == "param" and s.tensor in params}
    names = sorted({name for name, _ in sliced})
    for name, p in params.items():
        p.requires_grad_(name in names)
    kinds = read_kinds(cg.model, dict(output_kinds or {}))
    generator = torch.Generator().manual_seed(seed)
    rows = _chunk_rows(cg, torch.finfo(precision or torch.float64).bits // 8)
    scores = np.zeros(cg.n_channels)
    seen = 0
    for inputs, _ in batches:
        feeds = batch_feeds(twin, inputs)
        size = len(next(iter(feeds.values()))) if feeds else 0
        sums, reached = np.zeros((PROJECTIONS, cg.n_channels)), False
        for start in range(0, max(size, 1), rows):  # one chunk (the whole batch) unless it is too big
            part = feeds if size <= rows else {k: v[start:start + rows] for k, v in feeds.items()}
            outputs = twin.run(part)
            outputs = {k: v for k, v in outputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                       and v.requires_grad}
            if not outputs:
                continue
            reached = True
            for p in range(PROJECTIONS):
                projected = sum((_direction(v, kinds.get(k), generator) * v).sum() for k, v in outputs.items())
                grads = torch.autograd.grad(projected, [params[n] for n in names], retain_graph=p < PROJECTIONS - 1,
                                            allow_unused=True)
                flow = {n: (params[n] * g).detach().double().cpu().numpy() for n, g in zip(names, grads)
                        if g is not None}
                sums[p] += channel_scores(cg, flow, sliced)
        if reached:
            scores += (sums ** 2).sum(axis=0)
            seen += 1
    if not seen:
        raise DataError("taylor: no batch of the data reaches a float output that depends on the weights")
    return scores / (seen * PROJECTIONS)


def _chunk_rows(cg: ChannelGraph, itemsize: int) -> int:
    """Rows per taylor pass so that its activations stay within ACTIVATION_BUDGET."""
    constants = {t.name for t in cg.model.graph.initializer}
    values = sum(float(np.prod(shape)) for name, shape in cg.shapes.items() if name not in constants)
    per_row = 3 * itemsize * values / max(cg.batch, 1)
    return max(1, int(ACTIVATION_BUDGET // per_row)) if per_row > 0 else 1 << 30


def _direction(out: "torch.Tensor", kind: str | None, generator: "torch.Generator") -> "torch.Tensor":
    """A random direction for one output, scaled by 1/std of its values (detached)."""
    import torch
    out = out.detach()
    scale = out.std() if out.numel() > 1 else out.new_tensor(1.0)
    scale = scale if scale > 0 else out.new_tensor(1.0)
    if kind in ("logits", "log_probs"):  # softmax of log-probabilities is the probabilities
        p = torch.softmax(out.double(), dim=-1)
        y = torch.multinomial(p.reshape(-1, out.shape[-1]), 1, generator=generator).reshape(p.shape[:-1])
        return (p - torch.nn.functional.one_hot(y, out.shape[-1]).double()).to(out.dtype) / scale
    return torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype) / scale
