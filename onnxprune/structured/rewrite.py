"""The graph rewrite: slice every tensor a removed channel indexes, and the sizes that name counts.

Names, opset, IR version, metadata and node order are the input's; only sliced constants, rewritten
sizes (Conv group, Reshape shape entries, Split sizes) and the now stale value_info change; a shape
constant shared by readers that need different sizes gives each such reader its own copy ("<name>_prunedK").
`zeroed()` builds the reference the rewrite must equal: the original graph with the removed channels'
parameters (producer filters and biases, norm scale and shift, per-channel Add/Mul constants) zero.
Where such a channel is a nonzero constant at a consumer's input (graph.Fold), the consumer's bias
takes its weights times that constant, read from one onnxruntime run of that reference.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import OnnxPruneError
from .groups import ChannelGraph
from .record import record, recorded
from .tensors import add_copy, names, resizable, store


def kept_positions(cg: ChannelGraph, removed: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """(tensor, axis) -> bool per position (kept); refuses to empty an axis."""
    kept = {key: ~removed[channels] for key, channels in cg.keys().items()}
    empty = [key for key, k in kept.items() if not k.any()]
    if empty:
        raise OnnxPruneError(f"removing these channels would leave no channel in {empty[0][0]} axis {empty[0][1]}")
    return kept


def rewrite(cg: ChannelGraph, removed: np.ndarray) -> onnx.ModelProto:
    """A dense, physically smaller copy of cg.model without the `removed` channels (bool per channel)."""
    if removed[cg.frozen].any():
        raise OnnxPruneError("a frozen channel cannot be removed")
    kept = kept_positions(cg, removed)
    arrays: dict[str, np.ndarray] = {}
    consts = resizable(cg.model.graph)
    added, changed, maps = _fold_biases(cg, removed, kept, consts, arrays)
    for (name, axis), keep in sorted(kept.items()):
        arrays[name] = np.compress(keep, arrays.get(name, consts[name]), axis=axis)
    copies: dict[tuple[str, tuple], np.ndarray] = {}  # (shared constant, its reader) -> that reader's copy
    for fix in cg.fixes:
        if fix.kind == "const":
            store_in = copies if fix.copy else arrays
            key = (fix.target, fix.reader) if fix.copy else fix.target
            if fix.folded is not None:
                consts.setdefault(fix.target, fix.folded)
            value = store_in.setdefault(key, consts[fix.target].copy())
            value.reshape(-1)[fix.index] = int((~removed[cg.channel[fix.ids]]).sum()) ** fix.power
    model = onnx.ModelProto()
    model.CopyFrom(cg.model)
    store(model.graph, arrays)
    _store_copies(model.graph, copies, consts)
    folded = _add_biases(model.graph, added, kept) + changed
    for fix in cg.fixes:
        if fix.kind == "attr":
            _set_attr(model.graph.node[fix.index], fix.attr, int((~removed[cg.channel[fix.ids]]).sum()), fix.pos)
    folded += _add_constants(model.graph, maps, kept, _pins(cg, removed))  # inserts nodes: after all that indexes them
    if folded:
        record(model, recorded(model), folded)  # verify --reference judges these by the outputs
    del model.graph.value_info[:]  # channel counts changed; runtimes re-infer
    return model


def check_runs(pruned: onnx.ModelProto, cg: ChannelGraph) -> None:
    """The rewritten graph runs in onnxruntime at the probe's shapes and gives the original's output
    shapes; a RuntimeError (a bug: the CLI says "internal error", exit 1) before anything is written."""
    try:
        got = dict(zip([o.name for o in pruned.graph.output], (np.shape(v) for v in _run_probe(pruned, cg))))
    except Exception as err:  # noqa: BLE001 (onnxruntime raises its own exception types)
        raise RuntimeError(f"the channel-pruned graph does not run in onnxruntime, nothing written: {err}") from None
    wrong = [name for name, shape in got.items() if tuple(shape) != tuple(cg.shapes.get(name, shape))]
    if wrong:
        raise RuntimeError(f"the channel-pruned graph changes the shape of output '{wrong[0]}', nothing written")


def deviation(pruned: onnx.ModelProto, cg: ChannelGraph, removed: np.ndarray) -> dict[str, float]:
    """Per output, the relative L2 distance of `pruned` from the zeroed reference on the probe's random
    inputs: 0 up to rounding for exact removals, what the approximate rules changed otherwise."""
    got, want = _run_probe(pruned, cg), _run_probe(zeroed(cg, removed), cg)
    return {o.name: float(np.linalg.norm(np.subtract(g, w, dtype=np.float64)) / max(np.linalg.norm(w), 1e-30))
            for o, g, w in zip(cg.model.graph.output, got, want)}


def zeroed(cg: ChannelGraph, removed: np.ndarray) -> onnx.ModelProto:
    """The original model with the removed channels' parameters set to zero (the exactness reference)."""
    from .record import removed_slices, zero_removed

    return zero_removed(cg.model, removed_slices(cg, removed))


def _fold_biases(cg: ChannelGraph, removed: np.ndarray, kept: dict, consts: dict, arrays: dict
                 ) -> tuple[list, list[str], list]:
    """Each removed input channel that is a constant k at a folding consumer: bias += scale * k * (its
    weights summed over the kernel). Existing biases are updated in `consts` and `arrays` (sliced
    afterwards like any bias); returns (fold, full bias) for consumers that had none, the names of
    those updated, and (fold, the consumer's output from the removed channels alone) where they are
    a map of constants (or the consumer has no bias: a MatMul)."""
    todo = [f for f in cg.folds if not kept.get((f.weight, f.in_axis), np.ones(1, bool)).all()]
    if not todo:
        return [], [], []
    values = _removed_values(cg, removed, sorted({f.tensor for f in todo}))
    added, changed, maps = [], [], []
    for f in todo:
        gone = np.flatnonzero(~kept[(f.weight, f.in_axis)])
        node = cg.model.graph.node[f.index]
        axis = _channel_axis(node, values[f.tensor].ndim)
        rows = np.moveaxis(values[f.tensor], axis, 0).reshape(values[f.tensor].shape[axis], -1)[gone].astype(np.float64)
        k = rows[:, 0]
        if f.bias_slot < 0 or not np.allclose(rows, k[:, None], rtol=1e-5, atol=1e-6):
            if not f.map:
                raise RuntimeError(f"channel analysis: a removed channel of '{f.tensor}' is not a constant")
            maps.append((f, _response(cg, node, values[f.tensor], axis, gone, consts[f.weight])))
            continue
        weight = np.moveaxis(consts[f.weight], (f.out_axis, f.in_axis), (0, 1))[:, gone].astype(np.float64)
        delta = f.scale * (weight.reshape(len(weight), len(gone), -1).sum(axis=2) @ k)
        if f.bias:
            arrays[f.bias] = consts[f.bias] = (consts[f.bias] + delta).astype(consts[f.bias].dtype)
            changed.append(f.bias)
        else:
            added.append((f, delta.astype(consts[f.weight].dtype)))
    return added, changed, maps


def _response(cg: ChannelGraph, node: onnx.NodeProto, x: np.ndarray, axis: int, gone: np.ndarray,
              weight: np.ndarray) -> np.ndarray:
    """`node` (bias left out) applied by onnxruntime to the channels `gone` of its input `x` alone (the
    rest 0): what they add to its output. They do not depend on the input, so neither does this: one
    batch item of it, which broadcasts over any batch."""
    import onnxruntime as ort

    only = np.zeros_like(x)
    index = tuple(gone if k == axis else slice(None) for k in range(x.ndim))
    only[index] = x[index]
    single = onnx.NodeProto()
    single.CopyFrom(node)
    del single.input[:], single.output[:]
    single.input.extend(["x", "w"])
    single.output.append("y")
    dtype = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph([single], "response", [helper.make_tensor_value_info("x", dtype, x.shape)],
                              [helper.make_tensor_value_info("y", dtype, None)], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=cg.model.opset_import, ir_version=cg.model.ir_version)
    [y] = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": only})
    if not np.allclose(y, y[:1], rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"channel analysis: the removed channels of '{node.input[0]}' vary with the batch")
    return y[:1]


def _add_constants(graph: onnx.GraphProto, maps: list, kept: dict, pins: list) -> list[str]:
    """Each consumer that absorbs a map of constants writes to "<output>_unfolded", and an Add of that
    map (sliced like its output channels), right after it, writes its output; so does a pinned Shape,
    with the count its removed channels took off; the added constants' names."""
    added = [(index, value) for index, value in pins]
    for fold, value in maps:
        keep = kept.get((fold.weight, fold.out_axis))
        axis = _channel_axis(graph.node[fold.index], value.ndim)
        added.append((fold.index, value if keep is None else np.compress(keep, value, axis=axis)))
    taken, out = names(graph), []
    for index, value in sorted(added, key=lambda m: -m[0]):  # from the last: indices stay valid
        node = graph.node[index]
        name, inner = (_unique(f"{node.output[0]}_{suffix}", taken) for suffix in ("removed_channels", "unfolded"))
        graph.initializer.append(numpy_helper.from_array(value, name))
        add = helper.make_node("Add", [inner, name], [node.output[0]], name=_unique(f"{node.name or name}_fold", taken))
        node.output[0] = inner
        graph.node.insert(index + 1, add)
        out.append(name)
    return out


def _pins(cg: ChannelGraph, removed: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(Shape node, what to add to its output) for each pinned channel count (DimFix "pin"): the
    count the removed channels took off, so that every reader sees the original's count."""
    index = {node.output[0]: k for k, node in enumerate(cg.model.graph.node) if node.output}
    out = []
    for fix in (f for f in cg.fixes if f.kind == "pin"):
        delta = np.zeros(cg.shapes[fix.target], np.int64)
        delta[fix.index] = int(removed[cg.channel[fix.ids]].sum())
        if delta.any():
            out.append((index[fix.target], delta))
    return out


def _channel_axis(node: onnx.NodeProto, rank: int) -> int:
    """The channel axis of a folding consumer's input and output: the last for a MatMul, else 1."""
    return rank - 1 if node.op_type == "MatMul" else 1


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _removed_values(cg: ChannelGraph, removed: np.ndarray, tensors: list[str]) -> dict[str, np.ndarray]:
    """`tensors` in the zeroed reference at the probe's shapes (any input: what is read is constant)."""
    probe = zeroed(cg, removed)
    del probe.graph.value_info[:], probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors)
    return dict(zip(tensors, _run_probe(probe, cg)))


def _run_probe(model: onnx.ModelProto, cg: ChannelGraph) -> list:
    """`model`'s outputs in onnxruntime on the analysis' probe shapes (seeded random inputs)."""
    import onnxruntime as ort

    from .shapes import input_feeds

    inputs = [v.name for v in model.graph.input if v.name in cg.shapes]
    feeds = input_feeds(model, {name: cg.shapes[name] for name in inputs}, seed=0)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _add_biases(graph: onnx.GraphProto, added: list, kept: dict) -> list[str]:
    """A folding consumer without a bias gets one (sliced like its output channels); their names."""
    taken, out = names(graph), []
    for fold, bias in added:
        keep = kept.get((fold.weight, fold.out_axis))
        name = _unique(f"{fold.weight}_folded_bias", taken)
        graph.initializer.append(numpy_helper.from_array(bias if keep is None else bias[keep], name))
        node = graph.node[fold.index]
        while len(node.input) < fold.bias_slot:
            node.input.append("")
        node.input.append(name)
        out.append(name)
    return out


def _store_copies(graph: onnx.GraphProto, copies: dict, consts: dict) -> None:
    """Give each reader of a shared shape constant whose entries changed its own initializer."""
    taken = names(graph)
    for (name, (index, slot)), value in sorted(copies.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if not np.array_equal(value, consts[name]):  # else nothing kept fewer: the shared original is right
            add_copy(graph, name, value, index, slot, taken)


def _set_attr(node: onnx.NodeProto, name: str, value: int, pos: int) -> None:
    for a in node.attribute:
        if a.name == name:
            if pos < 0:
                a.i = value
            else:
                a.ints[pos] = value
            return
    node.attribute.append(helper.make_attribute(name, value))
