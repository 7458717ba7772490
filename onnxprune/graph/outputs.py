"""What a graph output is, read from the graph: class scores or other values.

A rank-2 float output [N, C] (C >= 2) made by Gemm/MatMul/Add (a classifier head) holds logits; made
by Softmax, probabilities; by LogSoftmax, log-probabilities. Everything else (maps, boxes, embeddings,
hidden states, a Sigmoid's independent probabilities, one regression value) is "values". The graph
decides, never the numbers: a logit vector may happen to sum to 1.
"""

from __future__ import annotations

import onnx

from .facts import GraphFacts

HEADS = {"Gemm": "logits", "MatMul": "logits", "Add": "logits", "Softmax": "probs", "LogSoftmax": "log_probs"}
CLASS_KINDS = frozenset(HEADS.values())  # the kinds that hold class scores; the rest is "values"
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def output_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Graph output name -> "logits" | "probs" | "log_probs" | "values" (float outputs only)."""
    facts = GraphFacts(model.graph)
    kinds = {}
    for value in model.graph.output:
        tensor = value.type.tensor_type
        if tensor.elem_type not in FLOATS:
            continue
        dims = tensor.shape.dim
        classes = dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else 0
        node = facts.producer(value.name)
        kinds[value.name] = HEADS.get(node.op_type if node else "", "values") if classes >= 2 else "values"
    return kinds


def sigmoid_outputs(model: onnx.ModelProto) -> set[str]:
    """Float graph outputs made by a Sigmoid: independent probabilities per element (a detector's
    text or object map, multi-label scores), which distillation compares as Bernoulli distributions."""
    facts = GraphFacts(model.graph)
    return {v.name for v in model.graph.output if v.type.tensor_type.elem_type in FLOATS
            and (node := facts.producer(v.name)) is not None and node.op_type == "Sigmoid"}
