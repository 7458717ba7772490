"""Which channels a channel pruning removed, carried inside the pruned file for `verify --reference`.

The rewritten graph no longer says which channels it lost, and without that the original cannot be
turned into the exactness reference (`zeroed`: the removed channels' filters, biases, norm scale and
shift, per-channel constants set to zero). So the pruned model keeps one metadata entry, KEY: a JSON
list of {"tensor", "axis", "removed"} (indices along that axis of the original tensor).
"""

from __future__ import annotations

import json

import numpy as np
import onnx

from ..errors import InvalidModelError
from .tensors import resizable, store

KEY = "onnxprune.removed_channels"


def removed_parameters(cg, removed: np.ndarray) -> list[dict]:
    """Per parameter slice (role "param") that loses channels: the tensor, its axis, the removed indices."""
    entries = []
    for s in cg.slices:
        gone = np.flatnonzero(removed[cg.channel[s.ids]])
        if s.role == "param" and gone.size:
            entries.append({"tensor": s.tensor, "axis": int(s.axis), "removed": gone.tolist()})
    return entries


def record(model: onnx.ModelProto, entries: list[dict]) -> None:
    """Add (or replace) KEY in the model's metadata, in place."""
    props = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=KEY, value=json.dumps(entries, separators=(",", ":")))


def recorded(model: onnx.ModelProto) -> list[dict] | None:
    """The entries KEY holds, or None for a model no channel pruning wrote."""
    value = next((p.value for p in model.metadata_props if p.key == KEY), None)
    if value is None:
        return None
    try:
        entries = json.loads(value)
        return [{"tensor": str(e["tensor"]), "axis": int(e["axis"]), "removed": [int(i) for i in e["removed"]]}
                for e in entries]
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidModelError(f"metadata '{KEY}' is not a list of removed channels: {error}") from None


def zero_removed(model: onnx.ModelProto, entries: list[dict]) -> onnx.ModelProto:
    """A copy of `model` with each entry's indices set to zero along its axis (the exactness reference)."""
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
        index = [slice(None)] * value.ndim
        index[e["axis"]] = e["removed"]
        value[tuple(index)] = 0
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    store(copy.graph, arrays)
    return copy
