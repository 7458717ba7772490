"""What real ONNX files hold (issue 13): old IR versions, quantized graphs, recurrent layers, token-id
inputs and weights inside If / Loop bodies. Each model is built here (onnx.helper, torch.onnx.export,
onnxruntime's quantizer), pruned through `onnxprune.prune` or the installed command, and checked with
onnx.checker and a real onnxruntime session against the masked twin.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxprune
from onnxprune.errors import QuantizedModelError
from onnxprune.io import save_model
from onnxprune.pruning.inputs import index_bounds, integer_input, ones_feeds
from onnxprune.twin import InputSpec

EXE = Path(sys.executable).parent / "onnxprune"


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_runs_like_twin(pruned: onnxprune.Pruned, feeds: dict[str, np.ndarray], atol=1e-5) -> None:
    """The written model passes the checker and onnxruntime computes what the masked twin does."""
    onnx.checker.check_model(pruned.model)
    with torch.no_grad():
        twin = pruned.twin.run({k: torch.from_numpy(v) for k, v in feeds.items()})
    for got, want in zip(ort_run(pruned.model, feeds), twin.values()):
        np.testing.assert_allclose(got, want.double().numpy(), atol=atol, rtol=1e-4)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


# ----- IR versions ---------------------------------------------------------------------------------
def caffe2_style(ir: int, opset: int) -> onnx.ModelProto:
    """Conv weight from a Constant node, MatMul weight from ConstantOfShape (the onnx "light" models'
    way); under IR 3 every initializer is also a graph input."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([4 * 6 * 6, 5], np.int64), "gshape"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "cb")]
    nodes = [helper.make_node("Constant", [], ["cw"], value=numpy_helper.from_array(w)),
             helper.make_node("ConstantOfShape", ["gshape"], ["gw"], value=numpy_helper.from_array(np.array([0.01], np.float32))),
             helper.make_node("Conv", ["x", "cw", "cb"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "gw"], ["y"])]
    inputs = [vi("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if ir < 4:
        inputs += [vi(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "g", inputs, [vi("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("ir, opset", [(3, 9), (4, 9), (10, 21)])
@pytest.mark.parametrize("fmt", ["sparse", "dense"])
def test_every_ir_version_gives_a_valid_output(ir, opset, fmt):
    pruned = onnxprune.prune(caffe2_style(ir, opset), compression=1, method="mag", format=fmt)
    assert pruned.model.ir_version == ir
    assert {r.name for r in pruned.report.layers} == {"cw", "gw"}
    assert_runs_like_twin(pruned, {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)})


def test_ir3_through_the_command(tmp_path):
    save_model(caffe2_style(3, 9), tmp_path / "m.onnx")
    proc = cli("prune", tmp_path / "m.onnx", "-c", "1", "-n", "2", "-o", tmp_path / "p.onnx", "--quiet")
    assert proc.returncode == 0, proc.stderr
    onnx.checker.check_model(onnx.load(str(tmp_path / "p.onnx")))
    proc = cli("verify", tmp_path / "p.onnx")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----- quantized models ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict[str, Path]:
    """onnxruntime's own quantizer on a small float CNN: dynamic (ConvInteger, MatMulInteger,
    DynamicQuantizeLinear), static QOperator (QLinearConv, com.microsoft QGemm) and QDQ
    (DequantizeLinear feeding the weights); plus a hand-made com.microsoft DynamicQuantizeLSTM."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

    folder = tmp_path_factory.mktemp("quantized")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    torch.onnx.export(net, torch.randn(1, 3, 8, 8), str(folder / "float.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": np.random.default_rng(i).random((1, 3, 8, 8), np.float32)} for i in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantize_dynamic(folder / "float.onnx", folder / "dynamic.onnx")
    quantize_static(folder / "float.onnx", folder / "qoperator.onnx", Reader(), quant_format=QuantFormat.QOperator)
    quantize_static(folder / "float.onnx", folder / "qdq.onnx", Reader(), quant_format=QuantFormat.QDQ)
    inits = [numpy_helper.from_array(np.ones((1, 8, 16), np.int8), "w"), numpy_helper.from_array(np.ones((1, 8, 16), np.int8), "r")]
    for name in ("ws", "rs"):
        inits.append(numpy_helper.from_array(np.full((1,), 0.1, np.float32), name))
    for name in ("wz", "rz"):
        inits.append(numpy_helper.from_array(np.zeros((1,), np.int8), name))
    node = helper.make_node("DynamicQuantizeLSTM", ["x", "w", "r", "", "", "", "", "", "ws", "wz", "rs", "rz"],
                            ["y"], name="qlstm", domain="com.microsoft", hidden_size=4)
    graph = helper.make_graph([node], "g", [vi("x", TensorProto.FLOAT, [5, 1, 8])],
                              [vi("y", TensorProto.FLOAT, [5, 1, 1, 4])], inits)
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                                 ir_version=8), folder / "qlstm.onnx")
    return {p.stem: p for p in folder.glob("*.onnx")}


@pytest.mark.parametrize("name, ops", [
    ("dynamic", ["ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"]),
    ("qoperator", ["QLinearConv", "QGemm"]),
    ("qdq", ["DequantizeLinear"]),
    ("qlstm", ["DynamicQuantizeLSTM", "'qlstm'"]),
])
def test_quantized_models_are_refused_naming_the_ops(quantized, name, ops, tmp_path):
    proc = cli("prune", quantized[name], "-c", "1", "-o", tmp_path / "out.onnx")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "already quantized" in line, line
    for op in ops:
        assert op in line
    assert not (tmp_path / "out.onnx").exists()


def test_a_quantized_model_proto_is_refused_too(quantized):
    model = onnx.load(str(quantized["dynamic"]))
    with pytest.raises(QuantizedModelError, match="already quantized"):
        onnxprune.prune(model, compression=1, method="mag")
    assert onnxprune.load_twin(quantized["float"]) is not None  # the float original loads


# ----- recurrent layers ------------------------------------------------------------------------------
class Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn, self.fc = cell(6, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_weights_are_pruned(cell, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "rnn.onnx"
    torch.onnx.export(Recurrent(cell).eval(), torch.randn(1, 5, 6), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"])
    x = {"x": np.random.default_rng(2).standard_normal((1, 5, 6)).astype(np.float32)}
    for method in ("mag", "synflow"):
        pruned = onnxprune.prune(path, compression=0.5, method=method, iterations=5 if method == "synflow" else None)
        rows = {r.op: r for r in pruned.report.layers}
        recurrent = [r for r in pruned.report.layers if r.op == cell.__name__]
        assert len(recurrent) == 2 and "Gemm" in rows  # W and R, plus the head
        assert sum(r.kept for r in recurrent) < sum(r.params for r in recurrent)
        assert_runs_like_twin(pruned, x)


def test_gradients_reach_recurrent_weights(tmp_path):
    from onnxprune.pruning import score

    torch.manual_seed(0)
    path = tmp_path / "lstm.onnx"
    torch.onnx.export(Recurrent(nn.LSTM).eval(), torch.randn(1, 5, 6), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"])
    twin = onnxprune.load_twin(path)
    scores = score(twin, "synflow")
    lstm = [n for n in scores if "LSTM" in n]
    assert len(lstm) == 2 and all(float(scores[n].sum()) > 0 for n in lstm)


# ----- token-id inputs -------------------------------------------------------------------------------
class TinyBert(nn.Module):
    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.tok, self.typ = nn.Embedding(vocab, dim, padding_idx=0), nn.Embedding(2, dim)
        self.pos = nn.Embedding(12, dim)
        self.enc = nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, input_ids, attention_mask, token_type_ids):
        pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
        h = self.tok(input_ids) + self.typ(token_type_ids) + self.pos(pos)
        return self.head(self.enc(h, src_key_padding_mask=attention_mask == 0)[:, 0])


TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    torch.manual_seed(0)
    args = (torch.randint(1, 50, (1, 7)), torch.ones(1, 7, dtype=torch.long), torch.zeros(1, 7, dtype=torch.long))
    torch.onnx.export(TinyBert().eval(), args, str(path), dynamo=False, input_names=list(TOKEN_INPUTS),
                      output_names=["logits"], opset_version=17,
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in TOKEN_INPUTS})
    return path


def test_token_inputs_get_valid_values(bert):
    twin = onnxprune.load_twin(bert)
    assert index_bounds(twin) == {"input_ids": 50, "token_type_ids": 2}  # the tables' rows
    feeds = ones_feeds(twin, {n: (1, 7) for n in TOKEN_INPUTS})
    assert feeds["input_ids"].eq(1).all() and feeds["attention_mask"].eq(1).all()
    assert feeds["token_type_ids"].eq(0).all()
    # A boolean mask follows torch's key_padding_mask (True = padding): attending everywhere is False.
    spec = InputSpec("src_mask", TensorProto.BOOL, (1, 7))
    assert not integer_input(spec, (1, 7), None).any()
    assert integer_input(InputSpec("flag", TensorProto.BOOL, ()), (), None).item()


def test_bert_verifies_and_prunes(bert, tmp_path):
    shapes = [a for n in TOKEN_INPUTS for a in ("--input-shape", f"{n}=1x7")]
    proc = cli("verify", bert, *shapes)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pruned = onnxprune.prune(bert, compression=1, iterations=5, input_shapes={n: (1, 7) for n in TOKEN_INPUTS})
    assert 0 < pruned.report.kept < pruned.report.prunable
    ids = np.random.default_rng(3).integers(1, 50, (2, 7))
    feeds = {"input_ids": ids, "attention_mask": np.ones((2, 7), np.int64), "token_type_ids": np.zeros((2, 7), np.int64)}
    assert_runs_like_twin(pruned, feeds)


# ----- weights inside subgraphs ----------------------------------------------------------------------
def branchy() -> onnx.ModelProto:
    """If(flag): then = Conv with a Constant-node weight inside the branch; else = Conv on an
    outer-scope initializer; then a Loop (2 trips) whose body MatMuls by a Constant inside it."""
    rng = np.random.default_rng(0)

    def const(name, shape):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32)))

    then = helper.make_graph([const("w_then", (4, 3, 3, 3)), helper.make_node("Conv", ["x", "w_then"], ["c_then"])],
                             "then", [], [vi("c_then", TensorProto.FLOAT, [1, 4, 6, 6])])
    other = helper.make_graph([helper.make_node("Conv", ["x", "w_outer"], ["c_else"])],
                              "else", [], [vi("c_else", TensorProto.FLOAT, [1, 4, 6, 6])])
    body = helper.make_graph([const("w_loop", (6, 6)), helper.make_node("MatMul", ["h", "w_loop"], ["h2"]),
                              helper.make_node("Identity", ["keep"], ["keep2"])], "body",
                             [vi("i", TensorProto.INT64, []), vi("keep", TensorProto.BOOL, []), vi("h", TensorProto.FLOAT, [1, 4, 6, 6])],
                             [vi("keep2", TensorProto.BOOL, []), vi("h2", TensorProto.FLOAT, [1, 4, 6, 6])])
    nodes = [helper.make_node("If", ["flag"], ["c"], then_branch=then, else_branch=other),
             helper.make_node("Loop", ["trips", "", "c"], ["y"], body=body)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w_outer"),
             numpy_helper.from_array(np.array(2, np.int64), "trips")]
    graph = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [1, 3, 8, 8]), vi("flag", TensorProto.BOOL, [])],
                              [vi("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_subgraph_weights_are_found_pruned_and_written(tmp_path):
    save_model(branchy(), tmp_path / "m.onnx")
    for method in ("mag", "synflow"):
        out = tmp_path / f"{method}.onnx"
        proc = cli("prune", tmp_path / "m.onnx", "-m", method, "-c", "0.5", "-n", "3", "-o", out, "--quiet")
        assert proc.returncode == 0, proc.stderr
    pruned = onnxprune.prune(tmp_path / "m.onnx", compression=0.5, method="mag")
    assert {r.name for r in pruned.report.layers} == {"w_then", "w_outer", "w_loop"}
    assert all(r.kept < r.params for r in pruned.report.layers)
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for flag in (True, False):
        assert_runs_like_twin(pruned, {"x": x, "flag": np.array(flag)})
    written = onnx.load(str(tmp_path / "mag.onnx"))
    onnx.checker.check_model(written)
    assert ort_run(written, {"x": x, "flag": np.array(True)})[0].shape == (1, 4, 6, 6)
