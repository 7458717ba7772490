"""Which constant tensor feeds each weight slot of Conv / ConvTranspose / Gemm / MatMul / LSTM / GRU / RNN.

Exporters rarely wire an initializer straight into a Conv: paddle2onnx inserts Identity, jax2onnx and
tf2onnx Transpose, mixed-precision exports Cast, the Caffe2 "light" models make weights with
ConstantOfShape. Pruning masks the *source* tensor, so we walk back through ops that only relayout or
retype one tensor until we reach a constant: an initializer, or a Constant / ConstantOfShape output
(the twin materializes those as named tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx.numpy_helper

# Ops through which a weight keeps its identity: one data input, values only moved or retyped.
PASS_THROUGH = {"Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "CastLike"}

# op type -> {input slot: role}; MatMul's constant operand may be either side.
WEIGHT_SLOTS = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {0: "weight", 1: "weight", 2: "bias"},
    "MatMul": {0: "weight", 1: "weight"},
    # Recurrent layers: input and recurrence weights W, R; B holds both biases (P, peepholes, stays dense).
    "LSTM": {1: "weight", 2: "weight", 3: "bias"},
    "GRU": {1: "weight", 2: "weight", 3: "bias"},
    "RNN": {1: "weight", 2: "weight", 3: "bias"},
}


@dataclass(frozen=True)
class WeightUse:
    source: str  # the constant tensor's name (initializer or folded node output)
    op_type: str  # a key of WEIGHT_SLOTS
    node: str  # consuming node's name (or its first output when unnamed)
    slot: int  # the consumer's input index
    role: str  # "weight" or "bias"


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Names the twin holds as constants: initializers and foldable constant-producing nodes."""
    names = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.op_type == "ConstantOfShape" and node.input[0] in names):
            names.add(node.output[0])
    return names


def trace_source(name: str, producers: dict[str, onnx.NodeProto], constants: set[str]) -> str | None:
    """Follow `name` back through pass-through ops to a constant; None if it is computed from data."""
    seen = set()
    while name not in constants:
        node = producers.get(name)
        if node is None or node.op_type not in PASS_THROUGH or name in seen:
            return None
        seen.add(name)
        name = node.input[0]
    return name


def weight_uses(graph: onnx.GraphProto, _outer: tuple[set, dict] | None = None) -> list[WeightUse]:
    """Every (constant source -> weight slot) edge of the graph, in node order, subgraphs included:
    a weight slot inside an If / Loop / Scan body traces through the body and then the scopes around
    it (a body may read any outer name), to a constant defined in any of them."""
    outer_constants, outer_producers = _outer or (set(), {})
    constants = constant_names(graph) | outer_constants
    producers = {**outer_producers, **{out: node for node in graph.node for out in node.output}}
    uses = []
    for node in graph.node:
        for slot, role in WEIGHT_SLOTS.get(node.op_type, {}).items():
            if slot >= len(node.input) or not node.input[slot]:
                continue
            source = trace_source(node.input[slot], producers, constants)
            if source is not None:
                uses.append(WeightUse(source, node.op_type, node.name or node.output[0], slot, role))
        for sub in subgraphs(node):
            uses += weight_uses(sub, (constants, producers))
    return uses


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies an If / Loop / Scan node holds (none for other ops)."""
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)]


def _nested(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every subgraph at any depth."""
    out = []
    for node in graph.node:
        for sub in subgraphs(node):
            out += [sub, *_nested(sub)]
    return out


def hoist_subgraph_weights(model: onnx.ModelProto) -> list[str]:
    """Move weights defined inside subgraphs (body initializers, Constant nodes) to the main graph's
    initializers, in place; returns their names.

    The twin's parameters are the main graph's constants, so only a hoisted weight can be scored,
    masked and written back. The graph computes the same: a body reads outer names as its own (an If
    branch's or Loop body's Constant has the same value on every run). A name defined twice (sibling
    branches may reuse one) stays where it is, as does a ConstantOfShape-made weight; under IR 3 every
    initializer must also be a graph input, so a hoisted one gets one.
    """
    top = model.graph
    local = {u.source for u in weight_uses(top)} - constant_names(top)
    if not local:
        return []
    defined: dict[str, int] = {}
    for sub in _nested(top):
        names = [t.name for t in sub.initializer] + [t.values.name for t in sub.sparse_initializer]
        names += [o for n in sub.node for o in n.output]
        for name in names:
            defined[name] = defined.get(name, 0) + 1
    local = {n for n in local if defined.get(n) == 1}
    hoisted = []
    for sub in _nested(top):
        for tensor in [t for t in sub.initializer if t.name in local]:
            sub.initializer.remove(tensor)
            top.initializer.append(tensor)
            hoisted.append(tensor.name)
        for sparse in [t for t in sub.sparse_initializer if t.values.name in local]:
            sub.sparse_initializer.remove(sparse)
            top.sparse_initializer.append(sparse)
            hoisted.append(sparse.values.name)
        for node in [n for n in sub.node if n.op_type == "Constant" and n.output[0] in local]:
            tensor = _constant_tensor(node)
            if tensor is None:
                continue
            sub.node.remove(node)
            (top.sparse_initializer if isinstance(tensor, onnx.SparseTensorProto) else top.initializer).append(tensor)
            hoisted.append(node.output[0])
    stored = {t.name: t for t in top.initializer} | {t.values.name: t.values for t in top.sparse_initializer}
    sparse = {t.values.name: list(t.dims) for t in top.sparse_initializer}
    declare_as_inputs(top, model.ir_version,
                      [(n, stored[n].data_type, sparse.get(n, list(stored[n].dims))) for n in hoisted])
    return hoisted


def declare_as_inputs(graph: onnx.GraphProto, ir_version: int, tensors) -> None:
    """IR <= 3 requires every initializer to be a graph input too (the checker refuses it otherwise):
    a tensor made an initializer, as (name, element type, shape), gets the input entry the exporter
    gave the others. Nothing to do from IR 4 on."""
    if ir_version >= onnx.IR_VERSION_2019_1_22:
        return
    listed = {v.name for v in graph.input}
    graph.input.extend(onnx.helper.make_tensor_value_info(n, elem, shape) for n, elem, shape in tensors
                       if n not in listed)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | onnx.SparseTensorProto | None:
    """A Constant node's value as a tensor named like its output (None for a value that is no weight)."""
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    out = onnx.SparseTensorProto() if attr.name == "sparse_value" else onnx.TensorProto()
    if attr.name == "value":
        out.CopyFrom(attr.t)
    elif attr.name == "sparse_value":
        out.CopyFrom(attr.sparse_tensor)
        out.values.name = node.output[0]
        return out
    elif attr.name in ("value_float", "value_floats"):
        out = onnx.numpy_helper.from_array(np.asarray(onnx.helper.get_attribute_value(attr), np.float32))
    else:
        return None
    out.name = node.output[0]
    return out
