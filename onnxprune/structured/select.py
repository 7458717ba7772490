"""Which channels go: the lowest-scoring ones, globally, until a weight or MAC budget is met.

The cost of a graph is a sum of terms coef * prod(kept positions along the term's axes) (graph.Term):
a Conv weight scales with kept output x kept input channels, and so do its MACs. Channels are removed
in ascending score order; one is skipped when it would take any sliced axis below its floor
(`min_fraction` of its positions, and never below 1: no layer loses all its channels).
"""

from __future__ import annotations

import math

import numpy as np

from .groups import ChannelGraph


class Budget:
    """Kept counts per sliced axis and the running cost of one objective ("weights" or "macs")."""

    def __init__(self, cg: ChannelGraph, objective: str, removed: np.ndarray):
        self.keys = cg.keys()
        self.terms = [t for t in cg.terms if t.kind == objective]
        self.kept = {k: int((~removed[ch]).sum()) for k, ch in self.keys.items()}
        self.fixed = {k: cg.shapes[k[0]][k[1]] for t in self.terms for k in t.keys if k not in self.keys}
        self.by_key: dict[tuple[str, int], list[int]] = {}
        for j, t in enumerate(self.terms):
            for k in t.keys:
                self.by_key.setdefault(k, []).append(j)
        self.total = sum(self._value(j, full=True) for j in range(len(self.terms)))
        self.current = sum(self._value(j) for j in range(len(self.terms)))

    def _value(self, j: int, full: bool = False) -> float:
        t = self.terms[j]
        prod = t.coef
        for k in t.keys:
            prod *= self.fixed[k] if k in self.fixed else (len(self.keys[k]) if full else self.kept[k])
        return prod

    def remove(self, counts: dict[tuple[str, int], int]) -> None:
        affected = {j for k in counts for j in self.by_key.get(k, ())}
        before = sum(self._value(j) for j in affected)
        for k, n in counts.items():
            self.kept[k] -= n
        self.current += sum(self._value(j) for j in affected) - before


def channel_positions(cg: ChannelGraph) -> list[dict[tuple[str, int], int]]:
    """Per channel: {sliced axis: how many of its positions the channel holds}."""
    out: list[dict[tuple[str, int], int]] = [dict() for _ in range(cg.n_channels)]
    for key, channels in cg.keys().items():
        values, counts = np.unique(channels, return_counts=True)
        for c, n in zip(values.tolist(), counts.tolist()):
            out[c][key] = n
    return out


def select(cg: ChannelGraph, scores: np.ndarray, fraction: float, objective: str = "weights", *,
           min_fraction: float = 0.0, removed: np.ndarray | None = None) -> np.ndarray:
    """Channels removed (bool per channel) so that the objective keeps at most `fraction` of its total,
    or as close as the floors and frozen channels allow; `removed` ones stay removed."""
    start = removed
    removed = np.zeros(cg.n_channels, bool) if removed is None else removed.copy()
    budget = Budget(cg, objective, removed)
    target = fraction * budget.total
    positions = channel_positions(cg)
    floors = layer_floors(cg, min_fraction)
    candidates = np.flatnonzero(~cg.frozen & ~removed)
    for c in candidates[np.argsort(scores[candidates], kind="stable")].tolist():
        if budget.current <= target:
            break
        counts = positions[c]
        if not counts or any(budget.kept[k] - n < floors[k] for k, n in counts.items()):
            continue
        budget.remove(counts)
        removed[c] = True
    # the last channel may have overshot: give back the best removed ones that still fit the budget
    taken = np.flatnonzero(removed & ~(start if start is not None else np.zeros_like(removed)))
    for c in taken[np.argsort(-scores[taken], kind="stable")].tolist():
        counts = {k: -n for k, n in positions[c].items()}
        before = budget.current
        budget.remove(counts)
        if budget.current <= target:
            removed[c] = False
        else:
            budget.remove({k: -n for k, n in counts.items()})
            budget.current = before
    return removed


def layer_floors(cg: ChannelGraph, min_fraction: float) -> dict[tuple[str, int], int]:
    """Per sliced axis, the fewest positions it may keep: `min_fraction` of them, never below 1."""
    return {k: max(1, math.ceil(round(min_fraction * len(ch), 9))) for k, ch in cg.keys().items()}


def limits(cg: ChannelGraph, removed: np.ndarray, min_fraction: float) -> dict[tuple[str, int], str]:
    """Per sliced axis, what bound its kept count: "frozen" (no channel there may go), "floor" (at its
    floor while removable channels remain), else "budget" (the ranking stopped at the target)."""
    floors = layer_floors(cg, min_fraction)
    out = {}
    for key, channels in cg.keys().items():
        kept = int((~removed[channels]).sum())
        if cg.frozen[channels].all():
            out[key] = "frozen"
        elif kept <= floors[key] and (~removed[channels] & ~cg.frozen[channels]).any():
            out[key] = "floor"
        else:
            out[key] = "budget"
    return out


def cost(cg: ChannelGraph, removed: np.ndarray, objective: str) -> tuple[float, float]:
    """(kept, total) of an objective."""
    budget = Budget(cg, objective, removed)
    return budget.current, budget.total


def home_layers(cg: ChannelGraph) -> np.ndarray:
    """Per channel, an index of its 'layer': the first sliced axis it holds positions on (channels
    tied by a residual Add share all their axes, hence one layer); -1 for a channel with none."""
    names: dict[tuple[str, int], int] = {}
    home = np.full(cg.n_channels, -1, dtype=np.int64)
    for c, counts in enumerate(channel_positions(cg)):
        if counts:
            home[c] = names.setdefault(min(counts), len(names))
    return home


def channel_costs(cg: ChannelGraph, objective: str = "macs") -> np.ndarray:
    """Per channel, what removing it alone from the whole graph saves of the objective."""
    budget = Budget(cg, objective, np.zeros(cg.n_channels, bool))
    positions = channel_positions(cg)
    out = np.zeros(cg.n_channels)
    for c, counts in enumerate(positions):
        for k, n in counts.items():
            out[c] += n * sum(budget._value(j) / budget.kept[k] for j in budget.by_key.get(k, ()))
    return out


def layer_weights(cg: ChannelGraph, traffic: float) -> np.ndarray | None:
    """Per channel, its layer's macs / (macs + traffic * elements): the layer's MACs against the
    activation elements its channels carry (cg.traffic). Per MAC kept in the budget, a layer whose
    channels carry more memory-bound work (an inverted residual's expanded channels: activations,
    depthwise, SE) saves more time, so scaling its rank fractions by this shrinks it further.
    None when `traffic` is 0 or the analysis counted no elements. Depends on the graph only: computed
    once per pruning, not per iteration."""
    if traffic <= 0 or cg.traffic is None:
        return None
    home, macs = home_layers(cg), channel_costs(cg)
    out = np.ones(cg.n_channels)
    for layer in np.unique(home[home >= 0]):
        members = np.flatnonzero(home == layer)
        m = macs[members].sum()
        if m > 0:
            out[members] = m / (m + traffic * cg.traffic[members].sum())
    return out


def local_scores(cg: ChannelGraph, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Scores replaced by their rank fraction within the channel's layer, in (0, 1]: a global
    selection on these removes about the same fraction of every layer (--scope local); times
    `weights` (layer_weights) where given."""
    home = home_layers(cg)
    out = np.zeros_like(scores, dtype=np.float64)
    for layer in np.unique(home[home >= 0]):
        members = np.flatnonzero(home == layer)
        ranks = np.argsort(np.argsort(scores[members], kind="stable"), kind="stable")
        out[members] = (ranks + 1) / len(members)
    return out if weights is None else out * weights


def round_layers(cg: ChannelGraph, removed: np.ndarray, scores: np.ndarray, multiple: int, objective: str = "weights",
                 fraction: float = 1.0) -> np.ndarray:
    """Each layer's kept prunable channels rounded to a multiple of `multiple` (at least one multiple),
    keeping the best-scoring, with the objective still at most `fraction` of its total: every layer is
    first rounded down, then grown a block at a time, the layer furthest below its selection first,
    while the budget allows (so the rounded result uses what rounding down freed); if
    one-multiple minimums still overshoot, the layers raised to one multiple keep their own count,
    and failing that the lowest-scoring blocks of the widest layers go (the budget comes first).
    Runtimes' kernels run fastest on such widths. Layers with frozen channels or fewer prunable
    channels than two multiples keep their own count, and so does a layer whose rounding would empty a tensor (a
    Concat's consumer spans two producers: the best channels may all come from one of them)."""
    if multiple <= 1:
        return removed
    home = home_layers(cg)
    axes = list(cg.keys().values())
    order: dict[int, np.ndarray] = {}  # layer -> its channels, best first
    for layer in np.unique(home[home >= 0]):
        members = np.flatnonzero(home == layer)
        if not cg.frozen[members].any() and len(members) >= 2 * multiple:
            order[layer] = members[np.argsort(-scores[members], kind="stable")]
    kept = {layer: int((~removed[m]).sum()) for layer, m in order.items()}

    def applied(widths: dict[int, int]) -> np.ndarray:
        out = removed.copy()
        for layer, width in widths.items():
            out[order[layer][:width]] = False
            out[order[layer][width:]] = True
        return out

    def empties(widths: dict[int, int]) -> bool:
        out = applied(widths)
        return not all((~out[channels]).any() for channels in axes)

    width = {layer: min(len(order[layer]), max(multiple, k // multiple * multiple)) for layer, k in kept.items()}
    width = {layer: w for layer, w in width.items() if not empties({layer: w})}
    target = fraction * cost(cg, removed, objective)[1] * (1 + 1e-12)
    grown = True
    while grown:  # back up, a block at a time, the layers furthest below their selection first
        grown = False
        for layer in sorted(width, key=lambda la: (width[la] - kept[la]) / len(order[la])):
            if width[layer] + multiple <= len(order[layer]):
                width[layer] += multiple
                if cost(cg, applied(width), objective)[0] > target:
                    width[layer] -= multiple
                else:
                    grown = True
                    break
    while cost(cg, applied(width), objective)[0] > target:  # one-multiple minimums overshot
        raised = [la for la in width if width[la] > kept[la]]
        wider = [la for la in width if width[la] > multiple and not empties({la: width[la] - multiple})]
        if raised:  # the budget comes first: a layer raised to one multiple keeps its own count
            del width[max(raised, key=lambda la: width[la] - kept[la])]
        elif wider:
            worst = min(wider, key=lambda la: scores[order[la][width[la] - multiple:width[la]]].mean())
            width[worst] -= multiple
        else:
            break
    return applied(width)
