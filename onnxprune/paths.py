"""Does a graph output still depend on a graph input once some nodes are cut?

A Conv/Gemm/MatMul whose weight is pruned to zero computes only its bias: its output no longer
depends on its data input. Whether that empties the network or is bypassed (a residual branch whose
skip path carries the signal) is a question of paths in the graph, answered here without running it.
"""

from __future__ import annotations

from typing import Iterable

import onnx


def node_key(node: onnx.NodeProto) -> str:
    """How WeightUse names a node: its name, or its first output when unnamed."""
    return node.name or node.output[0]


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    """Values an If/Loop/Scan body reads: its outer-scope captures count as the node's inputs."""
    names: set[str] = set()
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in graph.node:
                names.update(inner.input)
                names |= _subgraph_names(inner)
    return names


def reaches_output(graph: onnx.GraphProto, cut: Iterable[str]) -> bool:
    """True when some graph output is reachable from some graph input (not an initializer) along
    nodes not in `cut` (node keys). Nodes are in topological order, as the ONNX spec requires."""
    cut = set(cut)
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    live = {v.name for v in graph.input if v.name not in constants}
    for node in graph.node:
        if node_key(node) in cut:
            continue
        if live.intersection(node.input) or live & _subgraph_names(node):
            live.update(o for o in node.output if o)
    return any(v.name in live for v in graph.output)
