"""`onnxprune info` and `onnxprune verify` through the CLI, on models pruned by the Python API."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import onnxprune
from models.torch_nets import ResNet20, kaiming_init, export
from onnxprune.cli import main
from onnxprune.io import save_model


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """ResNet-20 (BatchNorm kept) and its magnitude-pruned version at compression 2."""
    folder = tmp_path_factory.mktemp("models")
    original = export(kaiming_init(ResNet20(), seed=3), (1, 3, 32, 32))
    save_model(original, folder / "r20.onnx")
    result = onnxprune.prune(folder / "r20.onnx", compression=2, method="mag")
    result.save(folder / "r20.pruned.onnx")
    return folder / "r20.onnx", folder / "r20.pruned.onnx", result


def test_info_reports_what_is_stored(files):
    original, pruned, result = files
    got = run("info", pruned, "--json")
    assert got.exit_code == 0, got.output
    info = json.loads(got.output)
    model = onnx.load(str(pruned))
    assert info["op_counts"] == dict(Counter(n.op_type for n in model.graph.node))
    sparse = {s.values.name for s in model.graph.sparse_initializer}
    assert info["initializers"]["sparse"] == len(sparse) > 0
    rows = {row["name"]: row for row in info["layers"]}
    for name, mask in result.masks.items():
        assert rows[name]["nonzero"] == int(mask.sum())
        assert rows[name]["storage"] == ("sparse" if name in sparse else "dense")
        assert rows[name]["density"] == pytest.approx(float(mask.float().mean()))
    assert info["weight_nonzero"] == result.report.kept and info["weight_params"] == result.report.prunable
    assert info["compression"] == pytest.approx(2, abs=0.01)  # kept = round(total / 100)


def test_info_on_an_unpruned_model_shows_full_density(files):
    original, _, _ = files
    got = run("info", original)
    assert got.exit_code == 0, got.output
    assert "100.0000%" in got.output and "Conv 21" in got.output and "0 sparse" in got.output


def test_verify_accepts_the_pruned_model(files):
    original, pruned, result = files
    got = run("verify", pruned, "--reference", original, "--json")
    assert got.exit_code == 0, got.output
    out = json.loads(got.output)
    assert out["ok"] and all(o["ok"] for o in out["outputs"])
    ref = out["reference"]
    assert ref["problems"] == [] and ref["pruned_tensors"] == len(result.masks)
    assert ref["zeroed"] == result.report.prunable - result.report.kept  # kaiming weights are never 0
    assert "verified" in run("verify", pruned).output


def _tampered(pruned, tmp_path, change) -> str:
    model = onnx.load(str(pruned))
    change(model)
    path = tmp_path / "tampered.onnx"
    save_model(model, path)
    return path


def _bump_initializer(name):
    def change(model):
        tensor = next(t for t in model.graph.initializer if t.name == name)
        value = numpy_helper.to_array(tensor).copy()
        value.reshape(-1)[0] = np.nextafter(value.reshape(-1)[0], np.float32(np.inf))  # one ulp
        tensor.CopyFrom(numpy_helper.from_array(value, name))
    return change


def _bump_kept_weight(model):
    sparse = model.graph.sparse_initializer[0]
    values = numpy_helper.to_array(sparse.values).copy()
    values[0] *= 2
    sparse.values.CopyFrom(numpy_helper.from_array(values, sparse.values.name))


def _change_attribute(model):
    node = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    next(a for a in node.attribute if a.name == "epsilon").f *= 2


@pytest.mark.parametrize("change, message", [
    (_bump_initializer("bn.running_var"), "non-prunable tensor changed"),
    (_bump_kept_weight, "kept entries differ"),
    (_change_attribute, "nodes differ"),
])
def test_verify_catches_any_other_change(files, tmp_path, change, message):
    original, pruned, _ = files
    got = run("verify", _tampered(pruned, tmp_path, change), "--reference", original)
    assert got.exit_code == 3, got.output  # 3: checked and mismatched (1 is an internal error)
    assert message in got.output and "verify failed" in got.output


def test_verify_needs_a_shape_for_symbolic_dims(files, tmp_path):
    _, pruned, _ = files
    model = onnx.load(str(pruned))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    path = tmp_path / "symbolic.onnx"
    save_model(model, path)
    got = run("verify", path)
    assert got.exit_code == 2 and "--input-shape" in got.output
    got = run("verify", path, "--input-shape", "input=2x3x40x40")  # the net is size-agnostic (global pool)
    assert got.exit_code == 0, got.output


# ----- which side is off when onnxruntime and the twin disagree ----------------------------------------------
def _matmul_then(weight: np.ndarray, ops: list[tuple[str, str | None]], constant: float,
                 out_shape: list[int]) -> onnx.ModelProto:
    """x [1, 64] @ W, then each (op, None) unary or (op, "c") with the scalar `constant` as its second input."""
    from onnx import TensorProto, helper

    nodes, last = [helper.make_node("MatMul", ["x", "w"], ["t0"])], "t0"
    for k, (op, other) in enumerate(ops, 1):
        nodes.append(helper.make_node(op, [last] + ([other] if other else []), [f"t{k}"]))
        last = f"t{k}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(weight, "w"),
                               numpy_helper.from_array(np.array(constant, np.float32), "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _sigmoid_model(weight: np.ndarray) -> onnx.ModelProto:
    """y = sigmoid(x @ W) - 1/2 with W tiny: the output (about 1e-4) is a difference of values near 1/2,
    so float32's absolute rounding there (ulp(1/2) = 6e-8, in onnxruntime and the float32 twin alike)
    is about 1e-4 of the output's magnitude, past the default tolerance, while the float64 twin is exact."""
    return _matmul_then(weight, [("Sigmoid", None), ("Sub", "c")], 0.5, [1, 64])


def _tiny_sigmoid_model(weight: np.ndarray) -> onnx.ModelProto:
    """y = transpose(sigmoid(x @ W - 12)): every output near sigmoid(-12) = 6e-6, a detector's empty
    probability map (PP-OCRv4 det failed verify this way: onnxruntime 9e-8 off on outputs of 3e-5).
    onnxruntime's Sigmoid is accurate to ulps of 1 there, not of 6e-6, so the output is judged at 1."""
    return _matmul_then(weight, [("Add", "c"), ("Sigmoid", None), ("Transpose", None)], -12.0, [64, 1])


SIGMOID_W = (np.random.default_rng(0).standard_normal((64, 64)) * 2e-5).astype(np.float32)
TINY_W = (np.random.default_rng(1).standard_normal((64, 64)) * 0.1).astype(np.float32)
ROUNDING_CASES = pytest.mark.parametrize("build, weight", [(_sigmoid_model, SIGMOID_W), (_tiny_sigmoid_model, TINY_W)],
                                         ids=["difference_near_one_half", "near_zero_sigmoid"])


@ROUNDING_CASES
def test_verify_passes_when_onnxruntime_float32_rounding_explains_the_gap(tmp_path, build, weight):
    path = tmp_path / "sigmoid.onnx"
    save_model(build(weight), path)
    got = run("verify", path, "--json")
    assert got.exit_code == 0, got.output
    out = json.loads(got.output)["outputs"][0]
    assert out["max_diff"] > out["scale"] * 1e-4, out  # past the tolerance: a plain comparison fails here
    assert out["ok"] and out["verdict"].startswith("onnxruntime float32 rounding"), out
    assert "onnxruntime float32 rounding" in run("verify", path).output


@ROUNDING_CASES
def test_verify_fails_and_names_the_twin_when_the_twin_is_wrong(tmp_path, build, weight):
    """Near zero too: the float64 reference judges the twin at the output's own scale."""
    from onnxprune.commands.verify import compare_with_ort

    path = tmp_path / "sigmoid.onnx"
    save_model(build(weight), path)
    wrong = weight.copy()
    wrong[0] *= 1.01  # the twin reads one row 1 % off: a twin bug, as if it mis-decoded the weight
    [diff] = compare_with_ort(path, build(wrong))
    assert not diff.ok and diff.verdict.startswith("the twin is off"), diff
    [diff] = compare_with_ort(path, build(weight))  # the same check on the right twin passes
    assert diff.ok, diff


def test_verify_exits_3_and_says_so_in_its_help():
    assert "Exit 3 on mismatch" in run("verify", "--help").output


@pytest.mark.parametrize("keep_bias, dead", [(False, "all zero"), (True, "constant")])  # bias 0.5: constant
def test_verify_warns_on_a_model_that_no_longer_depends_on_its_input(tmp_path, keep_bias, dead):
    """The zoo LeNet with its last hidden layer zeroed (as a pruning can leave it): exact, so verify
    passes, but it warns in one line and records why in its JSON."""
    import subprocess
    import sys
    from pathlib import Path

    model = onnx.load(str(Path(__file__).resolve().parents[1] / "models" / "zoo" / "lenet5.onnx"))
    names = [t.name for t in model.graph.initializer if t.name.startswith("classifier.5")]
    for tensor in model.graph.initializer:  # the zoo's biases are zero: a kept bias is made nonzero here
        if tensor.name in names:
            fill = 0.5 if keep_bias and tensor.name.endswith("bias") else 0.0
            tensor.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(tensor), fill), tensor.name))
    save_model(model, tmp_path / "dead.onnx")
    exe = Path(sys.executable).parent / "onnxprune"
    done = subprocess.run([str(exe), "verify", str(tmp_path / "dead.onnx"), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("warning: output 'logits'") and "no longer depends on its input" in line
    assert json.loads(done.stdout)["outputs"][0]["dead"] == dead
    alive = subprocess.run([str(exe), "verify", str(Path(__file__).resolve().parents[1] / "models" / "zoo" /
                                                     "lenet5.onnx")], capture_output=True, text=True, timeout=120)
    assert alive.returncode == 0 and alive.stderr == ""
