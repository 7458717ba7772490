"""SynFlow stays finite on every graph: products of signals (attention, x·x, Pow), recurrences and
GlobalMaxPool; graphs whose exact flow float64 holds are scored exactly as before (linearize.py)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import onnxprune
from models.torch_nets import AttentionStack, export, kaiming_init
from onnxprune.pruning import prunable_tensors, score
from onnxprune.pruning.linearize import renormalized
from onnxprune.pruning.scorers import SynFlow
from onnxprune.twin import Twin


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Squared(nn.Module):
    """An audio-style front-end: strided conv, then blocks squaring their signal (x·x and Pow), a
    GlobalMaxPool and a Sqrt: the flow's exponent doubles per block."""

    def __init__(self, blocks: int = 12):
        super().__init__()
        self.stem = nn.Conv1d(1, 4, 16, 4)
        self.convs = nn.ModuleList(nn.Conv1d(4, 4, 3, padding=1) for _ in range(blocks))
        self.pool, self.fc = nn.AdaptiveMaxPool1d(1), nn.Linear(4, 10)

    def forward(self, x):
        x = self.stem(x)
        for i, conv in enumerate(self.convs):
            y = conv(x)
            x = y * y if i % 2 else torch.pow(y, 2)
        return self.fc(torch.sqrt(self.pool(x).flatten(1)))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]):
        super().__init__()
        self.rnn, self.fc = cell(6, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def _net(make, shape):
    torch.manual_seed(0)
    model = export(make().eval(), shape)
    for node in model.graph.node:  # torch writes a global max pool as a MaxPool over the whole length
        if node.op_type == "MaxPool":
            node.op_type = "GlobalMaxPool"
            del node.attribute[:]
    return model


def _session(model):
    twin = Twin(model)
    session = SynFlow(twin, prunable_tensors(twin))
    return twin, session


@pytest.mark.parametrize("name", ["attention12", "squared-pow"])
def test_overflowing_flows_are_renormalized_and_prune_exactly(name):
    make, shape = {"attention12": (lambda: AttentionStack(12, 16, 4, 2), (1, 6, 4)),
                   "squared-pow": (Squared, (1, 1, 200))}[name]
    model = _net(make, shape)
    ops = {n.op_type for n in model.graph.node}
    assert ({"MatMul", "Softmax"} if name == "attention12" else {"Pow", "Mul", "Sqrt", "GlobalMaxPool"}) <= ops
    twin, session = _session(model)
    with session:
        exact_r, _ = session._forward_backward()  # the exact flow, as scored before
        assert not bool(torch.isfinite(exact_r))
        scores = session.scores()
        assert session.renormalized
    assert all(bool(torch.isfinite(s).all()) for s in scores)
    assert sum(float(s.sum()) > 0 for s in scores) >= len(scores) - 1  # the flow reaches (nearly) every layer

    pruned = onnxprune.prune(model, compression=1, iterations=5, input_shapes={"input": shape})
    assert pruned.report.kept == round(pruned.report.prunable * 0.1)
    masks = pruned.masks
    assert sum(int(m.sum()) for m in masks.values()) == pruned.report.kept
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(pruned.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": x})
    assert np.isfinite(y).all() and y.shape == (1, 10)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_recurrent_models_score_finitely_and_exactly(cell):
    model = _net(lambda: Recurrent(cell), (1, 20, 6))
    assert cell.__name__ in {n.op_type for n in model.graph.node}
    twin, session = _session(model)
    with session:
        scores = session.scores()
        assert not session.renormalized  # float64 holds this flow: scored exactly, as before
    assert all(bool(torch.isfinite(s).all()) and float(s.sum()) > 0 for s in scores)
    pruned = onnxprune.prune(model, density=0.2, iterations=3)
    assert pruned.report.kept == round(pruned.report.prunable * 0.2)
    sess = ort.InferenceSession(pruned.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(sess.run(None, {"input": np.ones((1, 20, 6), np.float32)})[0]).all()


def test_a_flow_float64_holds_is_not_renormalized():
    """The zoo's small ViT (attention, finite in float64): scores equal the exact flow's bit for bit."""
    from zoo import zoo_model

    twin, session = _session(zoo_model("vit_tiny-torchscript"))
    with session:
        r, grads = session._forward_backward()
        want = [(p.detach() * g).abs() for p, g in zip(session.params, grads)]
        got = session.scores()
        assert not session.renormalized and bool(torch.isfinite(r))
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_renormalizing_a_homogeneous_chain_scales_every_score_by_one_power_of_two():
    """Bias-free ReLU chain: dividing node outputs by powers of two is exact, so the renormalized
    scores are the exact ones times one global factor (a power of two): same masks, same
    conservation."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 5, bias=False))
    twin = Twin(export(kaiming_init(net), (1, 3, 8, 8)))
    exact = score(twin, "synflow")
    with SynFlow(twin, list(exact)) as session:
        with renormalized(twin):
            scaled = dict(zip(exact, session.scores()))
    factor = float(scaled[next(iter(exact))].sum() / exact[next(iter(exact))].sum())
    assert factor != 1.0 and np.log2(factor) == round(np.log2(factor))
    for name in exact:
        torch.testing.assert_close(scaled[name], exact[name] * factor, rtol=1e-13, atol=0)


class Spectrogram(nn.Module):
    """An STFT magnitude front-end (silero-vad's): a strided conv holding the real and imaginary basis
    rows, sqrt(re² + im²) per bin, then a conv and a classifier."""

    def __init__(self, bins: int = 8):
        super().__init__()
        self.stft = nn.Conv1d(1, 2 * bins, 32, 8, bias=False)
        self.conv, self.fc = nn.Conv1d(bins, 8, 3), nn.Linear(8, 3)

    def forward(self, x):
        re, im = self.stft(x).chunk(2, dim=1)
        return self.fc(self.conv(torch.sqrt(re * re + im * im)).mean(-1))


def test_a_bin_whose_basis_rows_are_all_pruned_passes_no_flow():
    """At 1 % of 728 weights at most 7 of the 8 bins keep a basis weight: a dead bin's sqrt(0) has an
    infinite derivative, which made every score nan (silero-vad); a pruned unit carries no flow."""
    model = _net(Spectrogram, (1, 1, 256))
    assert "Sqrt" in {n.op_type for n in model.graph.node}
    pruned = onnxprune.prune(model, compression=2, iterations=20, input_shapes={"input": (1, 1, 256)})
    assert pruned.report.kept == round(pruned.report.prunable * 0.01)
    stft = next(m for name, m in pruned.masks.items() if m.ndim == 3 and m.shape[1] == 1)
    alive = stft.reshape(2, 8, -1).any(axis=(0, 2))  # bins with a real or an imaginary basis weight left
    assert not alive.all()
    sess = ort.InferenceSession(pruned.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(sess.run(None, {"input": np.ones((1, 1, 256), np.float32)})[0]).all()


def _max_identity(with_max: bool, weight_value: float | None = None):
    """x -> MatMul W0 -> [Max(-inf, h): a max reduction's identity, as jax2tf writes it] -> MatMul W1.
    `weight_value` overwrites one entry of W0 (inf: a broken weight)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((8, 16)).astype(np.float32)
    if weight_value is not None:
        w0[0, 0] = weight_value
    inits = [numpy_helper.from_array(w0, "W0"), numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W1"),
             numpy_helper.from_array(np.array(-np.inf, np.float32), "identity")]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"], name="mm0")]
    nodes += [helper.make_node("Max", ["identity", "h"], ["m"]), helper.make_node("MatMul", ["m", "W1"], ["y"])] \
        if with_max else [helper.make_node("MatMul", ["h", "W1"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              inits if with_max else inits[:2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_a_reductions_minus_inf_identity_keeps_its_sign():
    """Before: |-inf| = +inf made R nan ("the weights hold inf/nan", magika). Only parameters are made
    non-negative: the scores equal those of the same net without the Max."""
    got, want = score(Twin(_max_identity(True)), "synflow"), score(Twin(_max_identity(False)), "synflow")
    assert list(got) == ["W0", "W1"]
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=0)


def test_a_flow_that_is_not_finite_names_the_node_where_it_starts():
    from onnxprune.errors import ScoringError

    with pytest.raises(ScoringError, match=r"R is (inf|nan) in float64, first at node 'mm0' \(MatMul\)"):
        score(Twin(_max_identity(True, weight_value=np.inf)), "synflow")
