"""What a graph output is, read from the graph: class scores or other values.

A rank-2 float output [N, C] (C >= 2) made by Gemm/MatMul/Add (a classifier head) holds logits; made
by Softmax, probabilities; by LogSoftmax, log-probabilities. A Softmax or LogSoftmax over the last axis
of a higher-rank output [N, ..., C] holds class scores per position (a text recognizer's per-timestep
characters, a segmenter's per-pixel classes in NHWC); so does a softmax written out, exp(x - m) divided
by the sum of that same Exp over the last axis (jax2tf's: magika); a Gemm/MatMul/Add there may as well be hidden
states, so only the rank-2 head is called logits. Identity nodes before an output are looked through.
Everything else (maps, boxes, embeddings, hidden states, a Sigmoid's independent probabilities, one
regression value) is "values". The graph decides, never the numbers: a logit vector may sum to 1.
Where the graph cannot tell (a Dense head of several regression scores reads like a classifier's),
the user says (`--output-kind NAME=values`, `declared` here).
"""

from __future__ import annotations

import onnx

from ..errors import OnnxPruneError, arg
from .facts import GraphFacts, attr

NORMALIZED = {"Softmax": "probs", "LogSoftmax": "log_probs"}
HEADS = {"Gemm": "logits", "MatMul": "logits", "Add": "logits", **NORMALIZED}
CLASS_KINDS = frozenset(HEADS.values())  # the kinds that hold class scores; the rest is "values"
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def output_kinds(model: onnx.ModelProto, declared: dict[str, str] | None = None) -> dict[str, str]:
    """Graph output name -> "logits" | "probs" | "log_probs" | "values" (float outputs only), as the
    graph reads, or as `declared` (name -> kind) says."""
    facts = GraphFacts(model.graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    kinds = {}
    for value in model.graph.output:
        tensor = value.type.tensor_type
        if tensor.elem_type not in FLOATS:
            continue
        dims = tensor.shape.dim
        classes = dims[-1].dim_value if len(dims) >= 2 and dims[-1].HasField("dim_value") else 0
        node = facts.producer(value.name)
        while node is not None and node.op_type == "Identity":
            node = facts.producer(node.input[0])
        kind = HEADS.get(node.op_type, "values") if node is not None and classes >= 2 else "values"
        if node is not None and classes >= 2 and _written_softmax(facts, node, len(dims)):
            kind = "probs"
        if kind in NORMALIZED.values() and not _over_last_axis(node, len(dims), opset):
            kind = "values"
        kinds[value.name] = kind if len(dims) == 2 or kind in NORMALIZED.values() else "values"
    unknown = sorted(set(declared or {}) - set(kinds))
    if unknown:
        raise OnnxPruneError(f"{arg('output_kinds')} names no float output of the model: {unknown[0]!r} (its float "
                             f"outputs: {', '.join(kinds) or 'none'})")
    return {**kinds, **(declared or {})}


def _written_softmax(facts: GraphFacts, node: onnx.NodeProto, rank: int) -> bool:
    """Div(Exp(..), the ReduceSum of that same Exp over the last axis, reshaped or broadcast back)."""
    if node.op_type != "Div" or (exp := facts.producer(node.input[0])) is None or exp.op_type != "Exp":
        return False
    total = facts.producer(node.input[1])
    while total is not None and total.op_type in ("Reshape", "Expand", "Unsqueeze", "Identity", "Cast"):
        total = facts.producer(total.input[0])
    if total is None or total.op_type != "ReduceSum" or total.input[0] != node.input[0]:
        return False
    axes = attr(total, "axes")
    if axes is None and len(total.input) > 1:
        axes = facts.constant_values().get(total.input[1])
    return axes is not None and [int(a) % rank for a in list(axes)] == [rank - 1]


def _over_last_axis(node: onnx.NodeProto, rank: int, opset: int) -> bool:
    """A Softmax / LogSoftmax normalizes over the output's last axis (before opset 13 the default axis
    is 1 and the axes from it on are flattened, which is the last axis only when it is rank - 1)."""
    axis = attr(node, "axis", -1 if opset >= 13 else 1)
    return axis % rank == rank - 1


def sigmoid_outputs(model: onnx.ModelProto) -> set[str]:
    """Float graph outputs made by a Sigmoid: independent probabilities per element (a detector's
    text or object map, multi-label scores), which distillation compares as Bernoulli distributions."""
    facts = GraphFacts(model.graph)
    return {v.name for v in model.graph.output if v.type.tensor_type.elem_type in FLOATS
            and (node := facts.producer(v.name)) is not None and node.op_type == "Sigmoid"}
