"""Channel dependency analysis: which channels of an ONNX graph can be removed, and what each touches.

`analyze(model)` walks the graph once in order, applying rules.py to each node (graph.py holds the
bookkeeping). The result lists the prunable channels (connected sets of coupled positions), the
slices of every constant tensor they index, the sizes to rewrite, and the MAC / weight cost terms.
Channels that reach anything unproven are frozen, with the first reason seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx

from ..errors import OnnxPruneError
from .graph import Analysis, DimFix, Fold, Slice, Term
from .rules import PART_RULES, RULES
from .shapes import shape_values, value_shapes

PROBE_BATCH = 2  # probe shapes at batch 2: a Reshape that folds the batch into channels shows up


@dataclass
class ChannelGraph:
    """The analysis result. Channels are numbered 0..n-1; `channel[e]` maps an element to its channel."""

    model: onnx.ModelProto
    slices: list[Slice]
    fixes: list[DimFix]
    terms: list[Term]
    channel: np.ndarray  # element -> channel
    frozen: np.ndarray  # bool per channel
    reasons: dict[str, int]  # why channels are frozen -> how many
    shapes: dict[str, tuple[int, ...]]
    batch: int = 1  # the probe batch, when the first input's first dim is symbolic: MACs / batch per sample
    # per channel, the activation elements memory-bound ops write for it (depthwise Convs, unfused
    # activations, SE, residual Adds; at the probe's batch): the work its removal saves besides MACs
    traffic: np.ndarray | None = None
    folds: list[Fold] = field(default_factory=list)  # consumers that absorb a removed constant channel
    # where each approximate rule applied: (node's first output, rule, axis, channel per position there)
    sites: list[tuple[str, str, int, np.ndarray]] = field(default_factory=list)

    @property
    def n_channels(self) -> int:
        return len(self.frozen)

    @property
    def approximate(self) -> dict[str, np.ndarray]:
        """Approximate rule -> the channels whose removal it changes (from `sites`)."""
        rules: dict[str, list[np.ndarray]] = {}
        for _, rule, _, channels in self.sites:
            rules.setdefault(rule, []).append(channels)
        return {rule: np.unique(np.concatenate(parts)) for rule, parts in rules.items()}

    def channels_of(self, ids: np.ndarray) -> np.ndarray:
        return self.channel[ids]

    def keys(self) -> dict[tuple[str, int], np.ndarray]:
        """(tensor, axis) -> channel per position, once per sliced axis."""
        out = {}
        for s in self.slices:
            out.setdefault((s.tensor, s.axis), self.channel[s.ids])
        return out

    def coverage(self) -> float:
        """Fraction of Conv/Gemm/MatMul MACs in layers with an output or input axis that holds a
        prunable channel."""
        keys = self.keys()
        total = covered = 0.0
        for t in (t for t in self.terms if t.kind == "macs"):
            macs = t.coef * np.prod([len(keys.get(k, ())) or 1 for k in t.keys])
            total += macs
            if any(k in keys and (~self.frozen[keys[k]]).any() for k in t.keys):
                covered += macs
        return covered / total if total else 0.0


def analyze(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
            approximate: bool = False) -> ChannelGraph:
    """Channel groups of `model` (main graph; inputs' symbolic dims probed at batch 2). `approximate`:
    the rules that change the computation where a channel goes apply too (graph.Analysis.approximate)."""
    probe = dict(input_shapes or _probe_shapes(model))
    shapes, second = value_shapes(model, probe), _second_probe(model, probe)
    refused = balanced = frozenset()
    # Again while an approximation's channels end up frozen anyway (it only labels more: undo it) or a
    # grouped Conv's groups share channels (whole groups would tie them all: take it balanced).
    while True:
        cg, mixed = _analyze_once(model, probe, shapes, second, approximate, refused, balanced)
        stuck = {site for site, _, _, channels in cg.sites if cg.frozen[channels].all()}
        if stuck <= refused and mixed <= balanced:
            return cg
        refused, balanced = refused | stuck, balanced | mixed


def _analyze_once(model: onnx.ModelProto, probe: dict, shapes: dict, second, approximate: bool, refused: frozenset,
                  balanced: frozenset) -> tuple[ChannelGraph, set[str]]:
    """One pass of the analysis, the approximate rules refused at the `refused` nodes and the
    `balanced` grouped Convs taken so; and the grouped Convs whose groups shared channels."""
    a = Analysis(model, shapes, second, loose=approximate, refused=refused, balanced=balanced)
    inner = _subgraph_names(model.graph)
    for i, node in enumerate(a.nodes):
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None:
            a.freeze_inputs(node, "op not handled by channel analysis")
            continue
        if node.op_type not in PART_RULES and any(n in a.labels and a.labels[n].part >= 0 for n in node.input):
            a.freeze_inputs(node, "reads a packed (fused Q/K/V) tensor other than by selecting a part")
            continue
        try:
            rule(a, i)
        except (KeyError, IndexError, ValueError, TypeError) as err:  # an odd node: keep its channels
            a.freeze_inputs(node, f"not analyzable ({type(err).__name__}: {err})")
    for name in inner & set(a.labels):
        a.freeze(a.labels[name].ids, f"'{name}' is read inside a subgraph")
    _weight_terms(a)
    a.close()
    roots = np.array([a.find(e) for e in range(len(a.parent))], dtype=np.int64)
    unique, channel = np.unique(roots, return_inverse=True)
    a.terms.extend(_scaled_terms(a, channel))
    frozen = np.zeros(len(unique), bool)
    reasons: dict[str, int] = {}
    for e, why in a.frozen.items():
        c = channel[e]
        if not frozen[c]:
            frozen[c] = True
            reasons[why] = reasons.get(why, 0) + 1
    sites = [(site, rule, axis, channel[ids]) for ids, rule, site, axis in a.approximations]
    return ChannelGraph(model, a.slices, a.fixes, a.terms, channel, frozen, reasons, shapes, _batch(model, probe),
                        _traffic(a, channel, len(unique)), a.folds, sites), a.mixed()


# Ops onnxruntime fuses into the dense Conv/Gemm/MatMul before them (no pass over memory of their
# own), and views that copy nothing.
FUSED_AFTER = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSigmoid", "Sigmoid", "Tanh"}
VIEWS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def _traffic(a: Analysis, channel: np.ndarray, n: int) -> np.ndarray:
    """Per channel, the activation elements that memory-bound ops write for it: every labelled tensor
    except the outputs of dense Conv/Gemm/MatMul (counted as MACs), of the ops fused into them, and of
    views. Each position of a tensor stands for prod(shape) / positions elements."""
    out = np.zeros(n)
    for name, label in a.labels.items():
        shape = a.shapes.get(name)
        ids = label.ids.ravel()
        if shape is not None and ids.size and all(isinstance(d, int) for d in shape) and _memory_bound(a, name):
            np.add.at(out, channel[ids], float(np.prod(shape)) / ids.size)
    return out


def _memory_bound(a: Analysis, name: str) -> bool:
    node = a.facts.producer(name)
    if node is None or node.op_type in VIEWS:
        return False
    if node.op_type in ("Gemm", "MatMul", "ConvTranspose"):
        return False
    if node.op_type == "Conv":  # grouped and depthwise Convs are memory-bound: few MACs per element
        group = next((onnx.helper.get_attribute_value(x) for x in node.attribute if x.name == "group"), 1)
        return group > 1
    if node.op_type in FUSED_AFTER and node.input and len(a.readers.get(node.input[0], ())) == 1:
        return _memory_bound(a, node.input[0])
    return True


def _batch(model: onnx.ModelProto, probe: Mapping[str, tuple[int, ...]]) -> int:
    constants = {t.name for t in model.graph.initializer}
    first = next((v for v in model.graph.input if v.name not in constants), None)
    if first is None or not first.type.tensor_type.shape.dim or first.name not in probe or not probe[first.name]:
        return 1
    dim = first.type.tensor_type.shape.dim[0]
    return 1 if dim.HasField("dim_value") and dim.dim_value > 0 else int(probe[first.name][0])


def _probe_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    constants = {t.name for t in model.graph.initializer}
    shapes = {}
    for value in model.graph.input:
        if value.name not in constants:
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else PROBE_BATCH
                                       for d in dims)
    return shapes


def _second_probe(model: onnx.ModelProto, probe: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The value of every Shape node with each symbolic input dim doubled (divisibility by powers of 2
    kept): shape arithmetic equal in both probes does not depend on those dims, so it folds
    (graph.Analysis.value). None when onnxruntime refuses the doubled sizes."""
    constants = {t.name for t in model.graph.initializer}
    doubled = dict(probe)
    for value in model.graph.input:
        if value.name in constants or value.name not in probe:
            continue
        dims = value.type.tensor_type.shape.dim
        free = [not (d.HasField("dim_value") and d.dim_value > 0) for d in dims]
        doubled[value.name] = tuple(2 * n if f else n for n, f in zip(probe[value.name], free))
    try:
        return shape_values(model, doubled)
    except OnnxPruneError:
        return None


def _weight_terms(a: Analysis) -> None:
    """Weight-count terms: each sliced Conv/Gemm/MatMul weight scales with its sliced axes."""
    weights = set()
    for i, node in enumerate(a.nodes):
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1:
            found = a.source(node.input[1])
            if found is not None:
                weights.add(found[0])
    axes: dict[str, set[int]] = {}
    for s in a.slices:
        if s.tensor in weights:
            axes.setdefault(s.tensor, set()).add(s.axis)
    for w in sorted(weights):
        shape = a.consts[w].shape
        keys = tuple((w, ax) for ax in sorted(axes.get(w, ())))
        a.terms.append(Term(w, float(np.prod(shape)) / float(np.prod([shape[ax] for _, ax in keys])), keys,
                            "weights"))


def _scaled_terms(a: Analysis, channel: np.ndarray) -> list[Term]:
    """MAC terms of MatMuls between activations (attention), which scale with kept heads: expressed
    over a sliced axis holding the same channels in the same proportions (kept(axis) / len(axis) =
    kept heads / heads), e.g. the Q projection's output axis; unscaled where there is none."""
    keys: dict[tuple[str, int], np.ndarray] = {}
    for s in a.slices:
        keys.setdefault((s.tensor, s.axis), channel[s.ids])
    profiles = {}
    for k, ch in sorted(keys.items()):
        values, counts = np.unique(ch, return_counts=True)
        profiles.setdefault((tuple(values.tolist()), tuple((counts / len(ch)).round(12).tolist())), k)
    terms = []
    for node, macs, ids in a.scaled:
        values, counts = np.unique(channel[ids], return_counts=True)
        k = profiles.get((tuple(values.tolist()), tuple((counts / len(ids)).round(12).tolist())))
        terms.append(Term(node, macs / len(keys[k]), (k,), "macs") if k else Term(node, macs, (), "macs"))
    return terms


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read inside If / Loop / Scan bodies (outer-scope reads included)."""
    names = set()
    for node in graph.node:
        for attribute in node.attribute:
            bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for body in bodies:
                for inner in body.node:
                    names.update(inner.input)
                names |= _subgraph_names(body)
    return names
