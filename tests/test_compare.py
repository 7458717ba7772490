"""`onnxprune compare`: label-free agreement of a pruned model with its original, through the installed
command and real onnxruntime sessions, on every form of --data, and its gate (exit 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from local_data import MNIST10K
from tiny_models import two_heads

EXE = Path(sys.executable).parent / "onnxprune"
LENET = Path(__file__).resolve().parents[1] / "models" / "zoo" / "lenet5.onnx"


def onnxprune(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=300)


def broken_lenet(tmp_path: Path) -> Path:
    """The zoo LeNet with its last layer's weights shuffled: same interface, different answers."""
    model = onnx.load(str(LENET))
    last = [t for t in model.graph.initializer if len(t.dims) == 2][-1]
    array = numpy_helper.to_array(last).copy()
    np.random.default_rng(0).shuffle(array.reshape(-1))
    last.CopyFrom(numpy_helper.from_array(array, last.name))
    onnx.save(model, tmp_path / "broken.onnx")
    return tmp_path / "broken.onnx"


def test_a_model_agrees_with_itself_and_the_gate_passes(tmp_path):
    done = onnxprune("compare", LENET, LENET, "--data", MNIST10K, "--samples", "300", "--min-agreement", "1",
                     "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    logits = report["outputs"]["logits"]
    assert report["samples"] == 300 and logits["kind"] == "logits"
    assert logits["top1_agreement"] == logits["top5_agreement"] == report["agreement"] == 1.0
    assert abs(logits["kl"]) < 1e-9


def test_the_gate_exits_3_on_a_broken_model(tmp_path):
    done = onnxprune("compare", broken_lenet(tmp_path), LENET, "--data", MNIST10K, "--samples", "300",
                     "--min-agreement", "0.9", "--report", tmp_path / "r.json")
    assert done.returncode == 3
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: agreement") and "--min-agreement 0.9" in line
    report = json.loads((tmp_path / "r.json").read_text())  # written before the gate: the pipeline reads why
    assert report["agreement"] < 0.9 and report["outputs"]["logits"]["kl"] > 0


def test_two_outputs_of_different_kinds_and_every_data_form(tmp_path):
    onnx.save(two_heads(), tmp_path / "a.onnx")
    onnx.save(two_heads(scale=1.5), tmp_path / "b.onnx")  # logits scaled: same argmax, other probabilities
    x = np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)
    np.savez(tmp_path / "named.npz", x=x)
    np.savez(tmp_path / "single.npz", anything=x)
    np.savez(tmp_path / "split.npz", x_train=x[:20], x_test=x[20:])  # no labels
    figures = {}
    for data, rows in [(tmp_path / "named.npz", 40), (tmp_path / "single.npz", 40), (tmp_path / "split.npz", 20),
                       ("random", 256)]:
        report = tmp_path / f"{Path(str(data)).stem}.json"
        done = onnxprune("compare", tmp_path / "b.onnx", tmp_path / "a.onnx", "--data", data, "--report", report)
        assert done.returncode == 0, done.stderr
        result = json.loads(report.read_text())
        assert result["samples"] == rows
        logits, features = result["outputs"]["logits"], result["outputs"]["features"]
        assert (logits["kind"], features["kind"]) == ("logits", "values")
        assert logits["top1_agreement"] == 1.0 and logits["kl"] > 0
        assert features["relative_l2"] == 0 and features["cosine"] == pytest.approx(1.0)
        figures[str(data)] = logits["kl"]
    assert figures[str(tmp_path / "named.npz")] == figures[str(tmp_path / "single.npz")]  # the same rows


@pytest.mark.parametrize("case, words", [
    ("missing input", "npz has no array for model input(s) x"),
    ("other model", "the two models' inputs differ"),
    ("wrong dtype", "is int64; the input is float32"),
    ("op onnxruntime lacks", "onnxruntime cannot load it ("),
])
def test_bad_input_is_one_line_exit_2(tmp_path, case, words):
    model = two_heads()
    if case == "op onnxruntime lacks":  # the checker passes an unknown domain's op; onnxruntime refuses the file
        model.graph.node.append(onnx.helper.make_node("Frobnicate", [model.graph.output[0].name], ["f"],
                                                      domain="com.example"))
        model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(model, tmp_path / "a.onnx")
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 8), np.float32))
    args = [tmp_path / "a.onnx", tmp_path / "a.onnx", "--data", tmp_path / "ok.npz"]
    if case == "missing input":
        np.savez(tmp_path / "bad.npz", y=np.zeros((4, 8), np.float32), z=np.zeros((4, 8), np.float32))
        args[3] = tmp_path / "bad.npz"
    elif case == "other model":
        args[1] = LENET
    elif case == "wrong dtype":
        np.savez(tmp_path / "bad.npz", x=np.zeros((4, 8), np.int64))
        args[3] = tmp_path / "bad.npz"
    done = onnxprune("compare", *args, "--report", tmp_path / "r.json")
    assert done.returncode == 2 and not (tmp_path / "r.json").exists()
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr


def _png_folder(folder: Path, count: int = 24, size: int = 28) -> np.ndarray:
    """`count` gray PNGs of random pixels; returns what the model should see ([N, 1, H, W] in [0, 1])."""
    from PIL import Image

    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (count, size, size), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"{i:03d}.png")
    return (pixels[:, None] / 255.0).astype(np.float32)


def test_a_folder_of_images_reads_as_its_pixels(tmp_path):
    """`--data FOLDER` (no class subfolders): the same figures as an npz holding those pixels; with
    --mean / --std, the same as the npz normalized so."""
    expected = _png_folder(tmp_path / "images")
    broken = broken_lenet(tmp_path)
    for extra, array in (([], expected), (["--mean", "0.5", "--std", "0.25"], (expected - 0.5) / 0.25)):
        np.savez(tmp_path / "x.npz", input=array)
        figures = []
        for data in (tmp_path / "images", tmp_path / "x.npz"):
            done = onnxprune("compare", broken, LENET, "--data", data, "--report", tmp_path / "r.json", "--overwrite",
                             *(extra if data.is_dir() else []))
            assert done.returncode == 0, done.stderr
            figures.append(json.loads((tmp_path / "r.json").read_text())["outputs"]["logits"])
        assert figures[0]["top1_agreement"] == figures[1]["top1_agreement"]
        assert figures[0]["kl"] == pytest.approx(figures[1]["kl"], rel=1e-5) and figures[0]["kl"] > 0


def test_distillation_from_a_folder_of_images(tmp_path):
    _png_folder(tmp_path / "images", count=40)
    out = tmp_path / "out.onnx"
    done = onnxprune("train", broken_lenet(tmp_path), "--teacher", LENET, "--dataset", "imagefolder",
                     "--data-dir", tmp_path / "images", "--epochs", "1", "-o", out, "-q")
    assert done.returncode == 0 and out.is_file(), done.stderr


@pytest.mark.parametrize("extra, words", [(["--color", "rgb"], "takes 1 channel(s), not rgb images"),
                                          (["--image-size", "28"], "--image-size '28': expected HxW"),
                                          (["--std", "0"], "std > 0")])
def test_bad_image_options_are_one_line_exit_2(tmp_path, extra, words):
    _png_folder(tmp_path / "images", count=2)
    done = onnxprune("compare", LENET, LENET, "--data", tmp_path / "images", *extra)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr


def test_a_folder_without_images_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    done = onnxprune("compare", LENET, LENET, "--data", tmp_path / "empty")
    assert done.returncode == 2 and "no image files" in done.stderr and "subfolders are not read" in done.stderr


def test_taylor_channel_choice_reads_unlabelled_inputs(tmp_path):
    """`prune --structure channel -m taylor --data` takes what compare takes: a folder of images chooses
    exactly the channels an npz of those pixels (one array per input) does; an npz of images without
    labels (x_train / x_test, what train --teacher reads) and 'random' also run."""
    _png_folder(tmp_path / "images", count=24)
    pixels = _png_folder(tmp_path / "again", count=24)
    np.savez(tmp_path / "x.npz", input=pixels)
    np.savez(tmp_path / "unlabelled.npz", x_train=pixels, x_test=pixels[:4])
    kept = []
    for data in (tmp_path / "images", tmp_path / "x.npz", tmp_path / "unlabelled.npz", "random"):
        done = onnxprune("prune", LENET, "--structure", "channel", "--macs", "0.5", "--round-to", "1", "-m", "taylor",
                         "--data", data, "-o", tmp_path / "p.onnx", "--report", tmp_path / "r.json", "--overwrite", "-q")
        assert done.returncode == 0, done.stderr
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["method"] == "taylor" and report["target_reached"]
        kept.append(report["kept_indices"])
    assert kept[0] == kept[1]
    done = onnxprune("prune", LENET, "--compression", "1", "--data", tmp_path / "images", "--image-size", "28x28",
                     "-o", tmp_path / "w.onnx")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "--image-size" in done.stderr


@pytest.mark.parametrize("axis, identity, opset, kind", [
    (-1, False, 17, "probs"),  # per-timestep probabilities [N, T, C] (PP-OCR's CTC head)
    (2, True, 12, "probs"),  # paddle2onnx's Softmax(axis=2) behind an Identity
    (1, False, 17, "values"),  # normalized over T, not over classes: not class scores per position
    (1, False, 11, "values"),  # opset 11: axis 1 flattens [T, C] into one distribution
])
def test_class_scores_per_position_are_read_from_the_graph(tmp_path, axis, identity, opset, kind):
    h = onnx.helper
    nodes = [h.make_node("Softmax", ["x"], ["p" if identity else "y"], axis=axis)]
    nodes += [h.make_node("Identity", ["p"], ["y"])] if identity else []
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6, 5])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 6, 5])])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=8), tmp_path / "m.onnx")
    done = onnxprune("compare", tmp_path / "m.onnx", tmp_path / "m.onnx", "--data", "random", "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    y = json.loads((tmp_path / "r.json").read_text())["outputs"]["y"]
    assert y["kind"] == kind and y["agreement"] == 1.0


@pytest.mark.parametrize("numerator, axis, kind", [
    ("Exp", 1, "probs"),  # jax2tf's softmax (magika's output): exp(x - max) / its sum, broadcast back
    ("Exp", 0, "values"),  # summed over the batch: not a distribution per row
    ("Abs", 1, "values"),  # a ratio of other values
])
def test_a_softmax_written_out_is_read_as_probabilities(tmp_path, numerator, axis, kind):
    h = onnx.helper
    init = [numpy_helper.from_array(np.array([axis], np.int64), "axes"),
            numpy_helper.from_array(np.array([-1, 1] if axis == 1 else [1, 5], np.int64), "shape")]
    nodes = [h.make_node("ReduceMax", ["x"], ["m"], axes=[1]), h.make_node("Sub", ["x", "m"], ["d"]),
             h.make_node(numerator, ["d"], ["e"]), h.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=0),
             h.make_node("Reshape", ["s", "shape"], ["s1"]), h.make_node("Expand", ["s1", "shape"], ["sb"]),
             h.make_node("Div", ["e", "sb"], ["y"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 5])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])], init)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    done = onnxprune("compare", tmp_path / "m.onnx", tmp_path / "m.onnx", "--data", "random", "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    y = json.loads((tmp_path / "r.json").read_text())["outputs"]["y"]
    assert y["kind"] == kind and y["agreement"] == 1.0


@pytest.mark.parametrize("declared, kind", [(None, "logits"), ("logits=values", "values"), ("features=probs", None)])
def test_an_output_kind_the_graph_cannot_tell_is_declared(tmp_path, declared, kind):
    """A Dense head of several regression scores (DNSMOS' three MOS) reads like a classifier's logits;
    `--output-kind NAME=values` makes compare report relative L2 and cosine for it instead."""
    onnx.save(two_heads(), tmp_path / "m.onnx")
    done = onnxprune("compare", tmp_path / "m.onnx", tmp_path / "m.onnx", "--data", "random", "--samples", "16",
                     "--report", tmp_path / "r.json", *(["--output-kind", declared] if declared else []))
    assert done.returncode == 0, done.stderr
    outputs = json.loads((tmp_path / "r.json").read_text())["outputs"]
    assert outputs["logits"]["kind"] == (kind or "logits")
    assert ("relative_l2" in outputs["logits"]) == (kind == "values")
    if declared == "features=probs":
        assert outputs["features"]["kind"] == "probs"


@pytest.mark.parametrize("declared, words", [("boxes=values", "names no float output of the model: 'boxes'"),
                                             ("logits", "expected NAME=KIND")])
def test_a_bad_output_kind_is_one_line_exit_2(tmp_path, declared, words):
    onnx.save(two_heads(), tmp_path / "m.onnx")
    done = onnxprune("compare", tmp_path / "m.onnx", tmp_path / "m.onnx", "--data", "random", "--output-kind", declared)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr
