"""Facts about one graph, read once: producers and readers of every value, which names are constants
and their values, and where each constant is used in which role (weight-source tracing included).

Exporters rarely wire an initializer straight into a Conv: paddle2onnx inserts Identity, jax2onnx and
tf2onnx Transpose, mixed-precision exports Cast, the Caffe2 "light" models make weights with
ConstantOfShape. A role therefore belongs to the *source* constant, found by walking back through
PASS_THROUGH ops. Subgraphs (If / Loop / Scan bodies) get their own facts over the scopes around them:
a body may read any outer name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx

from . import roles
from .constants import stored_tensors


@dataclass(frozen=True)
class WeightUse:
    source: str  # the constant tensor's name (initializer or folded node output)
    op_type: str  # the consuming op (a key of roles.OPS with weight / bias slots)
    node: str  # consuming node's name (or its first output when unnamed)
    slot: int  # the consumer's input index
    role: str  # roles.WEIGHT or roles.BIAS


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies an If / Loop / Scan node holds (none for other ops)."""
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)]


def nested_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every subgraph at any depth."""
    out = []
    for node in graph.node:
        for sub in subgraphs(node):
            out += [sub, *nested_graphs(sub)]
    return out


def attr(node: onnx.NodeProto, name: str, default=None):
    """A node attribute's value (decoded by its declared type), or `default` when absent."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Initializers and foldable constant-producing nodes (Constant, ConstantOfShape of a constant)."""
    names = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.op_type == "ConstantOfShape" and node.input[0] in names):
            names.add(node.output[0])
    return names


class GraphFacts:
    """Read-only facts about `graph` (and, for a subgraph, the scopes around it through `outer`)."""

    def __init__(self, graph: onnx.GraphProto, outer: "GraphFacts | None" = None):
        self.graph, self.outer = graph, outer
        self.nodes = list(graph.node)
        self.producers: dict[str, int] = {out: i for i, n in enumerate(self.nodes) for out in n.output if out}
        self.readers: dict[str, list[tuple[int, int]]] = {}  # value -> (node index, input slot)
        for i, node in enumerate(self.nodes):
            for slot, name in enumerate(node.input):
                if name:
                    self.readers.setdefault(name, []).append((i, slot))
        self.constants = constant_names(graph) | (outer.constants if outer else set())
        self.outputs = [v.name for v in graph.output]

    # ----- values ----------------------------------------------------------------------------------
    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node computing `name` here or in an enclosing scope (None for inputs and initializers)."""
        if name in self.producers:
            return self.nodes[self.producers[name]]
        return self.outer.producer(name) if self.outer else None

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return [self.nodes[i] for i, _ in self.readers.get(name, ())]

    def constant_values(self) -> dict[str, np.ndarray]:
        """Every top-level constant's value (initializers, Constant nodes, folded ConstantOfShape), read
        afresh: not kept here, so a twin holding the weights as tensors does not hold them twice."""
        return {name: value for name, (_, value) in stored_tensors(self.graph).items()}

    # ----- roles -----------------------------------------------------------------------------------
    def source(self, name: str) -> str | None:
        """Follow `name` back through pass-through ops to a constant; None if it is computed from data."""
        seen = set()
        while name not in self.constants:
            node = self.producer(name)
            if node is None or node.op_type not in roles.PASS_THROUGH or name in seen:
                return None
            seen.add(name)
            name = node.input[0]
        return name

    def slot_inputs(self, *wanted: str) -> set[str]:
        """Names read directly (not traced) at a slot whose role is one of `wanted`."""
        return {node.input[slot] for node in self.nodes for slot, role in roles.slots(node.op_type).items()
                if role in wanted and slot < len(node.input) and node.input[slot]}

    def sources_with_role(self, *wanted: str) -> set[str]:
        """Constant sources read at a slot whose role is one of `wanted`, through pass-through chains."""
        return {s for s in map(self.source, self.slot_inputs(*wanted)) if s is not None}

    def constant_reads(self) -> dict[str, list[tuple[int, int]]]:
        """Constant source -> every (node index, slot) reading it through pass-through chains, graph
        outputs as (-1, 0). A pass-through node's data input is part of a chain, not a read."""
        reads: dict[str, list[tuple[int, int]]] = {}
        for i, node in enumerate(self.nodes):
            for slot, name in enumerate(node.input):
                if not name or (node.op_type in roles.PASS_THROUGH and slot == 0):
                    continue
                if (source := self.source(name)) is not None:
                    reads.setdefault(source, []).append((i, slot))
        for name in self.outputs:
            if (source := self.source(name)) is not None:
                reads.setdefault(source, []).append((-1, 0))
        return reads

    @cached_property
    def weight_uses(self) -> list[WeightUse]:
        """Every (constant source -> weight or bias slot) edge, in node order, subgraphs included."""
        uses = []
        for node in self.nodes:
            for slot, role in roles.slots(node.op_type).items():
                if role not in (roles.WEIGHT, roles.BIAS) or slot >= len(node.input) or not node.input[slot]:
                    continue
                if (source := self.source(node.input[slot])) is not None:
                    uses.append(WeightUse(source, node.op_type, node.name or node.output[0], slot, role))
            for sub in subgraphs(node):
                uses += GraphFacts(sub, self).weight_uses
        return uses


def weight_uses(graph: onnx.GraphProto) -> list[WeightUse]:
    return GraphFacts(graph).weight_uses
