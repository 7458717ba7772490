"""`train --teacher`: label-free recovery of a pruned model from its original, through the installed
command; agreement is measured by `onnxprune compare` on held-out inputs, before and after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from local_data import MNIST10K
from tiny_models import two_heads

EXE = Path(sys.executable).parent / "onnxprune"
LENET = Path(__file__).resolve().parents[1] / "models" / "zoo" / "lenet5.onnx"


def onnxprune(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=600)
    return done


def agreement(pruned: Path, original: Path, data: Path, tmp_path: Path) -> dict:
    report = tmp_path / f"{pruned.stem}.compare.json"
    done = onnxprune("compare", pruned, original, "--data", data, "--report", report, "--overwrite")
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def mnist_small(tmp_path_factory) -> tuple[Path, Path]:
    """1,500 training and 500 held-out MNIST images, with labels and without."""
    folder = tmp_path_factory.mktemp("mnist")
    data = np.load(MNIST10K)
    x_train, y_train, x_test, y_test = data["x_train"][:1500], data["y_train"][:1500], data["x_test"][:500], data["y_test"][:500]
    np.savez(folder / "labelled.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    np.savez(folder / "unlabelled.npz", x_train=x_train, x_test=x_test)
    return folder / "labelled.npz", folder / "unlabelled.npz"


def test_distillation_without_labels_raises_agreement(mnist_small, tmp_path):
    labelled, unlabelled = mnist_small
    dense, pruned, recovered = tmp_path / "dense.onnx", tmp_path / "pruned.onnx", tmp_path / "recovered.onnx"
    assert onnxprune("train", LENET, "--dataset", "npz", "--data-dir", labelled, "--epochs", "2", "-o", dense,
                     "-q").returncode == 0
    assert onnxprune("prune", dense, "--structure", "channel", "--macs", "0.3", "-o", pruned, "-q").returncode == 0
    before = agreement(pruned, dense, unlabelled, tmp_path)["outputs"]["logits"]
    done = onnxprune("train", pruned, "--teacher", dense, "--dataset", "npz", "--data-dir", unlabelled,
                     "--epochs", "1", "-o", recovered, "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert "agreement with the teacher" in done.stdout
    after = agreement(recovered, dense, unlabelled, tmp_path)["outputs"]["logits"]
    assert after["top1_agreement"] > before["top1_agreement"] and after["kl"] < before["kl"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["teacher"] == str(dense) and report["final"]["test_accuracy"] == pytest.approx(
        after["top1_agreement"], abs=0.01)  # the twin's agreement on the held-out split is compare's
    weights = {t.name: t for t in onnx.load(str(recovered)).graph.initializer}
    assert all(list(t.dims) == list(weights[t.name].dims) for t in onnx.load(str(pruned)).graph.initializer
               if t.name in weights)  # channel-pruned shapes stay as they are


def test_two_outputs_of_different_kinds_both_move_toward_the_teacher(tmp_path):
    """A class-score head (KL) and a feature map (variance-normalized MSE) in one model."""
    onnx.save(two_heads(seed=0), tmp_path / "teacher.onnx")
    onnx.save(two_heads(seed=1), tmp_path / "student.onnx")  # other weights: far from the teacher
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x_train=rng.standard_normal((512, 8)).astype(np.float32),
             x_test=rng.standard_normal((128, 8)).astype(np.float32))
    before = agreement(tmp_path / "student.onnx", tmp_path / "teacher.onnx", tmp_path / "x.npz", tmp_path)
    done = onnxprune("train", tmp_path / "student.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "npz",
                     "--data-dir", tmp_path / "x.npz", "--no-normalize", "--epochs", "3", "--lr", "0.01",
                     "-o", tmp_path / "out.onnx", "-q")
    assert done.returncode == 0, done.stderr
    after = agreement(tmp_path / "out.onnx", tmp_path / "teacher.onnx", tmp_path / "x.npz", tmp_path)
    assert after["outputs"]["features"]["relative_l2"] < before["outputs"]["features"]["relative_l2"]
    assert after["outputs"]["logits"]["kl"] < before["outputs"]["logits"]["kl"]


@pytest.mark.parametrize("case, words", [("other teacher", "the two models' inputs differ"),
                                         ("labels asked, none given", "npz has no y_train")])
def test_bad_teacher_input_is_one_line_exit_2(mnist_small, tmp_path, case, words):
    _, unlabelled = mnist_small
    onnx.save(two_heads(), tmp_path / "other.onnx")
    teacher, extra = (tmp_path / "other.onnx", []) if case == "other teacher" else (LENET, ["--alpha", "0.5"])
    out = tmp_path / "out.onnx"
    done = onnxprune("train", LENET, "--teacher", teacher, "--dataset", "npz", "--data-dir", unlabelled,
                     "--epochs", "1", "-o", out, *extra)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr


def test_distillation_of_a_transformer_block_from_named_arrays(tmp_path):
    """A one-block attention classifier (heads and FFN units channel-pruned) recovers from an npz whose
    array is named after the model input; --holdout keeps a tenth aside; a separate held-out npz
    measures before and after."""
    import torch

    from models.torch_nets import AttentionStack, export

    torch.manual_seed(0)
    onnx.save(export(AttentionStack(layers=1, d=32, inputs=8, heads=4), (1, 6, 8)), tmp_path / "block.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", input=rng.standard_normal((400, 6, 8)).astype(np.float32))
    np.savez(tmp_path / "heldout.npz", input=rng.standard_normal((200, 6, 8)).astype(np.float32))
    pruned, recovered = tmp_path / "pruned.onnx", tmp_path / "recovered.onnx"
    done = onnxprune("prune", tmp_path / "block.onnx", "--structure", "channel", "--macs", "0.5", "--round-to", "1",
                     "--best-effort", "-o", pruned, "-q")
    assert done.returncode == 0, done.stderr
    before = agreement(pruned, tmp_path / "block.onnx", tmp_path / "heldout.npz", tmp_path)["outputs"]["logits"]
    done = onnxprune("train", pruned, "--teacher", tmp_path / "block.onnx", "--dataset", "npz", "--data-dir",
                     tmp_path / "train.npz", "--holdout", "0.1", "--epochs", "3", "--lr", "0.003", "-o", recovered,
                     "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    after = agreement(recovered, tmp_path / "block.onnx", tmp_path / "heldout.npz", tmp_path)["outputs"]["logits"]
    assert after["kl"] < before["kl"] and after["top1_agreement"] >= before["top1_agreement"]
    assert "agreement with the teacher" in done.stdout


def test_loss_weights_leave_an_output_out(tmp_path):
    """`--loss-weights logits=0`: only the feature map's term trains, so the classifier weight that only
    the logits read is left exactly as it was (no weight decay), while the features move."""
    from onnx import numpy_helper

    onnx.save(two_heads(seed=0), tmp_path / "teacher.onnx")
    onnx.save(two_heads(seed=1), tmp_path / "student.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x_train=rng.standard_normal((256, 8)).astype(np.float32),
             x_test=rng.standard_normal((64, 8)).astype(np.float32))
    done = onnxprune("train", tmp_path / "student.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "npz",
                     "--data-dir", tmp_path / "x.npz", "--no-normalize", "--epochs", "2", "--lr", "0.01",
                     "--weight-decay", "0", "--loss-weights", "logits=0", "-o", tmp_path / "out.onnx", "-q")
    assert done.returncode == 0, done.stderr
    weights = {m: {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / f"{m}.onnx")).graph.initializer}
               for m in ("student", "out")}
    assert np.array_equal(weights["out"]["w2"], weights["student"]["w2"])
    assert not np.array_equal(weights["out"]["w1"], weights["student"]["w1"])


def _magnitude_net(seed: int, op: str) -> onnx.ModelProto:
    """x [N, 4] -> op(h * h) W2 with h = x W1: op Sqrt (a magnitude, as an in-graph spectrogram takes it)
    or Log (log(0) = -inf at a zero row: a loss no step can use)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Mul", ["h", "h"], ["p"]),
             helper.make_node(op, ["p"], ["m"]), helper.make_node("MatMul", ["m", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "magnitude", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1])],
                              [numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w1"),
                               numpy_helper.from_array(rng.standard_normal((6, 1)).astype(np.float32), "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("op", ["Sqrt", "Log"])
def test_silent_inputs_never_put_nan_into_the_weights(tmp_path, op):
    """Every batch holds all-zero rows (silence). sqrt's gradient at 0 is taken as 0, so the layer
    before a magnitude still trains; where a step's gradient is not finite anyway (log 0), the step is
    left out and a warning says how many: the written weights stay finite."""
    from onnx import numpy_helper

    onnx.save(_magnitude_net(0, op), tmp_path / "teacher.onnx")
    onnx.save(_magnitude_net(1, op), tmp_path / "student.onnx")
    x = np.random.default_rng(0).standard_normal((128, 4)).astype(np.float32)
    x[::4] = 0.0
    np.savez(tmp_path / "x.npz", x_train=x, x_test=x[:32])
    done = onnxprune("train", tmp_path / "student.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "npz",
                     "--data-dir", tmp_path / "x.npz", "--no-normalize", "--epochs", "1", "--batch-size", "16",
                     "-o", tmp_path / "out.onnx", "-q")
    assert done.returncode == 0, done.stderr
    weights = {m: {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / f"{m}.onnx")).graph.initializer}
               for m in ("student", "out")}
    assert all(np.isfinite(w).all() for w in weights["out"].values())
    if op == "Sqrt":
        assert not np.array_equal(weights["out"]["w1"], weights["student"]["w1"]) and "left out" not in done.stderr
    else:
        assert "8 training steps were left out: their gradients were not finite" in done.stderr, done.stderr
        assert np.array_equal(weights["out"]["w1"], weights["student"]["w1"])


@pytest.mark.parametrize("declared", [False, True], ids=["read_from_the_graph", "declared_values"])
def test_a_head_declared_as_values_is_distilled_as_values(tmp_path, declared):
    """A Dense head of several scores reads as class logits, distilled by KL, which is blind to one shift
    of every score (a regression head's whole error can be that shift). `--output-kind logits=values`
    distils it by squared error: the shift is learnt away. Only that head trains (--loss-weights)."""
    from onnx import numpy_helper

    onnx.save(two_heads(seed=0), tmp_path / "teacher.onnx")
    onnx.save(two_heads(seed=0, shift=5.0), tmp_path / "student.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x_train=rng.standard_normal((256, 8)).astype(np.float32),
             x_test=rng.standard_normal((64, 8)).astype(np.float32))
    done = onnxprune("train", tmp_path / "student.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "npz",
                     "--data-dir", tmp_path / "x.npz", "--no-normalize", "--epochs", "2", "--optimizer", "sgd",
                     "--lr", "0.5", "--weight-decay", "0", "--loss-weights", "features=0", "-o", tmp_path / "out.onnx",
                     "-q", *(["--output-kind", "logits=values"] if declared else []))
    assert done.returncode == 0, done.stderr
    shift = numpy_helper.to_array({t.name: t for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}["b2"])
    if declared:
        assert shift.mean() < 4.8  # moved toward the teacher's 0
    else:  # KL's gradients over the classes sum to 0: SGD leaves their common shift where it was
        assert shift.mean() == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize("extra, words", [
    (["--teacher", "T", "--output-kind", "boxes=values"], "--output-kind names no float output of the model: 'boxes'"),
    (["--teacher", "T", "--output-kind", "logits=scores"], "expected NAME=KIND"),
    (["--output-kind", "logits=values"], "--output-kind applies with --teacher only"),
    (["--teacher", "T", "--loss-weights", "boxes=1"], "names no output of the model: ['boxes']"),
    (["--teacher", "T", "--loss-weights", "logits=-1"], "expected NAME=W,... with finite weights >= 0"),
    (["--loss-weights", "logits=1"], "--loss-weights applies with --teacher only"),
])
def test_bad_loss_weights_are_one_line_exit_2(tmp_path, extra, words):
    onnx.save(two_heads(), tmp_path / "m.onnx")
    np.savez(tmp_path / "x.npz", x_train=np.zeros((16, 8), np.float32), y_train=np.zeros(16, np.int64),
             x_test=np.zeros((8, 8), np.float32), y_test=np.zeros(8, np.int64))
    extra = [str(tmp_path / "m.onnx") if e == "T" else e for e in extra]
    out = tmp_path / "out.onnx"
    done = onnxprune("train", tmp_path / "m.onnx", *extra, "--dataset", "npz", "--data-dir", tmp_path / "x.npz",
                     "--epochs", "1", "-o", out)
    assert done.returncode == 2 and not out.exists(), done.stderr
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr


def test_approximate_removal_of_the_hidden_size_recovers(tmp_path):
    """`prune --approximate` shrinks the residual stream (LayerNorms then normalize over the kept
    channels, which moves the output before any training); label-free distillation brings the pruned
    model back toward the original: lower KL and at least the agreement it had right after pruning."""
    import torch

    from models.torch_nets import AttentionStack, export

    torch.manual_seed(0)
    onnx.save(export(AttentionStack(layers=1, d=32, inputs=8, heads=4), (1, 6, 8), dynamo=True), tmp_path / "b.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", input=rng.standard_normal((400, 6, 8)).astype(np.float32))
    np.savez(tmp_path / "heldout.npz", input=rng.standard_normal((200, 6, 8)).astype(np.float32))
    pruned, recovered = tmp_path / "pruned.onnx", tmp_path / "recovered.onnx"
    done = onnxprune("prune", tmp_path / "b.onnx", "--structure", "channel", "--macs", "0.5", "--round-to", "1",
                     "--approximate", "--report", tmp_path / "p.json", "-o", pruned, "-q")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "p.json").read_text())["approximate"]["channels"]
    before = agreement(pruned, tmp_path / "b.onnx", tmp_path / "heldout.npz", tmp_path)["outputs"]["logits"]
    done = onnxprune("train", pruned, "--teacher", tmp_path / "b.onnx", "--dataset", "npz", "--data-dir",
                     tmp_path / "train.npz", "--epochs", "2", "--batch-size", "1", "-o", recovered, "-q")
    assert done.returncode == 0, done.stderr  # torch.export fixes the batch at 1
    after = agreement(recovered, tmp_path / "b.onnx", tmp_path / "heldout.npz", tmp_path)["outputs"]["logits"]
    assert after["kl"] < 0.5 * before["kl"] and after["top1_agreement"] >= before["top1_agreement"]


def test_random_inputs_recover_without_any_data(tmp_path):
    """`--dataset random` draws inputs from each input's type (no file at all); agreement on other
    random inputs (`compare --data random`, another seed) rises above the student's own."""
    onnx.save(two_heads(seed=0), tmp_path / "teacher.onnx")
    onnx.save(two_heads(seed=1), tmp_path / "student.onnx")
    before = agreement(tmp_path / "student.onnx", tmp_path / "teacher.onnx", "random", tmp_path)
    done = onnxprune("train", tmp_path / "student.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "random",
                     "--epochs", "2", "--lr", "0.01", "-o", tmp_path / "out.onnx", "-q")
    assert done.returncode == 0, done.stderr
    after = agreement(tmp_path / "out.onnx", tmp_path / "teacher.onnx", "random", tmp_path)
    assert after["outputs"]["logits"]["kl"] < before["outputs"]["logits"]["kl"]
    assert after["outputs"]["features"]["relative_l2"] < before["outputs"]["features"]["relative_l2"]


@pytest.mark.parametrize("extra, words", [([], "--dataset random has no labels"),
                                          (["--teacher", "T", "--alpha", "0.5"], "--dataset random has no labels")])
def test_random_data_without_a_teacher_is_refused(tmp_path, extra, words):
    onnx.save(two_heads(), tmp_path / "m.onnx")
    extra = [str(tmp_path / "m.onnx") if e == "T" else e for e in extra]
    done = onnxprune("train", tmp_path / "m.onnx", "--dataset", "random", *extra, "--epochs", "1", "-o", tmp_path / "o.onnx")
    assert done.returncode == 2 and not (tmp_path / "o.onnx").exists(), done.stderr
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr


def test_a_saturated_sigmoid_map_still_learns(tmp_path):
    """A Sigmoid output (a detector's map) is distilled as per-pixel Bernoulli distributions: a student
    whose map is stuck near 1 (its head bias +12: squared error's gradient carries p(1-p) ~ 6e-6)
    moves towards the teacher under plain SGD."""
    import torch
    from torch import nn

    from models.torch_nets import export

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1), nn.Sigmoid())
    onnx.save(export(net, (1, 3, 16, 16)), tmp_path / "teacher.onnx")
    with torch.no_grad():
        net[2].bias += 12.0
    onnx.save(export(net, (1, 3, 16, 16)), tmp_path / "student.onnx")
    before = agreement(tmp_path / "student.onnx", tmp_path / "teacher.onnx", "random", tmp_path)
    done = onnxprune("train", tmp_path / "student.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "random",
                     "--epochs", "1", "--optimizer", "sgd", "--lr", "0.1", "-o", tmp_path / "out.onnx",
                     "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    after = agreement(tmp_path / "out.onnx", tmp_path / "teacher.onnx", "random", tmp_path)
    (name, b), = before["outputs"].items()
    a = after["outputs"][name]
    assert b["kind"] == a["kind"] == "values"
    assert a["relative_l2"] < 0.5 * b["relative_l2"], (b, a)
    # the per-epoch figure of a map is its cosine to the teacher, as compare measures it (other inputs)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["test_accuracy_means"] == "cosine to the teacher" and "test cosine to the teacher" in done.stdout
    assert report["final"]["test_accuracy"] == pytest.approx(a["cosine"], abs=0.02)


def test_per_timestep_probabilities_are_distilled_per_position(tmp_path):
    """A recognizer's output [N, T, C] made by a Softmax over the last axis (PP-OCR's CTC head) holds
    one distribution per timestep: compare reads it as class scores per position, and recovery
    distils KL per position, so the pruned model's KL falls and its per-timestep agreement rises."""
    import torch
    from torch import nn

    from models.torch_nets import export

    class Recognizer(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv1d(4, 32, 3, padding=1), nn.ReLU(), nn.Conv1d(32, 32, 1), nn.ReLU())
            self.head = nn.Linear(32, 12)

        def forward(self, x):
            return torch.softmax(self.head(self.features(x).transpose(1, 2)), dim=-1)

    torch.manual_seed(0)
    onnx.save(export(Recognizer(), (1, 4, 16)), tmp_path / "dense.onnx")
    _prune_channels(tmp_path / "dense.onnx", tmp_path / "pruned.onnx", "0.5")
    before = agreement(tmp_path / "pruned.onnx", tmp_path / "dense.onnx", "random", tmp_path)["outputs"]["logits"]
    assert before["kind"] == "probs" and before["top1_agreement"] < 1
    done = onnxprune("train", tmp_path / "pruned.onnx", "--teacher", tmp_path / "dense.onnx", "--dataset", "random",
                     "--epochs", "2", "--lr", "0.01", "-o", tmp_path / "out.onnx", "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    after = agreement(tmp_path / "out.onnx", tmp_path / "dense.onnx", "random", tmp_path)["outputs"]["logits"]
    assert after["kl"] < 0.5 * before["kl"] and after["top1_agreement"] > before["top1_agreement"], (before, after)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["test_accuracy_means"] == "top-1 agreement with the teacher"
    assert report["final"]["test_accuracy"] == pytest.approx(after["top1_agreement"], abs=0.03)


@pytest.mark.parametrize("option, changes", [([], True), (["--bn-statistics", "frozen"], False)])
def test_batchnorm_statistics_update_unless_frozen(tmp_path, option, changes):
    """Recovery trains BatchNormalization on batch statistics and writes the updated running ones back
    (a pruned CNN's activations moved); `--bn-statistics frozen` normalizes with the trained running
    statistics and leaves them as they are (a recovery set unlike the original's data)."""
    import torch
    from torch import nn

    from models.torch_nets import export, randomize_batchnorm

    torch.manual_seed(0)
    net = randomize_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                                            nn.Linear(8 * 6 * 6, 4)))
    onnx.save(export(net, (1, 3, 8, 8)), tmp_path / "teacher.onnx")
    done = onnxprune("train", tmp_path / "teacher.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "random",
                     "--epochs", "1", *option, "-o", tmp_path / "out.onnx", "-q")
    assert done.returncode == 0, done.stderr

    def statistics(path):
        model = onnx.load(str(path))
        [bn] = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
        values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        return np.concatenate([values[bn.input[3]], values[bn.input[4]]])

    before, after = statistics(tmp_path / "teacher.onnx"), statistics(tmp_path / "out.onnx")
    assert (not np.allclose(before, after)) == changes


def test_unknown_batchnorm_statistics_is_refused(tmp_path):
    """A TrainRequest with a --bn-statistics the engine does not implement fails in one line before
    training, instead of acting as one of them; the command offers exactly the engine's choices."""
    from onnxprune import choices
    from onnxprune.commands.train import train as train_command
    from onnxprune.errors import OnnxPruneError
    from onnxprune.train.run import TrainRequest, train

    offered = next(p.type.choices for p in train_command.params if p.name == "bn_statistics")
    assert tuple(offered) == choices.BN_STATISTICS
    lenet = Path(__file__).resolve().parents[1] / "models" / "zoo" / "lenet5.onnx"
    request = TrainRequest(model=lenet, dataset="random", data_dir=None, bn_statistics="freeze",
                           output=tmp_path / "out.onnx", quiet=True)
    with pytest.raises(OnnxPruneError, match="unknown .*freeze.*update, frozen, recalibrate"):
        train(request, warn=lambda _: None)
    assert not (tmp_path / "out.onnx").exists()


def test_recalibrated_batchnorm_statistics_fit_the_data(tmp_path):
    """`--bn-statistics recalibrate` re-estimates the running statistics on the training inputs before
    training (then keeps them): with no epoch at all, a BatchNorm after a convolution of N(0, 1) inputs
    holds that convolution's mean (its bias) and variance (its filter's squared norm), not the
    randomized statistics the file came with."""
    import torch
    from torch import nn

    from models.torch_nets import export, randomize_batchnorm

    torch.manual_seed(0)
    net = randomize_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                                            nn.Linear(8 * 6 * 6, 4)))
    onnx.save(export(net, (1, 3, 8, 8)), tmp_path / "teacher.onnx")
    done = onnxprune("train", tmp_path / "teacher.onnx", "--teacher", tmp_path / "teacher.onnx", "--dataset", "random",
                     "--epochs", "0", "--bn-statistics", "recalibrate", "-o", tmp_path / "out.onnx", "-q")
    assert done.returncode == 0, done.stderr
    model = onnx.load(str(tmp_path / "out.onnx"))
    [bn] = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weight, bias = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    assert np.allclose(values[bn.input[3]], bias, atol=0.05), (values[bn.input[3]], bias)
    assert np.allclose(values[bn.input[4]], (weight ** 2).sum((1, 2, 3)), rtol=0.1)


def _map_net():
    """A small trained-looking detector head: Conv-BN-ReLU, Conv-ReLU, a 1x1 Conv into a Sigmoid map."""
    import torch
    from torch import nn

    from models.torch_nets import export, randomize_batchnorm

    torch.manual_seed(0)
    net = randomize_batchnorm(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1),
                                            nn.Sigmoid()))
    return export(net, (1, 3, 16, 16))


def _prune_channels(source: Path, target: Path, macs: str) -> None:
    done = onnxprune("prune", source, "--structure", "channel", "--macs", macs, "--round-to", "1", "-o", target, "-q")
    assert done.returncode == 0, done.stderr


def test_layer_targets_are_the_teachers_kept_channels(tmp_path):
    """Each tapped layer's target is the teacher's output at the channels the pruned layer kept, read
    from the pruned file's record, across two prunings: the first Conv reads the unpruned input, so
    its pruned output equals the original's at those channels exactly; a later one differs (its
    inputs lost channels) and is what the layer term trains."""
    import torch

    from onnxprune.train.features import FeatureMatch, layer_taps
    from onnxprune.twin import Twin

    onnx.save(_map_net(), tmp_path / "dense.onnx")
    for source, target, macs in (("dense", "once", "0.7"), ("once", "twice", "0.7")):
        _prune_channels(tmp_path / f"{source}.onnx", tmp_path / f"{target}.onnx", macs)
    twice = onnx.load(str(tmp_path / "twice.onnx"))
    widths = [t.dims[0] for n in twice.graph.node if n.op_type == "Conv"
              for t in twice.graph.initializer if t.name == n.input[1]]
    x = torch.randn(4, 3, 16, 16)
    for name in ("dense", "once"):  # the original, or the file the second pruning started from
        original = onnx.load(str(tmp_path / f"{name}.onnx"))
        taps = layer_taps(twice, original)
        assert [t.name for t in taps] == [n.output[0] for n in original.graph.node if n.op_type == "Conv"]
        assert [len(t.kept) for t in taps] == widths
        match = FeatureMatch(taps, 1.0)
        student, teacher = Twin(twice).eval(), Twin(original).eval()
        with torch.no_grad(), match.tapped(student, teacher):
            student(x), teacher(x)
            first, later = match._pair(taps[0]), match._pair(taps[1])
            assert float(match.loss()) > 0
        torch.testing.assert_close(first[0], first[1], rtol=1e-5, atol=1e-5)
        assert later[0].shape == later[1].shape and not torch.allclose(later[0], later[1], atol=1e-3)
    assert widths[0] < 16 and widths[1] < 32


def test_layer_matching_recovers_a_pruned_map(tmp_path):
    """`train --teacher --feature-weight`: a channel-pruned map model learns the original's layers and
    its map moves towards the teacher's (compare on other random inputs); the report counts the layers."""
    onnx.save(_map_net(), tmp_path / "dense.onnx")
    _prune_channels(tmp_path / "dense.onnx", tmp_path / "pruned.onnx", "0.4")
    before = agreement(tmp_path / "pruned.onnx", tmp_path / "dense.onnx", "random", tmp_path)
    done = onnxprune("train", tmp_path / "pruned.onnx", "--teacher", tmp_path / "dense.onnx", "--dataset", "random",
                     "--epochs", "2", "--lr", "0.01", "--feature-weight", "1", "--bn-statistics", "frozen",
                     "-o", tmp_path / "out.onnx", "--report", tmp_path / "r.json", "-q")
    assert done.returncode == 0, done.stderr
    after = agreement(tmp_path / "out.onnx", tmp_path / "dense.onnx", "random", tmp_path)
    (name, b), = before["outputs"].items()
    assert after["outputs"][name]["relative_l2"] < 0.5 * b["relative_l2"], (b, after["outputs"][name])
    assert json.loads((tmp_path / "r.json").read_text())["feature_layers"] == 3


@pytest.mark.parametrize("teacher, extra, words", [
    ("twice", ["--feature-weight", "1"], "does not continue the teacher's"),
    ("twice", ["--reconstruct", "8"], "does not continue the teacher's"),
    (None, ["--feature-weight", "1"], "--feature-weight applies with --teacher only"),
    (None, ["--reconstruct", "8"], "--reconstruct applies with --teacher only")])
def test_layer_matching_needs_the_original(tmp_path, teacher, extra, words):
    """Layer targets come from the file the model was pruned from: a teacher pruned further than the
    model, or no teacher at all, is one line and exit 2, before any training, and nothing is written."""
    onnx.save(_map_net(), tmp_path / "dense.onnx")
    for source, target in (("dense", "once"), ("once", "twice")):
        assert onnxprune("prune", tmp_path / f"{source}.onnx", "--structure", "channel", "--macs", "0.7",
                         "-o", tmp_path / f"{target}.onnx", "-q").returncode == 0
    options = ["--teacher", tmp_path / f"{teacher}.onnx"] if teacher else []
    done = onnxprune("train", tmp_path / "once.onnx", *options, "--dataset", "random", "--epochs", "1", *extra,
                     "-o", tmp_path / "out.onnx")
    assert done.returncode == 2 and not (tmp_path / "out.onnx").exists(), done.stderr
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr


def _redundant_net(kind: str = "conv"):
    """Conv(3->16), ReLU, Conv(16->8), ReLU, Conv(8->1) (or the same widths as Linear layers over [N, 3]:
    Gemm), the first two's filters 4 filters repeated (each copy perturbed
    by 1 %): a removed channel has near-copies left, so the refit next layer can take over its part,
    as in trained networks whose channels correlate."""
    import torch
    from torch import nn

    from models.torch_nets import export

    torch.manual_seed(0)
    layer = (lambda i, o, k: nn.Conv2d(i, o, k, padding=k // 2)) if kind == "conv" else (lambda i, o, k: nn.Linear(i, o))
    net = nn.Sequential(layer(3, 16, 3), nn.ReLU(), layer(16, 8, 3), nn.ReLU(), layer(8, 1, 1))
    with torch.no_grad():
        for conv in (net[0], net[2]):
            copies = conv.weight.shape[0] // 4
            conv.weight.copy_(conv.weight[:4].repeat(copies, *[1] * (conv.weight.dim() - 1))
                              * (1 + 0.01 * torch.randn_like(conv.weight)))
            conv.bias.copy_(conv.bias[:4].repeat(copies))
    return export(net, {"conv": (1, 3, 12, 12), "gemm": (1, 3)}[kind])


@pytest.mark.parametrize("kind, op", [("conv", "Conv"), ("gemm", "Gemm")])
def test_least_squares_refit_takes_over_removed_channels(tmp_path, kind, op):
    """`train --teacher --reconstruct N --epochs 0`: each pruned layer is refitted, in graph order, to
    the original's output at its kept channels; where removed channels have near-copies left, the
    pruned model comes back close to the original (other random inputs), with no epoch at all."""
    onnx.save(_redundant_net(kind), tmp_path / "dense.onnx")
    assert [n.op_type for n in onnx.load(str(tmp_path / "dense.onnx")).graph.node].count(op) == 3
    _prune_channels(tmp_path / "dense.onnx", tmp_path / "pruned.onnx", "0.5")
    before = agreement(tmp_path / "pruned.onnx", tmp_path / "dense.onnx", "random", tmp_path)
    done = onnxprune("train", tmp_path / "pruned.onnx", "--teacher", tmp_path / "dense.onnx", "--dataset", "random",
                     "--epochs", "0", "--reconstruct", "256", "-o", tmp_path / "out.onnx", "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    after = agreement(tmp_path / "out.onnx", tmp_path / "dense.onnx", "random", tmp_path)
    (name, b), = before["outputs"].items()
    a = after["outputs"][name]
    assert b["relative_l2"] > 0.1 and a["relative_l2"] < 0.2 * b["relative_l2"], (b, a)
    fitted = json.loads((tmp_path / "r.json").read_text())["reconstructed"]
    assert fitted["layers"] == 3 and fitted["skipped"] == [] and "refitted 3 layers" in done.stderr
    shapes = {t.name: list(t.dims) for t in onnx.load(str(tmp_path / "pruned.onnx")).graph.initializer}
    assert all(shapes[t.name] == list(t.dims) for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer)


def test_least_squares_refit_keeps_a_sparse_layers_zeros(tmp_path):
    """A layer that weight pruning left sparse is not refitted (a least-squares fit would fill its
    zeros): its zeros and values stay; the dense layers around it are refitted."""
    onnx.save(_redundant_net(), tmp_path / "dense.onnx")
    _prune_channels(tmp_path / "dense.onnx", tmp_path / "pruned.onnx", "0.5")
    model = onnx.load(str(tmp_path / "pruned.onnx"))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    [w] = [t for t in model.graph.initializer if t.name == conv.input[1]]
    value = onnx.numpy_helper.to_array(w).copy()
    value[:, :, 0, :] = 0  # a sparse layer, as weight pruning writes it
    w.CopyFrom(onnx.numpy_helper.from_array(value, w.name))
    onnx.save(model, tmp_path / "sparse.onnx")
    done = onnxprune("train", tmp_path / "sparse.onnx", "--teacher", tmp_path / "dense.onnx", "--dataset", "random",
                     "--epochs", "0", "--reconstruct", "64", "--format", "dense", "-o", tmp_path / "out.onnx",
                     "--report", tmp_path / "r.json", "-q")
    assert done.returncode == 0, done.stderr
    fitted = json.loads((tmp_path / "r.json").read_text())["reconstructed"]
    assert fitted["layers"] == 2 and fitted["skipped"] == [conv.output[0]]
    out = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    np.testing.assert_array_equal(out[w.name], value)
