"""Choosing which entries to keep, given scores: exact counts, deterministic ties, only unpruned entries.

The loop works on "alive" views: for each prunable tensor, the flat indices still unpruned and their
scores. Pruned entries never come back, so they are never ranked again (their score is 0 by
definition, and excluding them makes every selection cheaper as pruning proceeds). `select_masks`
is the same operation on whole tensors and boolean masks, for callers outside the loop.

Ties: among equal scores the entry that comes first (tensor order, then flat index) is kept, so a
given set of scores always gives the same masks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import ScoringError

SCOPES = ("global", "local")

# Above this many scores the k-th value is found from a sample first (see `kth_smallest`).
_SAMPLED_ABOVE = 1 << 20
_SAMPLE = 1 << 14


def kth_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest value (1-based) of a flat tensor, exactly.

    `torch.kthvalue` over millions of entries costs a quickselect over a copy (~0.2 s for 11 M
    scores on one core). A strided sample's quantiles bracket the answer instead; one comparison pass
    counts what lies below the bracket and only the few entries inside it go to `kthvalue`. When the
    bracket misses (a skewed sample), the plain full `kthvalue` answers.
    """
    n = scores.numel()
    if n <= _SAMPLED_ABOVE:
        return torch.kthvalue(scores, k).values
    sample = scores[:: n // _SAMPLE].sort().values
    m = sample.numel()
    q = k / n
    margin = 6.0 * math.sqrt(q * (1.0 - q) / m) + 2.0 / m  # six standard errors of a sample quantile
    lo = sample[max(int((q - margin) * m), 0)]
    hi = sample[min(int((q + margin) * m), m - 1)]
    below = int((scores < lo).sum())
    band = scores[(scores >= lo) & (scores <= hi)]
    if below < k <= below + band.numel():
        return torch.kthvalue(band, k - below).values
    return torch.kthvalue(scores, k).values


def keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean flags keeping exactly the k largest scores; among ties the earliest entries are kept."""
    n = scores.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    threshold = kth_smallest(scores, n - k)  # the largest value that is pruned (ties aside)
    keep = scores > threshold
    missing = k - int(keep.sum())
    if missing > 0:
        ties = torch.nonzero(scores == threshold).squeeze(1)
        keep[ties[:missing]] = True
    return keep


def apportion(sizes: Sequence[int], target: int, lower: Sequence[int], upper: Sequence[int]) -> list[int]:
    """Per-tensor counts summing exactly to `target`, proportional to `sizes` within [lower, upper].

    Largest-remainder rounding: every tensor gets the floor of its share, the units left over go to
    the largest fractional parts (earlier tensors first among equals).
    """
    if not sum(lower) <= target <= sum(upper):
        raise ScoringError(f"cannot keep {target} weights with per-tensor bounds summing to "
                           f"{sum(lower)}..{sum(upper)}")
    total = sum(sizes)
    ideal = [n * target / total for n in sizes]
    counts = [min(max(math.floor(x), lo), hi) for x, lo, hi in zip(ideal, lower, upper)]
    while (diff := target - sum(counts)) != 0:
        step = 1 if diff > 0 else -1
        movable = [j for j, c in enumerate(counts) if (c < upper[j] if step > 0 else c > lower[j])]
        # Most under-served first when adding, most over-served first when removing.
        movable.sort(key=lambda j: (-(ideal[j] - counts[j]) * step, j))
        for j in movable[:abs(diff)]:
            counts[j] += step
    return counts


def select(alive_scores: Sequence[torch.Tensor], keep: int, scope: str, sizes: Sequence[int],
           floors: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Which alive entries stay: one bool tensor per prunable tensor, `keep` True in all.

    `sizes`: each tensor's full element count (local scope keeps a share proportional to it).
    `floors`: per-tensor minimum kept (min_layer_density); those entries are a tensor's best.
    """
    floors = list(floors) if floors is not None else [0] * len(alive_scores)
    if scope == "local":
        counts = apportion(sizes, keep, floors, [s.numel() for s in alive_scores])
        return [keep_top(s, c) for s, c in zip(alive_scores, counts)]
    if scope != "global":
        raise ScoringError(f"unknown scope '{scope}' (choose from {', '.join(SCOPES)})")
    if sum(floors) > keep:
        raise ScoringError(f"the per-tensor minimum needs {sum(floors)} weights but only {keep} are kept")
    flat = torch.cat([s.reshape(-1) for s in alive_scores])
    offset = 0
    for s, floor in zip(alive_scores, floors):
        if floor > 0:  # reserve a tensor's best `floor` entries: +inf ranks them above everything
            best = torch.nonzero(keep_top(s, floor)).squeeze(1)
            flat[offset + best] = math.inf
        offset += s.numel()
    return list(torch.split(keep_top(flat, keep), [s.numel() for s in alive_scores]))


def select_masks(scores: dict[str, torch.Tensor], keep: int, scope: str = "global",
                 previous: dict[str, torch.Tensor] | None = None, *,
                 floors: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Boolean masks keeping `keep` entries in all, chosen by score among those `previous` left unpruned.

    Entries pruned in `previous` stay pruned whatever their score (topk among unpruned entries only).
    """
    names = list(scores)
    alive = []
    for name in names:
        mask = None if previous is None else previous.get(name)
        flat = torch.ones(scores[name].numel(), dtype=torch.bool, device=scores[name].device) \
            if mask is None else mask.reshape(-1).to(torch.bool)
        alive.append(torch.nonzero(flat).squeeze(1))
    alive_scores = [scores[n].reshape(-1)[a] for n, a in zip(names, alive)]
    if keep > sum(a.numel() for a in alive):
        raise ScoringError(f"cannot keep {keep} weights: only {sum(a.numel() for a in alive)} are unpruned")
    floor_list = [min((floors or {}).get(n, 0), a.numel()) for n, a in zip(names, alive)]
    flags = select(alive_scores, keep, scope, [scores[n].numel() for n in names], floor_list)
    masks = {}
    for name, a, f in zip(names, alive, flags):
        mask = torch.zeros(scores[name].numel(), dtype=torch.bool, device=a.device)
        mask[a[f]] = True
        masks[name] = mask.reshape(scores[name].shape)
    return masks
