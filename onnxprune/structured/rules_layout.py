"""Channel rules for ops that join or cut the channel axis: Concat (offsets), Split and Slice
(ranges) (registry: rules.py)."""

from __future__ import annotations

import numpy as np
import onnx

from .graph import Analysis, Label
from .util import attr, input_at as _input
from .rules_elementwise import tie_elementwise
from .rules_per_channel import labeled


def concat(a: Analysis, i: int) -> None:
    node = a.nodes[i]
    labs = [a.labels.get(n) for n in node.input]
    if not any(labs):
        return
    out_rank = len(a.shapes[node.output[0]])
    axis = attr(node, "axis") % out_rank
    if all(lab is None or lab.axis == axis for lab in labs):  # along channels: positions add up
        parts = []
        for name, lab in zip(node.input, labs):
            if lab is None:  # an unlabeled input's channels are fixed
                ids = a.new(a.shapes[name][axis])
                a.freeze(ids, f"Concat '{node.name}': an input without channel structure")
                lab = Label(axis, ids, np.zeros(len(ids), bool))
            parts.append(lab)
        a.labels[node.output[0]] = Label(axis, np.concatenate([p.ids for p in parts]),
                                         np.concatenate([p.zero for p in parts]), const=np.concatenate([p.const for p in parts]))
        return
    tie_elementwise(a, i, "all")
    if node.output[0] in a.labels:  # two constants side by side are not one constant
        lab = a.labels[node.output[0]]
        lab.const = lab.zero.copy()


@labeled
def split(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    rank = len(a.shapes[node.input[0]])
    axis = attr(node, "axis", 0) % rank
    if lab.part >= 0:  # a packed tensor split into its parts (timm's qkv.unbind(0)): each one is plain
        if axis != lab.part or any(a.shapes[o][axis] != 1 for o in node.output) or len(node.output) != len(lab.ids):
            a.freeze(lab.ids, f"Split '{node.name}' splits a packed tensor other than into its parts")
            return
        for k, out in enumerate(node.output):
            if out:
                a.labels[out] = Label(lab.axis, lab.ids[k], lab.zero[k], const=lab.const[k])
        return
    if axis != lab.axis:
        for out in node.output:
            if out:
                a.labels[out] = lab.at(lab.axis)
        return
    sizes = [a.shapes[o][axis] for o in node.output]
    if _input(node, 1):
        if a.value(node.input[1]) is None:
            a.freeze(lab.ids, f"Split '{node.name}': computed sizes")
            return
    elif attr(node, "split") is None:
        a.freeze(lab.ids, f"Split '{node.name}': equal split without sizes is not rewritten")
        return
    start = 0
    for k, (out, size) in enumerate(zip(node.output, sizes)):
        ids, zero, const = lab.ids[start:start + size], lab.zero[start:start + size], lab.const[start:start + size]
        if _input(node, 1):
            if not a.fix_const(i, 1, k, ids):
                a.freeze(lab.ids, f"Split '{node.name}': sizes not a constant")
                return
        else:
            a.fix_attr(i, "split", ids, pos=k)
        a.labels[out] = Label(axis, ids, zero, const=const)
        start += size


@labeled
def slice_op(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """Slice (opset 10+, constant bounds): across other axes the channels pass; along the channel
    axis (step 1) the output holds a range of them, and the bounds are rewritten to kept counts."""
    values = [a.value(node.input[s]) if _input(node, s) else None for s in range(1, 5)]
    starts, ends, axes, steps = values
    rank = len(a.shapes[node.input[0]])
    if starts is None or ends is None or (_input(node, 3) and axes is None) or (_input(node, 4) and steps is None):
        a.freeze(lab.ids, f"Slice '{node.name}': computed or attribute bounds")
        return
    axes = [int(x) % rank for x in (np.ravel(axes) if axes is not None else range(len(np.ravel(starts))))]
    steps = np.ones(len(axes), np.int64) if steps is None else np.ravel(steps)
    if lab.axis not in axes:
        a.labels[node.output[0]] = lab.at(lab.axis)
        return
    k = axes.index(lab.axis)
    if steps[k] != 1:
        a.freeze(lab.ids, f"Slice '{node.name}': a strided slice of the channel axis")
        return
    start, end, _ = slice(int(np.ravel(starts)[k]), int(np.ravel(ends)[k])).indices(len(lab.ids))
    end = max(start, end)
    if (start > 0 and not a.fix_const(i, 1, k, lab.ids[:start])) or \
            (end < len(lab.ids) and not a.fix_const(i, 2, k, lab.ids[:end])):
        a.freeze(lab.ids, f"Slice '{node.name}': its bounds cannot be rewritten")
        return
    a.labels[node.output[0]] = lab.at(lab.axis, slice(start, end))
