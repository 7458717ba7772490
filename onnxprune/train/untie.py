"""Undo the exporter's merging of equal-valued tensors where training must keep them apart.

torch's TorchScript exporter (without keep_initializers_as_inputs) keeps one copy of tensors that are
equal at export time and feeds the others through Identity nodes: a fresh BatchNorm's running_var (all
ones) then reads the first BN's gamma, every running_mean and beta one zero tensor, and equal zero
biases of same-sized layers one bias. The file still computes the same function, but training it as
written would share those tensors: the BN update of running_var would overwrite a gamma, and biases
would be trained as one. So before training, each input whose role is a bias, a normalization's scale
or shift, or a statistic (roles.OWNED) and whose source tensor also feeds another slot gets its own initializer:
an Identity output becomes an initializer of the same name (the original tensor's name, as the exporter
kept it), a directly shared initializer a copy named `<name>__<node>_<slot>`. Weights (Conv/Gemm/MatMul
slot "weight") are left shared: equal random weights do not happen by chance, so a shared weight is
meant to be shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import GraphFacts, roles


@dataclass
class UntieResult:
    model: onnx.ModelProto
    untied: list[str] = field(default_factory=list)  # tensors that now have their own initializer
    shared_stats: list[str] = field(default_factory=list)  # BN statistics still shared (not untieable)


def _identity_chain(name: str, facts: GraphFacts, source: str) -> bool:
    while name != source:
        node = facts.producer(name)
        if node is None or node.op_type != "Identity":
            return False
        name = node.input[0]
    return True


def untie(model: onnx.ModelProto) -> UntieResult:
    """A copy of `model` where training-owned slots (roles.OWNED) no longer share tensors."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    facts = GraphFacts(graph)
    values = facts.constant_values()
    uses = facts.constant_reads()
    result = UntieResult(model)
    materialize: dict[str, str] = {}  # new initializer name -> source
    kept_direct: set[str] = set()
    for i, node in enumerate(graph.node):
        for slot, role in roles.slots(node.op_type).items():
            if role not in roles.OWNED or slot >= len(node.input) or not node.input[slot]:
                continue
            name = node.input[slot]
            source = facts.source(name)
            if source is None or len(uses.get(source, ())) < 2:
                continue
            if name != source and _identity_chain(name, facts, source):
                materialize[name] = source
            elif name == source and source not in kept_direct:
                kept_direct.add(source)  # the first direct reader keeps the original
            elif name == source:
                node.input[slot] = f"{source}__{node.name or node.output[0]}_{slot}"
                materialize[node.input[slot]] = source
            elif role == roles.STAT:
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
