"""Channel scores from the per-weight scorers: a channel's score is the sum of its weights' scores.

Each sliced Conv/Gemm/MatMul weight contributes, per position along each sliced axis, the sum of its
entries' scores there: a Conv filter's entries count toward its output channel and toward the input
channel they read. `masks()` cuts removed channels out of the twin (both sides of every weight) so an
iterative method (SynFlow) sees them gone in the next round.
"""

from __future__ import annotations

import numpy as np

from .groups import ChannelGraph


def per_position(values: np.ndarray, axis: int) -> np.ndarray:
    """The sum of `values` at each position along `axis`."""
    values = np.asarray(values, dtype=np.float64)
    return values.sum(axis=tuple(d for d in range(values.ndim) if d != axis))


def channel_scores(cg: ChannelGraph, weight_scores: dict[str, np.ndarray],
                   keys: dict[tuple[str, int], np.ndarray] | None = None) -> np.ndarray:
    """Per channel, the sum of `weight_scores` over its positions on `keys` (default: every sliced axis)."""
    scores = np.zeros(cg.n_channels, dtype=np.float64)
    for (name, axis), channels in (cg.keys() if keys is None else keys).items():
        if name in weight_scores:
            np.add.at(scores, channels, per_position(weight_scores[name], axis))
    return scores


def masks(cg: ChannelGraph, removed: np.ndarray, names) -> dict[str, np.ndarray]:
    """{weight name: bool mask, False where removed} for the named tensors a removed channel indexes
    (bool: rebuilt every SynFlow iteration, 1 byte per weight, the twin casts it once)."""
    out: dict[str, np.ndarray] = {}
    for (name, axis), channels in cg.keys().items():
        if name not in names:
            continue
        gone = removed[channels]
        if gone.any():
            shape = cg.shapes[name]
            mask = out.setdefault(name, np.ones(shape, dtype=bool))
            index = [slice(None)] * len(shape)
            index[axis] = gone
            mask[tuple(index)] = False
    return out
