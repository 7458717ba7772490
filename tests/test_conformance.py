"""The twin against onnx's backend node test cases (numpy references), through tests/conformance_cases.py
(and its command-line runner scripts/conformance.py, run as a command).

The whole suite (1,884 cases) runs in-process, once in float32 and once (what passed) in float64 mode:
generating the cases takes about 5 s of CPU and each run about 5 s on one thread; the file ~20 s of CPU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from conformance_cases import load_cases, run_all
from onnxprune.errors import UnsupportedOpError
from onnxprune.twin import Twin

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "conformance.py"

# Ops that CNNs, MLPs and transformer encoders use as exported by torch.onnx (TorchScript and dynamo),
# tf2onnx, jax2onnx and paddle2onnx: each must pass every case the twin can hold.
MODEL_CRITICAL = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Gelu",
    "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Clip", "Softmax", "LogSoftmax", "Erf",
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Min", "Max", "Sum",
    "Mean", "Equal", "Greater", "Less", "Not", "And", "Where",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Reshape", "Flatten", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "Squeeze",
    "Unsqueeze", "Expand", "Tile", "Pad", "Shape", "Size", "ConstantOfShape", "Constant", "Range", "Cast",
    "CastLike", "Identity", "Dropout", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL2", "ArgMax", "ArgMin", "TopK", "CumSum", "Resize", "Upsample", "Trilu", "OneHot", "ScatterND",
    "ScatterElements", "DepthToSpace", "SpaceToDepth",
)
# In float64 mode these ops round a float64 quotient to integers, so ties land differently than the
# float32 reference's: their integer outputs may move by one step.
FLOAT64_ROUNDING = ("DynamicQuantizeLinear",)


@pytest.fixture(scope="module")
def cases():
    return load_cases()


@pytest.fixture(scope="module")
def outcomes(cases):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_all(cases)
    finally:
        torch.set_num_threads(threads)


def test_pass_count(outcomes):
    passed = sum(o.passed for o in outcomes)
    assert len(outcomes) >= 1800
    assert passed >= 1100, f"{passed} cases pass"


@pytest.mark.parametrize("op", MODEL_CRITICAL)
def test_model_critical_op_passes_every_case(outcomes, op):
    mine = [o for o in outcomes if o.op == op]
    assert mine, f"no conformance case for {op}"
    # Only values torch cannot hold (float4e2m1, strings) and random draws (training-mode Dropout's mask
    # from numpy's stream) may keep a case out; unsupported ops count as failures.
    excused = ("no torch equivalent", "random draws")
    failing = [f"{o.name}: {o.reason}" for o in mine if not o.passed and not any(e in o.reason for e in excused)]
    assert not failing, "\n".join(failing)


def test_float64_mode_passes_what_float32_passes(cases, outcomes):
    # Ops that create float tensors (Constant, ConstantOfShape, Range, windows, EyeLike, ...) must follow
    # the twin's precision: in float64 mode every float output is float64 and matches the reference.
    passing = {o.name for o in outcomes if o.passed}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = run_all([c for c in cases if c.name in passing], torch.float64)
    finally:
        torch.set_num_threads(threads)
    broken = [f"{o.name}: {o.reason}" for o in again if not o.passed and o.op not in FLOAT64_ROUNDING]
    assert not broken, "\n".join(broken)


def test_script_prints_table_and_totals(cases):
    done = subprocess.run([sys.executable, str(SCRIPT), "--op", "Relu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["op", "passed", "attempted", "total"]
    rows = [line.split() for line in lines[1:] if line and not line.startswith("total:")]
    assert [row[0] for row in rows] == ["Relu"]
    passed, attempted, total = map(int, rows[0][1:4])
    assert passed == attempted == total == len([c for c in cases if c.name.startswith("test_relu")])
    assert any(line.startswith(f"total: {passed} passed / {attempted} attempted / {total} cases") for line in lines)


def test_script_runs_as_a_command():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--op" in done.stdout


def _vi(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def _model(nodes, inputs, outputs, opset=17, **domains):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domains.items()]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)  # ir 8: what onnxruntime loads


def _branch(node, output):
    return helper.make_graph([node], output, [], [_vi(output, TensorProto.FLOAT, [2])])


def _if_model(then_node, else_node):
    branches = {"then_branch": _branch(then_node, then_node.output[0]),
                "else_branch": _branch(else_node, else_node.output[0])}
    inputs = [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [2])]
    return _model([helper.make_node("If", ["c"], ["y"], **branches)], inputs, [_vi("y", TensorProto.FLOAT, [2])])


def test_unsupported_op_fails_at_build_naming_op_domain_opset_node():
    node = helper.make_node("FrobnicateTensor", ["x"], ["y"], name="frob_1", domain="com.example")
    model = _model([node], [_vi("x", TensorProto.FLOAT, [2])], [_vi("y", TensorProto.FLOAT, [2])],
                   **{"com.example": 3})
    with pytest.raises(UnsupportedOpError) as err:
        Twin(model)
    message = str(err.value)
    assert "\n" not in message
    for part in ("FrobnicateTensor", "com.example", "opset 3", "frob_1"):
        assert part in message


def test_unsupported_op_inside_a_subgraph_fails_at_build():
    inner = helper.make_node("FrobnicateTensor", ["x"], ["z"], name="deep", domain="com.example")
    model = _if_model(inner, helper.make_node("Neg", ["x"], ["e"]))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpError, match="FrobnicateTensor .*com.example.*opset 1.*'deep'"):
        Twin(model)


def test_string_constant_is_refused_at_build_naming_the_node():
    labels = helper.make_node("Constant", [], ["s"], value_strings=["cat", "dog"], name="labels")
    model = _model([labels, helper.make_node("Identity", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [2])],
                   [_vi("y", TensorProto.FLOAT, [2]), _vi("s", TensorProto.STRING, [2])])
    with pytest.raises(UnsupportedOpError, match="Constant .*'labels'.*string"):
        Twin(model)


def test_if_branch_reads_outer_scope_values():
    # A subgraph may read any value of the enclosing graph (ONNX lexical scoping).
    twin = Twin(_if_model(helper.make_node("Add", ["x", "x"], ["t"]), helper.make_node("Neg", ["x"], ["e"])))
    x = torch.tensor([1.0, -2.0])
    assert torch.equal(twin(torch.tensor(True), x), x + x)
    assert torch.equal(twin(torch.tensor(False), x), -x)


def test_replaced_ops_reach_into_subgraphs():
    # SynFlow's linearization swaps activation handlers; a Relu inside an If branch must be swapped too.
    twin = Twin(_if_model(helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["x"], ["e"])))
    x = torch.tensor([1.0, -2.0])
    with twin.replaced_ops({"Relu": lambda v: v}):
        assert torch.equal(twin(torch.tensor(True), x), x)
    assert torch.equal(twin(torch.tensor(True), x), torch.relu(x))


# ----- paths the backend cases leave out, against onnxruntime --------------------------------------
def _check_against_ort(model, feeds):
    import onnxruntime as ort

    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = list(Twin(model).run({k: torch.from_numpy(v) for k, v in feeds.items()}).values())
    for expected, value in zip(want, got):
        # float32 kernels on both sides: the conformance runner's float32 budget (a few ulp per op).
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,extra", [
    ("LSTM", {"direction": "bidirectional"}),
    ("GRU", {"direction": "reverse", "linear_before_reset": 1}),
    ("GRU", {"direction": "bidirectional", "linear_before_reset": 0, "clip": 0.5}),
    ("RNN", {"direction": "bidirectional", "activations": ["Relu", "Tanh"]}),
])
def test_recurrent_layers_with_sequence_lengths_match_onnxruntime(op, extra):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    dirs, steps, batch, features, hidden = 2 if extra["direction"] == "bidirectional" else 1, 5, 3, 4, 6
    rng = np.random.default_rng(0)
    feeds = {
        "X": rng.standard_normal((steps, batch, features), dtype=np.float32),
        "W": rng.standard_normal((dirs, gates * hidden, features), dtype=np.float32) * 0.5,
        "R": rng.standard_normal((dirs, gates * hidden, hidden), dtype=np.float32) * 0.5,
        "B": rng.standard_normal((dirs, 2 * gates * hidden), dtype=np.float32) * 0.1,
        "L": np.array([5, 2, 3], dtype=np.int32),  # items stop at different steps
        "H": rng.standard_normal((dirs, batch, hidden), dtype=np.float32),
    }
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, list(feeds), outputs, hidden_size=hidden, **extra)
    inputs = [_vi(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()]
    _check_against_ort(_model([node], inputs, [_vi(n, TensorProto.FLOAT, None) for n in outputs], 14), feeds)


def test_scan_with_axes_and_directions_matches_onnxruntime():
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "x"], ["s_out"]), helper.make_node("Mul", ["s_out", "x"], ["y"])], "body",
        [_vi("s", f, [2]), _vi("x", f, [2])], [_vi("s_out", f, [2]), _vi("y", f, [2])])
    node = helper.make_node("Scan", ["init", "xs"], ["final", "ys"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[-1],
                            scan_output_directions=[1])
    model = _model([node], [_vi("init", f, [2]), _vi("xs", f, [2, 5])], [_vi("final", f, [2]), _vi("ys", f, [2, 5])],
                   16)
    rng = np.random.default_rng(1)
    _check_against_ort(model, {"init": rng.standard_normal(2, dtype=np.float32),
                               "xs": rng.standard_normal((2, 5), dtype=np.float32)})


def test_loop_scan_outputs_and_outer_scope_match_onnxruntime():
    # The body reads `w` from the enclosing graph and emits a per-iteration scan output.
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Mul", ["acc", "w"], ["acc_out"]),
         helper.make_node("Add", ["acc_out", "acc"], ["step"])], "body",
        [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []), _vi("acc", f, [3])],
        [_vi("c_out", TensorProto.BOOL, []), _vi("acc_out", f, [3]), _vi("step", f, [3])])
    model = _model([helper.make_node("Loop", ["n", "", "a"], ["a_final", "steps"], body=body)],
                   [_vi("n", TensorProto.INT64, []), _vi("a", f, [3]), _vi("w", f, [3])],
                   [_vi("a_final", f, [3]), _vi("steps", f, [4, 3])], 16)
    _check_against_ort(model, {"n": np.array(4, dtype=np.int64), "a": np.array([1.0, -2.0, 0.5], dtype=np.float32),
                               "w": np.array([0.5, 1.5, -1.0], dtype=np.float32)})
