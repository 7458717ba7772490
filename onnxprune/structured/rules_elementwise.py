"""Channel rules for elementwise ops with broadcasting: Add/Sub/Mul/Where tie their operands'
channels, Div and Pow keep the first operand's (registry: rules.py)."""

from __future__ import annotations

import numpy as np

from .graph import Analysis, Label
from .rules_per_channel import Rule


# ----- elementwise with broadcasting ------------------------------------------------------------------
def tie_elementwise(a: Analysis, i: int, zero_rule: str) -> None:
    """Operands share the output's channel positions: labeled operands are tied position by position,
    a constant with the channel axis is sliced (a parameter of the channel), a size-1 operand
    broadcasts. zero_rule: "all" (Add), "any" (Mul), "first" (Div: the numerator's)."""
    node = a.nodes[i]
    out = node.output[0]
    rank = len(a.shapes[out])
    labeled = [(s, a.labels[n]) for s, n in enumerate(node.input) if n in a.labels]
    if not labeled:
        return
    axes = {lab.axis + rank - len(a.shapes[node.input[s]]) for s, lab in labeled}
    size = len(labeled[0][1].ids)
    if len(axes) != 1 or any(len(lab.ids) != size for _, lab in labeled) or a.shapes[out][next(iter(axes))] != size:
        a.freeze_inputs(node, "operands carry channels on different axes")
        return
    axis = axes.pop()
    ids = labeled[0][1].ids
    for _, lab in labeled[1:]:
        a.union(ids, lab.ids)
    zeros = [lab.zero for s, lab in labeled]
    zero = np.logical_and.reduce(zeros) if zero_rule == "all" else np.logical_or.reduce(zeros)
    if zero_rule == "first":
        zero = labeled[0][1].zero if labeled[0][0] == 0 else np.zeros(size, bool)
    const = np.logical_and.reduce([lab.const for s, lab in labeled])  # a constant with constants
    fixed = np.logical_and.reduce([lab.fixed for s, lab in labeled])
    for s, name in enumerate(node.input):
        if not name or name in a.labels:
            continue
        shape = a.shapes[name]
        own = axis - (rank - len(shape))
        if own < 0 or shape[own] == 1:  # broadcasts across channels
            value = a.value(name)
            if zero_rule == "all" and (value is None or value.any()):
                zero = np.zeros(size, bool)
            if value is None or np.any(value != value.flat[0]):  # computed, or varying along another axis
                const = np.zeros(size, bool)  # (a shift per token: still fixed, a map of constants)
            if value is None:
                fixed = np.zeros(size, bool)
            continue
        role = "stat" if zero_rule == "first" or node.op_type == "PRelu" else "param"
        zeroed = True if a.slice(i, s, own, ids, role) else _slice_computed(a, i, s, own, ids, role)
        if zeroed is None:
            a.freeze_inputs(node, f"operand '{name}' spans the channels and is computed")
            return
        if zero_rule == "any" and role == "param" and zeroed:
            zero = np.ones(size, bool)  # the zeroed per-channel factor makes the channel 0
    a.labels[out] = Label(axis, ids, zero, const=const, fixed=fixed)


def _slice_computed(a: Analysis, i: int, slot: int, axis: int, ids: np.ndarray, role: str) -> bool | None:
    """An operand computed from per-channel constants and values that broadcast across channels (a
    norm's rsqrt(var) [N, 1] times its scale [C]: jax2tf's LayerNorm), read by this node alone: its
    constants are sliced where they span the channels. Whether the operand is 0 at a removed channel
    in the zeroed reference (a product with a zeroed parameter); None when it is not so made (then
    nothing is registered)."""
    found = _computed_from_constants(a, i, slot, axis, len(ids))
    if found is None:
        return None
    constants, zero = found
    for index, s, own in constants:
        a.slice(index, s, own, ids, role)
    return zero


def _computed_from_constants(a: Analysis, i: int, slot: int, axis: int, size: int, depth: int = 3
                             ) -> tuple[list[tuple[int, int, int]], bool] | None:
    """(the (node, slot, axis) of each constant spanning the channels, whether the result is 0 where
    those are zeroed) for input `slot` of node i, made by Mul/Add/Sub of such constants and values
    that broadcast; None otherwise."""
    name = a.nodes[i].input[slot]
    index = a.facts.producers.get(name)
    if depth == 0 or index is None or name in a.outputs or len(a.readers.get(name, [])) != 1 or \
            a.nodes[index].op_type not in ("Mul", "Add", "Sub"):
        return None
    node, rank = a.nodes[index], len(a.shapes[name])
    constants, zeros = [], []
    for s, operand in enumerate(node.input):
        shape = a.shapes[operand]
        own = axis - (rank - len(shape))
        if operand in a.labels:
            return None
        if own < 0 or shape[own] == 1:
            continue
        key = a.key(index, s, own)
        if key is not None and a.consts[key[0]].shape[key[1]] == size:
            constants.append((index, s, own))
            zeros.append(True)
            continue
        inner = _computed_from_constants(a, index, s, own, size, depth - 1)
        if inner is None:
            return None
        constants += inner[0]
        zeros.append(inner[1])
    return constants, node.op_type == "Mul" and any(zeros)  # a sum with a broadcast value is not 0


def elementwise(zero_rule: str) -> Rule:
    return lambda a, i: tie_elementwise(a, i, zero_rule)


def div(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    if node.input[1] in a.labels:  # 1/0 at a removed channel
        a.freeze_inputs(node, "division by a channel tensor")
        return
    if node.input[0] in a.labels:
        tie_elementwise(a, i, "first")


def power(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    exponent = a.value(node.input[1])
    if node.input[1] in a.labels or exponent is None or exponent.size != 1 or float(exponent) <= 0:
        a.freeze_inputs(node, "Pow with a non-constant or non-positive exponent")
        return
    lab = a.labels.get(node.input[0])
    if lab is not None:
        a.labels[node.output[0]] = Label(lab.axis, lab.ids, lab.zero, const=lab.const)


# The ops that read a packed tensor (Label.part): moving its axes, or selecting one part.
