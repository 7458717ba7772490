"""Rules for the ops that make channels: Conv / ConvTranspose / Gemm / MatMul with constant weights,
and Gather of rows from a constant table (an embedding).

Each creates one element per output channel (its filter and bias are the channel's parameters),
consumes its input's channels (slicing the weight's input axis: only positions that are exactly 0
when removed may go), and adds its MACs as a cost term over the sliced axes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .graph import Analysis, Fold, Label, Term
from .util import attr, input_at as _input

PADDED_FOLD = "constant folded into a padded Conv's bias (its border differs)"  # an approximate rule


def constant_params(rule):
    """Weights and biases computed from channel tensors: those channels stay (the rule slices only
    constants, so a computed operand would keep its old width)."""
    def run(a: Analysis, i: int) -> None:
        node = a.nodes[i]
        for name in node.input[1:]:
            if name in a.labels:
                a.freeze(a.labels[name].ids, f"{node.op_type} '{node.name}' takes a channel tensor as a parameter")
        rule(a, i)
    return run


@constant_params
def conv(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    x, out = node.input[0], node.output[0]
    lab = a.labels.get(x)
    w_shape = a.shapes[node.input[1]]
    c_in, c_out, group = a.shapes[x][1], a.shapes[out][1], attr(node, "group", 1)
    macs = float(np.prod(a.shapes[out])) * (c_in // group) * float(np.prod(w_shape[2:]))
    if a.source(node.input[1]) is None:
        a.freeze_inputs(node, "its weight is computed")
        return
    if lab is not None and lab.axis != 1:
        a.freeze(lab.ids, f"Conv '{node.name}': channels not on axis 1")
        lab = None
    if group == 1:
        fold = _fold(a, i, 1, 0, 2)
        padded = any(attr(node, "pads") or ()) or attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
        if fold is not None and not padded and a.fixed_shape(out):
            fold = replace(fold, map=True)
        loose = lab.const & ~lab.zero if lab is not None else np.zeros(0, bool)
        if padded and fold is not None and loose.any() and not a.approximate(
                lab.ids[loose], PADDED_FOLD, f"Conv '{node.name}': its input is not 0 where a channel is removed", node):
            fold = None  # a padded border sees 0, not the constant
        ids = _dense(a, i, lab, in_axis=1, out_axis=0, n_out=c_out, macs=macs, bias_slot=2, fold=fold)
        a.labels[out] = Label(1, ids, np.ones(c_out, bool))
    elif lab is not None and c_in % group == 0 and c_out % group == 0:
        blocks = lab.ids.reshape(group, c_in // group)
        ids = (_grouped_balanced(a, i, lab, blocks, c_out, macs) if out in a.balanced else
               _grouped_whole(a, i, blocks, c_out, macs))
        a.labels[out] = Label(1, ids, np.ones(c_out, bool))
    else:
        a.freeze_inputs(node, f"grouped convolution (group={group}) on an input without channel structure")
        a.terms.append(Term(node.name, macs, (), "macs"))


def _grouped_whole(a: Analysis, i: int, blocks: np.ndarray, c_out: int, macs: float) -> np.ndarray:
    """Grouped Conv (depthwise when a group reads one channel): group g's outputs read only group g's
    inputs, so a whole group goes at once, inputs and outputs together; zero filters and bias make it 0.
    Where groups end up tied to each other (a channel shuffle reads every group) this removes nothing:
    Analysis.mixed names the node, and the next pass takes it balanced (groups.analyze)."""
    node = a.nodes[i]
    group, per_in = blocks.shape
    if per_in > 1 and c_out > group:
        a.whole.append((node.output[0], blocks[:, 0]))
    for block in blocks[:, 1:].T:
        a.union(blocks[:, 0], block)
    ids = np.repeat(blocks[:, 0], c_out // group)
    a.slice(i, 1, 0, ids, "param")
    _bias(a, i, 2, ids)
    a.fix_attr(i, "group", blocks[:, 0])
    a.terms.append(Term(node.name, macs / c_out, (a.key(i, 1, 0),), "macs"))
    return ids


def _grouped_balanced(a: Analysis, i: int, lab: Label, blocks: np.ndarray, c_out: int, macs: float) -> np.ndarray:
    """Grouped Conv whose groups each lose as many channels, the group count kept (ShuffleNet: after
    the shuffle every group reads channels of every group before it). The weight's input axis is
    shared by the groups, so input position j of every group is one channel: a dense input of those
    columns. Each output is a channel of its own, and Analysis.close ties them across groups where
    what reads them did not already make every channel take as many from each group. Exact: removed
    inputs are 0, removed outputs have zero filters and bias."""
    for row in blocks[1:]:
        a.union(blocks[0], row)
    columns = Label(1, blocks[0], lab.zero.reshape(blocks.shape).all(axis=0))  # a column is 0 where all its rows are
    ids = _dense(a, i, columns, in_axis=1, out_axis=0, n_out=c_out, macs=macs, bias_slot=2)
    a.balance.append(ids.reshape(len(blocks), -1))
    return ids


@constant_params
def conv_transpose(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    x, out = node.input[0], node.output[0]
    lab = a.labels.get(x)
    if attr(node, "group", 1) != 1 or a.source(node.input[1]) is None or (lab is not None and lab.axis != 1):
        a.freeze_inputs(node, "grouped or computed ConvTranspose is not rewritten")
        return
    w_shape = a.shapes[node.input[1]]
    c_out = a.shapes[out][1]
    macs = float(np.prod(a.shapes[x])) * float(np.prod(w_shape[1:]))
    ids = _dense(a, i, lab, in_axis=0, out_axis=1, n_out=c_out, macs=macs, bias_slot=2)
    a.labels[out] = Label(1, ids, np.ones(c_out, bool))


@constant_params
def gemm(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    x, out = node.input[0], node.output[0]
    lab = a.labels.get(x)
    m, k = a.shapes[x][::-1] if attr(node, "transA", 0) else a.shapes[x]
    n = a.shapes[out][1]
    trans_b = attr(node, "transB", 0)
    if attr(node, "transA", 0) or a.source(node.input[1]) is None:
        a.freeze_inputs(node, "Gemm with transA or a computed B is not rewritten")
        a.terms.append(Term(node.name, float(m * n * k), (), "macs"))
        return
    in_axis, out_axis = (1, 0) if trans_b else (0, 1)
    if lab is not None and lab.axis != 1:
        a.freeze(lab.ids, f"Gemm '{node.name}': channels not on the feature axis")
        lab = None
    beta = attr(node, "beta", 1.0)
    fold = _fold(a, i, in_axis, out_axis, 2, attr(node, "alpha", 1.0) / beta) if beta else None
    ids = _dense(a, i, lab, in_axis=in_axis, out_axis=out_axis, n_out=n, macs=float(m) * k * n, bias_slot=None,
                 fold=fold)
    zero = np.ones(n, bool)
    c = _input(node, 2)
    if c:
        c_shape = a.shapes[c]
        if c_shape and c_shape[-1] == n:
            if not a.slice(i, 2, len(c_shape) - 1, ids, "param"):
                a.freeze(ids, f"Gemm '{node.name}': computed bias")
        else:  # broadcast bias: a removed unit outputs it
            value = a.value(c)
            zero[:] = value is not None and not value.any()
    a.labels[out] = Label(1, ids, zero)


def matmul(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    if a.source(node.input[0]) is None and a.source(node.input[1]) is None:
        _batched_matmul(a, i, float(np.prod(a.shapes[node.output[0]])) * a.shapes[node.input[0]][-1])
    else:
        _weight_matmul(a, i)


@constant_params
def _weight_matmul(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    x, w, out = node.input[0], node.input[1], node.output[0]
    lab = a.labels.get(x)
    out_shape, k = a.shapes[out], a.shapes[x][-1]
    macs = float(np.prod(out_shape)) * k
    if a.source(w) is None or len(a.shapes[w]) != 2 or a.source(x) is not None:
        a.freeze_inputs(node, "MatMul of two activations (or a batched weight) is not rewritten")
        a.terms.append(Term(node.name, macs, (), "macs"))
        return
    rank = len(a.shapes[x])
    if lab is not None and lab.axis != rank - 1:
        a.freeze(lab.ids, f"MatMul '{node.name}': channels not on the last axis")
        lab = None
    n = out_shape[-1]
    # no bias slot: a removed channel that is a constant (or a map of them) becomes one added to the output
    weight = a.source(w)
    fold = Fold(i, x, weight[0], 0, 1, "", -1, map=True) if weight[1] is None and a.fixed_shape(out) else None
    ids = _dense(a, i, lab, in_axis=0, out_axis=1, n_out=n, macs=macs, bias_slot=None, fold=fold)
    a.labels[out] = Label(len(out_shape) - 1, ids, np.ones(n, bool))


def _dense(a: Analysis, i: int, lab: Label | None, *, in_axis: int, out_axis: int, n_out: int, macs: float,
           bias_slot: int | None, fold: Fold | None = None) -> np.ndarray:
    """The shared part of every dense producer: consume the input's channels along the weight's
    `in_axis` (constants where `fold` says how), make `n_out` new ones along `out_axis` (filter and
    bias their parameters), and add the MAC term; returns the new elements."""
    if lab is not None:
        a.require_zero(lab, a.nodes[i], fold)
        a.slice(i, 1, in_axis, lab.ids, "input")
    ids = a.new(n_out)
    a.slice(i, 1, out_axis, ids, "param")
    if bias_slot is not None:
        _bias(a, i, bias_slot, ids)
    keys = (a.key(i, 1, out_axis),) + ((a.key(i, 1, in_axis),) if lab is not None else ())
    n_in = len(lab.ids) if lab is not None else 1
    a.terms.append(Term(a.nodes[i].name, macs / (n_out * n_in), keys, "macs"))
    return ids


def _fold(a: Analysis, i: int, in_axis: int, out_axis: int, bias_slot: int, scale: float = 1.0) -> Fold | None:
    """How node i absorbs a constant input channel (graph.Fold): its weight and bias stored as they
    are read (no Transpose between), the bias a vector read by this node alone; else None."""
    node = a.nodes[i]
    weight, bias = a.source(node.input[1]), _input(node, bias_slot)
    if weight is None or weight[1] is not None or len(a.shapes[node.input[1]]) <= max(in_axis, out_axis):
        return None
    if bias:
        found = a.source(bias)
        if found is None or found[1] is not None or a.consts[found[0]].shape != (a.shapes[node.input[1]][out_axis],) \
                or a.terminal_reads(found[0]) != {(i, bias_slot)}:
            return None
        bias = found[0]
    return Fold(i, node.input[0], weight[0], in_axis, out_axis, bias, bias_slot, float(scale))


def _bias(a: Analysis, i: int, slot: int, ids: np.ndarray) -> None:
    node = a.nodes[i]
    if _input(node, slot) and not a.slice(i, slot, 0, ids, "param"):
        a.freeze(ids, f"{node.op_type} '{node.name}': computed bias")


def _batched_matmul(a: Analysis, i: int, macs: float) -> None:
    """MatMul of two activations (attention's Q @ K^T and P @ V): channels on a *batch* axis (the
    heads) pass like a broadcasting elementwise op: both operands' positions are tied, and the output
    is 0 where either operand is (a zero head of V gives a zero head whatever softmax gave P). Channels
    on the two matrix axes, or a batch axis spanned by an operand without channels, freeze. The MACs
    scale with the kept heads (resolved to a sliced axis once the channels are known: groups.py)."""
    node = a.nodes[i]
    out_shape = a.shapes[node.output[0]]
    rank = len(out_shape)
    labs = [(s, a.labels[n]) for s, n in enumerate(node.input[:2]) if n in a.labels]
    if not labs:
        a.terms.append(Term(node.name, macs, (), "macs"))
        return
    axes = {lab.axis + rank - len(a.shapes[node.input[s]]) for s, lab in labs}
    axis = next(iter(axes))
    ok = len(axes) == 1 and axis < rank - 2 and all(len(a.shapes[node.input[s]]) >= 3 for s, _ in labs)
    ok = ok and all(len(lab.ids) == out_shape[axis] for _, lab in labs)
    for s in range(2):
        name = node.input[s]
        if ok and name not in a.labels:
            own = axis - (rank - len(a.shapes[name]))
            ok = own < 0 or a.shapes[name][own] == 1  # broadcast across the heads
    if not ok:
        a.freeze_inputs(node, "MatMul of two activations with channels off a shared batch axis")
        a.terms.append(Term(node.name, macs, (), "macs"))
        return
    ids = labs[0][1].ids
    for _, lab in labs[1:]:
        a.union(ids, lab.ids)
    zero = np.logical_or.reduce([lab.zero for _, lab in labs])
    a.labels[node.output[0]] = Label(axis, ids, zero)
    a.scaled.append((node.name, macs, ids))


@constant_params
def embedding(a: Analysis, i: int) -> None:
    """Rows of a constant 2-D table gathered by indices (an embedding; T5's relative-position bias,
    one column per head): each column is a channel of the output's last axis, its parameter that
    column; a removed column gives zeros. No MACs."""
    node = a.nodes[i]
    table = a.source(node.input[0])
    if table is None or len(a.shapes[node.input[0]]) != 2 or attr(node, "axis", 0) != 0:
        return
    ids = a.new(a.shapes[node.input[0]][1])
    if a.slice(i, 0, 1, ids, "param"):
        a.labels[node.output[0]] = Label(len(a.shapes[node.output[0]]) - 1, ids, np.ones(len(ids), bool))
