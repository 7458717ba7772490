"""In-place edits of a loaded graph that keep what it computes: weights hoisted out of subgraphs, and
the graph-input declarations IR 3 requires for initializers."""

from __future__ import annotations

import onnx

from .constants import constant_tensor
from .facts import constant_names, nested_graphs, weight_uses


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
    for sub in nested_graphs(top):
        names = [t.name for t in sub.initializer] + [t.values.name for t in sub.sparse_initializer]
        names += [o for n in sub.node for o in n.output]
        for name in names:
            defined[name] = defined.get(name, 0) + 1
    local = {n for n in local if defined.get(n) == 1}
    hoisted = []
    for sub in nested_graphs(top):
        for tensor in [t for t in sub.initializer if t.name in local]:
            sub.initializer.remove(tensor)
            top.initializer.append(tensor)
            hoisted.append(tensor.name)
        for sparse in [t for t in sub.sparse_initializer if t.values.name in local]:
            sub.sparse_initializer.remove(sparse)
            top.sparse_initializer.append(sparse)
            hoisted.append(sparse.values.name)
        for node in [n for n in sub.node if n.op_type == "Constant" and n.output[0] in local]:
            tensor = constant_tensor(node)
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
