"""Choosing which entries go, given scores: exact counts, deterministic ties, only unpruned entries.

The loop works on the scores of the entries still unpruned ("alive"), concatenated over the prunable
tensors in order. Pruned entries never come back, so they are never ranked again (their score would
be 0), which also makes each selection cheaper as pruning proceeds. `select_masks` is the same
operation on whole tensors and boolean masks, for callers outside the loop.

Ties: among equal scores the entry that comes first (tensor order, then flat index) is kept, so a
given set of scores always gives the same masks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..choices import SCOPES
from ..errors import ScoringError, arg
from .fastpath import flatnonzero

# Above this many scores, the pruning threshold is bracketed from a sample first (see `lowest`).
_SAMPLED_ABOVE = 1 << 18
_SAMPLE = 1 << 13


def _upper_bound(scores: torch.Tensor, count: int) -> torch.Tensor | None:
    """A value probably just above the `count`-th smallest score, from a strided sample; None when
    the tensor is small or a large share goes (then a plain kthvalue is as cheap)."""
    n = scores.numel()
    if n <= _SAMPLED_ABOVE:
        return None
    sample = scores[:: n // _SAMPLE].sort().values
    m = sample.numel()
    q = count / n
    margin = 6.0 * math.sqrt(q * (1.0 - q) / m) + 2.0 / m  # six standard errors of a sample quantile
    if q + margin >= 0.5:
        return None
    return sample[min(math.ceil((q + margin) * m), m - 1)]


def _last_true(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Sorted positions of the last `count` True entries, scanning back in growing chunks (ties
    usually sit together, e.g. SynFlow's zero scores of a layer the signal cannot reach)."""
    found, end, chunk = [], mask.numel(), max(4 * count, 1 << 16)
    total = 0
    while total < count and end > 0:
        start = max(end - chunk, 0)
        hits = flatnonzero(mask[start:end]) + start
        found.insert(0, hits)
        total += hits.numel()
        end, chunk = start, 2 * chunk
    return torch.cat(found)[total - count:] if found else mask.new_empty(0, dtype=torch.long)


def lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Sorted positions of the `count` smallest entries of a flat tensor; among equal scores the
    later entries are taken first (so the earlier ones are kept).

    `torch.kthvalue` over millions of scores is a quickselect over a copy (~0.2 s for 11 M on one
    core, the reference loop's main cost). Instead a sample bounds the threshold from above and one
    comparison pass leaves the few entries below the bound (a few percent per iteration of an
    iterative schedule); only they are ranked. When ties fill the count at the bound itself (SynFlow
    gives millions of exact zeros to weights the signal cannot reach), the bound is the threshold
    and nothing is ranked. Exactness never depends on the sample: a bound too low falls back to
    ranking every entry.
    """
    n = scores.numel()
    if count <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    if count >= n:
        return torch.arange(n, device=scores.device)
    bound = _upper_bound(scores, count)
    if bound is not None:
        candidates = flatnonzero(scores < bound)
        if candidates.numel() >= count:
            return candidates[_lowest_exact(scores[candidates], count)]
        at = scores == bound
        if candidates.numel() + int(torch.count_nonzero(at)) >= count:  # the bound is the threshold
            ties = _last_true(at, count - candidates.numel())
            return torch.cat([candidates, ties]).sort().values if candidates.numel() else ties
    return _lowest_exact(scores, count)


def _lowest_exact(values: torch.Tensor, count: int) -> torch.Tensor:
    threshold = torch.kthvalue(values, count).values
    chosen = values < threshold
    missing = count - int(torch.count_nonzero(chosen))
    if missing > 0:
        chosen[_last_true(values == threshold, missing)] = True
    return flatnonzero(chosen)


def highest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Sorted positions of the `count` largest entries (the complement of `lowest`)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[lowest(scores, scores.numel() - count)] = False
    return torch.nonzero(keep).squeeze(1)


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


def select_pruned(scores: torch.Tensor, lengths: Sequence[int], keep: int, scope: str, sizes: Sequence[int],
                  floors: Sequence[int] | None = None, counts: Sequence[int] | None = None) -> torch.Tensor:
    """Sorted positions (into the concatenated scores) to prune so that `keep` entries remain.

    `scores`: the scores of each tensor's entries in turn, `lengths[j]` of them for tensor j; entries
    already pruned may sit among them as +inf (never chosen), `counts[j]` being the rest (default: all).
    Overwritten where floors apply. `sizes`: each tensor's full element count (local scope keeps a
    share proportional to it). `floors`: per-tensor minimum kept (min_layer_density), a tensor's best.
    """
    counts = list(counts) if counts is not None else list(lengths)
    floors = list(floors) if floors is not None else [0] * len(lengths)
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    segments = [scores[offsets[j]:offsets[j + 1]] for j in range(len(lengths))]
    if scope == "local":
        quota = apportion(sizes, keep, floors, counts)
        parts = [lowest(seg, c - q) + off for seg, c, q, off in zip(segments, counts, quota, offsets)]
        return torch.cat(parts) if parts else scores.new_empty(0, dtype=torch.long)
    if scope != "global":
        raise ScoringError(f"unknown {arg('scope')} {scope!r} (choose from {', '.join(SCOPES)})")
    if sum(floors) > keep:
        raise ScoringError(f"the per-tensor minimum needs {sum(floors)} weights but only {keep} are kept")
    for seg, floor, c in zip(segments, floors, counts):
        if 0 < floor < c:  # reserve a tensor's best `floor` entries: +inf ranks them above everything
            seg[highest(seg, floor + seg.numel() - c)] = math.inf  # (its pruned entries are +inf already)
        elif floor >= c:
            seg.fill_(math.inf)
    return lowest(scores, sum(counts) - keep)


def select_masks(scores: dict[str, torch.Tensor], keep: int, scope: str = "global",
                 previous: dict[str, torch.Tensor] | None = None, *,
                 floors: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Boolean masks keeping `keep` entries in all, chosen by score among those `previous` left unpruned.

    Entries pruned in `previous` stay pruned whatever their score (top-k among unpruned entries only).
    """
    names = list(scores)
    masks = {}
    for name in names:
        mask = None if previous is None else previous.get(name)
        masks[name] = torch.ones(scores[name].numel(), dtype=torch.bool, device=scores[name].device) \
            if mask is None else mask.reshape(-1).to(torch.bool).clone()
    alive = [torch.nonzero(masks[n]).squeeze(1) for n in names]
    counts = [a.numel() for a in alive]
    if keep > sum(counts):
        raise ScoringError(f"cannot keep {keep} weights: only {sum(counts)} are unpruned")
    flat = torch.cat([scores[n].reshape(-1)[a] for n, a in zip(names, alive)])
    floor_list = [min((floors or {}).get(n, 0), c) for n, c in zip(names, counts)]
    pruned = select_pruned(flat, counts, keep, scope, [scores[n].numel() for n in names], floor_list)
    owner = torch.repeat_interleave(torch.arange(len(names), device=flat.device),
                                    torch.tensor(counts, device=flat.device))[pruned]
    flat_index = torch.cat(alive)[pruned] if alive else pruned
    for j, name in enumerate(names):
        masks[name][flat_index[owner == j]] = False
        masks[name] = masks[name].reshape(scores[name].shape)
    return masks
