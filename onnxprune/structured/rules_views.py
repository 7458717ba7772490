"""Channel rules for views: Reshape/Flatten/Squeeze/Unsqueeze (attention heads, packed Q/K/V,
blocks of features) and the Shape reads that size them (registry: rules.py)."""

from __future__ import annotations

import numpy as np
import onnx

from .graph import Analysis, DimFix, Label
from .util import attr, input_at as _input
from .rules_per_channel import labeled


@labeled
def reshape(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """Reshape / Flatten / Squeeze / Unsqueeze, judged on the measured shapes: the channel axis may
    merge with neighbours into one output axis (Flatten into Gemm: blocks of H*W per channel, or
    channel-minor after an NHWC Transpose); a Reshape splitting it into heads ties each head's
    channels (_split_heads); anything else freezes it."""
    src, dst = a.shapes[node.input[0]], a.shapes[node.output[0]]
    if lab.part >= 0:
        _move_unit_axes(a, node, lab, src, dst)
        return
    found = _merge(src, dst, lab.axis)
    if found is None and node.op_type == "Reshape" and (_split_parts(a, i, node, lab, src, dst) or
                                                        _split_heads(a, i, node, lab, src, dst) or
                                                        _split_parts_past_units(a, i, node, lab, src, dst) or
                                                        _ungroup(a, i, node, lab, src, dst)):
        return
    if found is None or (node.op_type == "Squeeze" and attr(node, "axes") is None and not _input(node, 1)):
        a.freeze(lab.ids, f"{node.op_type} '{node.name}' splits the channel axis or is not provably safe")
        return
    b, s, e = found
    inner, c = int(np.prod(src[lab.axis + 1:e])), src[lab.axis]
    index = (np.arange(dst[b]) // inner) % c
    single = s == lab.axis == e - 1 and dst[b] == c
    if node.op_type == "Reshape" and not _reshape_fix(a, i, b, lab.ids[index], merged_single=single):
        a.freeze(lab.ids, f"Reshape '{node.name}': its shape names the channel size and cannot be rewritten")
        return
    a.labels[node.output[0]] = lab.at(b, index)


@labeled
def expand(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """Expand broadcasts the other axes; the channel axis keeps its positions where the target shape
    says 1 there, or the channel count (then rewritten to the kept count, as a Reshape's entry)."""
    rank, b = len(a.shapes[node.output[0]]), lab.axis + len(a.shapes[node.output[0]]) - len(a.shapes[node.input[0]])
    found = _shape_entry(a, i, b) if len(a.shapes.get(node.input[1], ())) == 1 and a.shapes[node.input[1]][0] == rank else None
    if found is None or found[0] not in (1, len(lab.ids)) or \
            (found[0] > 1 and not _fix_entry(a, i, *found[1:], lab.ids)):
        a.freeze(lab.ids, f"Expand '{node.name}': its shape names the channel size and cannot be rewritten")
        return
    a.labels[node.output[0]] = lab.at(b)


def _move_unit_axes(a: Analysis, node: onnx.NodeProto, lab: Label, src: tuple, dst: tuple) -> None:
    """A packed tensor through Unsqueeze / Squeeze / a Reshape that only adds or drops size-1 axes."""
    big_in, big_out = [k for k, n in enumerate(src) if n != 1], [k for k, n in enumerate(dst) if n != 1]
    if [src[k] for k in big_in] != [dst[k] for k in big_out] or lab.axis not in big_in or lab.part not in big_in:
        a.freeze(lab.ids, f"{node.op_type} '{node.name}' reshapes a packed tensor")
        return
    where = dict(zip(big_in, big_out))
    a.labels[node.output[0]] = Label(where[lab.axis], lab.ids, lab.zero, where[lab.part])


def _split_parts(a: Analysis, i: int, node: onnx.NodeProto, lab: Label, src: tuple, dst: tuple,
                 where: list[int] | None = None) -> bool:
    """A Reshape [..., P*E, ...] -> [..., P, E, ...] where the channels are the same in every part
    (attention's [B*H, S, D] -> [B, H, S, D]: the heads repeat per batch item): the label moves to E.
    Or where each part is taken by a Gather or Split (torch's fused in-projection: q, k, v =
    qkv.unflatten(-1, (3, E)); timm's qkv.reshape(B, N, 3, H, D), E split into heads at once): the
    output is packed, position j of every part tied into one channel (so each part keeps the same
    count). Either way E (or H) is rewritten to the kept count and P stays. `where` maps the axes of
    `dst` to the Reshape's own (_split_parts_past_units)."""
    b = lab.axis
    at = where or list(range(len(dst)))
    inner = 2 if len(dst) == len(src) + 2 else 1  # E, or E as (H, D)
    if len(dst) != len(src) + inner or dst[:b] != src[:b] or dst[b + 1 + inner:] != src[b + 1:] or dst[b] == 1 \
            or int(np.prod(dst[b:b + 1 + inner])) != src[b]:
        return False
    ids, zero = lab.ids.reshape(dst[b], -1), lab.zero.reshape(dst[b], -1)
    repeats = inner == 1 and (ids == ids[0]).all() and (zero == zero[0]).all()
    if inner == 1 and not repeats and any(np.array_equal(ids, block) for block in a.balance):
        # a balanced grouped Conv's outputs split by group (ShuffleNet's shuffle): position j of every
        # group is one channel, so each group loses as many, as the Conv needs
        for row in ids[1:]:
            a.union(ids[0], row)
        zero, repeats = np.broadcast_to(zero.all(axis=0), zero.shape), True
    if not repeats and not _parts_selected(a, node.output[0]):
        return False
    if inner == 2:  # one channel per head: D positions of head h tied
        ids, zero = ids.reshape(dst[b], dst[b + 1], dst[b + 2]), zero.reshape(dst[b], dst[b + 1], dst[b + 2])
        for column in np.moveaxis(ids[:, :, 1:], 2, 0):
            a.union(ids[:, :, 0].ravel(), column.ravel())
        ids, zero = ids[:, :, 0], zero.all(axis=2)
    entry = _shape_entry(a, i, at[b])  # P itself, or computed (the batch: sizes without a label never change)
    if (entry is None and not repeats) or (entry is not None and entry[0] != dst[b]) or \
            not _reshape_fix(a, i, at[b + 1], ids[0], merged_single=False, allow_infer=True) or \
            (inner == 2 and not _entry_positive(a, i, at[b + 2])):
        return False
    if repeats:
        a.labels[node.output[0]] = Label(at[b + 1], ids[0], zero[0])
        return True
    for row in ids[1:]:
        a.union(ids[0], row)
    a.labels[node.output[0]] = Label(at[b + 1], ids, zero, at[b])
    return True


def _split_parts_past_units(a: Analysis, i: int, node: onnx.NodeProto, lab: Label, src: tuple, dst: tuple) -> bool:
    """_split_parts where the Reshape also adds or drops size-1 axes (Keras' einsum: [B*H, S, S] ->
    [B, H, S, 1, S]), judged on the sizes other than 1."""
    keep_src, keep_dst = [k for k, n in enumerate(src) if n != 1], [k for k, n in enumerate(dst) if n != 1]
    if lab.axis not in keep_src or (len(keep_src) == len(src) and len(keep_dst) == len(dst)):
        return False
    return _split_parts(a, i, node, Label(keep_src.index(lab.axis), lab.ids, lab.zero),
                        tuple(src[k] for k in keep_src), tuple(dst[k] for k in keep_dst), where=keep_dst)


def _parts_selected(a: Analysis, name: str) -> bool:
    """Every read of `name`, past Unsqueeze / Squeeze / Transpose, is a Gather of a constant index or
    a Split (the rules check the axis)."""
    todo = [name]
    while todo:
        current = todo.pop()
        readers = a.readers.get(current, [])
        if current in a.outputs or not readers:
            return False
        for j, slot in readers:
            reader = a.nodes[j]
            if reader.op_type in ("Unsqueeze", "Squeeze", "Transpose") and slot == 0:
                todo.append(reader.output[0])
            elif slot != 0 or reader.op_type not in ("Gather", "Split") or \
                    (reader.op_type == "Gather" and a.value(reader.input[1]) is None):
                return False
    return True


def _split_heads(a: Analysis, i: int, node: onnx.NodeProto, lab: Label, src: tuple, dst: tuple) -> bool:
    """A Reshape that splits the channel axis (size C) across output axes, the outermost of them
    taking a "head" digit of the channel index (attention: [B, S, H*D] -> [B, S, H, D], channel
    c = h*D + d; or [S, B, H*D] -> [S, B*H, D]). The channels sharing a head digit are tied into one
    channel per head (removing a head removes all its D channels), and the output carries one label
    position per head position along that axis. The axis' size entry in the shape is rewritten to
    the kept count; False (and nothing registered) when no such axis exists or the entry is unknown."""
    c = src[lab.axis]
    inner_in = int(np.prod(src[lab.axis + 1:], dtype=np.int64))
    span_lo, span_hi = inner_in, inner_in * c  # the channel digit's place values in the flat index
    for b in range(len(dst)):
        r = int(np.prod(dst[b + 1:], dtype=np.int64))
        n = dst[b]
        lo, hi = max(r, span_lo), min(r * n, span_hi)
        if hi <= lo or hi % lo or lo % r or lo % span_lo or (r * n) % hi or span_hi % hi:
            continue  # no shared digit, or place values that do not nest
        mid = hi // lo  # the head digit: positions (c // (lo / inner_in)) % mid
        if mid == 1:
            continue
        if lo == span_lo and hi == span_hi:
            return False  # the whole channel digit moves: a merge, which _merge judges
        heads = (np.arange(c) // (lo // span_lo)) % mid
        order = np.argsort(heads, kind="stable").reshape(mid, -1)  # row h: the channels of head h
        ids, zero = lab.ids[order], lab.zero[order]
        out_ids, out_zero = ids[:, 0], zero.all(axis=1)
        index = (np.arange(n) // (lo // r)) % mid
        if b != lab.axis and lab.axis < len(dst) and not attr(node, "allowzero", 0) and \
                not _entry_positive(a, i, lab.axis):  # a 0 there would copy the channel count
            return False
        if not _reshape_fix(a, i, b, out_ids[index], merged_single=False, allow_infer=True) and \
                not (n > mid and _factor_fix(a, i, b, out_ids, mid)):
            return False
        for column in ids[:, 1:].T:
            a.union(ids[:, 0], column)
        a.labels[node.output[0]] = Label(b, out_ids[index], out_zero[index])
        return True
    return False


def _ungroup(a: Analysis, i: int, node: onnx.NodeProto, lab: Label, src: tuple, dst: tuple) -> bool:
    """A Reshape that widens the channel axis with the outer digit of the axis after it (torch's
    GroupNorm, undone: [N, G, C/G * H * W] -> [N, C, H, W], the groups those of a split that
    _split_heads tied; or any channel axis whose inner positions fan out over k output channels):
    output channel k is input channel k // (C/G), so each input label repeats C/G times. The output
    axis' entry in the shape is rewritten to the kept count (or inferred, the others fixed)."""
    b, inner = lab.axis, int(np.prod(src[lab.axis + 1:], dtype=np.int64))
    if b >= len(dst) or int(np.prod(src[:b], dtype=np.int64)) != int(np.prod(dst[:b], dtype=np.int64)):
        return False
    r = int(np.prod(dst[b + 1:], dtype=np.int64))
    if r * dst[b] != inner * src[b] or r >= inner or inner % r:
        return False
    index = np.arange(dst[b]) // (inner // r)
    ids, zero, const = lab.ids[index], lab.zero[index], lab.const[index]
    if not _reshape_fix(a, i, b, ids, merged_single=False, allow_infer=True):
        return False
    a.labels[node.output[0]] = Label(b, ids, zero, const=const)
    return True


def _merge(src: tuple, dst: tuple, axis: int) -> tuple[int, int, int] | None:
    """(b, s, e): input axes s..e-1 (holding `axis`) become output axis b, everything before them the
    output axes before b; None when no such axis exists. Output axis b may also take an inner part
    of axis s-1 (magika's [B, 2048, 64] -> [B, 512, 256]: four tokens' channels side by side): the
    channels then repeat along b, each block of them whole."""
    p_in = np.concatenate([[1], np.cumprod(src, dtype=np.int64)])
    p_out = np.concatenate([[1], np.cumprod(dst, dtype=np.int64)])
    for b in range(len(dst)):
        starts = [s for s in range(axis + 1) if p_in[s] == p_out[b] or
                  (s > 0 and p_out[b] and p_in[s] % p_out[b] == 0 and src[s - 1] % (p_in[s] // p_out[b]) == 0)]
        ends = [e for e in range(axis + 1, len(src) + 1) if p_in[e] == p_out[b + 1]]
        if starts and ends:
            return b, max(starts), min(ends)
    return None


def _reshape_fix(a: Analysis, i: int, b: int, ids: np.ndarray, merged_single: bool, allow_infer: bool = False) -> bool:
    if (i, b) in a.counts:  # the entry is a channel count read at run time (shape, below): the same channels?
        same = all(a.same_channels(read, ids) for read in a.counts[(i, b)])
        if same or (a.loose and _reshape_const(a, i, b, ids)):
            a.accepted_counts.add((i, b))  # (approximate mode: else this reader gets a constant of its own)
        return (i, b) in a.accepted_counts
    return _reshape_const(a, i, b, ids, merged_single, allow_infer)


def _reshape_const(a: Analysis, i: int, b: int, ids: np.ndarray, merged_single: bool = False,
                   allow_infer: bool = False) -> bool:
    """Entry b of Reshape i's shape, a constant (or fixed shape arithmetic), becomes the kept count of ids."""
    node = a.nodes[i]
    found = _shape_entry(a, i, b)
    if found is None:
        return False
    value, owner, slot, pos = found
    if value == 0 and merged_single and not attr(node, "allowzero", 0):
        return True
    if value == -1:  # inferred: right when every other entry keeps its size
        return not allow_infer or _others_keep(a, i, b)
    return value > 0 and _fix_entry(a, i, owner, slot, pos, ids)


def _fix_entry(a: Analysis, i: int, owner: int, slot: int, pos: int, ids: np.ndarray) -> bool:
    """fix_const for entry `pos` of the shape of Reshape / Expand i, found at (owner, slot); a shape
    Concat that other Reshapes / Expands read too is noted, so that Analysis.close can check that
    every one of them asked for this rewrite."""
    if owner != i:
        concat = a.nodes[owner].output[0]
        readers = a.terminal_reads(concat, through=lambda op, s: op == "Cast")
        if readers and len(readers) > 1:
            a.factors.setdefault(concat, [set(), {j for j, _ in readers}])[0].add(i)
    return a.fix_const(owner, slot, pos, ids)


def _others_keep(a: Analysis, i: int, b: int) -> bool:
    """Every entry of Reshape i's shape but `b` is positive (so -1 at b infers the new size): constants,
    or shape arithmetic on sizes pruning keeps (HF's view(*x.shape[:-1], -1, D))."""
    return all(_entry_positive(a, i, pos) for pos in range(len(a.shapes[a.nodes[i].output[0]])) if pos != b)


def _shape_entry(a: Analysis, i: int, pos: int) -> tuple[int, int, int, int] | None:
    """(value, node, slot, position) of entry `pos` of Reshape i's shape where it is a constant: the
    shape is constant, or a Concat (read only by this Reshape) whose piece there is constant (what
    exporters build for x.view(x.size(0), -1) or Keras' Tensordot)."""
    found = _entry_source(a, i, pos)
    if found is None:
        return None
    index, slot, k = found
    v = a.value(a.nodes[index].input[slot])
    return None if v is None else (int(v.ravel()[k]), index, slot, k)


def _entry_positive(a: Analysis, i: int, pos: int) -> bool:
    """Entry `pos` of Reshape i's shape is positive: a constant, or shape arithmetic (flax's batch dims
    Slice(Shape(x))) positive in every probe."""
    found = _entry_source(a, i, pos)
    if found is None:
        return False
    index, slot, k = found
    return all(v is not None and int(v.ravel()[k]) > 0 for v in a.probed(a.nodes[index].input[slot]))


def _entry_source(a: Analysis, i: int, pos: int) -> tuple[int, int, int] | None:
    """(node, slot, position in that input) holding entry `pos` of Reshape (or Expand) i's shape: the
    shape input itself when its value is known, else the piece of the Concat building it. A Concat
    read by other Reshapes / Expands too (jax2tf's LayerNorm reshapes and broadcasts its mean and
    variance with one [B, 1, C]) is rewritten once for all: Analysis.close checks each reader asked."""
    name = a.nodes[i].input[1]
    if a.value(name) is not None:
        return i, 1, pos
    producer = a.facts.producer
    while (cast := producer(name)) is not None and cast.op_type == "Cast":
        name = cast.input[0]  # tf2onnx casts the shape to int64 after the Concat
    if producer(name) is None or name in a.outputs:
        return None
    index = a.facts.producers[name]
    if a.nodes[index].op_type != "Concat":
        return None
    readers = a.terminal_reads(name, through=lambda op, slot: op == "Cast")
    if readers is None or any(a.nodes[j].op_type not in ("Reshape", "Expand") or slot != 1 for j, slot in readers):
        return None
    found = _concat_piece(a, a.nodes[index], pos)
    return None if found is None else (index, *found)


def _concat_piece(a: Analysis, node: onnx.NodeProto, pos: int) -> tuple[int, int] | None:
    """(input slot, position in that input) of entry `pos` of a 1-D Concat's output."""
    offset = 0
    for slot, piece in enumerate(node.input):
        n = int(np.prod(a.shapes[piece]))
        if offset <= pos < offset + n:
            return slot, pos - offset
        offset += n
    return None


def _factor_fix(a: Analysis, i: int, b: int, heads: np.ndarray, mid: int) -> bool:
    """Entry b of Reshape i's shape is computed as n * H, H a constant equal to the head count `mid`
    (torch's bsz * num_heads with a symbolic batch): H is rewritten to the kept count of `heads`. Every
    Reshape that reads the product must rewrite it alike (Analysis.close checks)."""
    found = _entry_source(a, i, b)
    if found is None or a.value(a.nodes[found[0]].input[found[1]]) is not None:
        return False
    name = a.nodes[found[0]].input[found[1]]
    while (node := a.facts.producer(name)) is not None and node.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        name = node.input[0]
    if node is None or node.op_type != "Mul":
        return False
    index = a.facts.producers[name]
    for slot in (0, 1):
        factor = a.value(node.input[slot])
        if factor is not None and factor.size == 1 and int(factor.ravel()[0]) == mid and \
                a.value(node.input[1 - slot]) is None and a.fix_const(index, slot, 0, heads):
            readers = _shape_readers(a, name)
            a.factors.setdefault(name, [set(), set()])
            a.factors[name][0].add(i)
            a.factors[name][1] |= readers if readers is not None else {-1}
            return True
    return False


def _shape_readers(a: Analysis, name: str) -> set[int] | None:
    """The Reshapes whose shape reads `name` (through Unsqueeze / Cast / a Concat); None if anything
    else reads it."""
    reads = a.terminal_reads(name, through=lambda op, slot: op in ("Unsqueeze", "Cast", "Concat"))
    if reads is None or any(a.nodes[j].op_type != "Reshape" or slot != 1 for j, slot in reads):
        return None
    return {j for j, _ in reads}


@labeled
def shape(a: Analysis, i: int, node: onnx.NodeProto, lab: Label) -> None:
    """Shape of a channel tensor is harmless when only its other dims are read (Gather of the batch
    dim, Slice before the channel axis: x.view(x.size(0), -1)), and when the channel count it reads
    only becomes Reshape entries whose axis holds the same channels (GPT-2's x.view(-1, x.size(-1))):
    pruned, the count read at run time is the kept one. Those entries are checked by the Reshape rule
    (_reshape_fix), and Analysis.close freezes the channels if any was not. A count that goes anywhere
    else (c // groups for a channel shuffle, E / H for heads) is pinned: it reads the original count,
    as the zeroed reference does, and each Reshape it sizes gets a constant of its own."""
    rank = len(a.shapes[node.input[0]])
    start = attr(node, "start", 0) % max(rank, 1) if attr(node, "start", 0) < 0 else attr(node, "start", 0)
    end = attr(node, "end", rank)
    end = end % rank if end < 0 else min(end, rank)
    dims = list(range(start, end))
    if lab.axis not in dims:
        return
    found = _count_uses(a, node.output[0], dims.index(lab.axis))
    why = f"Shape '{node.name}' of a channel tensor is used for its channel count"
    if found is None:  # read as the original count at run time (the reference's): see DimFix
        a.fixes.append(DimFix("pin", node.output[0], dims.index(lab.axis), lab.ids))
        return
    uses, compared = found
    for use, factor in uses.items():
        a.counts.setdefault(use, []).append(np.tile(lab.ids, factor))
    if uses:
        a.pending_counts.append((set(uses), lab.ids, compared, why))


def _count_uses(a: Analysis, name: str, pos: int) -> tuple[dict[tuple[int, int], int], list] | None:
    """Where entry `pos` of the integer vector `name` goes: {(Reshape, shape position): factor} (the
    entry times `factor`, the product of unlabeled sizes a ReduceProd joined it with: Keras' batch
    dims B*H), through Cast / Unsqueeze / Squeeze / Gather / Slice / Concat / ReduceProd / Max / Min,
    and the (tensor, axis) whose size an elementwise Max / Min compares it with (the channel counts
    that must agree, checked in Analysis.close); None if anything else reads it. Reads of other
    entries (the batch) are let go."""
    found, compared, todo = {}, [], [(name, pos, 1)]
    while todo:
        current, p, factor = todo.pop()
        if current in a.outputs:
            return None
        for j, slot in a.readers.get(current, []):
            node = a.nodes[j]
            read = _read_positions(a, node, int(np.prod(a.shapes[current]))) if slot == 0 else None
            if node.op_type in ("Cast", "Identity", "Unsqueeze", "Squeeze") and slot == 0:
                todo.append((node.output[0], p, factor))
            elif read is not None:
                todo.extend((node.output[0], q, factor) for q, r in enumerate(read) if r == p)
            elif node.op_type == "Concat":
                todo.append((node.output[0], p + sum(int(np.prod(a.shapes[x])) for x in node.input[:slot]), factor))
            elif node.op_type == "ReduceProd" and len(node.input) == 1 and not attr(node, "axes"):
                values = a.probed(current)
                if not values or values[0] is None:
                    return None
                todo.append((node.output[0], 0, factor * int(np.prod(np.delete(values[0].ravel(), p)))))
            elif node.op_type in ("Max", "Min"):
                others = [_shape_dim(a, x, p) for k, x in enumerate(node.input) if k != slot]
                if None in others:
                    return None
                compared += others
                todo.append((node.output[0], p, factor))
            elif node.op_type == "Reshape" and slot == 1:
                found[(j, p)] = factor
            else:
                return None
    return found, compared


def _shape_dim(a: Analysis, name: str, pos: int) -> tuple[str, int] | None:
    """(tensor, axis) when entry `pos` of `name` is that tensor's size read through Shape (and Cast /
    Unsqueeze / Squeeze / a constant Gather or Slice / Concat)."""
    node = a.facts.producer(name)
    while node is not None and node.op_type in ("Cast", "Identity", "Unsqueeze", "Squeeze", "Gather", "Slice",
                                                 "Concat"):
        if node.op_type == "Concat":
            found = _concat_piece(a, node, pos)
            if found is None:
                return None
            name, pos = node.input[found[0]], found[1]
        elif node.op_type in ("Gather", "Slice"):
            read = _read_positions(a, node, int(np.prod(a.shapes[node.input[0]])))
            if read is None:
                return None
            pos, name = read[pos], node.input[0]
        else:
            name = node.input[0]
        node = a.facts.producer(name)
    if node is None or node.op_type != "Shape":
        return None
    start = attr(node, "start", 0) % max(len(a.shapes[node.input[0]]), 1)
    return node.input[0], start + pos


def _read_positions(a: Analysis, node: onnx.NodeProto, n: int) -> list[int] | None:
    """The entries of a length-n vector a constant Gather or Slice reads, in output order."""
    if node.op_type == "Gather" and attr(node, "axis", 0) == 0:
        idx = a.value(node.input[1])
        return None if idx is None else [int(x) % n for x in np.ravel(idx)]
    if node.op_type == "Slice":
        values = [a.value(node.input[s]) if _input(node, s) else None for s in range(1, 5)]
        starts, ends, axes, steps = values
        if starts is None or ends is None or (_input(node, 3) and axes is None) or (_input(node, 4) and steps is None):
            return None
        step = 1 if steps is None else int(np.ravel(steps)[0])
        return list(range(n)[slice(int(np.ravel(starts)[0]), int(np.ravel(ends)[0]), step)])
    return None
