"""Sequences (held as Python lists of tensors) and optionals (a value, or None when empty)."""

from __future__ import annotations

import torch

from ..registry import register


def _scalar(value, device):
    return torch.tensor(value, dtype=torch.int64, device=device)


@register("SequenceConstruct", since=11)
def sequence_construct(*xs):
    return list(xs)


@register("SequenceEmpty", since=11)
def sequence_empty(*, dtype=None):
    return []


@register("SequenceAt", since=11)
def sequence_at(seq, position):
    return seq[int(position)]


@register("SequenceInsert", since=11)
def sequence_insert(seq, x, position=None):
    out = list(seq)  # sequences are values: never mutate the input
    out.insert(int(position) if position is not None else len(out), x)  # negative counts from the back
    return out


@register("SequenceErase", since=11)
def sequence_erase(seq, position=None):
    out = list(seq)
    del out[int(position) if position is not None else -1]
    return out


@register("SequenceLength", since=11)
def sequence_length(seq):
    return _scalar(len(seq), seq[0].device if seq else None)


@register("ConcatFromSequence", since=11)
def concat_from_sequence(seq, *, axis, new_axis=0):
    return torch.stack(seq, axis) if new_axis else torch.cat(seq, axis)


@register("SplitToSequence", since=11)
def split_to_sequence(x, split=None, *, axis, keepdims):
    if split is None:  # every slice of size 1; keepdims=0 drops the split axis
        parts = torch.split(x, 1, dim=axis)
        return [p.squeeze(axis) for p in parts] if not keepdims else list(parts)
    sizes = int(split) if split.dim() == 0 else [int(s) for s in split.tolist()]
    return list(torch.split(x, sizes, dim=axis))


@register("SequenceMap", since=17)
def sequence_map(seq, *extra, body):
    # Each extra input is a sequence (mapped alongside) or a tensor (passed whole to every call).
    outs = [body(seq[i], *[e[i] if isinstance(e, list) else e for e in extra]) for i in range(len(seq))]
    return tuple(list(values) for values in zip(*outs))


@register("Optional", since=15)
def optional(x=None, *, type=None):  # noqa: A002 (ONNX attribute name)
    return x


@register("OptionalHasElement", since=15)
def optional_has_element(x=None):
    return torch.tensor(x is not None)


@register("OptionalGetElement", since=15)
def optional_get_element(x):
    return x
