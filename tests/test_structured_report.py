"""What `onnxprune prune --structure channel` prints and plots, through the installed command.

The per-layer table is read back from stdout and compared with the JSON report's `layers`, so a table
that drifts from the figures it claims to show fails here; the plot is read back as a PNG.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from matplotlib.image import imread
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.torch_nets import export
from onnxprune.io import save_model

EXE = Path(sys.executable).parent / "onnxprune"
SEP = r"\s*[│|]\s*"  # rich's column rule (ASCII where the terminal cannot draw boxes)
ROW = re.compile(rf"^{SEP}(\S+){SEP}(\d+) -> (\d+){SEP}([\d,]+) -> ([\d,]+){SEP}(\d+\.\d+){SEP}(\w*){SEP}$")


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stem, a residual block (its Add ties two layers' channels), a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                                   nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.wide = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.wide(x).mean((2, 3)))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    save_model(export(SmallCNN(), (1, 3, 16, 16)), path)
    return path


def prune(model: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "prune", str(model), "--structure", "channel", "-m", "mag", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def table_rows(stdout: str) -> list[tuple]:
    """(name, channels before, after, MACs before, after, fraction kept, limit) of each printed row, total
    last (its limit cell empty)."""
    rows = []
    for line in stdout.splitlines():
        if match := ROW.match(line):
            name, *numbers, fraction, limit = match.groups()
            rows.append((name, *(int(n.replace(",", "")) for n in numbers), float(fraction), limit))
    return rows


def test_table_and_plot_match_the_json_report(cnn, tmp_path):
    out, report, plot = tmp_path / "small.onnx", tmp_path / "r.json", tmp_path / "kept.png"
    done = prune(cnn, "--macs", "0.5", "-o", out, "--report", report, "--plot", plot)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"wrote {out}, {report}, {plot}"
    layers = json.loads(report.read_text())["layers"]
    rows = table_rows(done.stdout)
    assert len(rows) == len(layers) + 1, done.stdout
    for row, layer in zip(rows, layers):
        assert row[:5] == (layer["name"], layer["channels"], layer["kept"], round(layer["macs"]),
                           round(layer["macs_kept"])), done.stdout
        assert row[5] == pytest.approx(layer["macs_kept"] / layer["macs"], abs=5e-4)
        assert row[6] == layer["limit"]
    assert any(layer["kept"] < layer["channels"] for layer in layers), "nothing pruned: the test is blind"
    total = rows[-1]
    assert total[0] == "total"
    assert total[1:5] == (sum(la["channels"] for la in layers), sum(la["kept"] for la in layers),
                          round(sum(la["macs"] for la in layers)), round(sum(la["macs_kept"] for la in layers)))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, *_ = imread(plot).shape
    assert height > 100 and width > 100


def test_an_existing_plot_is_kept_without_overwrite(cnn, tmp_path):
    plot, out = tmp_path / "kept.png", tmp_path / "small.onnx"
    plot.write_bytes(b"mine")
    done = prune(cnn, "--macs", "0.5", "-o", out, "--plot", plot)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: output {plot} already exists; pass --overwrite to replace it"]
    assert plot.read_bytes() == b"mine" and not out.exists()
    weight = subprocess.run([str(EXE), "prune", str(cnn), "-c", "1", "-o", str(out), "--plot", str(plot)],
                            capture_output=True, text=True, timeout=300)
    assert (weight.returncode, weight.stderr) == (2, done.stderr)  # the weight-level mode's refusal, word for word
    quiet = prune(cnn, "--macs", "0.5", "-o", out, "--plot", plot, "--overwrite", "-q")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stderr  # -q: no table, the plot still written
    assert imread(plot).size > 0


def test_prune_bias_is_still_refused(cnn, tmp_path):
    done = prune(cnn, "--macs", "0.5", "-o", tmp_path / "small.onnx", "--prune-bias")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["error: --prune-bias does not apply to --structure channel"]


def test_generated_node_names_show_as_weight_names(cnn, tmp_path):
    """torch.export names nodes node_Conv_584: the table and report name such layers by their weight."""
    model = onnx.load(str(cnn))
    for i, node in enumerate(model.graph.node):
        node.name = f"node_{node.op_type}_{i}" if i % 2 else ""  # both kinds of generated name
    save_model(model, tmp_path / "generated.onnx")
    report = tmp_path / "r.json"
    done = prune(tmp_path / "generated.onnx", "--macs", "0.5", "-o", tmp_path / "small.onnx", "--report", report)
    assert done.returncode == 0, done.stderr
    layers = json.loads(report.read_text())["layers"]
    weights = {t.name for t in model.graph.initializer}
    assert [layer["name"] for layer in layers] == [row[0] for row in table_rows(done.stdout)[:-1]]
    assert all(layer["name"] in weights for layer in layers), [layer["name"] for layer in layers]
    assert "node_Conv" not in done.stdout
    own = prune(cnn, "--macs", "0.5", "-o", tmp_path / "own.onnx", "--report", tmp_path / "own.json")
    assert [la["name"] for la in json.loads((tmp_path / "own.json").read_text())["layers"]][0] == "/stem/stem.0/Conv"


def test_a_pruned_model_no_faster_draws_one_warning(tmp_path):
    """A 1024x1024 product of two activations (nothing to prune there) dwarfs the one prunable 8-unit
    layer (0.8 % of the MACs): removing half its units leaves the model as fast as before, and
    --benchmark says so in one line, even with -q. Timing is what it is on a shared machine, so the
    test holds the warning to the measurement it reports: one line exactly when the speed-up is < 1.05."""
    n = 1024
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
               for name, shape in (("square", [n, n]), ("small", [n, 4]))]
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (n, 8)), ("w2", (8, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "x"], ["square"]), helper.make_node("Gemm", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "w2"], ["small"])]
    model = helper.make_model(helper.make_graph(nodes, "slow", [x], outputs, weights),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save_model(model, tmp_path / "slow.onnx")
    report = tmp_path / "r.json"
    done = subprocess.run([str(EXE), "prune", str(tmp_path / "slow.onnx"), "--structure", "channel", "--density",
                           "0.5", "--benchmark", "-q", "-o", str(tmp_path / "out.onnx"), "--report", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    speedup = json.loads(report.read_text())["latency"]["speedup"]
    lines = done.stderr.strip().splitlines()
    if speedup < 1.05:
        [line] = lines
        assert line.startswith("warning: the pruned model is not faster in onnxruntime") and "--round-to" in line
        assert f"({speedup:.2f}x:" in line
    else:
        assert lines == [], lines


@pytest.mark.parametrize("fmt", ["sparse", "dense"])
def test_format_is_refused_in_channel_mode(cnn, tmp_path, fmt):
    """The rewritten graph is dense: a storage format means nothing there, and is refused, not ignored."""
    done = prune(cnn, "--macs", "0.5", "-o", tmp_path / "small.onnx", "--format", fmt)
    assert done.returncode == 2 and not (tmp_path / "small.onnx").exists()
    assert done.stderr.strip().splitlines() == [
        "error: --format does not apply to --structure channel (the output is a dense, smaller graph)"]
