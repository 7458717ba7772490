"""write_back / twin_tensors: pruned tensors go back into the same graph, and the file runs in ORT."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from models.torch_nets import LeNet5, ResNet20, kaiming_init, export
from onnxprune.io import load_model, save_model
from onnxprune.twin import Twin
from onnxprune.graph.constants import stored_tensors
from onnxprune.writeback import twin_tensors, write_back


def random_masks(twin: Twin, density: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Exactly round(n * density) kept entries per weight source, at random."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name in sorted({u.source for u in twin.weight_uses if u.role == "weight"}):
        param = twin.parameter(name)
        flat = torch.zeros(param.numel(), dtype=torch.bool)
        flat[torch.randperm(param.numel(), generator=gen)[: round(param.numel() * density)]] = True
        masks[name] = flat.reshape(param.shape)
        twin.set_mask(name, masks[name])
    return masks


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_matches_twin(model: onnx.ModelProto, twin: Twin, x: torch.Tensor) -> None:
    """ORT (float32) equals the masked twin computed in float64 up to float32 rounding: eps 6e-8 times
    accumulation lengths of a few thousand terms stays below 1e-5 of the output's scale."""
    got = ort_run(model, {twin.input_names[0]: x.numpy()})[0]
    with torch.no_grad(), twin.precision(torch.float64):
        ref = twin(x).numpy()
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(got - ref).max() <= 1e-5 * scale


@pytest.fixture(scope="module")
def resnet20() -> onnx.ModelProto:
    return export(kaiming_init(ResNet20(), seed=1), (1, 3, 32, 32))


@pytest.fixture(scope="module")
def lenet() -> onnx.ModelProto:
    return export(kaiming_init(LeNet5(), seed=2), (1, 1, 28, 28))


@pytest.mark.parametrize("fmt", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("density", [0.5, 0.1, 0.001])
def test_pruned_model_runs_in_ort_like_the_masked_twin(resnet20, fmt, density):
    twin = Twin(resnet20)
    masks = random_masks(twin, density)
    out = write_back(resnet20, twin_tensors(twin, masks), fmt=fmt)
    onnx.checker.check_model(out)  # full_check=False: shape inference ignores sparse initializers
    assert_matches_twin(out, twin, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    stored = stored_tensors(out.graph)
    for name, mask in masks.items():
        kind, value = stored[name]
        assert np.count_nonzero(value) == int(mask.sum())  # kept weights are non-zero at kaiming init
        sparse_smaller = int(mask.sum()) * (4 + 8) < mask.numel() * 4
        assert kind == {"sparse": "sparse", "dense": "dense", "auto": "sparse" if sparse_smaller else "dense"}[fmt]


def test_only_pruned_tensors_change(resnet20):
    original = onnx.ModelProto()
    original.CopyFrom(resnet20)
    original.ir_version = 7  # older than onnx's default: must be kept (ORT 1.31 loads IR <= 13 only)
    helper.set_model_props(original, {"author": "test", "license": "MIT"})
    twin = Twin(original)
    masks = random_masks(twin, 0.01)
    out = write_back(original, twin_tensors(twin, masks), fmt="sparse")
    assert out.ir_version == 7
    assert out.metadata_props == original.metadata_props
    assert out.opset_import == original.opset_import
    assert [n.SerializeToString() for n in out.graph.node] == [n.SerializeToString() for n in original.graph.node]
    assert out.graph.input == original.graph.input and out.graph.output == original.graph.output
    before = {t.name: t.SerializeToString() for t in original.graph.initializer}
    after = {t.name: t.SerializeToString() for t in out.graph.initializer}
    assert set(after) == set(before) - set(masks)
    assert all(after[name] == before[name] for name in after)  # bit-identical, same encoding
    assert original.SerializeToString() != out.SerializeToString() and original.graph.sparse_initializer == []


def test_pruned_entries_are_positive_zeros_in_the_original_dtype(lenet):
    twin = Twin(lenet)
    masks = random_masks(twin, 0.3)
    tensors = twin_tensors(twin, masks)
    for name, value in tensors.items():
        assert value.dtype == np.float32
        original = numpy_helper.to_array(next(t for t in lenet.graph.initializer if t.name == name))
        kept = masks[name].numpy()
        assert np.array_equal(value[kept], original[kept])
        assert not np.signbit(value[~kept]).any() and (value[~kept] == 0).all()  # +0.0, never -0.0


def test_unchanged_tensors_leave_the_model_byte_identical(resnet20):
    twin = Twin(resnet20)
    tensors = twin_tensors(twin)  # every parameter and BN statistic, unmasked
    assert {"blocks.0.bn1.running_mean", "blocks.0.bn1.running_var", "fc.bias"} <= set(tensors)
    assert write_back(resnet20, tensors).SerializeToString() == resnet20.SerializeToString()


def test_trained_batchnorm_statistics_are_written_back(resnet20):
    twin = Twin(resnet20)
    with torch.no_grad():
        twin.onnx_buffers()["bn.running_mean"].add_(0.5)
    out = write_back(resnet20, twin_tensors(twin))
    kind, value = stored_tensors(out.graph)["bn.running_mean"]
    assert kind == "dense" and np.allclose(value, 0.5)


def _matmul_model(weight_node: onnx.NodeProto | None, initializers=(), dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    nodes = ([weight_node] if weight_node is not None else []) + [helper.make_node("MatMul", ["x", "W"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, [2, 8])],
                              [helper.make_tensor_value_info("y", dtype, [2, 6])], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("kind", ["Constant", "ConstantOfShape"])
def test_constant_node_weights_become_initializers(kind):
    rng = np.random.default_rng(0)
    if kind == "Constant":
        weight = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32))
        node = helper.make_node("Constant", [], ["W"], value=weight)
        model = _matmul_model(node)
    else:  # the Caffe2 "light" models make weights this way
        node = helper.make_node("ConstantOfShape", ["shape"], ["W"],
                                value=numpy_helper.from_array(np.array([0.25], np.float32)))
        model = _matmul_model(node, [numpy_helper.from_array(np.array([8, 6], np.int64), "shape")])
    twin = Twin(model)
    assert "W" in twin.onnx_parameters()
    twin.set_mask("W", torch.arange(48).reshape(8, 6) % 7 == 0)
    out = write_back(model, twin_tensors(twin, ["W"]), fmt="sparse")
    onnx.checker.check_model(out)
    assert [n.op_type for n in out.graph.node] == ["MatMul"]
    assert [t.name for t in out.graph.initializer] == []  # the now-unused shape input is gone too
    assert [s.values.name for s in out.graph.sparse_initializer] == ["W"]
    x = rng.standard_normal((2, 8)).astype(np.float32)
    expected = x.astype(np.float64) @ twin_tensors(twin, ["W"])["W"].astype(np.float64)
    assert np.abs(ort_run(out, {"x": x})[0] - expected).max() <= 1e-5  # float32 rounding of 8-term sums


def test_float16_weights_stay_float16():
    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float16), "W")
    model = _matmul_model(None, [weight], dtype=TensorProto.FLOAT16)
    twin = Twin(model)
    twin.set_mask("W", torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) < 0.2)
    for fmt in ("sparse", "dense"):
        out = write_back(model, twin_tensors(twin, ["W"]), fmt=fmt)
        kind, value = stored_tensors(out.graph)["W"]
        assert kind == fmt and value.dtype == np.float16
        x = rng.standard_normal((2, 8)).astype(np.float16)
        assert ort_run(out, {"x": x})[0].dtype == np.float16


def test_sparse_input_model_can_be_rewritten_dense(resnet20):
    twin = Twin(resnet20)
    random_masks(twin, 0.05)
    sparse = write_back(resnet20, twin_tensors(twin), fmt="sparse")
    again = Twin(sparse)  # the twin reads sparse initializers back
    dense = write_back(sparse, twin_tensors(again), fmt="dense")
    assert not dense.graph.sparse_initializer
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert np.array_equal(ort_run(dense, {"input": x.numpy()})[0], ort_run(sparse, {"input": x.numpy()})[0])


def test_initializer_listed_as_graph_input_can_be_sparse():
    """Old exporters list initializers among the inputs (overridable defaults); ORT accepts them sparse."""
    rng = np.random.default_rng(2)
    model = _matmul_model(None, [numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "W")])
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [8, 6]))
    twin = Twin(model)
    twin.set_mask("W", torch.eye(8, 6, dtype=torch.bool))
    out = write_back(model, twin_tensors(twin, ["W"]), fmt="sparse")
    onnx.checker.check_model(out)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    diagonal = np.diag(twin_tensors(twin, ["W"])["W"])
    assert np.array_equal(ort_run(out, {"x": x})[0], x[:, :6] * diagonal)  # one product per output: exact


def test_collapsed_tensor_is_an_empty_sparse_tensor(lenet):
    twin = Twin(lenet)
    masks = random_masks(twin, 0.2)
    first = next(iter(masks))
    twin.set_mask(first, torch.zeros_like(masks[first]))
    out = write_back(lenet, twin_tensors(twin, masks), fmt="auto")
    kind, value = stored_tensors(out.graph)[first]
    assert kind == "sparse" and not value.any()
    got = ort_run(out, {"input": np.ones((1, 1, 28, 28), np.float32)})[0]
    assert np.allclose(got, got[0])  # output no longer depends on the input: only biases remain


def test_external_data_model_round_trip(tmp_path, lenet):
    twin = Twin(lenet)
    masks = random_masks(twin, 0.5)
    out = write_back(lenet, twin_tensors(twin, masks), fmt="sparse")
    twin.set_mask("classifier.1.weight", None)  # one dense weight over onnx's 1 KB external threshold
    out = write_back(out, twin_tensors(twin, ["classifier.1.weight"]), fmt="dense")
    save_model(out, tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "m.onnx.data").is_file()
    loaded = load_model(tmp_path / "m.onnx")
    x = np.random.default_rng(5).standard_normal((1, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"input": x})[0], ort_run(out, {"input": x})[0])
    assert {n: k for n, (k, _) in stored_tensors(loaded.graph).items()} == {
        n: k for n, (k, _) in stored_tensors(out.graph).items()}


def test_bad_requests_are_refused(lenet):
    twin = Twin(lenet)
    with pytest.raises(KeyError, match="nope"):
        write_back(lenet, {"nope": np.zeros(3, np.float32)})
    name = next(u.source for u in twin.weight_uses if u.role == "weight")
    with pytest.raises(ValueError, match="shape"):
        write_back(lenet, {name: np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="format"):
        write_back(lenet, {}, fmt="csr")
