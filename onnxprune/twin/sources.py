"""Which constant tensor feeds each weight slot of Conv / ConvTranspose / Gemm / MatMul.

Exporters rarely wire an initializer straight into a Conv: paddle2onnx inserts Identity, jax2onnx and
tf2onnx Transpose, mixed-precision exports Cast, the Caffe2 "light" models make weights with
ConstantOfShape. Pruning masks the *source* tensor, so we walk back through ops that only relayout or
retype one tensor until we reach a constant: an initializer, or a Constant / ConstantOfShape output
(the twin materializes those as named tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

# Ops through which a weight keeps its identity: one data input, values only moved or retyped.
PASS_THROUGH = {"Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "CastLike"}

# op type -> {input slot: role}; MatMul's constant operand may be either side.
WEIGHT_SLOTS = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {0: "weight", 1: "weight", 2: "bias"},
    "MatMul": {0: "weight", 1: "weight"},
}


@dataclass(frozen=True)
class WeightUse:
    source: str  # the constant tensor's name (initializer or folded node output)
    op_type: str  # Conv, ConvTranspose, Gemm or MatMul
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


def weight_uses(graph: onnx.GraphProto) -> list[WeightUse]:
    """Every (constant source -> weight slot) edge of the graph, in node order."""
    constants = constant_names(graph)
    producers = {out: node for node in graph.node for out in node.output}
    uses = []
    for node in graph.node:
        for slot, role in WEIGHT_SLOTS.get(node.op_type, {}).items():
            if slot >= len(node.input) or not node.input[slot]:
                continue
            source = trace_source(node.input[slot], producers, constants)
            if source is not None:
                uses.append(WeightUse(source, node.op_type, node.name or node.output[0], slot, role))
    return uses
