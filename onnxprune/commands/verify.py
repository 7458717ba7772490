"""`onnxprune verify PRUNED.onnx [--reference ORIGINAL.onnx]`: is the written model what we meant?

Two checks. (1) onnxruntime and the twin agree on random inputs: the file runs, and runs the graph
the twin ran. Where they differ beyond the tolerance, a second opinion says which side is off: onnx's
ReferenceEvaluator on a float64 copy of the file (an independent implementation of the spec), and the
twin in float32 (how far float32 rounding moves this graph's outputs). (2) With --reference: the
pruned file is the original with some weights zeroed: same graph, opset, IR version, inputs and
outputs; every stored tensor bit-identical except entries set to zero in Conv/ConvTranspose/Gemm/MatMul
weights and biases. A channel-pruned file (its metadata records the removed channels: structured/
record.py) must instead be the original's graph node for node and compute, in onnxruntime, what the
original computes with those channels' parameters zeroed (CHANNEL_RTOL). Exit 3 on any mismatch (2 is bad input, 1 an internal error).

torch, onnx and onnxruntime are imported inside the functions that use them: `onnxprune --help` and
the import of this module stay fast.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

if TYPE_CHECKING:
    import onnx

# Exit status when the check ran and found a mismatch (2 is bad input, 1 an internal error).
VERIFY_FAILED = 3

# ORT computes in float32; the twin in float64 is the reference. float32 rounding grows with depth
# relative to the size of the values, so the bound scales with the output's magnitude.
RTOL = 1e-4
# float32's unit roundoff: the least error a float32 result can carry, relative to its magnitude.
EPS32 = 2.0 ** -24
# How much larger than the twin's own float32 error onnxruntime's may be and still count as rounding.
# Both run the same graph in float32, so both errors scale with how the graph amplifies rounding (the
# twin's float32 run measures that); per op, onnxruntime's kernels are less exact than torch's
# (vectorized exp / tanh / sigmoid approximations of a few ulp, FMA and blocked summation orders): on
# the BERT export of issue 14, its Sigmoid was reported 1.3e-7 off where the float32 twin was 6e-9
# off, a factor of 22. 64 leaves a 3x margin over that, while a real difference (a wrong weight, axis or
# attribute) moves outputs by 1e-3 and more relative, over 10^4 times float32 rounding.
F32_SLACK = 64.0
# Channel pruning vs the original with those channels zeroed, both in onnxruntime float32: the removed
# terms were exact zeros, so the two differ only in how kernels block and order the remaining sums (a
# few ulp per op); 1e-5 relative is ~170 ulp of the output. A wrong channel or axis moves outputs by
# 1e-3 relative and more (tests/test_structured.py asserts that zeroing the removed channels does).
CHANNEL_RTOL = 1e-5
# onnxruntime's float32 Sigmoid (MLAS) is accurate to ~2 ulp of 1, its range, not of its result: measured
# on CPU, 1.2e-7 absolute wherever sigmoid(x) is 3e-4 or less (relative error up to 1.8), 3e-8 near 0.5.
# torch's is relative-accurate, so the float32 twin does not see it. An output a Sigmoid produces (through
# layout ops) is judged at the scale of 1: a detector's probability map of 3e-5 (PP-OCRv4 det with random
# weights) otherwise fails on 9e-8 that the float64 reference pins on onnxruntime.
UNIT_RANGE_OPS = frozenset({"Sigmoid"})


@dataclass
class OutputDiff:
    name: str
    max_diff: float
    scale: float  # max |value| of the twin's output
    ok: bool
    verdict: str = ""  # past the tolerance: which side the second opinion found off, and the numbers
    rounding_scale: float = 0.0  # the magnitude onnxruntime's float32 rounding is relative to (>= scale)
    dead: str = ""  # "all zero" or "constant": the output does not depend on the input (a pruned-away model)


@dataclass
class ReferenceCheck:
    problems: list[str] = field(default_factory=list)
    pruned_tensors: int = 0  # tensors with entries zeroed
    zeroed: int = 0  # entries zeroed across them
    identical: int = 0  # tensors bit-identical to the original
    channels: int = 0  # channel pruning: channel slices removed across the pruned tensors
    max_rel_diff: float | None = None  # channel pruning: onnxruntime, pruned vs the zeroed original
    # prune --approximate: the rules the file's removals used; those without a reference of their own
    # (structured/approximate.py) leave the outputs unjudged, max_rel_diff then only reported
    approximate: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)


def compare_with_ort(path: Path, model: onnx.ModelProto, *, input_shapes=None, seed: int = 0,
                     rtol: float = RTOL) -> list[OutputDiff]:
    """Run ORT (float32, CPU) on the file and the float64 twin of `model` (normally the file loaded) on
    the same random inputs; max |diff| per output, and a second opinion where it exceeds the tolerance."""
    import torch

    from ..api import example_feeds
    from ..io import ort_refusal, ort_session
    from ..pruning.inputs import resolve_shapes
    from ..twin import Twin

    twin = Twin(model, dtype=torch.float64).eval()
    feeds = example_feeds(twin, resolve_shapes(twin, input_shapes), seed=seed)
    arrays = {name: value.numpy() for name, value in feeds.items()}
    # fatal only: ORT warns about harmless things (initializers as inputs), and logs a failed run as an
    # error before raising it, which is reported in one line here
    session = ort_session(path, log_level=4)
    try:
        ort_out = [np.asarray(v) for v in session.run(None, arrays)]
    except Exception as err:  # noqa: BLE001 (onnxruntime refusing these input shapes is the user's input)
        refusal = ort_refusal(err, arrays)
        if refusal is None:
            raise
        raise refusal from None
    exact = _run_twin(twin, feeds)
    diffs = []
    for name, ref, got in zip(exact, exact.values(), ort_out):
        if ref.shape != got.shape:
            diffs.append(OutputDiff(name, float("inf"), 0.0, False, f"shape {list(got.shape)} vs {list(ref.shape)}"))
        elif ref.dtype.kind in "fc":
            diff, scale = _gap(got, ref), float(np.max(np.abs(ref), initial=0, where=np.isfinite(ref)))
            diffs.append(OutputDiff(name, diff, scale, diff <= rtol * max(scale, 1e-30),
                                    rounding_scale=max(scale, 1.0) if _unit_range(twin.facts, name) else scale))
        else:
            equal = np.array_equal(got, ref)
            diffs.append(OutputDiff(name, 0.0 if equal else float("inf"), 0.0, equal))
    _mark_dead(diffs, ort_out, session, twin, input_shapes, seed)
    off = [i for i, d in enumerate(diffs) if not d.ok and not d.verdict and exact[d.name].dtype.kind in "fc"]
    if off:
        _second_opinion([diffs[i] for i in off], [ort_out[i] for i in off], path, model, feeds, exact, rtol)
    return diffs


def _mark_dead(diffs: list[OutputDiff], outputs: list[np.ndarray], session, twin, input_shapes, seed: int) -> None:
    """Float outputs that are all zero, or (every input a float) equal on a second random input."""
    from ..api import example_feeds
    from ..pruning.inputs import resolve_shapes
    from ..twin.tensors import FLOAT_TYPES

    floats = [i for i, (d, out) in enumerate(zip(diffs, outputs)) if out.dtype.kind == "f"]
    for i in floats:
        if not np.any(outputs[i]):
            diffs[i].dead = "all zero"
    if all(spec.elem_type in FLOAT_TYPES for spec in twin.inputs) and any(not diffs[i].dead for i in floats):
        feeds = example_feeds(twin, resolve_shapes(twin, input_shapes), seed=seed + 1)
        again = session.run(None, {name: value.numpy() for name, value in feeds.items()})
        for i in floats:
            if not diffs[i].dead and np.array_equal(outputs[i], np.asarray(again[i])):
                diffs[i].dead = "constant"


def _unit_range(facts, name: str) -> bool:
    """Whether `name` is a UNIT_RANGE_OPS result, possibly moved by layout ops that keep its values."""
    from ..graph.roles import PASS_THROUGH

    node = facts.producer(name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = facts.producer(node.input[0])
    return node is not None and node.op_type in UNIT_RANGE_OPS


def _run_twin(twin, feeds) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = twin.run(feeds)
    return {name: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for name, v in out.items()}


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float64; equal infinities and NaN against NaN count as equal, any other non-finite
    mismatch as inf."""
    wide = np.result_type(a.dtype, b.dtype, np.float64)
    a, b = a.astype(wide), b.astype(wide)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = np.abs(a - b)[~same]
    return float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0))


def _second_opinion(diffs: list[OutputDiff], ort_out: list[np.ndarray], path: Path, model: onnx.ModelProto,
                    feeds, exact: dict[str, np.ndarray], rtol: float) -> None:
    """ORT and the float64 twin disagree beyond the tolerance: decide which side is off, in place.

    The twin is right when onnx's ReferenceEvaluator, run on a float64 copy of the file, agrees with it
    within the tolerance (two float64 evaluations differ by float64 rounding only). Then onnxruntime's
    gap passes as float32 rounding if it is within F32_SLACK times the twin's own float32 error (at least
    float32's unit roundoff of the output's magnitude). Without a reference (an op it lacks), that bound
    alone decides."""
    import torch

    from ..twin import Twin

    fast = _run_twin(Twin(model, dtype=torch.float32).eval(), feeds)
    reference, why = _reference_float64(path, {n: v.numpy() for n, v in feeds.items()})
    for d, got in zip(diffs, ort_out):
        tol = rtol * d.scale
        twin32, floor = _gap(fast[d.name], exact[d.name]), EPS32 * d.rounding_scale
        rounding = F32_SLACK * max(twin32, floor)
        explained = d.max_diff <= rounding
        basis = ("the float32 twin's error" if twin32 >= floor else
                 f"float32's roundoff at {d.rounding_scale:.3g}" + (", Sigmoid's range" if d.rounding_scale > d.scale else ""))
        numbers = f"onnxruntime vs twin {d.max_diff:.3g}; float32 rounding explains up to {rounding:.3g} ({F32_SLACK:g} x {basis})"
        if reference is None:
            d.ok = explained
            d.verdict = (f"{'float32 rounding' if explained else 'cannot tell which side is off'}: {numbers}; "
                         f"no float64 reference ({why})")
            continue
        e_twin, e_ort = _gap(exact[d.name], reference[d.name]), _gap(got, reference[d.name])
        numbers += f"; onnx reference (float64) vs twin {e_twin:.3g}, vs onnxruntime {e_ort:.3g}"
        # Two float64 evaluations differ by float64 rounding: the float32 bound scaled by the ratio of the
        # unit roundoffs (2**-53 / 2**-24), a floor for tight (even zero) tolerances.
        if e_twin > max(tol, rounding * 2.0 ** -29):
            d.ok = False
            side = "the twin is off" if e_ort <= max(tol, rounding) else "both sides are off"
            d.verdict = f"{side} (onnx's float64 reference disagrees with the twin): {numbers}"
        else:
            d.ok = explained
            d.verdict = f"{'onnxruntime float32 rounding' if explained else 'onnxruntime is off'}: {numbers}"


def _reference_float64(path: Path, feeds: dict[str, np.ndarray]):
    """onnx's ReferenceEvaluator on a float64 copy of the file: (outputs by name, None) or (None, why)."""
    from ..io import load_model
    from ..reference import float64_reference

    try:
        return float64_reference(load_model(path), feeds), None
    except Exception as error:  # noqa: BLE001 (any op or type the reference evaluator lacks)
        return None, f"onnx's ReferenceEvaluator failed: {type(error).__name__}: {str(error)[:200]}"


def compare_with_reference(pruned: onnx.ModelProto, original: onnx.ModelProto) -> ReferenceCheck:
    """The pruned model must be the original with some weight entries set to zero, nothing else."""
    from ..graph import weight_uses
    from ..graph.constants import stored_tensors

    check = ReferenceCheck()
    for what, a, b in (("IR version", pruned.ir_version, original.ir_version),
                       ("opsets", _opsets(pruned), _opsets(original)),
                       ("inputs", _ser(pruned.graph.input), _ser(original.graph.input)),
                       ("outputs", _ser(pruned.graph.output), _ser(original.graph.output)),
                       ("metadata", _ser(pruned.metadata_props), _ser(original.metadata_props))):
        if a != b:
            check.problems.append(f"{what} differ from the reference")
    new, old = stored_tensors(pruned.graph), stored_tensors(original.graph)
    # Write-back turns a pruned Constant / ConstantOfShape node into an initializer of the same name.
    became_initializers = {n for n, (kind, _) in old.items() if kind == "node" and new.get(n, ("node",))[0] != "node"}
    old_nodes = [n for n in original.graph.node if not (n.output and n.output[0] in became_initializers)]
    if _ser(pruned.graph.node) != _ser(old_nodes):
        check.problems.append("nodes differ from the reference")
    prunable = {u.source for u in weight_uses(original.graph)}
    freed = {n.input[0] for n in original.graph.node if n.op_type == "ConstantOfShape"
             and n.output[0] in became_initializers}
    for name, (_, before) in old.items():
        if name not in new:
            if name not in freed:
                check.problems.append(f"tensor '{name}' is missing")
            continue
        _compare_tensor(check, name, new[name][1], before, name in prunable)
    extra = sorted(set(new) - set(old))
    if extra:
        check.problems.append(f"tensors not in the reference: {extra[:5]}")
    return check


def compare_channels(pruned_path: Path, pruned: onnx.ModelProto, original: onnx.ModelProto, steps: list[list[dict]],
                     *, input_shapes=None, seed: int = 0) -> ReferenceCheck:
    """A channel-pruned model (see structured/record.py) must be the original's graph, node for node, and
    compute in onnxruntime what the original computes with the recorded channels' parameters zeroed.
    The original may be any earlier file of the chain: its own record is a prefix of the pruned one's,
    the steps after it are composed into one, and zeros that weight pruning added on the way go into
    the reference (as in the weight check: only in prunable weights). No channel step since the
    original (a weight-pruned file, or none pruned at all): the bitwise weight check."""
    from ..api import example_feeds
    from ..io import ort_session
    from ..pruning.inputs import resolve_shapes
    from ..graph import GraphFacts
    from ..graph.constants import stored_tensors
    from ..structured.approximate import JUDGED, edge_padded, kept_means, masked_norms
    from ..structured.producers import PADDED_FOLD
    from ..structured.record import KEY, approximate_rules, folded_biases, masked_means, padded_borders, recorded
    from ..structured.rules_per_channel import MEAN_STATISTICS
    from ..structured.tensors import resizable
    from ..twin import Twin

    before = recorded(original)
    if steps[:len(before)] != before:
        return ReferenceCheck(problems=["the reference is not an earlier file of this model's pruning chain "
                                        "(its record of removed channels is not where this file's starts)"])
    if len(steps) == len(before):  # no channel step since the reference: weight pruning at most
        return compare_with_reference(pruned, original)

    theirs = {n for n, _ in stored_tensors(original.graph).items()} | set(resizable(original.graph))
    added = set(folded_biases(pruned)) - theirs  # a bias the rewrite gave a consumer to fold a constant into

    def node_ids(graph):  # a shape constant shared by layers that shrink differently is copied per reader
        # a consumer that absorbed a map of constants writes to an Add of that map, inserted after it
        maps = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "Add" and n.input[-1] in added}
        return [(n.name, n.op_type, tuple(re.sub(r"_pruned\d+$", "", i) for i in n.input if i not in added),
                 tuple(maps.get(o, o) for o in n.output)) for n in graph.node if n.output[0] not in maps.values()]

    def others(model):
        return _ser(p for p in model.metadata_props if p.key != KEY)

    check = ReferenceCheck()
    for what, a, b in (("IR version", pruned.ir_version, original.ir_version),
                       ("opsets", _opsets(pruned), _opsets(original)),
                       ("inputs", _fed(pruned.graph), _fed(original.graph)),
                       ("outputs", _ser(pruned.graph.output), _ser(original.graph.output)),
                       ("metadata", others(pruned), others(original)),
                       ("nodes", node_ids(pruned.graph), node_ids(original.graph))):
        if a != b:
            check.problems.append(f"{what} differ from the reference")
    if check.problems:
        return check
    reference, entries = _channel_reference(check, pruned, original, steps[len(before):])
    check.pruned_tensors = len({e["tensor"] for e in entries if e["zero"]})
    check.channels = sum(len(e["removed"]) for e in entries if e["zero"])
    if check.problems:
        return check
    check.approximate = approximate_rules(pruned)
    means = [m for m in masked_means(pruned) if m["step"] >= len(before)]
    borders = [b for b in padded_borders(pruned) if b["step"] >= len(before)]
    # a ReduceMean's or padded Conv's positions are those of the step that recorded them: one step past
    # the reference
    multistep = len(steps) > len(before) + 1 and bool(means or borders)
    unwritten: list[str] = []
    if check.approximate:  # LayerNorms and means that lost channels average the kept ones: so does the reference
        reference = kept_means(masked_norms(reference, entries), [] if multistep else means)
        reference, unwritten = edge_padded(reference, [] if multistep else borders)
    check.unjudged = [rule for rule in check.approximate if rule not in JUDGED or
                      (rule in (MEAN_STATISTICS, PADDED_FOLD) and multistep) or (rule == PADDED_FOLD and unwritten)]
    twin = Twin(original).eval()
    feeds = {n: v.numpy() for n, v in example_feeds(twin, resolve_shapes(twin, input_shapes), seed=seed).items()}
    got = ort_session(pruned_path, log_level=4).run(None, feeds)
    want = ort_session(reference.SerializeToString(), log_level=4).run(None, feeds)
    # relative to the output's scale: its largest value, or 1 for a Sigmoid / Softmax, whose saturated
    # tails (a detector's map on noise: 1e-6 everywhere) would otherwise turn rounding into a mismatch
    facts = GraphFacts(original.graph)
    scales = [max(float(np.abs(w).max(initial=0)), 1.0 if _unit_range(facts, o.name) else 1e-30)
              for w, o in zip(want, original.graph.output)]
    gaps = [_gap(np.asarray(g), np.asarray(w)) / scale if np.shape(g) == np.shape(w) else float("inf")
            for g, w, scale in zip(got, want, scales)]
    check.max_rel_diff = max(gaps, default=0.0)
    if check.max_rel_diff > CHANNEL_RTOL and not check.unjudged:
        check.problems.append(f"outputs differ from the reference with the removed channels zeroed "
                              f"(max relative diff {check.max_rel_diff:.3g} > {CHANNEL_RTOL:g})")
    return check


def _channel_reference(check: ReferenceCheck, pruned: onnx.ModelProto, original: onnx.ModelProto,
                       steps: list[list[dict]]) -> tuple[onnx.ModelProto, list[dict]]:
    """The original with the composed steps' channels zeroed and every tensor the steps resized holding
    the pruned file's values at the kept positions; problems where those are not the original's values
    or zeros that weight pruning may write."""
    from ..graph import weight_uses
    from ..graph.constants import stored_tensors
    from ..structured.record import compose, folded_biases, kept_index, with_values, zeroed_values
    from ..structured.tensors import resizable

    # the pruned side as stored (weight pruning may have written sparse initializers), and the
    # Identity copies of shared constants that the rewrite treats as tensors of their own
    mine = {**{n: v for n, (_, v) in stored_tensors(pruned.graph).items()}, **resizable(pruned.graph)}
    theirs = resizable(original.graph)
    copied = {n.output[0]: n.input[0] for n in pruned.graph.node if n.op_type == "Identity"}
    copy_of = {source: name for name, source in copied.items()}

    def rename(name: str) -> str:  # a later step names a shared constant's sliced copy, read by one Identity
        return name if name in theirs else copy_of.get(name, name)

    def value(name: str):  # the pruned file's value of one of the original's tensors
        while name not in mine and name in copied:
            name = copied[name]
        return mine.get(name)

    entries = compose(steps, {n: v.shape for n, v in theirs.items()}, rename)
    # A record from before steps lists parameters only, not the consumers' sliced inputs: the tensors it
    # does not describe are left to the onnxruntime comparison, as they were then.
    legacy = all(e["zero"] for e in entries)
    folded = set(folded_biases(pruned))
    arrays = zeroed_values(original, entries)
    prunable = {u.source for u in weight_uses(original.graph)}
    by_tensor: dict[str, list[dict]] = {}
    for e in entries:
        by_tensor.setdefault(e["tensor"], []).append(e)
    for name, base in theirs.items():
        after = value(name)
        index = np.ix_(*kept_index(base.shape, by_tensor.get(name, [])))
        reference = arrays.get(name, base)
        if after is None or after.shape != reference[index].shape or after.dtype != base.dtype:
            if name in by_tensor and not legacy:
                check.problems.append(f"tensor '{name}' is not the reference's with the recorded channels removed")
            continue
        differ = reference[index] != after
        if not differ.any() or name in folded:  # a folded bias: the outputs comparison judges it
            continue
        if name in prunable and (after[differ] == 0).all():  # zeros weight pruning added
            arrays[name] = reference = reference.copy()
            reference[index] = after
            check.zeroed += int(differ.sum())
        elif name in by_tensor or name in prunable:
            check.problems.append(f"tensor '{name}': kept entries differ from the reference ({int(differ.sum())} entries)")
        # else a size the channel rewrite wrote (a Reshape's shape): the reference keeps its own
    return with_values(original, arrays), entries


def _fed(graph: onnx.GraphProto) -> list[str]:
    """The inputs a caller feeds (IR 3 also lists initializers, which a rewrite may add or resize)."""
    stored = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in stored]


def _compare_tensor(check: ReferenceCheck, name: str, after: np.ndarray, before: np.ndarray, prunable: bool) -> None:
    if after.dtype != before.dtype or after.shape != before.shape:
        check.problems.append(f"tensor '{name}': {after.dtype}{list(after.shape)} vs reference "
                              f"{before.dtype}{list(before.shape)}")
        return
    bits = f"u{after.itemsize}" if after.itemsize in (1, 2, 4, 8) else None
    if bits is None:
        same = np.frombuffer(after.tobytes(), np.uint8) == np.frombuffer(before.tobytes(), np.uint8)
        if not same.all():
            check.problems.append(f"tensor '{name}' differs")
        return
    differ = np.frombuffer(after.tobytes(), bits) != np.frombuffer(before.tobytes(), bits)
    if not differ.any():
        check.identical += 1
        return
    zero = after.reshape(-1).astype(np.float64) == 0 if after.dtype.kind != "b" else ~after.reshape(-1)
    if not prunable or not np.all(zero[differ]):
        what = "a non-prunable tensor changed" if not prunable else "kept entries differ from the reference"
        check.problems.append(f"tensor '{name}': {what} ({int(differ.sum())} entries)")
        return
    check.pruned_tensors += 1
    check.zeroed += int(differ.sum())


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}


def _ser(items) -> list[bytes]:
    return [item.SerializeToString(deterministic=True) for item in items]


@click.command("verify")
@click.argument("pruned", type=click.Path(path_type=Path))
@click.option("-r", "--reference", type=click.Path(path_type=Path),
              help="The original model: check PRUNED is it with some weights zeroed, all else bit-identical "
                   "(channel-pruned: computes it with the removed channels zeroed).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Concrete shape of an input (repeatable); needed when a non-batch dim is symbolic.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--rtol", type=click.FloatRange(min=0), default=RTOL, show_default=True,
              help="Allowed max |ORT - twin| relative to the output's max |value|.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def verify(ctx: click.Context, pruned: Path, reference: Path | None, input_shapes, seed: int, rtol: float,
           as_json: bool) -> None:
    """Check PRUNED runs in onnxruntime exactly like the twin (and, with --reference, is the original
    with zeroed weights). Exit 3 on mismatch, 2 on bad input."""
    from ..io import load_model
    from .options import parse_input_shape

    shapes = dict(parse_input_shape(text) for text in input_shapes)
    model = load_model(pruned)
    original = load_model(reference) if reference is not None else None
    diffs = compare_with_ort(pruned, model, input_shapes=shapes, seed=seed, rtol=rtol)
    ref = None
    if original is not None:
        from ..structured.record import recorded

        ref = compare_channels(pruned, model, original, recorded(model), input_shapes=shapes, seed=seed)
    ok = all(d.ok for d in diffs) and (ref is None or not ref.problems)
    for d in diffs:  # a model pruned to death still verifies (exactly): say so, in one line each
        if d.dead:
            what = "is all zero" if d.dead == "all zero" else "is the same for two different random inputs"
            click.echo(f"warning: output '{d.name}' {what}: the model no longer depends on its input", err=True)
    if as_json:
        click.echo(json.dumps(_as_dict(diffs, ref, ok, rtol), indent=2))
    else:
        _print(diffs, ref, ok, rtol, reference)
    ctx.exit(0 if ok else VERIFY_FAILED)


def _as_dict(diffs, ref, ok, rtol) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": ok, "rtol": rtol, "outputs": [d.__dict__ for d in diffs]}
    if ref is not None:
        out["reference"] = ref.__dict__
    return out


def _print(diffs, ref, ok, rtol, reference) -> None:
    click.echo("onnxruntime (float32) vs twin (float64) on random inputs:")
    for d in diffs:
        click.echo(f"  {d.name}: max |diff| {d.max_diff:.3g} (max |value| {d.scale:.3g}, "
                   f"allowed {rtol * d.scale:.3g})  {'ok' if d.ok else 'MISMATCH'}")
        if d.verdict:
            click.echo(f"    {d.verdict}")
    if ref is not None and ref.max_rel_diff is not None:
        masked = " and its LayerNorms and means over the kept channels" if ref.approximate else ""
        allowed = f"not judged: approximate removals ({'; '.join(ref.unjudged)})" if ref.unjudged else \
            f"allowed {CHANNEL_RTOL:g}"
        click.echo(f"reference {reference}: {ref.channels:,} channel slice(s) removed from {ref.pruned_tensors} "
                   f"tensor(s); onnxruntime, pruned vs reference with them zeroed{masked}: max relative diff "
                   f"{ref.max_rel_diff:.3g} ({allowed})")
    elif ref is not None:
        click.echo(f"reference {reference}: {ref.pruned_tensors} tensor(s) pruned ({ref.zeroed:,} entries zeroed), "
                   f"{ref.identical} bit-identical")
    for problem in ref.problems if ref is not None else ():
        click.echo(f"  MISMATCH: {problem}")
    click.echo("verified" if ok else "verify failed")
