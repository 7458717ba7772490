"""A float64 reference for any ONNX file: onnx's ReferenceEvaluator (an independent implementation of
the spec) on a copy of the model widened to double.

Used to judge the twin where onnxruntime's float32 results cannot (`verify`'s second opinion) and by
the tests' exactness claims. A few of the evaluator's ops compute in float32 even on doubles; they are
replaced here by their formulas in double (the twin follows the formulas, as torch does).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from .graph.constants import sparse_to_dense


def _wide(array: np.ndarray, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float64) if array.dtype == np.float32 else array, name)


def _widen(graph: onnx.GraphProto) -> None:
    tensors = [(t.name, numpy_helper.to_array(t)) for t in graph.initializer]
    tensors += [(s.values.name, sparse_to_dense(s)) for s in graph.sparse_initializer]
    del graph.initializer[:], graph.sparse_initializer[:]
    graph.initializer.extend(_wide(a, n) for n, a in tensors)
    del graph.value_info[:]  # stale float types; the evaluator does not need them
    for info in (*graph.input, *graph.output):
        if info.type.tensor_type.elem_type == TensorProto.FLOAT:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    for attr in (a for node in graph.node for a in node.attribute):
        if attr.type == AttributeProto.TENSOR:
            attr.t.CopyFrom(_wide(numpy_helper.to_array(attr.t), attr.t.name))
        elif attr.type == AttributeProto.INT and attr.name in ("to", "dtype") and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.DOUBLE
        elif attr.name in ("value_float", "value_floats"):  # Constant's
            value = np.array(helper.get_attribute_value(attr), np.float64)
            attr.CopyFrom(helper.make_attribute("value", numpy_helper.from_array(value)))
        for subgraph in [attr.g] if attr.type == AttributeProto.GRAPH else attr.graphs:
            _widen(subgraph)


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in double wherever the model computed in float: initializers (sparse ones
    densified), Constant / ConstantOfShape values, Cast targets, declared types, subgraphs too."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _widen(copy.graph)
    return copy


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


class Erf(OpRun):
    """The evaluator's Erf rounds to float32 (np.vectorize(otypes="f"))."""

    def _run(self, x):
        return (_erf(x),)


class Gelu(OpRun):
    """The evaluator's function body carries float32 constants (sqrt(2))."""

    def _run(self, x, approximate="none"):
        if approximate == "tanh":
            return (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),)
        return (0.5 * x * (1 + _erf(x / math.sqrt(2))),)


class HardSwish(OpRun):
    """The evaluator's function body carries a float32 1/6."""

    def _run(self, x):
        return (x * np.clip(x / 6 + 0.5, 0, 1),)


class BatchNormalization(OpRun):
    """Inference form. The evaluator's opset 9-13 versions switch to batch statistics whenever
    `momentum` is set (it always is, by default); onnxruntime and the spec use the running ones."""

    def _run(self, x, scale, bias, mean, var, epsilon=1e-5, momentum=None, training_mode=0, spatial=None):
        if training_mode:
            raise NotImplementedError("BatchNormalization in training mode")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon) * scale.reshape(shape)
                + bias.reshape(shape),)


DOUBLE_OPS = [Erf, Gelu, HardSwish, BatchNormalization]


def float64_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs by name, computed in double on `feeds` (float32 feeds widened)."""
    double = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    outputs = ReferenceEvaluator(as_float64(model), new_ops=DOUBLE_OPS).run(None, double)
    return dict(zip((o.name for o in model.graph.output), (np.asarray(v) for v in outputs)))
