"""The twin on real exported models: outputs match onnxruntime, weights are parameters by their ONNX
names, and gradients reach them.

Models: the zoo (tests/zoo.py: torchvision nets through both torch exporters, Keras/tf2onnx,
Flax/jax2onnx, Paddle/paddle2onnx and scikit-learn/skl2onnx files in models/zoo/), the Caffe2 "light"
models shipped inside the onnx package, and two storage variants (initializers listed as graph inputs,
sparse initializers).

Error measure: max |twin - ref| / max |ref| over each float output (relative to the output's scale, so
near-zero entries of a well-scaled output do not blow it up).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxprune import reference
from onnxprune.io import load_model
from onnxprune.twin import Twin
from zoo import sample_feeds, zoo_model, zoo_names

# float32 twin vs float32 onnxruntime: both round every op to float32 (eps 1.2e-7), with different
# kernels (im2col/Winograd vs MLAS, other summation orders, SLEEF vs libm transcendentals). The error
# grows with depth and reduction length: measured <= 2e-6 on every model here; 1e-4 leaves margin for
# other CPUs' kernels while still catching any real semantic slip (which shows up at >= 1e-3).
F32_TOL = 1e-4
# float64 twin vs float32 onnxruntime: the difference IS onnxruntime's float32 rounding error (the
# float64 twin is exact to ~1e-15), the same quantity as above, so the same bound. No bound below
# float32 rounding (~1e-7 per op, ~1e-6 per network) can hold against a float32 result, so the
# float64 claim is made against a float64 reference instead (F64_TOL).
F64_VS_F32_TOL = 1e-4
# float64 twin vs a float64 reference (onnx's ReferenceEvaluator on the model converted to double):
# both compute in float64 (eps 2.2e-16) with different summation orders; measured <= 1e-14.
F64_TOL = 1e-9

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1)}


def rel_err(value, ref) -> float:
    value, ref = np.asarray(value, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert value.shape == ref.shape
    scale = np.abs(ref).max(initial=0.0)
    return float(np.abs(value - ref).max(initial=0.0) / scale) if scale else float(np.abs(value).max(initial=0.0))


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # exporters' stale value_info makes ORT warn; not our concern here
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def twin_run(twin: Twin, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in twin.run(feeds).values()]


def assert_outputs_match(outputs, refs, tol: float) -> float:
    """Float outputs within `tol` (relative), others (labels, indices) exactly; returns the worst error."""
    worst = 0.0
    for value, ref in zip(outputs, refs, strict=True):
        if np.asarray(ref).dtype.kind == "f":
            worst = max(worst, rel_err(value, ref))
        else:
            np.testing.assert_array_equal(value, ref)
    assert worst <= tol
    return worst


# ----- a true float64 reference: onnxprune.reference (onnx's ReferenceEvaluator in double) ---------------
def float64_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(reference.float64_reference(model, feeds).values())


# ----- weights ---------------------------------------------------------------------------------------------
def weight_initializers(model: onnx.ModelProto) -> set[str]:
    """Float initializers feeding a Conv/ConvTranspose/Gemm/MatMul weight or bias slot, found without
    the twin's tracer: walk back from each slot through nodes computed from constants only."""
    graph = model.graph
    floats = {t.name for t in graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE)}
    floats |= {t.values.name for t in graph.sparse_initializer}
    constant = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    producer = {}
    for node in graph.node:  # topological order: a node is constant when all its inputs are
        for out in node.output:
            producer[out] = node
        if all(i in constant for i in node.input if i):
            constant.update(node.output)
    found, stack = set(), [n.input[s] for n in graph.node for s in WEIGHT_SLOTS.get(n.op_type, ())
                           if s < len(n.input) and n.input[s]]
    while stack:
        name = stack.pop()
        if name in floats:
            found.add(name)
        elif name in constant and name in producer:
            stack.extend(i for i in producer[name].input if i)
    return found


def folded_weights(model: onnx.ModelProto) -> set[str]:
    """Outputs of Constant / ConstantOfShape nodes feeding weight slots directly (the Caffe2 light models)."""
    made = {n.output[0]: n for n in model.graph.node if n.op_type in ("Constant", "ConstantOfShape")}
    return {n.input[s] for n in model.graph.node for s in WEIGHT_SLOTS.get(n.op_type, ())
            if s < len(n.input) and n.input[s] in made}


def assert_weights_are_parameters(twin: Twin, model: onnx.ModelProto) -> set[str]:
    params = twin.onnx_parameters()
    expected = weight_initializers(model) | folded_weights(model)
    assert expected, "the model has no Conv/Gemm/MatMul weights"
    assert expected <= set(params), sorted(expected - set(params))[:5]
    # parameter names are ONNX names: initializers or folded constant outputs, nothing invented
    known = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    known |= {o for n in model.graph.node if n.op_type in ("Constant", "ConstantOfShape") for o in n.output}
    assert set(params) <= known
    return expected


def assert_gradients_reach(twin: Twin, feeds: dict[str, np.ndarray], names: set[str]) -> None:
    """d(random projection of every float output)/d(weight) exists and is non-zero for each weight.

    A random projection, not a plain sum: softmax outputs sum to 1 whatever the weights (zero gradient).
    float32 (torch's float64 depthwise-conv backward is ~50x slower); these nets are shallow enough that
    no gradient underflows.
    """
    gen = torch.Generator().manual_seed(0)
    twin.zero_grad()
    outputs = [t for t in twin.run(feeds).values() if t.is_floating_point()]
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outputs)
    loss.backward()
    params = twin.onnx_parameters()
    missing = sorted(n for n in names if params[n].grad is None or not params[n].grad.abs().sum() > 0)
    assert not missing, missing[:5]


# ----- the zoo -----------------------------------------------------------------------------------------------
class Case:
    """One model, its inputs, and onnxruntime's outputs (computed once, shared by the tests)."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.feeds = model, sample_feeds(model)

    @functools.cached_property
    def ort(self) -> list[np.ndarray]:
        return ort_run(self.model, self.feeds)


@pytest.fixture(scope="module", params=zoo_names())
def zoo_case(request) -> Case:
    return Case(zoo_model(request.param))


def test_zoo_float32_matches_onnxruntime(zoo_case):
    assert_outputs_match(twin_run(Twin(zoo_case.model), zoo_case.feeds), zoo_case.ort, F32_TOL)


def test_zoo_float64_is_exact(zoo_case):
    outputs = twin_run(Twin(zoo_case.model, dtype=torch.float64), zoo_case.feeds)
    assert_outputs_match(outputs, zoo_case.ort, F64_VS_F32_TOL)
    assert_outputs_match(outputs, float64_reference(zoo_case.model, zoo_case.feeds), F64_TOL)


def test_zoo_weights_are_parameters_and_get_gradients(zoo_case):
    twin = Twin(zoo_case.model)
    weights = assert_weights_are_parameters(twin, zoo_case.model)
    # pruning masks the traced sources: every weight found independently must be one
    assert weights <= {use.source for use in twin.weight_uses}
    assert_gradients_reach(twin, zoo_case.feeds, weights)


# ----- the Caffe2 "light" models shipped with onnx ----------------------------------------------------------
def with_conv_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every Conv output as an extra graph output. The light models' weights are one
    constant (ConstantOfShape), so every class gets the same logit and the softmax output is uniform
    whatever the convolutions compute; their spatial maps are what shows an error."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    outputs = {o.name for o in model.graph.output}
    extra = [n.output[0] for n in model.graph.node if n.op_type == "Conv" and n.output[0] not in outputs]
    model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in extra)
    return model


@pytest.mark.parametrize("path", sorted(LIGHT_DIR.glob("light_*.onnx")), ids=lambda p: p.stem)
def test_light_models(path):
    model = with_conv_outputs(onnx.load(path))
    twin = Twin(model)
    assert_weights_are_parameters(twin, model)
    assert folded_weights(model) <= {use.source for use in twin.weight_uses}
    feeds = sample_feeds(model, batch=1)
    assert_outputs_match(twin_run(twin, feeds), ort_run(model, feeds), F32_TOL)


# ----- storage variants -------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's own deprecation
def test_initializers_listed_as_graph_inputs(tmp_path):
    """torch's keep_initializers_as_inputs=True (IR < 4 style): every weight is also a graph input with
    a default. The twin treats them as the constants onnxruntime uses when they are not fed."""
    from models.torch_nets import LeNet5, kaiming_init

    path = tmp_path / "lenet.onnx"
    torch.onnx.export(kaiming_init(LeNet5()).eval(), (torch.randn(1, 1, 28, 28),), path, dynamo=False,
                      input_names=["input"], keep_initializers_as_inputs=True, opset_version=13)
    model = load_model(path)
    initializers = {t.name for t in model.graph.initializer}
    assert initializers < {v.name for v in model.graph.input}
    twin = Twin(model)
    assert twin.input_names == ["input"]
    assert_weights_are_parameters(twin, model)
    feeds = sample_feeds(model, batch=1)
    assert_outputs_match(twin_run(twin, feeds), ort_run(model, feeds), F32_TOL)


def sparsify(model: onnx.ModelProto, density: float, *, coordinate: set[str] = frozenset()) -> onnx.ModelProto:
    """Zero all but `density` of each Conv/Gemm/MatMul weight initializer and store it as a
    sparse_initializer: int64 linear indices (names in `coordinate`: [NNZ, rank] coordinates)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph, rng = model.graph, np.random.default_rng(0)
    weights = weight_initializers(model)
    for tensor in [t for t in graph.initializer if t.name in weights and len(t.dims) >= 2]:
        dense = numpy_helper.to_array(tensor)
        flat = np.flatnonzero(rng.random(dense.size) < density)
        index = np.stack(np.unravel_index(flat, dense.shape), 1) if tensor.name in coordinate else flat
        values = numpy_helper.from_array(dense.reshape(-1)[flat], tensor.name)
        graph.sparse_initializer.append(
            helper.make_sparse_tensor(values, numpy_helper.from_array(index.astype(np.int64)), dense.shape))
        graph.initializer.remove(tensor)
    return model


def test_sparse_initializers(tmp_path):
    dense = zoo_model("squeezenet1_1-torchscript")
    onnx.save(sparsify(dense, 0.3), tmp_path / "sparse.onnx")
    model = load_model(tmp_path / "sparse.onnx")  # the project's loader validates sparse initializers
    assert len(model.graph.sparse_initializer) == len([n for n in dense.graph.node if n.op_type == "Conv"])
    twin = Twin(model)
    assert_weights_are_parameters(twin, model)
    weight = model.graph.sparse_initializer[0]
    assert int((twin.parameter(weight.values.name) != 0).sum()) == numpy_helper.to_array(weight.values).size
    feeds = sample_feeds(model)
    assert_outputs_match(twin_run(twin, feeds), ort_run(model, feeds), F32_TOL)


def test_sparse_initializers_with_coordinate_indices(tmp_path):
    dense = zoo_model("lenet5")
    first = next(t.name for t in dense.graph.initializer if len(t.dims) == 4)
    onnx.save(sparsify(dense, 0.5, coordinate={first}), tmp_path / "sparse.onnx")
    model = load_model(tmp_path / "sparse.onnx")
    feeds = sample_feeds(model)
    assert_outputs_match(twin_run(Twin(model), feeds), ort_run(model, feeds), F32_TOL)
