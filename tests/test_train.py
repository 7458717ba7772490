"""`onnxprune train`: masks from the file's zeros, BatchNorm statistics written back, untied exporter
ties, checkpoints and resume (also after a real kill), DDP over two gloo processes, one-line errors."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.torch_nets import export
from onnxprune.cli import main
from onnxprune.io import save_model
from onnxprune.train.data import load_dataset
from onnxprune.train.loop import TrainConfig, Trainer
from onnxprune.train.params import freeze_constants, masks_from_zeros
from onnxprune.twin.module import Twin
from onnxprune.graph.constants import stored_tensors
from onnxprune.writeback import write_back
from test_data import write_npz

SHAPE = (1, 12, 12)


class SmallCNN(nn.Module):
    def __init__(self, bn: bool = True, classes: int = 10):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1, bias=not bn), norm(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 12, 3, padding=1, bias=not bn), norm(12), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(12, classes))

    def forward(self, x):
        return self.body(x)


def export_tied(model: nn.Module) -> onnx.ModelProto:
    """The TorchScript exporter's default: equal-valued initializers merged through Identity nodes."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, *SHAPE),), buffer, dynamo=False, input_names=["input"],
                          output_names=["logits"], training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False, opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def weight_names(model: onnx.ModelProto) -> list[str]:
    twin = Twin(model)
    return sorted({u.source for u in twin.weight_uses if u.role == "weight"})


def make_model(path: Path, *, bn: bool = True, tied: bool = False, density: float | None = 0.2,
               classes: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Export SmallCNN and zero all but `density` of each weight at random (pruned 'by someone else',
    stored dense). Returns the zero patterns."""
    torch.manual_seed(seed)
    net = SmallCNN(bn, classes)
    model = export_tied(net) if tied else export(net, (1, *SHAPE))
    zeros = {}
    if density is not None:
        rng = np.random.default_rng(seed)
        values = stored_tensors(model.graph)
        pruned = {}
        for name in weight_names(model):
            array = values[name][1]
            keep = rng.random(array.shape) < density
            pruned[name] = np.where(keep, array, 0).astype(array.dtype)
            zeros[name] = pruned[name] == 0
        model = write_back(model, pruned, fmt="dense")
    save_model(model, path)
    return zeros


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train_args(model, data, out, *extra):
    return ["train", model, "--dataset", "npz", "--data-dir", data, "-o", out, "--batch-size", 16, "-q", *extra]


def initializers(path) -> dict[str, np.ndarray]:
    return {name: value for name, (_, value) in stored_tensors(onnx.load(str(path)).graph).items()}


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: a second OpenMP thread only adds synchronization (and on a busy machine,
    spin-waiting), so the in-process runs use one and restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "d.npz"
    write_npz(path, n_train=96, n_test=48, shape=SHAPE)
    return path


# ----- the trained file ---------------------------------------------------------------------------
def test_pruned_zeros_stay_zero_and_bn_stats_are_written(tmp_path, data):
    zeros = make_model(tmp_path / "m.onnx", density=0.2)
    got = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "t.onnx", "--epochs", 3, "--lr-drops", "1,2",
                          "--weight-decay", "1e-3", "--report", tmp_path / "r.json"))
    assert got.exit_code == 0, got.output
    before, after = initializers(tmp_path / "m.onnx"), initializers(tmp_path / "t.onnx")
    trained = onnx.load(str(tmp_path / "t.onnx"))
    sparse = {s.values.name for s in trained.graph.sparse_initializer}
    assert sparse == set(zeros)  # 20 % dense: stored sparse (auto picks the smaller form)
    for name, zero in zeros.items():
        assert np.array_equal(after[name] == 0, zero), name  # exactly the pruned entries are zero
        assert not np.array_equal(after[name], before[name])  # and the kept ones trained
    stats = [n for n in after if "running_" in n]
    assert len(stats) == 4 and all(not np.array_equal(after[n], before[n]) for n in stats)
    assert [(n.op_type, list(n.input)) for n in trained.graph.node] == \
        [(n.op_type, list(n.input)) for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [e["lr"] for e in report["epochs"]] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert set(report["epochs"][0]) >= {"train_loss", "train_accuracy", "test_accuracy"}
    assert report["kept"] == sum(int((~z).sum()) for z in zeros.values())
    # onnxruntime on the written file scores what the twin scored in its last test pass: the BN
    # statistics and weights in the file are the ones the twin evaluated with.
    scored = run("eval", tmp_path / "t.onnx", "--dataset", "npz", "--data-dir", data, "--report", tmp_path / "e.json")
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "e.json").read_text())["top1"] == report["final"]["test_accuracy"]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "rms"])
def test_every_optimizer_keeps_masked_weights_at_zero(tmp_path, data, optimizer):
    zeros = make_model(tmp_path / "m.onnx", density=0.3, bn=False)
    twin = Twin(onnx.load(str(tmp_path / "m.onnx")))
    masks_from_zeros(twin)
    train_set = load_dataset("npz", data, train=True, input_spec=twin.inputs[0])
    test_set = load_dataset("npz", data, train=False, input_spec=twin.inputs[0])
    freeze_constants(twin, train_set[0][0][None])
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer=optimizer, lr=0.05, weight_decay=0.01)
    history = Trainer(twin, train_set, test_set, cfg, torch.device("cpu")).fit()
    assert len(history) == 1 and np.isfinite(history[0].train_loss)
    params = twin.onnx_parameters()
    for name, zero in zeros.items():  # the parameters themselves, not only the masked view
        assert torch.all(params[name].detach()[torch.from_numpy(zero)] == 0), name


def test_exporter_ties_are_untied(tmp_path, data):
    make_model(tmp_path / "m.onnx", tied=True, density=None)
    model = onnx.load(str(tmp_path / "m.onnx"))
    identities = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}
    assert any("running_var" in out for out in identities)  # the export really tied them
    got = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "t.onnx", "--epochs", 1))
    assert got.exit_code == 0, got.output
    assert "merged by value" in got.stderr and "train separately" in got.stderr
    trained = onnx.load(str(tmp_path / "t.onnx"))
    after = initializers(tmp_path / "t.onnx")
    assert not any(n.op_type == "Identity" for n in trained.graph.node)
    for out, source in identities.items():  # each formerly tied name is its own tensor now
        assert out in after and not np.array_equal(after[out], after[source]), out
    for name, value in after.items():
        if "running_var" in name:
            gamma = name.replace("running_var", "weight")
            assert not np.array_equal(value, after[gamma])


# ----- checkpoints --------------------------------------------------------------------------------
def test_resume_continues_exactly(tmp_path, data):
    make_model(tmp_path / "m.onnx")
    straight = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "a.onnx", "--epochs", 2,
                               "--report", tmp_path / "a.json"))
    first = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "b.onnx", "--epochs", 1))
    resumed = CliRunner().invoke(main, [str(a) for a in train_args(
        tmp_path / "m.onnx", data, tmp_path / "b.onnx", "--epochs", 2, "--resume", "--report", tmp_path / "b.json")])
    assert straight.exit_code == first.exit_code == resumed.exit_code == 0, resumed.output
    a, b = initializers(tmp_path / "a.onnx"), initializers(tmp_path / "b.onnx")
    for name in a:  # same seeds per epoch, same optimizer state: the same computation, bit for bit
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert json.loads((tmp_path / "a.json").read_text())["epochs"][1]["train_loss"] == \
        json.loads((tmp_path / "b.json").read_text())["epochs"][1]["train_loss"]
    # A different trajectory must not pick up this checkpoint.
    other = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "b.onnx", "--epochs", 3, "--resume",
                            "--lr", "0.01"))
    assert other.exit_code == 2 and "belongs to another run (lr differ)" in other.stderr


def test_killed_run_resumes_without_losing_epochs(tmp_path):
    data = tmp_path / "big.npz"
    write_npz(data, n_train=512, n_test=16, shape=SHAPE)
    make_model(tmp_path / "m.onnx")
    args = [str(a) for a in train_args(tmp_path / "m.onnx", data, tmp_path / "t.onnx", "--epochs", 500)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "onnxprune", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "t.onnx.ckpt"
    try:
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert done >= 1
    got = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "t.onnx", "--epochs", done + 1, "--resume",
                          "--report", tmp_path / "r.json"))
    assert got.exit_code == 0, got.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, done + 2))  # kept, plus one new


# ----- several processes --------------------------------------------------------------------------
@pytest.mark.parametrize("distilled", [False, True], ids=["labels", "teacher"])
def test_ddp_two_gloo_processes_match_one(tmp_path, data, distilled):
    """Two processes train what one does; with --teacher each process runs its own teacher on its
    half of the same global batch."""
    make_model(tmp_path / "m.onnx", bn=False)  # BN would use per-process batch statistics
    extra = ["--epochs", 2]
    if distilled:
        make_model(tmp_path / "teacher.onnx", bn=False, density=None, seed=1)
        extra += ["--teacher", tmp_path / "teacher.onnx"]
    one = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "one.onnx", *extra, "--report", tmp_path / "one.json"))
    assert one.exit_code == 0, one.output
    args = [str(a) for a in train_args(tmp_path / "m.onnx", data, tmp_path / "two.onnx", *extra,
                                       "--report", tmp_path / "two.json")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "onnxprune", *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote") == 1  # only rank 0 writes and prints
    a, b = initializers(tmp_path / "one.onnx"), initializers(tmp_path / "two.onnx")
    for name in a:
        # Same global batches; the only difference is summation order (two partial sums all-reduced):
        # float32 rounding of ~1e-7 per step, over 12 small Adam steps.
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5, err_msg=name)
    r1, r2 = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert bool(r1["teacher"]) == bool(r2["teacher"]) == distilled
    r1, r2 = r1["epochs"], r2["epochs"]
    for e1, e2 in zip(r1, r2):
        assert e1["test_accuracy"] == e2["test_accuracy"]
        assert e1["train_loss"] == pytest.approx(e2["train_loss"], rel=1e-5)


# ----- warnings and errors ------------------------------------------------------------------------
class DeepMLP(nn.Module):
    def __init__(self, depth: int):
        super().__init__()
        layers = [nn.Flatten(), nn.Linear(144, 16), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Linear(16, 16), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("depth,warned", [(7, True), (4, False)])
def test_warns_when_a_deep_graph_has_no_normalization(tmp_path, data, depth, warned):
    save_model(export(DeepMLP(depth), (1, *SHAPE)), tmp_path / "m.onnx")
    got = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "t.onnx", "--epochs", 0))
    assert got.exit_code == 0, got.output
    assert ("no normalization layers" in got.stderr) == warned
    if warned:
        assert "dynamo=False, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False" in got.stderr


def constants_model() -> onnx.ModelProto:
    """input * scale -> Conv -> Clip(lo, hi) -> GlobalAveragePool -> Flatten -> Gemm, where scale, lo
    and hi are float initializers (as hand-written or converted graphs have them), not Constant nodes."""
    rng = np.random.default_rng(0)
    inits = {"scale": np.array([0.5], np.float32), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
             "conv.w": rng.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.5,
             "conv.b": np.zeros(4, np.float32),
             "fc.w": rng.standard_normal((10, 4)).astype(np.float32) * 0.5, "fc.b": np.zeros(10, np.float32)}
    nodes = [helper.make_node("Mul", ["input", "scale"], ["scaled"]),
             helper.make_node("Conv", ["scaled", "conv.w", "conv.b"], ["conv"]),
             helper.make_node("Clip", ["conv", "lo", "hi"], ["act"]),
             helper.make_node("GlobalAveragePool", ["act"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "constants", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_graph_constants_stay_fixed(tmp_path, data):
    save_model(constants_model(), tmp_path / "m.onnx")
    got = run(*train_args(tmp_path / "m.onnx", data, tmp_path / "t.onnx", "--epochs", 1, "--report", tmp_path / "r.json"))
    assert got.exit_code == 0, got.output
    before, after = initializers(tmp_path / "m.onnx"), initializers(tmp_path / "t.onnx")
    assert json.loads((tmp_path / "r.json").read_text())["fixed"] == ["scale", "lo", "hi"]
    for name in before:  # the scalars are untouched, the layers trained
        assert np.array_equal(before[name], after[name]) == (name in ("scale", "lo", "hi")), name


@pytest.mark.parametrize("images,classes,message", [
    ((4, 12, 12), 10, "error: model input 'input' [batch, 1, 12, 12] takes 1 channel(s); the images in d.npz have 4"),
    (SHAPE, 40, "error: model outputs 10 classes; npz has"),
])
def test_mismatches_are_one_line_errors(tmp_path, images, classes, message):
    write_npz(tmp_path / "d.npz", n_train=64, n_test=8, shape=images, classes=classes)
    make_model(tmp_path / "m.onnx")
    got = run(*train_args(tmp_path / "m.onnx", tmp_path / "d.npz", tmp_path / "t.onnx", "--epochs", 1))
    assert got.exit_code == 2 and got.stderr.startswith(message), got.stderr
    assert got.stderr.strip().count("\n") == 0  # one line, no traceback
