"""Channel rules for ops that act per channel: norms, activations, pooling, padding, transposes,
row selection, reductions and the softmax family (registry: rules.py); `labeled`, the wrapper of a
rule about input 0's channels, is shared by every family."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from .graph import Analysis, Label
from .util import attr, input_at as _input

Rule = Callable[[Analysis, int], None]

# The approximate rules' names (graph.Analysis.approximate), as the report and the record list them.
NORM_STATISTICS = "LayerNormalization statistics over the kept channels"
MEAN_STATISTICS = "ReduceMean (or ReduceSum / width) over the kept channels"


def labeled(rule: Callable[[Analysis, int, onnx.NodeProto, Label], None]) -> Rule:
    """A rule about the channels of input 0: skipped when that input carries none. Channels reaching
    any other input (a bound, a scale, a shape) are frozen: the rule does not track them."""
    def run(a: Analysis, i: int) -> None:
        node = a.nodes[i]
        for name in node.input[1:]:
            if name in a.labels:
                a.freeze(a.labels[name].ids, f"{node.op_type} '{node.name}' reads channels as a parameter")
        lab = a.labels.get(node.input[0])
        if lab is not None:
            rule(a, i, node, lab)
    return run


# ----- per-channel ops ------------------------------------------------------------------------------
def norm(first_param: int, params: int, stats: int) -> Rule:
    """BatchNormalization / InstanceNormalization: scale and shift zeroed give 0 whatever the input."""
    @labeled
    def rule(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
        if lab.axis != 1 or any(len(node.output) > 1 and o for o in node.output[1:]):
            a.freeze(lab.ids, f"{node.op_type} '{node.name}': channels not on axis 1, or training outputs")
            return
        ok = all(a.slice(i, s, 0, lab.ids, "param") for s in range(first_param, first_param + params))
        ok &= all(a.slice(i, s, 0, lab.ids, "stat") for s in range(first_param + params, first_param + params + stats))
        if not ok:
            a.freeze(lab.ids, f"{node.op_type} '{node.name}': computed parameters")
            return
        a.labels[node.output[0]] = Label(1, lab.ids, np.ones(len(lab.ids), bool))
    return rule


@labeled
def group_norm(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """GroupNormalization: a group's statistics are over its own channels, so whole groups go (their
    channels tied, as a grouped Conv's) and the kept groups compute what they did: exact. Scale and
    shift, per channel (opset 21) or per group (18), zeroed make a removed group 0; num_groups
    follows the kept groups."""
    groups = attr(node, "num_groups", 0)
    if lab.axis != 1 or lab.part >= 0 or not groups or len(lab.ids) % groups:
        a.freeze(lab.ids, f"GroupNormalization '{node.name}': channels not on axis 1 in whole groups")
        return
    blocks = lab.ids.reshape(groups, -1)
    for block in blocks[:, 1:].T:
        a.union(blocks[:, 0], block)
    per_channel = a.shapes.get(node.input[1], (0,))[0] == len(lab.ids)
    if not all(a.slice(i, s, 0, lab.ids if per_channel else blocks[:, 0], "param") for s in (1, 2)):
        a.freeze(lab.ids, f"GroupNormalization '{node.name}': computed scale or bias")
        return
    a.fix_attr(i, "num_groups", blocks[:, 0])
    a.labels[node.output[0]] = Label(1, lab.ids, np.ones(len(lab.ids), bool))


def unary(keeps_zero: bool) -> Rule:
    @labeled
    def rule(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
        zero = lab.zero if keeps_zero else np.zeros_like(lab.zero)
        a.labels[node.output[0]] = Label(lab.axis, lab.ids, zero, const=lab.const, fixed=lab.fixed)
    return rule


@labeled
def reciprocal(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """1 / x: a norm's 1 / sqrt(var + eps) is a constant where the channel is removed; a channel that is
    0 there would become inf, which no rewrite keeps (frozen)."""
    if lab.zero.any():
        a.freeze(lab.ids[lab.zero], f"Reciprocal '{node.name}' of a removed channel's 0")
    a.labels[node.output[0]] = Label(lab.axis, lab.ids, np.zeros_like(lab.zero), const=lab.const & ~lab.zero)


@labeled
def clip(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    lo, hi = attr(node, "min", -np.inf), attr(node, "max", np.inf)
    for slot, name in ((1, "lo"), (2, "hi")):
        if _input(node, slot):
            value = a.value(node.input[slot])
            if value is None:
                lo = hi = np.nan  # unknown bounds: assume nothing about zero
            elif name == "lo":
                lo = float(value)
            else:
                hi = float(value)
    keeps = bool(lo <= 0 <= hi)
    a.labels[node.output[0]] = Label(lab.axis, lab.ids, lab.zero & keeps, const=lab.const & (not np.isnan(lo)))


@labeled
def pool(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    if lab.axis != 1 or (len(node.output) > 1 and node.output[1]):
        a.freeze(lab.ids, f"{node.op_type} '{node.name}': channels not on axis 1, or indices output")
        return
    # a constant stays one unless the window averages in a padded border
    uniform = node.op_type in ("MaxPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool") or \
        not (any(attr(node, "pads") or ()) or attr(node, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER"))
    a.labels[node.output[0]] = Label(1, lab.ids, lab.zero, const=lab.const & uniform)


@labeled
def same_axis_size(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """Resize / Upsample / spatial ops that keep the channel axis when its size is unchanged."""
    sizes = _input(node, 3) if node.op_type == "Resize" else ""
    if a.shapes[node.output[0]][lab.axis] != len(lab.ids) or sizes:
        a.freeze(lab.ids, f"{node.op_type} '{node.name}' changes or names the channel count")
        return
    a.labels[node.output[0]] = Label(lab.axis, lab.ids, lab.zero, const=lab.const)


@labeled
def pad(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    rank = len(a.shapes[node.input[0]])
    pads = attr(node, "pads") if _input(node, 1) == "" else a.value(node.input[1])
    axes = a.value(node.input[3]) if _input(node, 3) else np.arange(rank)
    if pads is None or axes is None:
        a.freeze(lab.ids, f"Pad '{node.name}': computed pads")
        return
    pads, axes = np.asarray(pads).reshape(2, -1), [int(x) % rank for x in np.asarray(axes).ravel()]
    if lab.axis in axes and pads[:, axes.index(lab.axis)].any():
        a.freeze(lab.ids, f"Pad '{node.name}' pads the channel axis")
        return
    value = a.value(node.input[2]) if _input(node, 2) else np.float32(attr(node, "value", 0.0))
    constant = attr(node, "mode", b"constant") in (b"constant", "constant")
    keeps = not constant or (value is not None and not np.any(value))  # reflect / edge copy zeros
    a.labels[node.output[0]] = Label(lab.axis, lab.ids, lab.zero & keeps)


@labeled
def transpose(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    perm = list(attr(node, "perm") or reversed(range(len(a.shapes[node.input[0]]))))
    a.labels[node.output[0]] = Label(perm.index(lab.axis), lab.ids, lab.zero, perm.index(lab.part) if lab.part >= 0 else -1,
                                     lab.const, lab.fixed)


@labeled
def gather(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """Gather with constant indices along an axis other than the channels' (ViT's class token x[:, 0]),
    or one part of a packed tensor (a scalar index along its part axis: q = qkv[0])."""
    rank = len(a.shapes[node.input[0]])
    axis, index = attr(node, "axis", 0) % rank, a.value(node.input[1])
    if index is None or axis == lab.axis or (axis == lab.part and index.ndim):
        a.freeze(lab.ids, f"Gather '{node.name}' selects channels, or computed indices")
        return
    shift = index.ndim - 1  # the gathered axis becomes index.ndim axes

    def moved(x: int) -> int:
        return x if x < axis else x + shift
    if axis == lab.part:
        k = int(index) % lab.ids.shape[0]
        a.labels[node.output[0]] = Label(moved(lab.axis), lab.ids[k], lab.zero[k], const=lab.const[k])
        return
    a.labels[node.output[0]] = Label(moved(lab.axis), lab.ids, lab.zero, moved(lab.part) if lab.part >= 0 else -1,
                                     lab.const)


@labeled
def reduce(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    rank = len(a.shapes[node.input[0]])
    axes = attr(node, "axes")
    if axes is None and _input(node, 1):
        axes = a.value(node.input[1])
        if axes is None:
            a.freeze(lab.ids, f"{node.op_type} '{node.name}': computed axes")
            return
    axes = list(range(rank)) if axes is None or len(axes) == 0 else [int(x) % rank for x in np.ravel(axes)]
    if lab.axis in axes:  # a mean over the kept channels only: a hand-written norm's statistics
        divisors = _width_divisors(a, i, len(lab.ids)) if node.op_type == "ReduceSum" and axes == [lab.axis] else None
        if lab.part < 0 and (node.op_type == "ReduceMean" or divisors):
            if a.approximate(lab.ids, MEAN_STATISTICS, f"{node.op_type} '{node.name}' reduces over channels", node,
                             lab.axis):
                for index, slot, power in divisors or ():
                    a.fix_scalar(index, slot, lab.ids, power)
        else:
            a.freeze(lab.ids, f"{node.op_type} '{node.name}' reduces over channels")
        return
    axis = lab.axis if attr(node, "keepdims", 1) else lab.axis - sum(x < lab.axis for x in axes)
    a.labels[node.output[0]] = Label(axis, lab.ids, lab.zero, const=lab.const)


def _width_divisors(a: Analysis, i: int, width: int) -> list[tuple[int, int, int]] | None:
    """A ReduceSum that every reader turns into a mean (jax2tf's and tf2onnx's LayerNorm: the sum times
    the constant 1 / width, or divided by width): each reader's (node, constant's slot, power of the
    kept count it becomes: -1 for 1 / width, 1 for width); None otherwise."""
    out = a.nodes[i].output[0]
    found = []
    for index, slot in a.readers.get(out, []):
        node = a.nodes[index]
        other = 1 - slot if node.op_type == "Mul" or (node.op_type == "Div" and slot == 0) else -1
        value = a.value(node.input[other]) if other >= 0 and len(node.input) == 2 else None
        if value is None or value.size != 1 or value.dtype.kind != "f":
            return None
        power = -1 if node.op_type == "Mul" else 1
        if not np.isclose(float(value.ravel()[0]), float(width) ** power, rtol=1e-6, atol=0):
            return None
        found.append((index, other, power))
    return found if found and out not in a.outputs else None


@labeled
def softmax_like(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """Softmax / LayerNormalization: fine across other axes (the channel is independent), but not
    zero-preserving for softmax; normalizing over the channel axis couples every channel."""
    rank = len(a.shapes[node.input[0]])
    axis = attr(node, "axis", -1) % rank
    over = range(axis, rank) if node.op_type == "LayerNormalization" else [axis]
    if node.op_type == "LayerNormalization" and list(over) == [lab.axis] and lab.part < 0 and \
            not any(len(node.output) > 1 and o for o in node.output[1:]):
        _layer_norm_over_channels(a, i, node, lab)
        return
    if lab.axis in over or any(len(node.output) > 1 and o for o in node.output[1:]):
        a.freeze(lab.ids, f"{node.op_type} '{node.name}' normalizes over channels")
        return
    if node.op_type == "LayerNormalization" and any(_input(node, s) and a.shapes[node.input[s]] and
                                                    len(a.shapes[node.input[s]]) > rank - axis for s in (1, 2)):
        a.freeze(lab.ids, f"LayerNormalization '{node.name}': parameters span the channel axis")
        return
    a.labels[node.output[0]] = Label(lab.axis, lab.ids, np.zeros_like(lab.zero) if node.op_type != "LayerNormalization"
                                     else lab.zero & (not _input(node, 2)))


def _layer_norm_over_channels(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """LayerNormalization over the channel axis (a transformer's residual stream): in approximate mode
    the channel goes with its scale and shift (so the output is 0 there) and the mean and variance
    are taken over the kept channels."""
    if not a.approximate(lab.ids, NORM_STATISTICS, f"LayerNormalization '{node.name}' normalizes over channels", node):
        return
    if not all(a.slice(i, s, 0, lab.ids, "param") for s in (1, 2) if _input(node, s)):
        a.freeze(lab.ids, f"LayerNormalization '{node.name}': computed or broadcast scale or shift")
        return
    a.labels[node.output[0]] = Label(lab.axis, lab.ids, np.full(len(lab.ids), bool(_input(node, 2))))
