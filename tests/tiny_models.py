"""Small ONNX models built with onnx.helper, shared by the compare and distillation tests.

A test-support module like zoo.py: tests import it as a plain module (`from tiny_models import ...`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def two_heads(scale: float = 1.0, seed: int = 0, shift: float = 0.0) -> onnx.ModelProto:
    """x [N, 8] -> Relu(x W1) "features" (values) and (x W1) W2 + shift "logits" [N, 3] (class scores;
    `shift`, one bias for every class, leaves their softmax as it is)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    w2 = (scale * rng.standard_normal((6, 3))).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["features"]),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["logits"])]
    graph = helper.make_graph(nodes, "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(np.full(3, shift, np.float32), "b2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
