"""Channel criteria for trained weights (onnxprune/structured/importance.py), through the installed command.

One prunable layer (Conv 8 -> BN -> ReLU -> pool -> Linear 8 -> 5 outputs, the outputs frozen), with
planted channels: each criterion must remove the channels planted for it, and only those.
  - channels 1, 4: filter and Linear columns x0.01 (small group magnitude: l1, l2);
  - channels 2, 6: BatchNorm scale x0.01, weights as they are (small normalization scale: bn);
  - channels 3, 5: Linear columns exactly 0, so the outputs do not depend on them (taylor: score 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from models.torch_nets import export

EXE = Path(sys.executable).parent / "onnxprune"
PLANTED = {"l1": [1, 4], "l2": [1, 4], "bn": [2, 6], "taylor": [3, 5]}


def onnxprune(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        conv, bn, fc = net[0], net[1], net[5]
        bn.bias.uniform_(0.5, 1.0)  # every channel passes something through the ReLU
        bn.weight.uniform_(0.8, 1.2)
        conv.weight[[1, 4]] *= 0.01
        fc.weight[:, [1, 4]] *= 0.01
        bn.weight[[2, 6]] *= 0.01
        fc.weight[:, [3, 5]] = 0
    folder = tmp_path_factory.mktemp("planted")
    onnx.save(export(net, (1, 3, 8, 8)), folder / "net.onnx")
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    np.savez(folder / "inputs.npz", x_train=x, y_train=np.zeros(64, np.int64))
    return folder


@pytest.mark.parametrize("method", sorted(PLANTED))
def test_each_criterion_removes_its_planted_channels(planted, tmp_path, method):
    data = ["--data", planted / "inputs.npz"] if method == "taylor" else []
    # each channel holds 1/8 of every layer's MACs: keeping 0.75 (+ rounding slack) removes exactly two
    done = onnxprune("prune", planted / "net.onnx", "--structure", "channel", "--macs", "0.751", "-m", method,
                     *data, "-o", tmp_path / "out.onnx", "--report", tmp_path / "r.json", "-q")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    conv = next(k for k in report["kept_indices"] if k.endswith(":0") and "0.weight" in k)
    assert sorted(set(range(8)) - set(report["kept_indices"][conv])) == PLANTED[method]
    assert report["method"] == method and report["removed"] == 2


@pytest.mark.parametrize("data, method", [(False, "l2"), (True, "taylor")])
def test_default_is_taylor_with_data_else_group_l2_per_layer(planted, tmp_path, data, method):
    given = ["--data", planted / "inputs.npz"] if data else []
    done = onnxprune("prune", planted / "net.onnx", "--structure", "channel", "--macs", "0.751", *given,
                     "-o", tmp_path / "out.onnx", "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["method"], report["scope"]) == (method, "local")
    conv = next(k for k in report["kept_indices"] if k.endswith(":0") and "0.weight" in k)
    assert sorted(set(range(8)) - set(report["kept_indices"][conv])) == PLANTED[method]
    assert "limit" in done.stdout and "budget" in done.stdout and "frozen" in done.stdout  # the table's column


@pytest.mark.parametrize("method", ["l2", "taylor"])
def test_no_layer_is_ever_emptied(tmp_path, method):
    """A target below reach on LeNet-5: exit 2 naming the least reachable; with --best-effort every
    layer keeps a channel, the table says the floor bound them, and the file verifies."""
    src = Path(__file__).resolve().parents[1] / "models" / "zoo" / "lenet5.onnx"
    data = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.standard_normal((32, 1, 28, 28)).astype(np.float32), y_train=np.zeros(32, np.int64))
    out = tmp_path / "tiny.onnx"
    args = ["prune", src, "--structure", "channel", "--macs", "0.001", "-m", method,
            *(("--data", data) if method == "taylor" else ()), "--scope", "global", "-o", out,
            "--report", tmp_path / "r.json", "-q"]
    refused = onnxprune(*args)
    assert refused.returncode == 2 and not out.exists() and not (tmp_path / "r.json").exists()
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach --macs 0.001: the least that can be kept is 0.0")
    assert "'logits' is a graph output" in line and "--best-effort" in line
    done = onnxprune(*args, "--best-effort")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == ["warning: the target 0.001 was not reached (--best-effort): "
                                                f"{line.split('is ')[1][:5]} kept"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["target_reached"] is False
    layers = report["layers"]
    assert all(layer["kept"] >= 1 for layer in layers)
    assert {layer["limit"] for layer in layers[:-1]} == {"floor"}  # the classifier's outputs are frozen
    assert onnxprune("verify", out, "--reference", src).returncode == 0


def test_taylor_without_data_is_one_line_and_writes_nothing(planted, tmp_path):
    out = tmp_path / "out.onnx"
    done = onnxprune("prune", planted / "net.onnx", "--structure", "channel", "--macs", "0.5", "-m", "taylor",
                     "-o", out)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().count("\n") == 0 and "--data" in done.stderr, done.stderr


def test_channel_criterion_needs_channel_mode(planted, tmp_path):
    out = tmp_path / "out.onnx"
    done = onnxprune("prune", planted / "net.onnx", "-c", "1", "-m", "l2", "-o", out)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().count("\n") == 0 and "--structure channel" in done.stderr, done.stderr


def test_latency_target_reports_its_search_and_measurement(planted, tmp_path):
    """--latency bisects the MAC fraction on measured onnxruntime latency; the report and the summary
    carry the target, the search's steps, its prediction and a separate measurement. (How close the
    measurement comes is a timing, measured by scripts/bench_widths.py, not asserted here.)"""
    report = tmp_path / "r.json"
    done = onnxprune("prune", planted / "net.onnx", "--structure", "channel", "--latency", "0.7",
                     "-o", tmp_path / "out.onnx", "--report", report)
    assert done.returncode == 0, done.stderr
    fit = json.loads(report.read_text())["latency_fit"]
    assert fit["target"] == 0.7 and len(fit["steps"]) == 7 and fit["measured"] > 0
    assert fit["macs"] in [step["macs"] for step in fit["steps"]]
    fits = [step["macs"] for step in fit["steps"] if step["latency"] <= 0.7]
    assert fit["macs"] == (max(fits) if fits else min(step["macs"] for step in fit["steps"]))
    assert "latency kept (onnxruntime CPU, batch 1, one thread): target 0.7" in done.stdout


@pytest.mark.parametrize("args, words", [(["--latency", "0.5", "--macs", "0.5"], "give exactly one of --latency"),
                                         (["--latency", "0.5", "-m", "synflow"], "--latency works with the channel"),
                                         (["--latency", "1.5"], "--latency must be in (0, 1]")])
def test_latency_errors_are_one_line(planted, tmp_path, args, words):
    out = tmp_path / "out.onnx"
    done = onnxprune("prune", planted / "net.onnx", "--structure", "channel", *args, "-o", out)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr


def test_taylor_on_a_batch_past_the_memory_budget_runs_in_chunks(planted, monkeypatch):
    """A batch whose activations would pass importance.ACTIVATION_BUDGET is scored in row chunks
    (the per-direction sums add up before squaring): the planted channels still go."""
    import importlib

    from onnxprune.structured import analyze, prune_channels

    importance = importlib.import_module("onnxprune.structured.importance")  # the module, not its function
    model = onnx.load(str(planted / "net.onnx"))
    whole = importance._chunk_rows(analyze(model), 8)
    assert whole >= 64  # this tiny net scores a 64-row batch in one pass
    monkeypatch.setattr(importance, "ACTIVATION_BUDGET", importance.ACTIVATION_BUDGET * 4.5 / whole)
    assert importance._chunk_rows(analyze(model), 8) == 4
    x = torch.from_numpy(np.load(planted / "inputs.npz")["x_train"])
    result = prune_channels(model, macs=0.751, method="taylor", batches=[(x, None)])
    conv = next(k for k in result.report["kept_indices"] if k.endswith(":0") and "0.weight" in k)
    assert sorted(set(range(8)) - set(result.report["kept_indices"][conv])) == PLANTED["taylor"]


@pytest.mark.parametrize("declared", [False, True], ids=["read_from_the_graph", "declared_values"])
def test_taylor_reads_a_head_declared_as_values(tmp_path, declared):
    """Hidden unit 0 adds the same large amount to each of three scores. Read from the graph, the
    head is class logits, and taylor's Fisher directions sum to 0 over the classes: blind to a common
    shift, unit 0 scores about 0 and goes first. `--output-kind logits=values` (a regression head,
    DNSMOS' SIG/BAK/OVRL) draws plain directions: unit 0 moves the outputs most and stays."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[0].bias.fill_(1.0)  # every unit passes something through the ReLU
        net[2].weight[:, 0] = 3.0
    onnx.save(export(net, (1, 4)), tmp_path / "head.onnx")
    np.savez(tmp_path / "x.npz", x_train=np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
    done = onnxprune("prune", tmp_path / "head.onnx", "--structure", "channel", "--macs", "0.5", "--round-to", "1",
                     "-m", "taylor", "--data", tmp_path / "x.npz", "-o", tmp_path / "out.onnx", "--report",
                     tmp_path / "r.json", "-q", *(["--output-kind", "logits=values"] if declared else []))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    hidden = next(k for k in report["kept_indices"] if k.startswith("0.weight"))
    assert report["removed"] >= 2 and (0 in report["kept_indices"][hidden]) == declared


@pytest.mark.parametrize("extra, words", [
    (["-m", "taylor", "--output-kind", "boxes=values"], "--output-kind names no float output of the model: 'boxes'"),
    (["-m", "l2", "--output-kind", "logits=values"], "--output-kind applies with --method taylor only"),
    (["-c", "1", "--output-kind", "logits=values"], "--output-kind applies to --structure channel -m taylor only"),
])
def test_a_bad_output_kind_for_prune_is_one_line_exit_2(planted, tmp_path, extra, words):
    out = tmp_path / "out.onnx"
    channel = [] if "-c" in extra else ["--structure", "channel", "--macs", "0.5"]
    channel += ["--data", planted / "inputs.npz"] if "taylor" in extra else []
    done = onnxprune("prune", planted / "net.onnx", *channel, *extra, "-o", out)
    assert done.returncode == 2 and not out.exists(), done.stderr
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr, done.stderr
