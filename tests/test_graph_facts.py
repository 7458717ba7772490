"""The graph-facts layer (onnxprune/graph/): one reader of constants, one table of roles, one way to
override node handlers. Checked against onnxruntime and through the installed command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxprune.graph import GraphFacts, roles
from onnxprune.graph.constants import stored_tensors
from onnxprune.train.untie import untie
from onnxprune.twin import Twin, supported_ops

EXE = Path(sys.executable).parent / "onnxprune"


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _model(nodes, inputs, outputs, inits=(), opset=19, check=True) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


CONSTANTS = {  # every way a Constant node holds its value
    "value": {"value": numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))},
    "value_float": {"value_float": 2.5},
    "value_floats": {"value_floats": [1.0, -2.0, 3.5]},
    "value_int": {"value_int": 7},
    "value_ints": {"value_ints": [3, -1, 4]},
    "sparse_value": {"sparse_value": helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, -1.0], np.float32)), numpy_helper.from_array(np.array([1, 4])), [2, 3])},
}


@pytest.mark.parametrize("kind", sorted(CONSTANTS))
def test_constant_reader_matches_onnxruntime(kind):
    # Read through Add(c, 0): onnxruntime hands a sparse Constant back as a SparseTensor otherwise.
    # (The checker wants a declared shape here; onnxruntime does not.)
    elem = np.int64 if kind.startswith("value_int") else np.float32
    nodes = [helper.make_node("Constant", [], ["c"], **CONSTANTS[kind]), helper.make_node("Add", ["c", "zero"], ["d"])]
    out = helper.make_tensor_value_info("d", helper.np_dtype_to_tensor_dtype(np.dtype(elem)), None)
    model = _model(nodes, [], [out], [numpy_helper.from_array(np.zeros((), elem), "zero")], check=False)
    (want,) = _ort(model, {})
    storage, got = stored_tensors(model.graph)["c"]
    assert storage == "node" and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_constant_of_shape_of_a_constant_is_folded_like_onnxruntime():
    nodes = [helper.make_node("Constant", [], ["s"], value_ints=[2, 3]),
             helper.make_node("ConstantOfShape", ["s"], ["c"],
                              value=numpy_helper.from_array(np.array([0.25], np.float32)))]
    model = _model(nodes, [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 3])])
    np.testing.assert_array_equal(stored_tensors(model.graph)["c"][1], _ort(model, {})[0])
    assert "c" in GraphFacts(model.graph).constants


def test_untie_reads_value_floats_constants():
    # Two Conv biases read one Constant(value_floats): training must not train them as one tensor.
    # (The old reader knew only Constant `value`, so this sharing went unnoticed.)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 1, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Constant", [], ["b"], value_floats=[0.5, -0.5]),
             helper.make_node("Conv", ["x", "w", "b"], ["y1"], name="c1"),
             helper.make_node("Conv", ["x", "w", "b"], ["y2"], name="c2"),
             helper.make_node("Add", ["y1", "y2"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], [w])
    result = untie(model)
    assert result.untied == ["b__c2_2"]
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 1, 2, 2)).astype(np.float32)}
    np.testing.assert_array_equal(_ort(result.model, feeds)[0], _ort(model, feeds)[0])


def test_every_role_table_op_runs_in_the_twin():
    # The table is the one place a weight op is declared: each entry must be an op the twin runs.
    assert set(roles.OPS) <= {op for domain, op in supported_ops() if domain == ""}


def _deform_conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * scale, name)
             for name, shape, scale in (("W", (8, 3, 3, 3), 1.0), ("B", (8,), 1.0),
                                        ("OW", (18, 3, 3, 3), 0.1), ("W2", (10, 288), 1.0))]
    nodes = [helper.make_node("Conv", ["x", "OW"], ["off"]),
             helper.make_node("DeformConv", ["x", "W", "off", "B"], ["y"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["y"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "W2"], ["out"], transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10])], inits)


def test_deform_conv_weight_is_pruned_from_its_table_entry(tmp_path):
    # DeformConv became prunable by one line in roles.OPS: its weight is scored, pruned, written back,
    # and the file still runs in onnxruntime as the original with those entries zeroed.
    model = _deform_conv_model()
    uses = {(u.source, u.role) for u in GraphFacts(model.graph).weight_uses if u.op_type == "DeformConv"}
    assert uses == {("W", "weight"), ("B", "bias")}
    onnx.save(model, tmp_path / "m.onnx")
    out = tmp_path / "m.pruned.onnx"
    done = subprocess.run([EXE, "prune", tmp_path / "m.onnx", "-c", "1", "-m", "mag", "--format", "dense",
                           "-o", out, "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pruned = onnx.load(out)
    w = stored_tensors(pruned.graph)["W"][1]
    assert 0 < np.count_nonzero(w) < w.size
    done = subprocess.run([EXE, "verify", out, "--reference", tmp_path / "m.onnx"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _relu_chain() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])


def test_overrides_stack_and_unwind_last_in_first_out():
    model = _relu_chain()
    twin = Twin(model)
    x = np.array([1.0, -2.0, 3.0], np.float32)
    want = _ort(model, {"x": x})[0]

    def scaled(k):
        return lambda step: (lambda v, _fn=step.fn: _fn(v) * k) if step.node.op_type == "Relu" else None

    with twin.overridden(scaled(2.0)):
        with twin.overridden(scaled(3.0)):  # wraps the handler in force: Relu * 2 * 3
            np.testing.assert_array_equal(twin(torch.from_numpy(x)).numpy(), want * 6)
        np.testing.assert_array_equal(twin(torch.from_numpy(x)).numpy(), want * 2)
        with pytest.raises(RuntimeError):
            with twin.overridden(scaled(5.0)):
                raise RuntimeError("a scorer failing half-way")
        np.testing.assert_array_equal(twin(torch.from_numpy(x)).numpy(), want * 2)
    np.testing.assert_array_equal(twin(torch.from_numpy(x)).numpy(), want)
