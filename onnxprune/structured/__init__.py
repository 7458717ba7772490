"""Structured (channel) pruning: remove whole channels and write a dense, physically smaller graph.

    from onnxprune.structured import prune_channels
    result = prune_channels("model.onnx", macs=0.5)  # trained weights: group L2, same ratio per layer
    result = prune_channels("model.onnx", macs=0.5, method="synflow", scope="global")  # at initialization
    onnxprune.io.save_model(result.model, "small.onnx")

Modules: shapes.py (measured shapes), graph.py + rules.py (channel analysis, one rule per op),
groups.py (the analysis driver), importance.py (channel criteria for trained weights: group
magnitude, normalization scale, Taylor), score.py (channel scores from the per-weight scorers, for
pruning at initialization), select.py (budget and greedy removal), rewrite.py (the slicing rewrite and the zeroed reference).
Exactness contract: in onnxruntime, the result equals `zeroed(...)` of the input — the original
graph with the removed channels' parameters (filters, biases, norm scale and shift, per-channel
Add/Mul constants) set to zero; tests/test_structured.py checks it to 1e-5. `approximate=True` also
removes channels where that contract cannot hold (LayerNorm statistics over the kept channels, a
constant folded into a padded Conv): the report's "approximate" names the rules used and measures how
far the outputs moved, and `train --teacher` recovers the rest.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import onnx

from ..choices import CHANNEL_METHODS, SCOPES
from ..errors import OnnxPruneError, arg
from .groups import ChannelGraph, analyze
from .importance import importance
from .latency import fit_latency
from .record import record, recorded, removed_borders, removed_means, removed_slices
from .rewrite import check_runs, deviation, rewrite, zeroed
from .score import channel_scores, masks
from .select import cost, layer_weights, limits, local_scores, round_layers, select

# The defaults measured best on trained networks (scripts/trained_choice.py, README): taylor where
# inputs are given, else the group L2 norm, both ranked within each layer.
DEFAULT_METHOD = {True: "taylor", False: "l2"}  # by whether data (batches) is given
# Kept widths in multiples of 8 by default: onnxruntime's CPU kernels block channels by 8 (AVX2) or 16
# (AVX-512), and exact widths made mobilenet_v2/v3 and efficientnet_b0 0.78-0.87x as fast as dense at
# --macs 0.5; with 8 (and TRAFFIC_MACS) they run 1.6-1.9x faster at batch 1, one thread, resnet18
# 1.8x (scripts/bench_widths.py, README), and 8 suits GPU tensor cores. round_to=1: exact widths.
ROUND_TO = 8
# --scope local weighs each layer by its MACs against the memory-bound elements its channels carry
# (select.layer_weights), one element counted as this many MACs: at --macs 0.5, round-to 8, one thread,
# efficientnet_b0 went from 1.53x to 1.87x, resnet18 1.76x to 1.77x, mobilenet_v2 and _v3_small moved
# within noise (scripts/bench_widths.py); 20 and above slowed resnet18 (1.66-1.69x).
TRAFFIC_MACS = 10.0
DEFAULT_SCOPE = {True: "local", False: "global"}  # by method in CHANNEL_METHODS; at init: SynFlow's global

__all__ = ["ChannelGraph", "Structured", "analyze", "prune_channels", "rewrite", "zeroed", "select", "cost"]


@dataclass
class Structured:
    """What prune_channels returns: the rewritten model, the analysis and which channels went."""

    model: onnx.ModelProto
    graph: ChannelGraph
    removed: np.ndarray  # bool per channel
    report: dict[str, Any] = field(default_factory=dict)


def prune_channels(model_or_path: onnx.ModelProto | str | os.PathLike, *, method: str | None = None,
                   density: float | None = None, compression: float | None = None, sparsity: float | None = None,
                   macs: float | None = None, latency: float | None = None,
                   iterations: int | None = None, schedule: str = "exponential", scope: str | None = None,
                   round_to: int = ROUND_TO, min_layer_density: float = 0.0,
                   exclude: Iterable[str] = (), input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                   batches: Iterable[Any] | None = None, precision: str = "float64", seed: int = 0,
                   best_effort: bool = False, progress: Callable[[int, int], None] | None = None,
                   approximate: bool = False, output_kinds: Mapping[str, str] | None = None) -> Structured:
    """Remove channels until the prunable weights keep `density` (or 10**-compression, 1 - sparsity), or the
    Conv/Gemm/MatMul MACs keep `macs`, or the measured onnxruntime latency keeps `latency`. `method` is
    a channel criterion for trained weights (CHANNEL_METHODS, importance.py; default taylor with
    `batches`, else l2), scored once, or a weight scorer (synflow, mag, ...) whose scores are summed
    per channel and recomputed each of `iterations` rounds (SynFlow: 100) on the schedule. `scope` "global" ranks scores across layers; "local" ranks within each layer, so
    layers shrink alike (the default for channel criteria; global for weight scorers). `round_to` rounds
    each layer's kept channels to a multiple (default 8, which CPU kernels run fastest; 1: exact
    widths) after selection, the budget still kept (select.round_layers). `approximate`: see the module
    docstring. `output_kinds` (taylor): output name -> what it holds where the graph cannot tell
    (graph/outputs.py: a Dense head of regression scores reads as class logits)."""
    from ..graph.outputs import output_kinds as read_kinds
    from ..io import load_model

    start = time.perf_counter()
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_model(model_or_path)
    method = method or DEFAULT_METHOD[batches is not None]
    scope = scope or DEFAULT_SCOPE[method in CHANNEL_METHODS]
    if scope not in SCOPES:
        raise OnnxPruneError(f"unknown {arg('scope')} {scope!r} (choose from {', '.join(SCOPES)})")
    if output_kinds:  # only taylor's directions read what the outputs hold
        if method != "taylor":
            raise OnnxPruneError(f"{arg('output_kinds')} applies with {arg('method')} taylor only, not {method!r}")
        read_kinds(model, dict(output_kinds))  # an unknown name fails before scoring
    objective, fraction = _target(density, compression, sparsity, macs, latency, method)
    cg = analyze(model, input_shapes, approximate)
    _exclude(cg, exclude)
    removed, scores = _iterate(cg, model, method, objective, fraction, iterations, schedule, scope,
                               min_layer_density, input_shapes, batches, precision, seed, progress, output_kinds)
    fitted = None
    if latency is not None:  # scored once; the MAC fraction is bisected on measured latency
        removed, fraction, fitted = _fit(cg, model, scores, latency, round_to, min_layer_density, input_shapes)
    else:
        removed = round_layers(cg, removed, scores, round_to, objective, fraction)
    reached = (_reached(cg, removed, objective, fraction, scores, min_layer_density, best_effort) if fitted is None
               else fitted["predicted"] <= latency)  # --latency: the search judged it on measured latency
    pruned = rewrite(cg, removed)
    check_runs(pruned, cg)
    rules = {rule: int(removed[channels].sum()) for rule, channels in cg.approximate.items() if removed[channels].any()}
    steps = recorded(model)
    record(pruned, steps + [removed_slices(cg, removed)], approximate=list(rules),  # for `verify --reference`
           means=removed_means(cg, removed, len(steps)),
           borders=removed_borders(cg, removed, len(steps)))
    report = summary(cg, removed, min_layer_density)
    if approximate:  # what the approximate rules removed, and how far that moved the outputs before recovery
        report["approximate"] = {"channels": rules, "deviation": deviation(pruned, cg, removed) if rules else {}}
    report.update(method=method, scope=scope, objective=objective, target=fraction, target_reached=reached,
                  seconds=time.perf_counter() - start)
    if fitted is not None:
        report["latency_fit"] = fitted
    return Structured(pruned, cg, removed, report)


def _fit(cg: ChannelGraph, model: onnx.ModelProto, scores: np.ndarray, latency: float, round_to: int,
         min_fraction: float, input_shapes) -> tuple[np.ndarray, float, dict[str, Any]]:
    """(removed, MAC fraction, the report's latency_fit) for a latency target (latency.fit_latency)."""
    def chosen(f: float) -> np.ndarray:
        removed = select(cg, scores, f, "macs", min_fraction=min_fraction)
        return round_layers(cg, removed, scores, round_to, "macs", f)

    fraction, steps = fit_latency(model, lambda f: rewrite(cg, chosen(f)), latency, input_shapes=input_shapes)
    predicted = next(s["latency"] for s in steps if s["macs"] == fraction)
    return chosen(fraction), fraction, {"target": latency, "macs": fraction, "steps": steps, "predicted": predicted}


def _reached(cg: ChannelGraph, removed: np.ndarray, objective: str, fraction: float, scores: np.ndarray,
             min_fraction: float, best_effort: bool) -> bool:
    """Whether the objective keeps at most `fraction`; if not, an input error naming the best reachable
    fraction and the main frozen reasons, unless `best_effort` (then False, and the result stands)."""
    kept, total = cost(cg, removed, objective)
    if total > 0 and kept <= fraction * total * (1 + 1e-9):
        return True
    if best_effort or fraction >= 1.0:
        return fraction >= 1.0
    what = "MACs" if objective == "macs" else "prunable weights"
    flag = arg("macs") if objective == "macs" else "the target"
    if total <= 0:
        raise OnnxPruneError(f"cannot reach {flag} {fraction:g}: channel analysis found no {what} to remove")
    lowest = cost(cg, select(cg, scores, 0.0, objective, min_fraction=min_fraction), objective)[0] / total
    reasons = "; ".join(f"{reason} ({n} channel(s))" for reason, n in
                        sorted(cg.reasons.items(), key=lambda kv: -kv[1])[:2])
    raise OnnxPruneError(f"cannot reach {flag} {fraction:g}: the least that can be kept is {lowest:.3f} of {what}"
                         f"{f' (frozen: {reasons})' if reasons else ''}; {arg('best_effort')} prunes as far as it can")


GENERATED = re.compile(r"^(node_)?[A-Za-z]+(_\d+)+$")  # torch.export's node_Conv_584, tf2onnx's Conv_3


def layer_names(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> what a user knows the layer by: its own name, unless an exporter generated it (empty,
    node_Conv_584), then its weight's (features.0.0.weight)."""
    from ..graph import GraphFacts, roles

    facts = GraphFacts(model.graph)
    out = {}
    for node in facts.nodes:
        if node.name and not GENERATED.match(node.name):
            continue
        weights = [facts.source(node.input[slot]) for slot, role in roles.slots(node.op_type).items()
                   if role == roles.WEIGHT and slot < len(node.input) and node.input[slot]]
        weight = next((w for w in weights if w is not None), None)
        if weight is not None:
            out[node.name] = weight
    return out


def _target(density, compression, sparsity, macs, latency=None, method=None) -> tuple[str, float]:
    """("macs", F) or ("weights", the kept fraction the weight-level targets give, checked alike);
    with `latency`, ("macs", 1.0) until fit_latency finds the fraction."""
    from ..density import target_density

    if latency is not None:
        if any(v is not None for v in (density, compression, sparsity, macs)):
            names = ", ".join(arg(name) for name in ("latency", "macs", "compression", "density", "sparsity"))
            raise OnnxPruneError(f"give exactly one of {names}")
        if not 0.0 < latency <= 1.0 or not np.isfinite(latency):
            raise OnnxPruneError(f"{arg('latency')} must be in (0, 1] (the fraction of latency kept), not {latency}")
        if method not in CHANNEL_METHODS:
            raise OnnxPruneError(f"{arg('latency')} works with the channel criteria ({', '.join(CHANNEL_METHODS)}), "
                                 f"not {method}")
        return "macs", 1.0
    if macs is None:
        return "weights", target_density(compression, density, sparsity)
    if any(v is not None for v in (density, compression, sparsity)):
        names = ", ".join(arg(name) for name in ("macs", "compression", "density", "sparsity"))
        raise OnnxPruneError(f"give exactly one of {names}")
    if not 0.0 < macs <= 1.0 or not np.isfinite(macs):
        raise OnnxPruneError(f"{arg('macs')} must be in (0, 1] (the fraction of MACs kept), not {macs}")
    return "macs", float(macs)


def _exclude(cg: ChannelGraph, patterns: Iterable[str]) -> None:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    for (name, _), channels in cg.keys().items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            cg.frozen[channels] = True


def _iterate(cg, model, method, objective, fraction, iterations, schedule, scope, min_layer_density, input_shapes,
             batches, precision, seed, progress, output_kinds=None) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from ..api import PRECISIONS
    from ..pruning.loop import schedule_fraction
    from ..pruning.scorers import score, scorer
    from ..pruning.targets import prunable_tensors
    from ..twin import Twin

    dtype = PRECISIONS.get(precision, precision)
    weights = layer_weights(cg, TRAFFIC_MACS) if scope == "local" else None
    if method in CHANNEL_METHODS:  # one pass: these scores do not depend on which channels went
        scores = importance(cg, method, batches=batches, seed=seed, precision=dtype, output_kinds=output_kinds)
        scores = local_scores(cg, scores, weights) if scope == "local" else scores
        removed = select(cg, scores, fraction, objective, min_fraction=min_layer_density)
        if progress is not None:
            progress(1, 1)
        return removed, scores
    n = iterations or scorer(method).default_iterations
    twin = Twin(model).eval()
    names = prunable_tensors(twin)
    generator = torch.Generator().manual_seed(seed)
    removed = np.zeros(cg.n_channels, bool)
    for k in range(1, n + 1):
        step = schedule_fraction(fraction, k, n, schedule)
        for name in names:
            twin.set_mask(name, None)
        for name, mask in masks(cg, removed, set(names)).items():
            twin.set_mask(name, torch.from_numpy(mask))
        if method == "rand":  # one draw per channel: summed per-weight draws would rank channels by size
            scores = torch.rand(cg.n_channels, generator=generator, dtype=torch.float64).numpy()
        else:
            options = {"batches": batches} if batches is not None else {}
            weight_scores = score(twin, method, names, input_shapes=dict(input_shapes or {}), precision=dtype,
                                  generator=generator, **options)
            scores = channel_scores(cg, {k_: v.double().cpu().numpy() for k_, v in weight_scores.items()})
        if scope == "local":
            scores = local_scores(cg, scores, weights)
        removed = select(cg, scores, step, objective, min_fraction=min_layer_density, removed=removed)
        if progress is not None:
            progress(k, n)
    return removed, scores


def summary(cg: ChannelGraph, removed: np.ndarray, min_fraction: float = 0.0) -> dict[str, Any]:
    """Figures of a pruning: MACs (per sample) and weights kept, channels, coverage, per Conv/Gemm/
    MatMul node its name (layer_names) and output channels, MACs before/after and what bound its width (select.limits; "-"
    for a fixed output), and per pruned tensor axis ("name:axis") the kept indices."""
    macs_kept, macs_total = cost(cg, removed, "macs")
    w_kept, w_total = cost(cg, removed, "weights")
    keys = cg.keys()
    bound = limits(cg, removed, min_fraction)
    names = layer_names(cg.model)
    kept = {f"{name}:{axis}": np.flatnonzero(~removed[ch]).tolist() for (name, axis), ch in keys.items()
            if removed[ch].any()}
    layers = []
    for t in (t for t in cg.terms if t.kind == "macs"):
        sizes = [(len(keys[k]), int((~removed[keys[k]]).sum())) if k in keys else (cg.shapes[k[0]][k[1]],) * 2
                 for k in t.keys]
        before = t.coef * float(np.prod([b for b, _ in sizes])) / cg.batch
        after = t.coef * float(np.prod([a for _, a in sizes])) / cg.batch
        out = sizes[0] if sizes else (None, None)
        layers.append({"node": t.node, "name": names.get(t.node, t.node), "channels": out[0], "kept": out[1], "macs": before, "macs_kept": after,
                       "limit": bound.get(t.keys[0], "-") if t.keys else "-"})
    return {"channels": int(cg.n_channels), "frozen": int(cg.frozen.sum()), "removed": int(removed.sum()),
            "macs": {"kept": macs_kept / cg.batch, "total": macs_total / cg.batch},
            "weights": {"kept": w_kept, "total": w_total},
            "coverage": cg.coverage(), "frozen_reasons": dict(cg.reasons), "layers": layers, "kept_indices": kept}
