"""The bookkeeping of channel analysis: labels on tensors, union-find over channels, and what to slice.

Every output channel of a Conv / Gemm / MatMul producer is an *element*. A tensor that carries
channels has a `Label`: the axis, and per position along it the element it holds (a Flatten repeats
an element H*W times; a Concat lists several producers' elements). Ops that combine tensors
elementwise (a residual Add, an SE gate Mul) identify their operands' elements position by position
(`union`); a connected set of elements is one prunable *channel* (removing it removes every position
holding any of its elements). An element that reaches something the analysis cannot rewrite is
*frozen*, with the reason; a channel holding a frozen element is never removed.

`zero` records, per position, whether the value there is exactly 0 in the original model once the
channel's parameters are zeroed (producer filter and bias, norm scale and shift, per-channel constants
of Add/Mul). A consumer (Conv/Gemm/MatMul input) may only drop positions that are exactly 0: that is
what makes removal exact. Sigmoid(0) = 0.5 is not; BatchNorm with zero scale and shift gives 0 again
whatever its running mean. `const` records the wider fact that the value there is a constant: the same
for every input and at every index of the other axes (PP-LCNet's learnable affine adds a scalar
offset after every activation: a removed channel is b, not 0). A consumer whose every output reads a
whole channel (an unpadded Conv, a Gemm) drops such a position by folding its weights times that
constant into its bias (`folds`, applied by rewrite.py): exact too. `fixed` is wider still: the value
does not depend on the input but may vary along the other axes (magika's LayerNorm over the tokens adds
a shift per token to a channel that is 0). Where the consumer's output shape is fixed but for the batch
(an unpadded Conv, a MatMul), the rewrite adds the consumer's output from those channels alone, a
constant, after it: exact as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import onnx

from ..graph import GraphFacts
from .tensors import resizable

# Ops through which a constant keeps its identity on the way to a weight slot (paddle2onnx Identity,
# mixed precision Cast, jax2onnx / tf2onnx Transpose, a ViT's class token expanded to the batch); the
# axis map follows the Transpose.
CONST_PASS = {"Identity", "Cast", "Transpose", "Unsqueeze", "Expand"}
# Ops that keep a constant's values in flat order (torchscript feeds Slice bounds through Unsqueeze).
FLAT_PASS = {"Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten"}
# Integer shape arithmetic that `Analysis.value` evaluates when every input is known.
FOLDABLE = {"Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Min", "Max", "Concat", "Gather", "Slice", "Range",
            "Equal", "Less", "Greater", "Where", "Not", "And", "Or", "Unsqueeze", "Squeeze", "Reshape", "Cast",
            "ConstantOfShape"}


@dataclass
class Label:
    axis: int
    ids: np.ndarray  # int64, element per position
    zero: np.ndarray  # bool, exactly 0 at that position once its channel's parameters are zeroed
    # A packed tensor (torch's fused Q/K/V projection viewed as [..., 3, E]): the axis of its parts, and
    # ids / zero have one row per part. Only PART_RULES ops read it; any other op freezes it.
    part: int = -1
    # bool, the value there is a constant once its channel's parameters are zeroed (see the module
    # docstring); implied by zero. None: exactly where zero.
    const: np.ndarray | None = None
    # bool, the value there does not depend on the inputs but may vary along the other axes (a shift per
    # token added to a removed channel); implied by const. None: exactly where const. Rules that do not
    # pass it on leave it at const, which is the safe side.
    fixed: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.const = self.zero.copy() if self.const is None else (np.asarray(self.const) | self.zero)
        self.fixed = self.const.copy() if self.fixed is None else (np.asarray(self.fixed) | self.const)

    def at(self, axis: int, index=slice(None)) -> "Label":
        """This label moved to `axis`, its positions taken at `index` (every flag with them)."""
        return Label(axis, self.ids[index], self.zero[index], const=self.const[index], fixed=self.fixed[index])


@dataclass(frozen=True)
class Fold:
    """Input `tensor` of the dense node `index` may lose positions that hold a nonzero constant: the
    rewrite adds weight `weight` (its input axis `in_axis`, summed over every other axis but
    `out_axis`) times that constant into bias `bias` ("" when the node has none: one is added at
    input slot `bias_slot`), times `scale` (Gemm's alpha over beta)."""

    index: int
    tensor: str
    weight: str
    in_axis: int
    out_axis: int
    bias: str
    bias_slot: int
    scale: float = 1.0
    # the output's shape is fixed but for the batch (axis 0): a removed channel that is a map of
    # constants (Label.fixed) becomes a constant added to the output, the consumer applied to that map
    map: bool = False


@dataclass(frozen=True)
class Slice:
    """Tensor `tensor` (a constant source) is indexed along `axis` by `ids` (one element per position).
    role "param": zeroed in the reference model for a removed channel; "input"/"stat": only sliced."""

    tensor: str
    axis: int
    ids: np.ndarray = field(compare=False)
    role: str
    node: str


@dataclass(frozen=True)
class DimFix:
    """A size to rewrite to the kept count of `ids`: a value inside a constant (`kind` "const":
    `target` the tensor, `index` the position) or a node attribute (`kind` "attr": `target` the node
    name, `index` its position in graph.node, `attr` the attribute, `pos` the position in a list
    attribute or -1), or a channel count read at run time that keeps the original's value (`kind`
    "pin": `target` a Shape's output, `index` the count's position there, where the count reaches
    what the rules cannot follow: head_dim = E / heads in nn.MultiheadAttention, c // groups in a
    channel shuffle).
    A pinned count is what the zeroed reference reads; the rules have rewritten every size it gives
    to a channel axis (a Reshape entry becomes a constant of its own)."""

    kind: str
    target: str
    index: int
    ids: np.ndarray = field(compare=False)
    attr: str = ""
    pos: int = -1
    reader: tuple = ()  # "const": the (node index, slot) that reads `target` on the way to the entry
    copy: bool = False  # "const": the reader gets its own rewritten copy (the constant is shared)
    # "const" on a computed `target` whose value is fixed (shape arithmetic equal in both probes,
    # Analysis._fold): the reader gets a constant copy of this value with the entry rewritten
    folded: np.ndarray | None = field(default=None, compare=False)
    power: int = 1  # "const": the entry becomes the kept count to this power (-1: 1 / count, a float)


@dataclass
class Term:
    """A cost that scales with the kept counts along its keys: coef * prod(kept[key])."""

    node: str
    coef: float
    keys: tuple  # (tensor, axis) slice keys
    kind: str  # "macs" or "weights"


class Analysis:
    """Mutable state of one pass over a graph; op handlers (rules.py) call these methods."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                 second: dict[str, np.ndarray] | None = None, loose: bool = False, refused: frozenset = frozenset(),
                 balanced: frozenset = frozenset()):
        self.model, self.graph, self.shapes = model, model.graph, shapes
        self.loose = loose  # approximate mode: the rules that change the computation apply (`approximate`)
        self.refused = refused  # nodes (by first output) where they gained nothing in an earlier pass
        self.balanced = balanced  # grouped Convs (by first output) whose groups each lose as many channels
        self.whole: list[tuple[str, np.ndarray]] = []  # grouped Convs that lose whole groups, an element per group
        self.balance: list[np.ndarray] = []  # a balanced Conv's outputs, one row per group: close() evens them
        # (elements per position, the rule's name, the node's first output, the positions' axis there)
        self.approximations: list[tuple[np.ndarray, str, str, int]] = []
        self.second = second  # Shape node output -> value with every symbolic input dim doubled (None: not measured)
        self.facts = GraphFacts(self.graph)
        self.nodes, self.readers = self.facts.nodes, self.facts.readers
        self.consts = resizable(self.graph)  # only these can be resized in place
        self.outputs = set(self.facts.outputs)
        self.labels: dict[str, Label] = {}
        self.parent: list[int] = []
        self.frozen: dict[int, str] = {}  # element -> reason
        self.slices: list[Slice] = []
        self.fixes: list[DimFix] = []
        self.folds: list[Fold] = []
        self.terms: list[Term] = []
        self.uses: dict[str, set[tuple[int, int]]] = {}  # source -> registered (node, slot) reads
        self.fixed_sources: set[str] = set()
        self.scaled: list[tuple[str, float, np.ndarray]] = []  # (node, MACs, ids): MACs scale with kept ids
        self.evaluated: tuple[dict, dict] = ({}, {})  # _evaluate's cache, per probe
        # rules_views._factor_fix / _fix_entry: a shape product or Concat read by several Reshapes (Expands) -> [those
        # that rewrote an entry of it, all that read it]
        self.factors: dict[str, list[set[int]]] = {}
        # rules_views.shape: Reshape entries that are a channel count read at run time -> those channels; the
        # Shapes' uses, and the entries rules_views._reshape_fix found holding the same channels
        self.counts: dict[tuple[int, int], list[np.ndarray]] = {}
        self.pending_counts: list[tuple[set, np.ndarray, list, str]] = []
        self.accepted_counts: set[tuple[int, int]] = set()

    # ----- elements ------------------------------------------------------------------------------
    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, e: int) -> int:
        parent = self.parent
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        for e in np.unique(ids).tolist():
            self.frozen.setdefault(e, reason)

    def freeze_inputs(self, node: onnx.NodeProto, reason: str) -> None:
        for name in node.input:
            if name in self.labels:
                self.freeze(self.labels[name].ids, f"{_who(node)}: {reason}")

    def approximate(self, ids: np.ndarray, rule: str, reason: str, node: onnx.NodeProto, axis: int = -1) -> bool:
        """A rule that changes what the model computes where these channels go (approximate mode,
        recovered by distillation): records them under `rule` and says True in that mode; else
        freezes them with `reason`, naming the flag that would remove them."""
        if self.loose and node.output[0] not in self.refused:
            self.approximations.append((np.asarray(ids).ravel().copy(), rule, node.output[0], axis))
            return True
        hint = "--approximate cannot: they are frozen elsewhere too" if self.loose else f"--approximate: {rule}"
        self.freeze(ids, f"{reason} ({hint})")
        return False

    def fixed_shape(self, name: str) -> bool:
        """`name` has this shape for every input but its batch: the inputs' dims past the first are
        fixed, and name's first is theirs (a map of constants at this shape then holds for any batch)."""
        return bool(self.shapes[name]) and self.shapes[name][0] in self.batches

    @cached_property
    def batches(self) -> set[int]:
        """The inputs' first dims at the probe, where every other dim of every input is fixed; else none."""
        inputs = [v for v in self.graph.input if v.name not in self.consts and v.name in self.shapes]
        if not all(d.HasField("dim_value") and d.dim_value > 0 for v in inputs for d in v.type.tensor_type.shape.dim[1:]):
            return set()
        return {self.shapes[v.name][0] for v in inputs if self.shapes[v.name]}

    def require_zero(self, label: Label, node: onnx.NodeProto, fold: Fold | None = None) -> None:
        """A consumer drops positions: those not exactly 0 when removed cannot go, unless they are a
        constant and `fold` says how the consumer absorbs it (a map of constants: when it adds a map)."""
        loose = ~label.zero
        absorbs = (label.fixed if fold.map else label.const) if fold is not None else np.zeros_like(loose)
        if (loose & absorbs).any():
            self.folds.append(fold)
            loose &= ~absorbs
        if loose.any():
            self.freeze(label.ids[loose], f"{_who(node)}: its input is not 0 where a channel is removed")

    # ----- constants -----------------------------------------------------------------------------
    def source(self, name: str) -> tuple[str, list[int | None] | None] | None:
        """(constant source, axis map or None for identity) of a tensor, through Identity / Cast /
        Transpose / Unsqueeze; None if it is computed from data. The map gives, for each axis of the
        tensor, the source's axis (None: an axis of size 1 that Unsqueeze inserted)."""
        perm = None
        seen = set()
        while name not in self.consts:
            node = self.facts.producer(name)
            if name in seen or node is None:
                return None
            seen.add(name)
            step = self._axis_map(node)
            if step is None:
                return None
            if step:
                perm = step if perm is None else [None if i is None else step[i] for i in perm]
            name = node.input[0]
        return name, perm

    def _axis_map(self, node: onnx.NodeProto) -> list[int | None] | None:
        """A constant-passing node's output axis -> input axis ([] for identity; None: not one)."""
        if node.op_type in ("Identity", "Cast"):
            return []
        rank = len(self.shapes.get(node.input[0], ()))
        if node.op_type == "Expand":  # sliceable along an axis the target shape leaves at 1 in every probe
            sizes, targets = self.shapes.get(node.input[0]), self.probed(node.input[1])
            if sizes is None or len(self.shapes.get(node.output[0], ())) != rank or any(t is None for t in targets) \
                    or any(np.ravel(t)[k] != 1 for t in targets for k, n in enumerate(sizes) if n > 1):
                return None
            return []
        if node.op_type == "Transpose":
            return _ints(node, "perm") or list(reversed(range(rank)))
        if node.op_type == "Unsqueeze":  # axes: an attribute before opset 13, an input since
            axes = _ints(node, "axes")
            if axes is None and len(node.input) > 1:
                axes = self.value(node.input[1])
            if axes is None or node.input[0] not in self.shapes:
                return None
            out_rank = rank + len(axes)
            inserted = {int(x) % out_rank for x in np.asarray(axes).reshape(-1)}
            rest = iter(range(rank))
            return [None if j in inserted else next(rest) for j in range(out_rank)]
        return None

    def flat_source(self, name: str) -> str | None:
        """The constant behind `name` through ops that keep its flat order; None if computed."""
        found = self._flat_path(name)
        return None if found is None else found[0]

    def _flat_path(self, name: str, reader: tuple = ()) -> tuple[str, tuple] | None:
        """(constant, the (node, slot) reading it directly, or `reader` when `name` is it)."""
        seen = set()
        while name not in self.consts:
            node = self.facts.producer(name)
            if node is None or node.op_type not in FLAT_PASS or name in seen:
                return None
            seen.add(name)
            reader = (self.facts.producers[name], 0)
            name = node.input[0]
        return name, reader

    def value(self, name: str) -> np.ndarray | None:
        """The value of `name` where it does not depend on the inputs (read-only: rewrites go through
        `slice` and `fix_const`, which need the constant itself); None if computed from data."""
        known = self._stored(name)
        return known if known is not None else self._fold(name)

    def _stored(self, name: str) -> np.ndarray | None:
        """A constant's value through Identity / Cast / Transpose or the flat-order ops."""
        found = self.source(name)
        if found is None:
            src = self.flat_source(name)
            return None if src is None else self.consts[src].reshape(self.shapes[name])
        src, perm = found
        array = self.consts[src]
        if perm is None:
            return array
        # consumer axis i = source axis perm[i]; the inserted axes have size 1
        return np.transpose(array, [p for p in perm if p is not None]).reshape(self.shapes[name])

    def _fold(self, name: str) -> np.ndarray | None:
        """Shape arithmetic that comes out the same in both probes (torch computes Slice bounds as
        Mod(2, 3) + 1, and E from x.size(-1)): it depends on no symbolic input dim, so it is a constant.
        Sound because a tensor without a channel label never changes size, and Shape of a channel
        tensor freezes the channels whose count it reads (rules_views.shape)."""
        if self.second is None:
            return None
        first, second = self._evaluate(name, 0), self._evaluate(name, 1)
        if first is None or second is None or first.shape != second.shape or not np.array_equal(first, second):
            return None
        return first

    def probed(self, name: str) -> list[np.ndarray | None]:
        """`name`'s value in each probe that ran, where only shapes and constants feed it."""
        return [self._evaluate(name, k) for k in range(2 if self.second is not None else 1)]

    def _evaluate(self, name: str, k: int) -> np.ndarray | None:
        """`name` under probe k, where only shapes and constants feed it (onnx's reference evaluator runs
        the one node, its inputs evaluated first)."""
        cache = self.evaluated[k]
        if name in cache:
            return cache[name]
        cache[name] = self._stored(name)  # a cycle reads None
        node = self.facts.producer(name)
        if cache[name] is not None or node is None or node.domain not in ("", "ai.onnx"):
            return cache[name]
        if node.op_type == "Shape" and k == 1:
            cache[name] = self.second.get(name)
            return cache[name]
        if node.op_type == "Shape":
            shape = self.shapes[node.input[0]]
            start, end = (next((a.i for a in node.attribute if a.name == key), d) for key, d in (("start", 0), ("end", len(shape))))
            cache[name] = np.array(shape, np.int64)[start:end]
            return cache[name]
        if node.op_type not in FOLDABLE:
            return None
        inputs = [self._evaluate(n, k) if n else None for n in node.input]
        if any(n and v is None for n, v in zip(node.input, inputs)):
            return None
        from onnx.reference import ReferenceEvaluator

        one = onnx.helper.make_node(node.op_type, [f"in{j}" if n else "" for j, n in enumerate(node.input)],
                                    [f"out{j}" for j in range(len(node.output))], domain=node.domain)
        one.attribute.extend(node.attribute)
        outputs = ReferenceEvaluator(one).run(None, {f"in{j}": v for j, v in enumerate(inputs) if node.input[j]})
        for out, array in zip(node.output, outputs):
            cache[out] = np.asarray(array)
        return cache[name]

    def slice(self, index: int, slot: int, axis: int, ids: np.ndarray, role: str) -> bool:
        """Register: input `slot` of node `index` is sliced along its own `axis` by `ids`."""
        node = self.nodes[index]
        found = self.source(node.input[slot])
        if found is None:
            return False
        src, perm = found
        src_axis = axis if perm is None else perm[axis]
        if src_axis is None or self.consts[src].shape[src_axis] != len(ids):
            return False
        self.uses.setdefault(src, set()).add((index, slot))
        self.slices.append(Slice(src, src_axis, ids, role, _who(node)))
        return True

    def key(self, index: int, slot: int, axis: int) -> tuple[str, int] | None:
        found = self.source(self.nodes[index].input[slot])
        if found is None:
            return None
        src, perm = found
        src_axis = axis if perm is None else perm[axis]
        return None if src_axis is None else (src, src_axis)

    def fix_const(self, index: int, slot: int, pos: int, ids: np.ndarray) -> bool:
        """Register: flat entry `pos` of input `slot` of node `index` becomes the kept count of ids."""
        name = self.nodes[index].input[slot]
        found = self._flat_path(name, (index, slot))
        if found is None:
            folded = self._fold(name)
            if folded is None or folded.dtype.kind not in "iu":
                return False
            self.fixes.append(DimFix("const", name, pos, ids, reader=(index, slot), copy=True, folded=folded))
            return True
        src, reader = found
        self.uses.setdefault(src, set()).add((index, slot))
        self.fixed_sources.add(src)
        self.fixes.append(DimFix("const", src, pos, ids, reader=reader))
        return True

    def fix_scalar(self, index: int, slot: int, ids: np.ndarray, power: int) -> None:
        """Register: the scalar constant at input `slot` of node `index` becomes the kept count of ids
        to `power` (-1: the 1 / width that turns a sum into a mean), in a copy for that reader."""
        name = self.nodes[index].input[slot]
        self.fixes.append(DimFix("const", name, 0, ids, reader=(index, slot), copy=True,
                                 folded=np.array(self.value(name)), power=power))

    def fix_attr(self, index: int, attr: str, ids: np.ndarray, pos: int = -1) -> None:
        self.fixes.append(DimFix("attr", _who(self.nodes[index]), index, ids, attr, pos))

    def same_channels(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Two position lists hold the same channels as many times each (so they keep equal counts)."""
        roots = [np.sort([self.find(e) for e in x.ravel().tolist()]) for x in (a, b)]
        return len(roots[0]) == len(roots[1]) and bool(np.array_equal(*roots))

    # ----- closing checks --------------------------------------------------------------------------
    def terminal_reads(self, name: str, through=None) -> set[tuple[int, int]] | None:
        """Every (node, slot) that reads constant `name` past Identity/Cast/Transpose and the
        flat-order ops (or the (op, slot) reads `through` says pass it on); None if any such tensor is
        a graph output."""
        through = through or (lambda op, slot: op in CONST_PASS | FLAT_PASS and slot == 0)
        reads, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current in self.outputs:
                return None
            for i, slot in self.readers.get(current, []):
                node = self.nodes[i]
                if through(node.op_type, slot):
                    if node.output[0] not in self.consts:  # else an Identity copy: a constant of its own
                        todo.append(node.output[0])
                else:
                    reads.add((i, slot))
        return reads

    def _fixes_agree(self, src: str, reader: tuple | None = None) -> bool:
        """Sizes written into one shared constant agree: each position gets one list of elements
        (x[:, 2:7] and x[:, 7:] share the constant 7, and both mean "channels before 7"); with
        `reader`, only the sizes written through that direct reader."""
        seen: dict[int, np.ndarray] = {}
        for f in self.fixes:
            if f.kind == "const" and f.target == src and (reader is None or f.reader == reader):
                roots = np.array([self.find(e) for e in f.ids.tolist()], dtype=np.int64)
                if f.index in seen and not np.array_equal(seen[f.index], roots):
                    return False  # elements of one channel count alike (the Q, K and V of one head)
                seen.setdefault(f.index, roots)
        return True

    def _copies(self, src: str, registered: set, by_source: dict) -> bool:
        """A shape constant shared by several readers (exporters reuse one constant for every equal
        value: the head count of every attention layer): each direct reader whose sizes agree and
        whose reads are all registered gets its own rewritten copy; others keep the original."""
        mine = [f for f in self.fixes if f.kind == "const" and f.target == src]
        if src in by_source or not mine or any(not f.reader for f in mine):
            return False
        for reader in {f.reader for f in mine}:
            j, slot = reader
            node = self.nodes[j]
            passes = node.op_type in CONST_PASS | FLAT_PASS and slot == 0
            reads = self.terminal_reads(node.output[0]) if passes else {reader}
            if reads is None or not reads <= registered or not self._fixes_agree(src, reader):
                return False
        chosen = {id(f) for f in mine}
        self.fixes = [replace(f, copy=True) if id(f) in chosen else f for f in self.fixes]
        return True

    def mixed(self) -> set[str]:
        """The grouped Convs that lose whole groups whose groups ended up tied to each other (after
        close): taken balanced in the next pass (groups.analyze)."""
        return {name for name, firsts in self.whole if len({self.find(e) for e in firsts.tolist()}) < len(firsts)}

    def _even(self, blocks: np.ndarray) -> None:
        """Tie position j of every row (group) of `blocks` unless each channel already holds as many
        positions in every row. Ties only merge channels, so what was even stays even."""
        roots = np.array([[self.find(e) for e in row] for row in blocks.tolist()])
        values, inverse = np.unique(roots, return_inverse=True)
        counts = np.zeros((len(values), len(blocks)), np.int64)
        np.add.at(counts, (inverse.reshape(roots.shape), np.arange(len(blocks))[:, None]), 1)
        if (counts != counts[:, :1]).any():
            for row in blocks[1:]:
                self.union(blocks[0], row)

    def close(self) -> None:
        """Freeze what a rewrite could not keep consistent; tie tensors sliced twice along one axis."""
        first: dict[tuple[str, int], Slice] = {}
        for s in self.slices:  # a tensor tied to two uses: its positions are one channel each
            k = (s.tensor, s.axis)
            if k in first:
                self.union(first[k].ids, s.ids)
            else:
                first[k] = s
        for blocks in self.balance:  # a channel must take as many outputs from each group
            self._even(blocks)
        for uses, ids, compared, why in self.pending_counts:  # a channel count read where the channels differ
            labels = [self.labels.get(t) for t, _ in compared]
            if not uses <= self.accepted_counts or any(
                    lab is None or lab.axis != axis or lab.part >= 0 or not self.same_channels(lab.ids, ids)
                    for lab, (_, axis) in zip(labels, compared)):
                self.freeze(ids, why)
        for product, (done, readers) in self.factors.items():  # a product some reader needs unchanged
            if done != readers:
                for f in self.fixes:
                    if f.kind == "const" and f.reader and self.nodes[f.reader[0]].output[0] == product:
                        self.freeze(f.ids, f"'{product}' is read by a Reshape or Expand that keeps its size")
        by_source: dict[str, list[Slice]] = {}
        for s in self.slices:
            by_source.setdefault(s.tensor, []).append(s)
        for src, registered in self.uses.items():
            reads = self.terminal_reads(src)
            shared_fix = src in self.fixed_sources and not self._fixes_agree(src)
            if (reads is None or not reads <= registered or shared_fix) and self._copies(src, registered, by_source):
                continue
            if reads is None or not reads <= registered or shared_fix:
                for s in by_source.get(src, []):
                    self.freeze(s.ids, f"'{src}' is also read where it cannot be sliced")
                for f in self.fixes:
                    if f.kind == "const" and f.target == src:
                        self.freeze(f.ids, f"shape constant '{src}' is shared")
        for name in self.outputs:  # graph outputs keep their channels
            if name in self.labels:
                self.freeze(self.labels[name].ids, f"'{name}' is a graph output")


def _who(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return None
