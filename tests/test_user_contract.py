"""What a user of the installed command relies on beyond pruning itself: fast help, checked and atomic
outputs for every command, one-line refusals of models that cannot fit the data, honest counts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.cli import main
from onnxprune.io import save_model
from onnxprune.report import warnings_for
from test_data import write_npz
from test_eval import linear_classifier

EXE = Path(sys.executable).parent / "onnxprune"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def usual_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# ----- start-up: help and usage errors load neither torch nor onnx ---------------------------------
@pytest.mark.parametrize("args", [["--help"], ["prune", "--help"], ["train", "--help"], ["verify", "--help"],
                                  ["eval", "--help"], ["info", "--help"], ["prune"],
                                  ["prune", "m.onnx", "--compression", "-1"]])
def test_help_and_usage_errors_import_no_torch(args):
    code = ("import sys\nfrom onnxprune.cli import main\ntry:\n    main(%r)\nexcept SystemExit as e:\n"
            "    code = e.code\nprint(code, 'torch' in sys.modules, 'onnx' in sys.modules, file=sys.stderr)") % args
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    code, torch_loaded, onnx_loaded = done.stderr.strip().splitlines()[-1].split()
    assert (torch_loaded, onnx_loaded) == ("False", "False"), done.stderr
    assert code in ("0", "2")


# ----- outputs: every file named, usual permissions -----------------------------------------------
def mlp_model(features: int = 64, hidden: int = 64):
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 10)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_external_data_output_has_usual_mode_and_every_file_is_named(tmp_path):
    save_model(mlp_model(), tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "m.onnx.data").exists()
    done = subprocess.run([EXE, "prune", tmp_path / "m.onnx", "-c", "1", "-m", "mag", "--format", "dense",
                           "-o", tmp_path / "p.onnx", "--report", tmp_path / "r.json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = [tmp_path / "p.onnx", tmp_path / "p.onnx.data", tmp_path / "r.json"]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == usual_mode(), path
    wrote = next(line for line in done.stdout.splitlines() if line.startswith("wrote "))
    assert wrote == "wrote " + ", ".join(str(p) for p in written)


# ----- info: logical size and what is stored --------------------------------------------------------
def test_info_reports_stored_values_of_sparse_files(tmp_path):
    save_model(mlp_model(), tmp_path / "m.onnx")
    pruned = onnxprune.prune(tmp_path / "m.onnx", compression=2, method="mag", format="sparse")
    pruned.save(tmp_path / "p.onnx")
    got = run("info", tmp_path / "p.onnx", "--json")
    info = json.loads(got.output)
    kept = pruned.report.kept
    assert info["tensor_params"] == 64 * 64 + 64 * 10
    assert info["sparse_values"] == info["sparse_indices"] == kept
    assert info["stored_values"] == kept
    text = run("info", tmp_path / "p.onnx").output
    assert f"{64 * 64 + 64 * 10:,} values in all, {kept:,} stored" in text


# ----- eval: the model must fit the dataset -------------------------------------------------------
def test_eval_refuses_a_model_with_other_classes_before_the_run(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(1, 6, 6), classes=10)
    save_model(linear_classifier((3, 12, 12), 1000, seed=1)[0], tmp_path / "m.onnx")
    got = run("eval", tmp_path / "m.onnx", "--dataset", "npz", "--data-dir", tmp_path / "d.npz")
    assert got.exit_code == 2
    assert got.stderr.strip().splitlines() == [
        "error: the model outputs 1000 classes (logits [1, 1000]); npz has 10: evaluate it on the data it classifies"]


def test_eval_warns_when_images_are_resized_and_recoloured(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(1, 6, 6), classes=10)
    save_model(linear_classifier((3, 12, 12), 10, seed=1)[0], tmp_path / "m.onnx")
    got = run("eval", tmp_path / "m.onnx", "--dataset", "npz", "--data-dir", tmp_path / "d.npz")
    assert got.exit_code == 0, got.output
    assert "warning: npz images are 6x6; the model takes 12x12: they are resized" in got.stderr
    assert "warning: npz images have 1 channel(s); the model takes 3" in got.stderr


def test_eval_report_is_not_replaced_silently(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(1, 6, 6), classes=10)
    save_model(linear_classifier((1, 6, 6), 10)[0], tmp_path / "m.onnx")
    (tmp_path / "r.json").write_text("keep me")
    args = ("eval", tmp_path / "m.onnx", "--dataset", "npz", "--data-dir", tmp_path / "d.npz", "--report",
            tmp_path / "r.json")
    got = run(*args)
    assert got.exit_code == 2 and "already exists; pass --overwrite" in got.stderr
    assert (tmp_path / "r.json").read_text() == "keep me"
    assert run(*args, "--overwrite").exit_code == 0
    assert json.loads((tmp_path / "r.json").read_text())["total"] > 0


# ----- train: outputs checked before the first epoch; fixed batches named -------------------------
def train_args(tmp_path, *extra):
    return ("train", tmp_path / "m.onnx", "--dataset", "npz", "--data-dir", tmp_path / "d.npz", "-o",
            tmp_path / "t.onnx", "--epochs", 1, "--batch-size", 8, "-q", *extra)


def test_train_refuses_existing_or_unwritable_outputs_before_training(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(1, 6, 6), classes=10)
    save_model(linear_classifier((1, 6, 6), 10)[0], tmp_path / "m.onnx")
    (tmp_path / "t.onnx").write_bytes(b"earlier")
    got = run(*train_args(tmp_path))
    assert got.exit_code == 2 and "t.onnx already exists; pass --overwrite" in got.stderr
    assert (tmp_path / "t.onnx").read_bytes() == b"earlier"
    assert not (tmp_path / "t.onnx.ckpt").exists()  # refused before the first epoch
    got = run(*train_args(tmp_path, "--overwrite", "--report", tmp_path / "missing" / "r.json"))
    assert got.exit_code == 2 and "does not exist" in got.stderr and not (tmp_path / "t.onnx.ckpt").exists()
    got = run(*train_args(tmp_path, "--overwrite", "--report", tmp_path / "r.json"))
    assert got.exit_code == 0, got.output
    assert (tmp_path / "t.onnx").read_bytes() != b"earlier"
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == usual_mode()


def fixed_batch_classifier(features: int = 36, classes: int = 10):
    """input [1, 1, 6, 6] -> Reshape to [1, 36] (the batch baked in, as static exports do) -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([1, features], np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])], "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_train_names_a_fixed_batch_and_trains_at_it(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(1, 6, 6), classes=10)
    save_model(fixed_batch_classifier(), tmp_path / "m.onnx")
    got = run(*train_args(tmp_path))
    assert got.exit_code == 2
    assert got.stderr.startswith("error: model input 'input' has a fixed batch dimension of 1")
    assert "--batch-size 1" in got.stderr and "Traceback" not in got.output
    got = run(*train_args(tmp_path)[:-3], "--batch-size", 1, "-q")
    assert got.exit_code == 0, got.output


# ----- layer collapse: cut off, or bypassed -------------------------------------------------------
def conv_net(residual: bool):
    """x -> Conv(w1) [-> Add x] -> Conv(w2): w1 is tiny, so magnitude pruning empties it first."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((4, 4, 3, 3)) * 1e-3).astype(np.float32)
    w2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1])]
    if residual:
        nodes.append(helper.make_node("Add", ["a", "x"], ["s"]))
    nodes.append(helper.make_node("Conv", ["s" if residual else "a", "w2"], ["y"], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("residual", [True, False])
def test_collapse_warning_tells_cut_off_from_bypassed(residual):
    result = onnxprune.prune(conv_net(residual), density=0.4, method="mag")
    assert result.report.collapsed == ["w1"]
    assert result.report.connected is residual
    [line] = [w for w in warnings_for(result.report) if "w1" in w]
    if residual:
        assert "bypassed" in line and "cuts the output off" not in line
    else:
        assert line.startswith("layer collapse cuts the output off from the input")
    assert result.report.to_dict()["output_depends_on_input"] is residual


# ----- verify: onnxruntime refusing the user's shapes is an input error ----------------------------
def test_verify_names_the_shapes_onnxruntime_refused(tmp_path):
    model = fixed_batch_classifier()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"  # declared free, baked in at 1
    save_model(model, tmp_path / "m.onnx")
    done = subprocess.run([EXE, "verify", tmp_path / "m.onnx", "--input-shape", "input=2x1x6x6"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: onnxruntime cannot run the model on inputs input=2x1x6x6")
    assert subprocess.run([EXE, "verify", tmp_path / "m.onnx", "--input-shape", "input=1x1x6x6"],
                          capture_output=True, timeout=120).returncode == 0
