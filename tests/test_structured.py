"""Channel pruning (onnxprune.structured): exactness on small nets and the zoo, budgets, the CLI.

Exactness contract: in onnxruntime the rewritten (physically smaller) model equals the ORIGINAL model
with the removed channels' parameters set to zero (filters, biases, BN scale and shift, per-channel
Add/Mul constants). Zeroing BN's scale and shift makes its output exactly 0 whatever the running mean,
so the removed channel is 0 wherever a consumer reads it; channels whose removed value would not be 0
(a Sigmoid after them, say) are frozen by the analysis, and a test below shows it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import zoo
from models.torch_nets import export
from onnxprune.structured import analyze, prune_channels, rewrite, select, zeroed
from onnxprune.structured.select import cost

TOL = 1e-5


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def rel_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30)) for x, y in zip(a, b))


def check_exact(model: onnx.ModelProto, fraction: float = 0.5, objective: str = "macs", seed: int = 0):
    """Random channel scores, remove to the budget, and compare pruned vs zeroed original."""
    cg = analyze(model)
    scores = np.random.default_rng(seed).random(cg.n_channels)
    removed = select(cg, scores, fraction, objective)
    assert removed.any(), "nothing was removed"
    pruned, reference = rewrite(cg, removed), zeroed(cg, removed)
    onnx.checker.check_model(pruned)
    assert pruned.ByteSize() < model.ByteSize()
    assert pruned.ir_version == model.ir_version and list(pruned.opset_import) == list(model.opset_import)
    feeds = zoo.sample_feeds(model, batch=3)
    got, want, original = run(pruned, feeds), run(reference, feeds), run(model, feeds)
    assert [g.shape for g in got] == [o.shape for o in original]
    assert rel_diff(original, want) > 1e-3, "zeroing the removed channels changed nothing: the test is blind"
    assert rel_diff(got, want) < TOL
    return cg, removed


# ----- small nets, exported with BatchNorm kept ---------------------------------------------------------
def cbr(cin, cout, k=3, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups), nn.BatchNorm2d(cout), nn.ReLU())


class Chain(nn.Sequential):
    def __init__(self):
        super().__init__(cbr(3, 8), cbr(8, 16), nn.MaxPool2d(2), cbr(16, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 5))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a = cbr(3, 8), cbr(8, 12)
        self.b = nn.Sequential(nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.b(self.a(x)))  # the residual Add ties stem and b's channels
        return self.head(x.mean((2, 3)))


class Depthwise(nn.Module):
    """MobileNet-like: expand, depthwise (channel multiplier 2), project, Hardswish and an SE gate."""

    def __init__(self):
        super().__init__()
        self.expand, self.dw = cbr(3, 8, 1), nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.BatchNorm2d(16))
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1),
                                nn.Hardsigmoid())
        self.project, self.head = cbr(16, 8, 1), nn.Linear(8, 3)

    def forward(self, x):
        x = nn.functional.hardswish(self.dw(self.expand(x)))
        x = x * self.se(x)
        return self.head(self.project(x).mean((2, 3)))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 6), cbr(3, 5, 1), cbr(11, 7)
        self.head = nn.Linear(7 * 4 * 4, 3)

    def forward(self, x):
        x = self.c(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 4), 1))


class FlattenMLP(nn.Module):
    """Flatten -> Gemm: the first Linear's inputs come in blocks of H*W per channel."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = cbr(3, 6), nn.Sequential(nn.Linear(6 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 16),
                                                       nn.Tanh(), nn.Linear(16, 4))

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.max_pool2d(self.conv(x), 2), 1))


class FFN(nn.Module):
    """Transformer FFN block on tokens: hidden units of the Linear-GELU-Linear pair are prunable."""

    def __init__(self):
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(12), nn.Linear(12, 48), nn.Linear(48, 12)

    def forward(self, x):
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


class Decoder(nn.Module):
    """U-Net-like: reflection Pad, ConvTranspose, Resize (nearest upsample), a skip Concat, InstanceNorm."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 8, 3, stride=2),
                                  nn.InstanceNorm2d(8, affine=True), nn.LeakyReLU(0.1))
        self.up = nn.Sequential(nn.ConvTranspose2d(8, 6, 2, stride=2), nn.BatchNorm2d(6), nn.ReLU())
        self.mid = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 5, 1), nn.ReLU())
        self.out = nn.Conv2d(3 + 6 + 5, 2, 3, padding=1)

    def forward(self, x):
        d = self.down(x)
        return self.out(torch.cat([x, self.up(d), self.mid(d)], 1))


class TwoBranch(nn.Module):
    """Channel ranges taken apart: a Split with sizes [3, 5] ("split"), or slices x[:, 2:7] and
    x[:, 7:] after a slice across the width ("slice"); the sizes and bounds are rewritten."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode, width = mode, 8 if mode == "split" else 10
        left, right = (3, 5) if mode == "split" else (5, 3)
        self.stem, self.a, self.b = cbr(3, width), cbr(left, 4), cbr(right, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x)
        if self.mode == "split":
            left, right = torch.split(x, [3, 5], dim=1)
        else:
            x = x[:, :, :, 1:]
            left, right = x[:, 2:7], x[:, 7:]
        return self.head(torch.cat([self.a(left), self.b(right)], 1).mean((2, 3)))


SMALL = {"slice": (lambda: TwoBranch("slice"), (1, 3, 16, 16)), "split": (lambda: TwoBranch("split"), (1, 3, 16, 16)),
         "decoder": (Decoder, (1, 3, 16, 16)), "chain": (Chain, (1, 3, 16, 16)), "residual": (Residual, (1, 3, 16, 16)),
         "depthwise": (Depthwise, (1, 3, 16, 16)), "concat": (ConcatNet, (1, 3, 16, 16)),
         "flatten_mlp": (FlattenMLP, (1, 3, 16, 16)), "ffn": (FFN, (1, 5, 12))}


def small(name: str) -> onnx.ModelProto:
    cls, shape = SMALL[name]
    torch.manual_seed(0)
    net = cls()
    zoo._randomize(net, torch.Generator().manual_seed(1))  # BN statistics that are not the identity
    return export(net, shape)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_nets_exact(name):
    cg, removed = check_exact(small(name))
    assert cg.coverage() == 1.0


def test_residual_add_ties_both_branches():
    cg = analyze(small("residual"))
    keys = cg.keys()
    stem = next(ch for (t, ax), ch in keys.items() if "stem.0" in t and ax == 0)
    tail = next(ch for (t, ax), ch in keys.items() if "b.0" in t and ax == 0)
    assert np.array_equal(stem, tail)  # channel i of the stem is channel i of the branch's last conv


def test_sigmoid_before_a_consumer_freezes():
    """Sigmoid(0) = 0.5: a removed channel would feed 0.5 to the next conv, and a padded conv sees 0.5
    inside and 0 on its border, which no bias can stand for: the channel must stay."""
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Sigmoid(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    cg = analyze(export(net, (1, 3, 9, 9)))
    keys = cg.keys()
    first = next(ch for (t, ax), ch in keys.items() if t.startswith("0.") and ax == 0)
    second = next(ch for (t, ax), ch in keys.items() if t.startswith("2.") and ax == 0)
    assert cg.frozen[first].all() and not cg.frozen[second].any()
    assert any("not 0" in reason for reason in cg.reasons)


class Affine(nn.Module):
    """PP-LCNet's learnable affine block: one scalar scale and one scalar offset for every channel."""

    def __init__(self, scale: float, offset: float):
        super().__init__()
        self.scale, self.offset = nn.Parameter(torch.tensor([scale])), nn.Parameter(torch.tensor([offset]))

    def forward(self, x):
        return self.scale * x + self.offset


class OffsetNet(nn.Module):
    """Every removed channel reaches its consumers as a nonzero constant: an unpadded 1x1 conv with a
    bias, one without, a Linear after pooling; and a padded 3x3 conv, which cannot fold it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), Affine(0.9, 0.5), nn.Hardswish(),
                                  Affine(1.1, -0.3))
        self.point = nn.Conv2d(8, 12, 1)
        self.nobias = nn.Conv2d(8, 12, 1, bias=False)
        self.mid = nn.Sequential(nn.ReLU(), Affine(1.0, 0.7))
        self.padded = nn.Conv2d(12, 6, 3, padding=1)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        s = self.stem(x)
        m = self.mid(self.point(s) + self.nobias(s))
        return self.head(m.mean((2, 3))), self.padded(torch.sigmoid(self.point(s)))


def test_constant_offsets_fold_into_the_next_layers_bias(tmp_path):
    """A removed channel that is a constant k where a consumer reads it (scalar offsets after every
    activation, as PP-OCR's backbone writes) goes anyway: an unpadded conv or Gemm adds its weights
    times k into its bias (one is added where there was none), exactly; a padded conv keeps them."""
    torch.manual_seed(0)
    net = OffsetNet().eval()
    for bn in net.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    model = export(net, (1, 3, 10, 10))
    cg = analyze(model)
    keys = cg.keys()
    stem = next(ch for (t, ax), ch in keys.items() if t.startswith("stem.0") and ax == 0)
    point = next(ch for (t, ax), ch in keys.items() if t.startswith("point") and ax == 0)
    assert not cg.frozen[stem].any()  # 1x1 convs read them: folded
    assert cg.frozen[point].all()  # the padded conv reads them through a Sigmoid
    assert sum(f.bias == "" for f in cg.folds) == 1 and len(cg.folds) == 3  # nobias, point, head
    cg, removed = check_exact(model, fraction=0.6)
    assert removed[stem].any()
    path, out = tmp_path / "offsets.onnx", tmp_path / "pruned.onnx"
    onnx.save(model, path)
    cli = [sys.executable, "-m", "onnxprune"]
    subprocess.run(cli + ["prune", str(path), "--structure", "channel", "--macs", "0.7", "-m", "l2", "-o", str(out)],
                   check=True, capture_output=True)
    done = subprocess.run(cli + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "verified" in done.stdout, done.stdout + done.stderr
    pruned = onnx.load(out)
    record = json.loads(next(p.value for p in pruned.metadata_props if p.key == "onnxprune.removed_channels"))
    assert record["folded"] and all(name in {t.name for t in pruned.graph.initializer} for name in record["folded"])


def _shared_zero_bias() -> onnx.ModelProto:
    """Two hidden layers of 6 units whose zero biases are one tensor (the second reads it through
    Identity, as torch's exporter writes equal constants), and a LayerNorm over 6 features whose shift
    is that tensor through another Identity: what a BERT export does with every zero bias."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {f"w{k}": rng.standard_normal(shape).astype(np.float32)
               for k, shape in enumerate([(8, 6), (6, 4), (8, 6), (6, 4)])}
    consts = [numpy_helper.from_array(v, k) for k, v in weights.items()] + [
        numpy_helper.from_array(np.zeros(6, np.float32), "b"), numpy_helper.from_array(np.ones(6, np.float32), "g")]
    node = helper.make_node
    nodes = [node("MatMul", ["x", "w0"], ["h0"]), node("Add", ["h0", "b"], ["a0"]), node("Relu", ["a0"], ["r0"]),
             node("MatMul", ["r0", "w1"], ["y0"]),
             node("Identity", ["b"], ["b1"]), node("MatMul", ["x", "w2"], ["h1"]), node("Add", ["h1", "b1"], ["a1"]),
             node("Relu", ["a1"], ["r1"]), node("MatMul", ["r1", "w3"], ["y1"]),
             node("Identity", ["b"], ["b2"]), node("LayerNormalization", ["h0", "g", "b2"], ["n"], axis=-1),
             node("Add", ["y0", "y1"], ["y"])]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
                               helper.make_tensor_value_info("n", TensorProto.FLOAT, ["batch", 6])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_exporters_shared_constants_do_not_tie_channels():
    """Before: the shared bias tied unit j of both layers (and the LayerNorm froze them all); now each
    Identity is a tensor of its own: the second layer's units are free, its Identity reads a sliced copy,
    and the LayerNorm keeps its 6 zeros while the first layer's direct read of the tensor stays whole."""
    model = _shared_zero_bias()
    cg = analyze(model)
    keys = cg.keys()
    first, second = keys[("w0", 1)], keys[("w2", 1)]
    assert cg.frozen[first].all() and not cg.frozen[second].any() and not set(first) & set(second)
    cg, removed = check_exact(model, fraction=0.7)
    pruned = rewrite(cg, removed)
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    kept = int((~removed[np.unique(second)]).sum())
    assert dims["b"] == [6] and dims["b_pruned0"] == [kept] and dims["w2"] == [8, kept] and kept < 6


# ----- zoo ------------------------------------------------------------------------------------------------
ZOO = ["resnet18-torchscript", "mobilenet_v3_small-torchscript", "squeezenet1_1-torchscript",
       "shufflenet_v2_x0_5-torchscript", "densenet121-torchscript", "efficientnet_b0-torchscript",
       "vit_tiny-torchscript", "keras_cnn", "flax_cnn", "paddle_cnn", "lenet5", "flax_transformer", "keras_transformer"]
CNNS = {"resnet18-torchscript", "mobilenet_v3_small-torchscript", "squeezenet1_1-torchscript",
        "shufflenet_v2_x0_5-torchscript", "densenet121-torchscript", "efficientnet_b0-torchscript", "keras_cnn",
        "flax_cnn", "paddle_cnn", "lenet5"}


# Transformers: the residual stream feeds LayerNorms (normalized over its channels), so it stays whole;
# heads and FFN units are prunable. vit_tiny's rest is the patch embedding. Keras' einsum reads the head
# count through Shape into ReduceProd (B*H) and Max, and splits [B*H, S, S] into [B, H, S, 1, S].
TRANSFORMER_COVERAGE = {"vit_tiny-torchscript": 0.75, "flax_transformer": 0.99, "keras_transformer": 0.99}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_exact(name):
    cg, removed = check_exact(zoo.zoo_model(name))
    kept, total = cost(cg, removed, "macs")
    if name in CNNS:  # transformers' residual stream stays frozen: the budget is out of reach
        assert cg.coverage() >= 0.95 and kept <= 0.5 * total
    else:
        assert cg.coverage() >= TRANSFORMER_COVERAGE[name]


@pytest.mark.parametrize("name", ["paddle_mlp"])
def test_unsupported_stays_intact(name):
    """A hidden layer feeding a LayerNorm written out as ReduceMean (normalized over its units, so
    every unit matters to every other) and a softmax output: every channel frozen, nothing removed."""
    model = zoo.zoo_model(name)
    cg = analyze(model)
    removed = select(cg, np.zeros(cg.n_channels), 0.5, "macs")
    assert cg.frozen.all() and not removed.any() and cg.reasons
    feeds = zoo.sample_feeds(model)
    assert rel_diff(run(rewrite(cg, removed), feeds), run(model, feeds)) == 0


# ----- scoring and budgets --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["synflow", "mag", "rand", "l1", "l2", "bn"])
def test_prune_channels_methods(method):
    model = small("residual")
    result = prune_channels(model, method=method, macs=0.4, iterations=3, min_layer_density=0.25)
    report = result.report
    assert report["macs"]["kept"] <= 0.4 * report["macs"]["total"]
    for channels in result.graph.keys().values():  # no axis below its floor
        assert (~result.removed[channels]).sum() >= max(1, np.ceil(0.25 * len(channels)))
    feeds = zoo.sample_feeds(model)
    assert rel_diff(run(result.model, feeds), run(zeroed(result.graph, result.removed), feeds)) < TOL


@pytest.mark.parametrize("method", ["snip", "grasp", "loss", "gradnorm", "taylor"])
def test_prune_channels_data_methods(method):
    model = small("chain")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 16, 16, generator=gen), torch.randint(0, 5, (4,), generator=gen))]
    result = prune_channels(model, method=method, macs=0.5, batches=batches)
    assert result.removed.any() and result.report["macs"]["kept"] <= 0.5 * result.report["macs"]["total"]
    feeds = zoo.sample_feeds(model)
    assert rel_diff(run(result.model, feeds), run(zeroed(result.graph, result.removed), feeds)) < TOL


def test_exclude_keeps_tensors_whole():
    model = small("chain")
    result = prune_channels(model, method="mag", macs=0.5, exclude=["1.0.*"], best_effort=True)  # 0.72 reachable
    w = next(t for t in result.model.graph.initializer if t.name == "1.0.weight")
    assert list(w.dims) == [16, 8, 3, 3] and result.removed.any()
    layers = {row["node"]: row for row in result.report["layers"]}
    assert all(row["macs_kept"] <= row["macs"] for row in layers.values())
    assert sum(row["macs_kept"] for row in layers.values()) == pytest.approx(result.report["macs"]["kept"])


def test_density_target_counts_weights():
    model = zoo.zoo_model("lenet5")
    result = prune_channels(model, method="mag", density=0.3)
    kept, total = result.report["weights"]["kept"], result.report["weights"]["total"]
    assert 0.25 * total < kept <= 0.3 * total


def test_synflow_scores_follow_flow():
    """A channel whose outgoing weights are zero carries no SynFlow: it is the first to go."""
    model = small("chain")
    cg = analyze(model)
    w = next(t for t in model.graph.initializer if t.name == "1.0.weight")  # second conv: [16, 8, 3, 3]
    array = onnx.numpy_helper.to_array(w).copy()
    array[:, 3] = 0  # input channel 3 of the second conv = output channel 3 of the first
    w.CopyFrom(onnx.numpy_helper.from_array(array, w.name))
    result = prune_channels(model, method="synflow", density=0.99, iterations=1)
    first = next(ch for (t, ax), ch in cg.keys().items() if t == "0.0.weight" and ax == 0)
    assert result.removed[first[3]] and result.removed.sum() >= 1


# ----- CLI -----------------------------------------------------------------------------------------------
def test_cli_channel(tmp_path):
    src = zoo.ZOO_DIR / "lenet5.onnx"
    out, report = tmp_path / "small.onnx", tmp_path / "r.json"
    done = subprocess.run([str(Path(sys.executable).parent / "onnxprune"), "prune", str(src), "--structure", "channel",
                           "--macs", "0.5", "-m", "mag", "-o", str(out), "--report", str(report), "--benchmark"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MACs kept" in done.stdout and out.stat().st_size < src.stat().st_size
    assert done.stdout.strip().splitlines()[-1] == f"wrote {out}, {report}"
    data = json.loads(report.read_text())
    assert data["macs"]["kept"] <= 0.5 * data["macs"]["total"] and data["kept_indices"]
    latency = data["latency"]
    assert latency["batch"] == 1 and latency["dense_ms"] > 0 and latency["pruned_ms"] > 0
    assert latency["speedup"] == pytest.approx(latency["dense_ms"] / latency["pruned_ms"])
    assert "ms dense" in done.stdout
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert run(model, zoo.sample_feeds(model))[0].shape == (2, 10)
    bad = subprocess.run([str(Path(sys.executable).parent / "onnxprune"), "prune", str(src), "--structure", "channel",
                          "--macs", "1.5", "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error" in bad.stderr and not (tmp_path / "x.onnx").exists()


def test_local_scope_and_rounding():
    """--scope local shrinks every layer alike; round_to makes each prunable layer's width a multiple."""
    model = zoo.zoo_model("resnet18-torchscript")
    result = prune_channels(model, method="mag", macs=0.5, scope="local", round_to=8)
    from onnxprune.structured.select import home_layers

    home = home_layers(result.graph)
    fractions = []
    for layer in np.unique(home[home >= 0]):
        members = home == layer
        if not result.graph.frozen[members].any():
            kept = int((~result.removed[members]).sum())
            assert kept % 8 == 0 and kept > 0
            fractions.append(kept / members.sum())
    assert max(fractions) - min(fractions) <= 0.25
    macs = result.report["macs"]
    assert 0.48 * macs["total"] <= macs["kept"] <= 0.5 * macs["total"]  # rounding keeps the budget
    feeds = zoo.sample_feeds(model)
    assert rel_diff(run(result.model, feeds), run(zeroed(result.graph, result.removed), feeds)) < TOL


def test_grouped_conv_removes_whole_groups():
    """group=4 conv (ResNeXt / RegNet style): a group's inputs and outputs go together, group shrinks."""
    net = nn.Sequential(cbr(3, 16, 1), cbr(16, 24, 3, groups=4), cbr(24, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 3))
    model = export(net, (1, 3, 8, 8))
    cg, removed = check_exact(model, fraction=0.6)
    pruned = rewrite(cg, removed)
    group = next(a.i for n in pruned.graph.node if n.op_type == "Conv" for a in n.attribute
                 if a.name == "group" and a.i > 1)
    w = next(t for t in pruned.graph.initializer if t.name == "1.0.weight")
    assert w.dims[0] == 6 * group and w.dims[1] == 4  # 6 outputs and 4 inputs per kept group


class ShuffleUnit(nn.Module):
    """ShuffleNet v1's unit: grouped 1x1, channel shuffle (sized from x.shape at run time), depthwise
    3x3, grouped 1x1; a residual Add, or (stride 2) concatenated with the average-pooled input."""

    def __init__(self, cin, cout, mid, groups, stride):
        super().__init__()
        self.groups, self.stride = groups, stride
        self.reduce = cbr(cin, mid, 1, groups=groups)
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid), nn.BatchNorm2d(mid))
        branch = cout - cin if stride == 2 else cout
        self.expand = nn.Sequential(nn.Conv2d(mid, branch, 1, groups=groups), nn.BatchNorm2d(branch))
        self.pool = nn.AvgPool2d(3, 2, 1)

    def forward(self, x):
        y = self.reduce(x)
        n, c, h, w = y.shape
        y = y.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        y = self.expand(self.dw(y))
        return torch.relu(torch.cat([y, self.pool(x)], 1) if self.stride == 2 else y + x)


@pytest.mark.parametrize("groups, mid", [(2, 16), (3, 24)])
def test_channel_shuffle_removes_equal_counts_per_group(tmp_path, groups, mid):
    """After ShuffleNet v1's shuffle every group of the next grouped Conv reads channels of every
    group before it: whole groups would tie all of them. Those Convs lose as many inputs and outputs
    per group instead (group count kept), the count the shuffle reads through Shape is pinned to the
    original's, and the result equals the zeroed original, also through the CLI. With 3 groups of 8
    the bottleneck stays whole (a channel would take 3 positions across the shuffle's rows, which 8
    does not divide); the stage width goes."""
    torch.manual_seed(0)
    net = nn.Sequential(cbr(3, 12, 3), ShuffleUnit(12, 48, mid, groups, 2), ShuffleUnit(48, 48, mid, groups, 1),
                        ShuffleUnit(48, 48, mid, groups, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 5))
    model = export(net, (1, 3, 16, 16))
    cg, removed = check_exact(model, fraction=0.5)
    assert cg.coverage() == 1.0
    pruned = rewrite(cg, removed)
    weights = {t.name: t for t in pruned.graph.initializer}
    pointwise = {n.input[1]: next(a.i for a in n.attribute if a.name == "group") for n in pruned.graph.node
                 if n.op_type == "Conv" and (".expand." in n.input[1] or ".reduce." in n.input[1])}
    assert set(pointwise.values()) == {groups}
    assert weights["3.expand.0.weight"].dims[0] < 48  # the stage width
    if groups == 2:  # the bottleneck: fewer inputs per group after the shuffle
        assert any(weights[name].dims[1] < mid // groups for name in pointwise if ".expand." in name)
    path, out = tmp_path / "shufflenet.onnx", tmp_path / "pruned.onnx"
    onnx.save(model, path)
    cli = [str(Path(sys.executable).parent / "onnxprune")]
    done = subprocess.run(cli + ["prune", str(path), "--structure", "channel", "--macs", "0.75", "-m", "l2",
                                 "--round-to", "1", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(cli + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "verified" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm_removes_whole_groups(opset):
    """GroupNormalization (scale and bias per group at opset 18, per channel at 21): a group's
    statistics are its own, so whole groups go, num_groups follows, and the kept groups are exact."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    per = 4 if opset == 18 else 16  # the scale's length
    arrays = {"W1": rng.standard_normal((16, 3, 3, 3)), "b1": rng.standard_normal(16),
              "scale": rng.uniform(0.5, 2, per), "bias": rng.standard_normal(per),
              "W2": rng.standard_normal((5, 16, 1, 1)), "b2": rng.standard_normal(5)}
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("GroupNormalization", ["c1", "scale", "bias"], ["g"], num_groups=4, epsilon=1e-5),
             helper.make_node("Relu", ["g"], ["r"]),
             helper.make_node("Conv", ["r", "W2", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "gn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 6, 6])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    if opset == 21:
        cg, removed = check_exact(model, fraction=0.6)
        pruned = rewrite(cg, removed)
    else:  # onnx's checker calls the opset-18 op deprecated; onnxruntime still runs it
        cg = analyze(model)
        removed = select(cg, np.random.default_rng(0).random(cg.n_channels), 0.6, "macs")
        pruned, feeds = rewrite(cg, removed), zoo.sample_feeds(model, batch=3)
        assert rel_diff(run(pruned, feeds), run(zeroed(cg, removed), feeds)) < TOL
    assert removed.any() and not any("GroupNormalization" in why for why in cg.reasons)
    norm = next(n for n in pruned.graph.node if n.op_type == "GroupNormalization")
    kept = next(a.i for a in norm.attribute if a.name == "num_groups")
    widths = {t.name: t.dims[0] for t in pruned.graph.initializer}
    assert 1 <= kept < 4 and widths["W1"] == 4 * kept and widths["scale"] == (kept if opset == 18 else 4 * kept)


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_group_norm_removes_whole_groups(dynamo):
    """torch's GroupNorm as both exporters write it: Reshape [N, C, H, W] -> [N, G, -1],
    InstanceNormalization, Reshape back (to a constant shape, or to the input's Shape), then the
    per-channel scale and shift. The groups split as heads do, the way back repeats each group's
    label over its channels: whole groups go, exactly."""
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 8, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2.0)
        net[1].bias.normal_()
    model = export(net, (2, 3, 8, 8), dynamo=dynamo)
    cg, removed = check_exact(model, fraction=0.5)
    assert not any("Reshape" in why or "InstanceNormalization" in why for why in cg.reasons), cg.reasons
    from onnxprune.structured.shapes import value_shapes

    pruned = rewrite(cg, removed)
    shapes = value_shapes(pruned)
    norm = next(n for n in pruned.graph.node if n.op_type == "InstanceNormalization")
    conv = next(n for n in pruned.graph.node if n.op_type == "Conv")
    groups, width = shapes[norm.input[0]][1], shapes[conv.output[0]][1]
    assert groups < 4 and width == 4 * groups


def test_channel_fanned_out_over_output_channels():
    """A Reshape [N, 4, 64] -> [N, 16, 16]: each channel's positions become 4 output channels, which
    go with it (the next Conv loses 4 input channels per removed channel), exactly."""
    class Fan(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(3, 4, 1), nn.Conv1d(16, 5, 1)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.b(y.reshape(y.shape[0], 16, 16)).mean(-1)

    model = export(Fan(), (2, 3, 64))
    cg, removed = check_exact(model, fraction=0.6)
    pruned = rewrite(cg, removed)
    widths = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert widths["b.weight"][1] == 4 * widths["a.weight"][0] < 16


def test_transposed_weights_and_nhwc_flatten():
    """jax2onnx / tf2onnx style: an HWIO kernel reaches Conv through a Transpose, features are
    flattened channel-last (NHWC), and a MatMul weight is stored transposed: sliced on the right axes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {"W1": rng.standard_normal((3, 3, 3, 8)), "b": rng.standard_normal(8),
              "W2": rng.standard_normal((8 * 6 * 6, 5)), "W3": rng.standard_normal((4, 5))}
    nodes = [helper.make_node("Transpose", ["W1"], ["W1t"], perm=[3, 2, 0, 1]),
             helper.make_node("Conv", ["x", "W1t", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["nhwc"], ["f"], axis=1), helper.make_node("MatMul", ["f", "W2"], ["m"]),
             helper.make_node("Tanh", ["m"], ["t"]), helper.make_node("Transpose", ["W3"], ["W3t"], perm=[1, 0]),
             helper.make_node("MatMul", ["t", "W3t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    cg, removed = check_exact(model)
    sizes = {t.name: list(t.dims) for t in rewrite(cg, removed).graph.initializer}
    kept_conv = sizes["b"][0]
    assert sizes["W1"][3] == kept_conv and sizes["W2"][0] == kept_conv * 36 and sizes["W3"][1] == sizes["W2"][1]


def test_neighbouring_tokens_merged_into_one_feature_axis():
    """magika's Reshape [B, 2048, 64] -> [B, 512, 256]: four tokens' channels side by side (after
    jax's relu, Max(x, 0): 0 where both operands are). A removed
    channel leaves every block, the next layer loses the same rows of each, and the Reshape's size
    becomes four times the kept count: the pruned file equals the zeroed original."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {"W1": rng.standard_normal((6, 16)), "b1": rng.standard_normal(16), "W2": rng.standard_normal((64, 5))}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["a"]),
             helper.make_node("Max", ["a", "zero"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["tokens"]),
             helper.make_node("MatMul", ["tokens", "W2"], ["y"])]
    init = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    init += [numpy_helper.from_array(np.array([0, 2, 64], np.int64), "shape"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]  # jax's relu: max(x, 0)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 5])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    cg, removed = check_exact(model)
    assert cg.frozen.sum() == 5 and removed.any()  # only the output's
    sizes = {t.name: numpy_helper.to_array(t) for t in rewrite(cg, removed).graph.initializer}
    kept = len(sizes["b1"])
    assert kept < 16 and sizes["W2"].shape[0] == 4 * kept and list(sizes["shape"]) == [0, 2, 4 * kept]


def test_channel_tensor_as_a_parameter_freezes():
    """A Gemm whose bias C is another layer's output: that layer's units must keep their width."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {"W1": rng.standard_normal((6, 4)), "W2": rng.standard_normal((6, 8)), "W3": rng.standard_normal((8, 4)),
              "W4": rng.standard_normal((4, 3))}
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"]), helper.make_node("Gemm", ["x", "W2"], ["g"]),
             helper.make_node("Relu", ["g"], ["r"]), helper.make_node("Gemm", ["r", "W3", "h"], ["z"]),
             helper.make_node("Gemm", ["z", "W4"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    cg = analyze(model)
    keys = cg.keys()
    assert cg.frozen[keys[("W1", 1)]].all() and not cg.frozen[keys[("W2", 1)]].all()
    check_exact(model, fraction=0.7)


@pytest.mark.parametrize("multiple", [4, 8])
@pytest.mark.parametrize("name", ["chain", "residual", "concat"])
def test_rounding_keeps_the_budget_on_small_nets(name, multiple):
    """Kept widths are multiples (a layer of fewer than two multiples may keep its own count), and the
    MACs still keep at most the target: rounding down first, then up only while the budget allows."""
    model = small(name)
    plain = prune_channels(model, method="l2", macs=0.5)
    result = prune_channels(model, method="l2", macs=0.5, round_to=multiple)
    macs = result.report["macs"]
    assert macs["kept"] <= 0.5 * macs["total"]
    assert plain.report["macs"]["kept"] <= 0.5 * macs["total"]
    from onnxprune.structured.select import home_layers

    home = home_layers(result.graph)
    for layer in np.unique(home[home >= 0]):
        members = home == layer
        if not result.graph.frozen[members].any() and members.sum() >= 2 * multiple:
            assert (~result.removed[members]).sum() % multiple == 0  # (a narrower layer may keep its own count)
    feeds = zoo.sample_feeds(model)
    assert rel_diff(run(result.model, feeds), run(zeroed(result.graph, result.removed), feeds)) < TOL


def test_rounding_never_empties_a_concat_half():
    """SqueezeNet's fire modules concatenate two expand convs that the next squeeze conv reads as one
    layer: rounding that layer to a multiple of 8 by score could keep only one conv's channels."""
    import torchvision

    torch.manual_seed(0)
    model = export(torchvision.models.squeezenet1_1(weights=None), (1, 3, 64, 64))
    result = prune_channels(model, method="mag", macs=0.5, iterations=2, round_to=8)
    for (name, axis), channels in result.graph.keys().items():
        assert (~result.removed[channels]).any(), (name, axis)
    onnx.checker.check_model(result.model)
    feeds = zoo.sample_feeds(model)
    assert [o.shape for o in run(result.model, feeds)] == [o.shape for o in run(model, feeds)]


def _filled_weights_net() -> onnx.ModelProto:
    """Caffe2's light models in small (opset 9): each weight is ConstantOfShape of a shape initializer,
    and BatchNorm is written out as Mul / Add with per-channel factors through Unsqueeze (axes as an
    attribute). One weight is random, so channels differ."""
    from onnx import TensorProto, helper, numpy_helper

    node, rng = helper.make_node, np.random.default_rng(0)
    shapes = {"w1": (8, 3, 3, 3), "b1": (8,), "s1": (8,), "t1": (8,), "b2": (4,)}
    consts = [numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape") for name, shape in shapes.items()]
    consts.append(numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2"))
    fills = {"w1": 0.1, "b1": 0.0, "s1": 1.5, "t1": 0.2, "b2": 0.3}
    nodes = [node("ConstantOfShape", [f"{n}_shape"], [n], value=numpy_helper.from_array(np.array([v], np.float32)))
             for n, v in fills.items()]
    nodes += [node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
              node("Unsqueeze", ["s1"], ["s1u"], axes=[1, 2]), node("Unsqueeze", ["t1"], ["t1u"], axes=[1, 2]),
              node("Mul", ["c1", "s1u"], ["m1"]), node("Add", ["m1", "t1u"], ["a1"]), node("Relu", ["a1"], ["r1"]),
              node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "light", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6, 6])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4)


def test_constant_of_shape_weights_are_channels():
    """Before: ConstantOfShape weights were no constants to channel mode, which removed nothing from
    Caffe2's light models. Now they are sliced like initializers: a still-uniform weight reads its new
    shape (resized in place), and the zeroed reference's non-uniform ones become Constants."""
    model = _filled_weights_net()
    cg, removed = check_exact(model, fraction=0.5)
    kept = int((~removed[np.unique(cg.keys()[("w1", 0)])]).sum())
    pruned = rewrite(cg, removed)
    shapes = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in pruned.graph.initializer}
    assert shapes["w1_shape"] == [kept, 3, 3, 3] and shapes["s1_shape"] == [kept] and 0 < kept < 8
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in model.graph.node]


LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.mark.parametrize("name", ["light_squeezenet", "light_densenet121"])
def test_caffe2_light_models_prune_and_verify(tmp_path, name):
    """The onnx wheel's Caffe2 light models (every weight a ConstantOfShape; densenet's BatchNorm as
    Mul/Add through Unsqueeze) prune to half their MACs and verify against the original, through
    the installed command."""
    src = LIGHT / f"{name}.onnx"
    if not src.is_file():
        pytest.skip(f"this onnx wheel ships no {src.name}")
    exe, out, report = str(Path(sys.executable).parent / "onnxprune"), tmp_path / "p.onnx", tmp_path / "r.json"
    done = subprocess.run([exe, "prune", str(src), "--structure", "channel", "--macs", "0.5", "-o", str(out),
                           "--report", str(report), "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    macs = json.loads(report.read_text())["macs"]
    assert 0.48 * macs["total"] <= macs["kept"] <= 0.5 * macs["total"]
    check = subprocess.run([exe, "verify", str(out), "--reference", str(src)], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and check.stdout.strip().splitlines()[-1] == "verified", check.stdout + check.stderr


class InvertedResidual(nn.Module):
    """MobileNetV2 / EfficientNet block: 1x1 expand, depthwise 3x3, SiLU, 1x1 project, residual."""

    def __init__(self, width: int, expand: int):
        super().__init__()
        hidden = width * expand
        self.body = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.SiLU(),
                                  nn.Conv2d(hidden, width, 1))

    def forward(self, x):
        return x + self.body(x)


def test_default_choice_shrinks_memory_bound_channels_further():
    """At a MAC budget, the default (--scope local) weighs each layer by its MACs against the memory-
    bound work its channels carry: an inverted residual's expanded channels (depthwise, SiLU) shrink
    further than the residual stream, whose channels are mostly MACs. Still exact, budget kept."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), InvertedResidual(32, 4), InvertedResidual(32, 4),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    model = export(net, (1, 3, 16, 16))
    cg = analyze(model)
    stream, hidden = cg.keys()[("0.weight", 0)], cg.keys()[("1.body.0.weight", 0)]
    # per position: the depthwise output and SiLU's two passes (Sigmoid, Mul) carry 3 x 16 x 16
    # elements; the expand conv's output, its BatchNorm and ReLU are fused into the conv: not counted
    assert cg.traffic[hidden] == pytest.approx(np.full(len(hidden), 3 * 16 * 16 * cg.batch))
    result = prune_channels(model, macs=0.5, round_to=1)
    kept = {name: (~result.removed[channels]).mean() for name, channels in
            {"stream": stream, "hidden": hidden}.items()}
    assert kept["hidden"] < kept["stream"] - 0.1, kept
    macs = result.report["macs"]
    assert 0.48 * macs["total"] <= macs["kept"] <= 0.5 * macs["total"]
    feeds = zoo.sample_feeds(model)
    assert rel_diff(run(result.model, feeds), run(zeroed(result.graph, result.removed), feeds)) < TOL
