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


def reaches_output(graph: onnx.GraphProto, cut: Iterable[str]) -> bool:
    """True when some graph output is reachable from some graph input (not an initializer) along
    nodes not in `cut` (node keys). Nodes are in topological order, as the ONNX spec requires; what an
    If/Loop/Scan body captures from around it counts as the node's input."""
    from .twin.program import node_reads

    cut = set(cut)
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    live = {v.name for v in graph.input if v.name not in constants}
    for node in graph.node:
        if node_key(node) in cut:
            continue
        if live & node_reads(node):
            live.update(o for o in node.output if o)
    return any(v.name in live for v in graph.output)
