"""Which channels each channel pruning removed, carried inside the pruned file for `verify --reference`.

The rewritten graph no longer says which channels it lost, and without that the original cannot be
turned into the exactness reference (`zeroed`: the removed channels' filters, biases, norm scale and
shift, per-channel constants set to zero). So the pruned model keeps one metadata entry, KEY: JSON
{"steps": [step, ...]}, one step per channel pruning in the file's history, each a list of
{"tensor", "axis", "removed", "zero"}: indices along that axis of the step's input tensor, and whether
the reference zeroes them (a parameter) or they are only sliced (a consumer's input side, a norm's
running statistics). Weight pruning keeps the steps as they are: its zeros need no record. A file
from before steps holds one bare list of parameter entries, read as one step. "folded" lists the
biases a rewrite changed (or added) to absorb removed channels that were constants (graph.Fold), and
the maps of constants it added after a consumer (an Add inserted after it, for channels that are a
constant per position): the reference keeps its own values there, and only the outputs can judge them. "approximate" names the
approximate-mode rules (prune --approximate) whose removals change what the model computes: the
zeroed original is then not the pruned model's equal. "means" lists, per ReduceMean that now averages
fewer channels, its node (first output), the step, the channel axis, rank and width of its input,
and the positions removed there: verify writes that mean out over the kept positions
(structured/approximate.py), as it does a LayerNorm whose scale lost entries. "borders" lists, in the
same form, each padded Conv that a removed constant channel was folded into (its input's channels):
verify pads those channels with their own value instead of 0, which is what the folded bias computes.
"""

from __future__ import annotations

import json

import numpy as np
import onnx

from ..errors import InvalidModelError
from .tensors import resizable, store

KEY = "onnxprune.removed_channels"


def removed_slices(cg, removed: np.ndarray) -> list[dict]:
    """One entry per (tensor, axis) that loses positions: the removed indices, and "zero" for a parameter."""
    entries: dict[tuple[str, int], dict] = {}
    for s in cg.slices:
        gone = np.flatnonzero(removed[cg.channel[s.ids]])
        if gone.size:
            entry = entries.setdefault((s.tensor, int(s.axis)), {"tensor": s.tensor, "axis": int(s.axis),
                                                                  "removed": gone.tolist(), "zero": False})
            entry["zero"] = entry["zero"] or s.role == "param"
    return list(entries.values())


def removed_means(cg, removed: np.ndarray, step: int) -> list[dict]:
    """The "means" entries of one step: each ReduceMean (or ReduceSum / width) over channels that lost
    some: its node (first output), the step, the channel axis, rank and width of its input and the
    removed positions, what verify needs to write it out over the kept ones."""
    from .rules_per_channel import MEAN_STATISTICS

    sites = [s for s in cg.sites if s[1] == MEAN_STATISTICS and removed[s[3]].any()]
    if not sites:
        return []
    inputs = {n.output[0]: n.input[0] for n in cg.model.graph.node if n.output and n.input}
    return [{"node": site, "step": step, "axis": axis, "rank": len(cg.shapes[inputs[site]]), "width": len(channels),
             "removed": np.flatnonzero(removed[channels]).tolist()} for site, _, axis, channels in sites]


def removed_borders(cg, removed: np.ndarray, step: int) -> list[dict]:
    """The "borders" entries of one step, in removed_means' form: each padded Conv a constant channel
    was folded into (approximate), with every input channel it lost (a removed channel that is 0
    pads alike with its own value or with 0)."""
    from .producers import PADDED_FOLD

    padded, keys, out = {s[0] for s in cg.sites if s[1] == PADDED_FOLD}, cg.keys(), []
    for fold in cg.folds:
        node = cg.model.graph.node[fold.index]
        channels = keys.get((fold.weight, fold.in_axis))
        if node.output[0] in padded and channels is not None and removed[channels].any():
            out.append({"node": node.output[0], "step": step, "axis": 1, "rank": len(cg.shapes[node.input[0]]),
                        "width": len(channels), "removed": np.flatnonzero(removed[channels]).tolist()})
    return out


def record(model: onnx.ModelProto, steps: list[list[dict]], folded: list[str] = (), approximate: list[str] = (),
           means: list[dict] = (), borders: list[dict] = ()) -> None:
    """Set KEY in the model's metadata to `steps`, and the folded biases, approximate rules, masked
    means and padded borders it held plus `folded`, `approximate`, `means` and `borders`, in place."""
    lists = {"folded": sorted(set(folded_biases(model)) | set(folded)),
             "approximate": sorted(set(approximate_rules(model)) | set(approximate)),
             "means": masked_means(model) + list(means), "borders": padded_borders(model) + list(borders)}
    props = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=KEY, value=json.dumps({"steps": steps, **{k: v for k, v in lists.items() if v}},
                                                       separators=(",", ":")))


def folded_biases(model: onnx.ModelProto) -> list[str]:
    """The biases any channel pruning of this file's history folded constants into."""
    return [str(n) for n in _listed(model, "folded")]


def approximate_rules(model: onnx.ModelProto) -> list[str]:
    """The approximate rules any channel pruning of this file's history removed channels by."""
    return [str(n) for n in _listed(model, "approximate")]


def masked_means(model: onnx.ModelProto) -> list[dict]:
    """The ReduceMeans any channel pruning of this file's history made average fewer channels."""
    return _sites(model, "means")


def padded_borders(model: onnx.ModelProto) -> list[dict]:
    """The padded Convs any channel pruning of this file's history folded constant channels into."""
    return _sites(model, "borders")


def _sites(model: onnx.ModelProto, key: str) -> list[dict]:
    try:
        return [{"node": str(m["node"]), "step": int(m["step"]), "axis": int(m["axis"]), "rank": int(m["rank"]),
                 "width": int(m["width"]), "removed": [int(i) for i in m["removed"]]} for m in _listed(model, key)]
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidModelError(f"metadata '{KEY}' is not a record of removed channels: {error}") from None


def _listed(model: onnx.ModelProto, key: str) -> list:
    value = next((p.value for p in model.metadata_props if p.key == KEY), None)
    try:
        data = json.loads(value) if value is not None else {}
    except ValueError as error:
        raise InvalidModelError(f"metadata '{KEY}' is not a record of removed channels: {error}") from None
    items = data.get(key, []) if isinstance(data, dict) else []
    if not isinstance(items, list):
        raise InvalidModelError(f"metadata '{KEY}': '{key}' is not a list")
    return items


def recorded(model: onnx.ModelProto) -> list[list[dict]]:
    """The channel steps of the model's history, oldest first ([] for a model no channel pruning wrote)."""
    value = next((p.value for p in model.metadata_props if p.key == KEY), None)
    if value is None:
        return []
    try:
        data = json.loads(value)
        steps = [data] if isinstance(data, list) else data["steps"]
        return [[{"tensor": str(e["tensor"]), "axis": int(e["axis"]), "removed": [int(i) for i in e["removed"]],
                  "zero": bool(e.get("zero", True))} for e in step] for step in steps]
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidModelError(f"metadata '{KEY}' is not a record of removed channels: {error}") from None


def compose(steps: list[list[dict]], shapes: dict[str, tuple[int, ...]], rename) -> list[dict]:
    """Several steps as one, in the indices of the first step's input (`shapes`: its constants' shapes;
    `rename`: a later step's tensor name -> the name it had there)."""
    gone: dict[tuple[str, int], np.ndarray] = {}
    zero: dict[tuple[str, int], bool] = {}
    for step in steps:
        for e in step:
            key = (rename(e["tensor"]), e["axis"])
            shape = shapes.get(key[0])
            if shape is None or not 0 <= key[1] < len(shape):
                raise InvalidModelError(f"the reference has no tensor '{e['tensor']}' with an axis {e['axis']}, "
                                        f"which the pruned model's record names")
            before = gone.get(key, np.zeros(0, np.int64))
            kept = np.setdiff1d(np.arange(shape[key[1]]), before)
            index = np.asarray(e["removed"], np.int64)
            if index.size and (index.min() < 0 or index.max() >= kept.size):
                raise InvalidModelError(f"tensor '{key[0]}' of the reference has shape {list(shape)}, which "
                                        f"the removed channels recorded in the pruned model do not fit")
            gone[key] = np.union1d(before, kept[index])
            zero[key] = zero.get(key, False) or e["zero"]
    return [{"tensor": n, "axis": a, "removed": r.tolist(), "zero": zero[(n, a)]} for (n, a), r in gone.items()]


def kept_index(shape: tuple[int, ...], entries: list[dict]) -> list[np.ndarray]:
    """Per axis of a tensor, the positions its entries keep."""
    index = [np.arange(n) for n in shape]
    for e in entries:
        index[e["axis"]] = np.setdiff1d(index[e["axis"]], e["removed"])
    return index


def zero_removed(model: onnx.ModelProto, entries: list[dict]) -> onnx.ModelProto:
    """A copy of `model` with each "zero" entry's indices set to zero along its axis (the exactness reference)."""
    return with_values(model, zeroed_values(model, entries))


def zeroed_values(model: onnx.ModelProto, entries: list[dict]) -> dict[str, np.ndarray]:
    """The model's constants that `entries` zero, with those positions zeroed."""
    consts = resizable(model.graph)
    arrays: dict[str, np.ndarray] = {}
    for e in entries:
        if e["tensor"] not in consts:
            raise InvalidModelError(f"the reference has no tensor '{e['tensor']}' that the pruned model's "
                                    f"metadata names")
        value = arrays.setdefault(e["tensor"], consts[e["tensor"]].copy())
        if not 0 <= e["axis"] < value.ndim or any(not 0 <= i < value.shape[e["axis"]] for i in e["removed"]):
            raise InvalidModelError(f"tensor '{e['tensor']}' of the reference has shape {list(value.shape)}, "
                                    f"which the removed channels recorded in the pruned model do not fit")
        if e.get("zero", True):
            index = [slice(None)] * value.ndim
            index[e["axis"]] = e["removed"]
            value[tuple(index)] = 0
    return arrays


def with_values(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose constants named in `arrays` hold those values."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    store(copy.graph, arrays)
    return copy
