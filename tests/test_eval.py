"""`onnxprune eval`: top-1 / top-5 under onnxruntime on the real loaders, against a numpy oracle."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli import main
from onnxprune.io import save_model
from onnxprune.train.data import STATS
from test_data import write_cifar, write_image_tree, write_mnist, write_npz


def linear_classifier(shape, classes: int, *, batch="N", seed: int = 0, softmax: bool = False):
    """input [batch, *shape] -> Flatten -> Gemm(W [features, classes], b) (-> Softmax). Returns the
    model and (W, b) so the test can compute the expected scores with numpy."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(shape))
    w = rng.standard_normal((features, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "b"], ["scores" if softmax else "logits"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["scores"], ["logits"]))
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return model, w, b


def expected(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(top-1 correct, top-5 correct) from numpy scores. float64 here vs float32 in onnxruntime: a tie
    within rounding would flip a rank, which random Gaussian weights make vanishingly unlikely."""
    scores = x.reshape(len(x), -1).astype(np.float64) @ w + b
    order = np.argsort(-scores, axis=1)
    return int((order[:, 0] == y).sum()), int((order[:, :5] == y[:, None]).any(axis=1).sum())


def normalize(pixels: np.ndarray, mean, std) -> np.ndarray:
    mean, std = (np.asarray(v, np.float64).reshape(-1, 1, 1) for v in (mean, std))
    return (pixels.astype(np.float64) / 255 - mean) / std


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def evaluate(tmp_path, model, dataset, data_dir, *extra):
    save_model(model, tmp_path / "m.onnx")
    got = run("eval", tmp_path / "m.onnx", "--dataset", dataset, "--data-dir", data_dir, "--workers", 0,
              "--report", tmp_path / "r.json", *extra)
    assert got.exit_code == 0, got.output
    return got, json.loads((tmp_path / "r.json").read_text())


def test_npz_top1_top5_against_numpy(tmp_path):
    arrays = write_npz(tmp_path / "d.npz", n_train=64, n_test=50, shape=(1, 6, 6), classes=10)
    model, w, b = linear_classifier((1, 6, 6), 10)
    got, report = evaluate(tmp_path, model, "npz", tmp_path / "d.npz", "--batch-size", 16)
    train = arrays["x_train"].astype(np.float64) / 255
    x = (arrays["x_test"] / 255 - train.mean()) / train.std(ddof=1)
    top1, top5 = expected(x, arrays["y_test"], w, b)
    assert (report["correct1"], report["correct5"], report["total"]) == (top1, top5, 50)
    assert report["top1"] == top1 / 50 and report["provider"] == "CPUExecutionProvider"
    assert f"top-1 {100 * top1 / 50:.2f} % ({top1}/50)" in got.stdout and "top-5" in got.stdout


def test_cifar_pickles_nhwc_model(tmp_path):
    _, _, test_data, test_labels = write_cifar(tmp_path, n_test=30)
    model, w, b = linear_classifier((32, 32, 3), 10)
    _, report = evaluate(tmp_path, model, "cifar10", tmp_path)
    x = normalize(test_data.reshape(-1, 3, 32, 32), *STATS["cifar10"]).transpose(0, 2, 3, 1)
    assert (report["correct1"], report["correct5"]) == expected(x, np.array(test_labels), w, b)


def test_mnist_idx_fixed_batch_and_softmax_output(tmp_path):
    _, _, x_test, y_test = write_mnist(tmp_path, n_test=13)
    # A batch dim fixed at 4: 13 images need a padded last batch; a Softmax output ranks the same.
    model, w, b = linear_classifier((1, 28, 28), 10, batch=4, softmax=True)
    _, report = evaluate(tmp_path, model, "mnist", tmp_path, "--batch-size", 64)
    x = normalize(x_test[:, None], *STATS["mnist"])
    assert report["total"] == 13
    assert (report["correct1"], report["correct5"]) == expected(x, y_test.astype(np.int64), w, b)


def test_image_folder_and_no_top5_for_few_classes(tmp_path):
    write_image_tree(tmp_path, classes=("a", "b", "c"), per_class=2, size=(8, 8))
    model, w, b = linear_classifier((3, 8, 8), 3)
    got, report = evaluate(tmp_path, model, "imagefolder", tmp_path)
    assert report["total"] == 6 and report["top5"] is None and "top-5" not in got.stdout
    from PIL import Image

    folder = sorted((tmp_path / "val").glob("*/*.png"))
    x = normalize(np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in folder]), *STATS["imagefolder"])
    y = np.array([("a", "b", "c").index(p.parent.name) for p in folder])
    assert report["correct1"] == expected(x, y, w, b)[0]


def test_too_few_classes_and_bad_files_are_one_line_errors(tmp_path):
    write_npz(tmp_path / "d.npz", shape=(1, 6, 6), classes=10)
    save_model(linear_classifier((1, 6, 6), 4)[0], tmp_path / "m.onnx")
    got = run("eval", tmp_path / "m.onnx", "--dataset", "npz", "--data-dir", tmp_path / "d.npz")
    assert got.exit_code == 2 and got.stderr.startswith("error: the model outputs 4 classes")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    got = run("eval", tmp_path / "junk.onnx", "--dataset", "npz", "--data-dir", tmp_path / "d.npz")
    assert got.exit_code == 2 and got.stderr.count("\n") == 1 and "junk.onnx" in got.stderr
