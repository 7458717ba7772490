"""Undo the exporter's merging of equal-valued tensors where training must keep them apart.

torch's TorchScript exporter (without keep_initializers_as_inputs) keeps one copy of tensors that are
equal at export time and feeds the others through Identity nodes: a fresh BatchNorm's running_var (all
ones) then reads the first BN's gamma, every running_mean and beta one zero tensor, and equal zero
biases of same-sized layers one bias. The file still computes the same function, but training it as
written would share those tensors: the BN update of running_var would overwrite a gamma, and biases
would be trained as one. So before training, each BatchNormalization input (scale, bias, mean, var) and
each Conv/ConvTranspose/Gemm bias whose source tensor also feeds another slot gets its own initializer:
an Identity output becomes an initializer of the same name (the original tensor's name, as the exporter
kept it), a directly shared initializer a copy named `<name>__<node>_<slot>`. Weights (Conv/Gemm/MatMul
slot "weight") are left shared: equal random weights do not happen by chance, so a shared weight is
meant to be shared.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..twin.sources import PASS_THROUGH, constant_names, trace_source
from ..twin.tensors import sparse_to_dense

# op -> input slots that must not share a tensor with anything else during training.
OWN_SLOTS = {
    "BatchNormalization": (1, 2, 3, 4),
    "Conv": (2,),
    "ConvTranspose": (2,),
    "Gemm": (2,),
}
STAT_SLOTS = {"BatchNormalization": (3, 4)}


@dataclass
class UntieResult:
    model: onnx.ModelProto
    untied: list[str] = field(default_factory=list)  # tensors that now have their own initializer
    shared_stats: list[str] = field(default_factory=list)  # BN statistics still shared (not untieable)


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    values.update({t.values.name: sparse_to_dense(t) for t in graph.sparse_initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _uses(graph: onnx.GraphProto) -> dict[str, list[tuple[int, int]]]:
    """source constant -> the (node index, slot) pairs reading it, through pass-through chains."""
    constants = constant_names(graph)
    producers = {out: node for node in graph.node for out in node.output}
    uses: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            if not name or (node.op_type in PASS_THROUGH and slot == 0):
                continue  # a pass-through node is part of a chain, not a use
            source = trace_source(name, producers, constants)
            if source is not None:
                uses[source].append((i, slot))
    for out in graph.output:
        source = trace_source(out.name, producers, constants)
        if source is not None:
            uses[source].append((-1, 0))
    return uses


def _identity_chain(name: str, producers: dict[str, onnx.NodeProto], source: str) -> bool:
    while name != source:
        node = producers.get(name)
        if node is None or node.op_type != "Identity":
            return False
        name = node.input[0]
    return True


def untie(model: onnx.ModelProto) -> UntieResult:
    """A copy of `model` where training-owned slots (OWN_SLOTS) no longer share tensors."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    values = _constant_values(graph)
    uses = _uses(graph)
    producers = {out: node for node in graph.node for out in node.output}
    result = UntieResult(model)
    materialize: dict[str, str] = {}  # new initializer name -> source
    kept_direct: set[str] = set()
    for i, node in enumerate(graph.node):
        for slot in OWN_SLOTS.get(node.op_type, ()):
            if slot >= len(node.input) or not node.input[slot]:
                continue
            name = node.input[slot]
            source = trace_source(name, producers, set(values))
            if source is None or len(uses.get(source, ())) < 2:
                continue
            if name != source and _identity_chain(name, producers, source):
                materialize[name] = source
            elif name == source and source not in kept_direct:
                kept_direct.add(source)  # the first direct reader keeps the original
            elif name == source:
                node.input[slot] = f"{source}__{node.name or node.output[0]}_{slot}"
                materialize[node.input[slot]] = source
            elif slot in STAT_SLOTS.get(node.op_type, ()):
                result.shared_stats.append(name)
    _apply(graph, materialize, values)
    result.untied = sorted(materialize)
    return result


def _apply(graph: onnx.GraphProto, materialize: dict[str, str], values: dict[str, np.ndarray]) -> None:
    """Add the new initializers, drop the Identity nodes that produced them and any left unread."""
    for name, source in materialize.items():
        graph.initializer.append(numpy_helper.from_array(np.array(values[source], copy=True), name=name))
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in materialize)]
    while True:  # Identity chains whose end became an initializer are now dead
        read = {name for n in keep for name in n.input} | {o.name for o in graph.output}
        alive = [n for n in keep if not (n.op_type == "Identity" and n.output[0] not in read)]
        if len(alive) == len(keep):
            break
        keep = alive
    del graph.node[:]
    graph.node.extend(keep)
