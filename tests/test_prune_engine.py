"""The prune loop and mask selection: exact counts, schedules, scopes, ablations, errors.

Models are exported from torch (models/torch_nets.py) or built with onnx.helper; data scorers get
real MNIST images from tests/data/mnist10k.npz.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from models.torch_nets import VGG, LeNet5, export, kaiming_init
from onnxprune.errors import OnnxPruneError, ScoringError
from onnxprune.pruning import (METHODS, PruneResult, keep_schedule, prunable_tensors, prune_twin, score,
                              select_masks)
from onnxprune.twin import Twin
from local_data import MNIST10K as MNIST

DATA_METHODS = ("snip", "grasp", "loss", "gradnorm")
LENET_WEIGHTS = ["features.0.weight", "features.3.weight", "classifier.1.weight", "classifier.3.weight",
                 "classifier.5.weight"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second intra-op thread only adds synchronization, and on a busy
    machine (helpers share 2 cores) it costs 10-30x in wall time. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lenet_model() -> onnx.ModelProto:
    return export(kaiming_init(LeNet5(), seed=0), (1, 1, 28, 28))


@pytest.fixture
def lenet(lenet_model) -> Twin:
    return Twin(lenet_model)


@pytest.fixture(scope="module")
def mnist_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = np.load(MNIST)
    x = torch.from_numpy(data["x_train"][:64].astype(np.float32) / 255.0)
    y = torch.from_numpy(data["y_train"][:64].astype(np.int64))
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def clear(twin: Twin) -> None:
    for name in list(twin.masks()):
        twin.set_mask(name, None)


def check_result(twin: Twin, result: PruneResult, density: float) -> None:
    """The contract: exact count, one bool mask per prunable tensor, the same masks set on the twin."""
    params = twin.onnx_parameters()
    assert result.total == sum(params[n].numel() for n in result.prunable)
    assert result.kept == round(result.total * density)
    assert sum(int(m.sum()) for m in result.masks.values()) == result.kept
    assert list(result.masks) == result.prunable
    for name, mask in result.masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
        assert torch.equal(twin.mask(name).bool(), mask)
        assert result.per_tensor[name] == (int(mask.sum()), mask.numel())


# ----- what is prunable ---------------------------------------------------------------------------
def test_prunable_tensors_are_conv_and_linear_weights_in_graph_order(lenet):
    assert prunable_tensors(lenet) == LENET_WEIGHTS
    with_bias = prunable_tensors(lenet, prune_bias=True)
    assert with_bias == [n for w in LENET_WEIGHTS for n in (w, w.replace("weight", "bias"))]
    assert prunable_tensors(lenet, exclude=["classifier.5.*", "features.0.*"]) == LENET_WEIGHTS[1:4]


def _graph_model() -> onnx.ModelProto:
    """MatMul with its constant on either side, Gemm with a constant A, one weight tied to two MatMuls
    (once through a Transpose), and a Constant-node weight."""
    rng = np.random.default_rng(0)
    inits = {
        "W_right": rng.standard_normal((4, 4)).astype(np.float32),
        "W_left": rng.standard_normal((4, 4)).astype(np.float32),
        "A_const": rng.standard_normal((3, 4)).astype(np.float32),
        "W_tied": rng.standard_normal((4, 4)).astype(np.float32),
        "c": rng.standard_normal((4,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W_right"], ["h1"]),             # x @ W (constant right)
        helper.make_node("MatMul", ["W_left", "h1"], ["h2"]),             # W @ h (constant left)
        helper.make_node("MatMul", ["h2", "W_tied"], ["h3"]),
        helper.make_node("Transpose", ["W_tied"], ["W_tied_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["h3", "W_tied_t"], ["h4"]),          # the same tensor again
        helper.make_node("Constant", [], ["W_const"],
                         value=numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "v")),
        helper.make_node("MatMul", ["h4", "W_const"], ["h5"]),
        helper.make_node("Gemm", ["A_const", "h5", "c"], ["y"], transB=1),  # A constant, B data
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_prunable_tensors_follow_weight_sources():
    twin = Twin(_graph_model())
    assert prunable_tensors(twin) == ["W_right", "W_left", "W_tied", "W_const", "A_const"]
    assert prunable_tensors(twin, prune_bias=True)[-1] == "c"
    result = prune_twin(twin, method="synflow", density=0.3, iterations=5)
    check_result(twin, result, 0.3)


# ----- exact counts ------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("method", METHODS)
def test_exact_kept_count_for_every_method_and_scope(lenet, mnist_batches, method, scope):
    batches = mnist_batches if method in DATA_METHODS else None
    iterations = 20 if method == "synflow" else None  # count exactness does not need the paper's 100
    for density in (0.1, 0.0137):
        clear(lenet)
        result = prune_twin(lenet, method=method, density=density, scope=scope, batches=batches,
                            iterations=iterations)
        check_result(lenet, result, density)
        assert result.iterations == (iterations or 1) and result.method == method
        if scope == "local":  # each tensor keeps its share (largest remainder): off by less than one
            for kept, size in result.per_tensor.values():
                assert abs(kept - size * result.kept / result.total) < 1


def test_synflow_defaults_to_100_iterations_others_to_1(lenet):
    steps = []
    result = prune_twin(lenet, density=0.2, progress=lambda k, n: steps.append((k, n)))
    assert result.iterations == 100 and steps == [(k, 100) for k in range(0, 101)]
    clear(lenet)
    assert prune_twin(lenet, method="mag", density=0.2).iterations == 1


def test_prune_bias_includes_biases_in_the_count(lenet):
    result = prune_twin(lenet, method="mag", density=0.05, prune_bias=True)
    assert "classifier.5.bias" in result.masks
    check_result(lenet, result, 0.05)


# ----- schedules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_keep_schedule(schedule):
    total, density, n = 1_234_567, 0.003, 25
    counts = keep_schedule(total, density, n, schedule)
    assert len(counts) == n and counts[-1] == round(total * density)
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    for k, count in enumerate(counts[:-1], start=1):
        fraction = density ** (k / n) if schedule == "exponential" else 1 - (1 - density) * k / n
        assert abs(count - total * fraction) <= 1


def test_linear_and_exponential_schedules_give_different_masks(lenet):
    exp = prune_twin(lenet, density=0.01, iterations=10, schedule="exponential").masks
    clear(lenet)
    lin = prune_twin(lenet, density=0.01, iterations=10, schedule="linear").masks
    assert any(not torch.equal(exp[n], lin[n]) for n in exp)


# ----- selection ---------------------------------------------------------------------------------
def brute_force(scores: dict[str, torch.Tensor], keep: int, previous=None) -> dict[str, torch.Tensor]:
    """Keep the `keep` highest unpruned scores; among equal scores the earlier entry (tensor order,
    then flat index), by a stable sort."""
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])
    alive = torch.cat([(previous[n] if previous else torch.ones_like(s, dtype=torch.bool)).reshape(-1)
                       for n, s in scores.items()])
    flat = torch.where(alive, flat, torch.full_like(flat, -math.inf))
    order = torch.sort(-flat, stable=True).indices
    kept = torch.zeros_like(alive)
    kept[order[:keep]] = True
    return dict(zip(scores, [m.reshape(s.shape) for m, s in
                             zip(torch.split(kept, [s.numel() for s in scores.values()]), scores.values())]))


@pytest.mark.parametrize("kind", ["continuous", "zeros", "few_values"])
@pytest.mark.parametrize("size", [1000, 400_000])  # 400k exercises the sampled threshold search
def test_select_masks_equals_a_stable_sort(kind, size):
    gen = torch.Generator().manual_seed(size)
    raw = torch.rand(size, generator=gen, dtype=torch.float64)
    if kind == "zeros":  # SynFlow's many exact zeros: ties at the threshold
        raw[torch.rand(size, generator=gen) < 0.6] = 0.0
    if kind == "few_values":
        raw = torch.floor(raw * 7)
    scores = {"a": raw[: size // 3].reshape(-1, 1), "b": raw[size // 3:]}
    previous = {n: torch.rand(s.shape, generator=gen) < 0.8 for n, s in scores.items()}
    for keep in (0, 1, size // 50, size // 2, int(sum(int(m.sum()) for m in previous.values()))):
        got = select_masks(scores, keep, previous=previous)
        want = brute_force(scores, keep, previous)
        assert all(torch.equal(got[n], want[n]) for n in scores), (kind, keep)
        assert all(not (got[n] & ~previous[n]).any() for n in scores)  # pruned stay pruned


def test_select_masks_ties_keep_the_earliest_entries():
    scores = {"a": torch.zeros(5), "b": torch.zeros(3)}
    masks = select_masks(scores, 6)
    assert masks["a"].all() and masks["b"].tolist() == [True, False, False]


def test_select_masks_refuses_to_keep_more_than_unpruned():
    with pytest.raises(ScoringError, match="unpruned"):
        select_masks({"a": torch.rand(4)}, 3, previous={"a": torch.tensor([True, False, False, True])})


def test_earlier_masks_stay_pruned(lenet):
    gen = torch.Generator().manual_seed(1)
    before = {n: torch.rand(lenet.parameter(n).shape, generator=gen) < 0.5 for n in LENET_WEIGHTS}
    for name, mask in before.items():
        lenet.set_mask(name, mask)
    result = prune_twin(lenet, density=0.1, iterations=5)
    check_result(lenet, result, 0.1)
    assert all(not (result.masks[n] & ~before[n]).any() for n in LENET_WEIGHTS)


# ----- determinism and ablations ------------------------------------------------------------------
def test_seeds(lenet):
    first = prune_twin(lenet, method="rand", density=0.1, seed=3).masks
    clear(lenet)
    again = prune_twin(lenet, method="rand", density=0.1, seed=3).masks
    clear(lenet)
    other = prune_twin(lenet, method="rand", density=0.1, seed=4).masks
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_synflow_is_deterministic(lenet_model):
    a, b = Twin(lenet_model), Twin(lenet_model)
    ma = prune_twin(a, density=0.01, iterations=10).masks
    mb = prune_twin(b, density=0.01, iterations=10).masks
    assert all(torch.equal(ma[n], mb[n]) for n in ma)


def test_shuffle_permutes_each_mask_keeping_its_count(lenet):
    plain = prune_twin(lenet, method="mag", density=0.1).masks
    clear(lenet)
    shuffled = prune_twin(lenet, method="mag", density=0.1, shuffle=True, seed=5)
    check_result(lenet, shuffled, 0.1)
    for name in plain:
        assert int(plain[name].sum()) == int(shuffled.masks[name].sum())
        assert not torch.equal(plain[name], shuffled.masks[name])


def test_invert_keeps_the_lowest_scores(lenet):
    result = prune_twin(lenet, method="mag", density=0.1, invert=True)
    check_result(lenet, result, 0.1)
    magnitudes = {n: lenet.parameter(n).detach().abs() for n in result.masks}
    kept_max = max(float(magnitudes[n][m].max()) for n, m in result.masks.items() if m.any())
    pruned_min = min(float(magnitudes[n][~m].min()) for n, m in result.masks.items())
    assert kept_max <= pruned_min


def test_exclude_keeps_tensors_dense(lenet):
    result = prune_twin(lenet, method="mag", density=0.05, exclude=["classifier.5.weight"])
    assert "classifier.5.weight" not in result.masks and lenet.mask("classifier.5.weight") is None
    check_result(lenet, result, 0.05)


@pytest.mark.parametrize("scope", ["global", "local"])
def test_min_layer_density_keeps_every_layer(lenet, scope):
    density = 10 ** -3
    plain = prune_twin(lenet, method="mag", density=density, scope=scope)
    if scope == "global":  # the floor matters: without it magnitude empties a layer here
        assert any(kept == 0 for kept, _ in plain.per_tensor.values())
    clear(lenet)
    floor = 5e-4
    result = prune_twin(lenet, method="mag", density=density, scope=scope, min_layer_density=floor)
    check_result(lenet, result, density)
    for kept, size in result.per_tensor.values():
        assert kept >= math.ceil(floor * size) >= 1


# ----- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"density": 1.5}, "density"),
    ({"density": 0.1, "method": "nope"}, "unknown method"),
    ({"density": 0.1, "scope": "nope"}, "unknown scope"),
    ({"density": 0.1, "schedule": "nope"}, "unknown schedule"),
    ({"density": 0.1, "iterations": 0}, "iterations"),
    ({"density": 0.1, "method": "snip"}, "needs data"),
    ({"density": 1e-4, "method": "mag", "min_layer_density": 0.5}, "min_layer_density"),
    ({"density": 0.1, "exclude": ["*"]}, "no prunable"),
])
def test_user_errors_are_scoring_errors(lenet, kwargs, message):
    with pytest.raises(ScoringError, match=message) as err:
        prune_twin(lenet, **kwargs)
    assert isinstance(err.value, OnnxPruneError) and "\n" not in str(err.value)
    assert lenet.masks() == {}


def _mlp(in_shape, elem=TensorProto.FLOAT, scale=1.0, layers=2) -> onnx.ModelProto:
    """x -> (MatMul W_i)^layers -> y; weights `scale` times standard normal."""
    rng = np.random.default_rng(0)
    width = 16
    inits = [numpy_helper.from_array((scale * rng.standard_normal((in_shape[-1] if i == 0 else width, width)))
                                     .astype(np.float32), f"W{i}") for i in range(layers)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"W{i}"], [f"h{i + 1}"]) for i in range(layers)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", elem, list(in_shape))],
                              [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_synflow_needs_shapes_of_symbolic_non_batch_dims():
    twin = Twin(_mlp(["batch", "seq", 8]))
    with pytest.raises(ScoringError, match="input 'x' has symbolic dim 1"):
        prune_twin(twin, density=0.1, iterations=2)
    result = prune_twin(twin, density=0.1, iterations=2, input_shapes={"x": (1, 5, 8)})
    check_result(twin, result, 0.1)


def _int_input_model(indexes_table: bool) -> onnx.ModelProto:
    """An INT64 input `ids`: token ids of an embedding (Gather), or a plain integer cast to float."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "E")
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")
    first = (helper.make_node("Gather", ["E", "ids"], ["e"]) if indexes_table
             else helper.make_node("Cast", ["ids"], ["e"], to=TensorProto.FLOAT))
    shape = ["batch", 3] if indexes_table else ["batch", 8]
    graph = helper.make_graph([first, helper.make_node("MatMul", ["e", "W"], ["y"])], "emb",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [table, w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_synflow_refuses_integer_inputs_without_values():
    """Token ids of an embedding get a valid id (inputs.py); another integer input has no all-ones
    value and must be given."""
    twin = Twin(_int_input_model(indexes_table=True))
    check_result(twin, prune_twin(twin, density=0.5, iterations=2), 0.5)
    twin = Twin(_int_input_model(indexes_table=False))
    with pytest.raises(ScoringError, match="input 'ids' is .*INT64"):
        prune_twin(twin, density=0.5, iterations=2)
    result = prune_twin(twin, density=0.5, iterations=2, input_values={"ids": torch.ones(1, 8, dtype=torch.int64)})
    check_result(twin, result, 0.5)


def test_synflow_in_float32_holds_a_flow_past_its_range():
    # 16 layers of width 16 with |weights| ~ 80 on average: R ~ (80 * 16)^16 ~ 5e49 overflows float32
    # (max 3.4e38), not float64. float32 runs the renormalized flow from the start: the same masks.
    model = _mlp([1, 16], scale=100.0, layers=16)
    wide, narrow = Twin(model), Twin(model)
    exact = prune_twin(wide, density=0.1, iterations=3)  # float64 by default
    rounded = prune_twin(narrow, density=0.1, iterations=3, precision=torch.float32)
    check_result(narrow, rounded, 0.1)
    assert all(torch.equal(exact.masks[n], rounded.masks[n]) for n in exact.masks)


def _two_layer(extra: bool) -> onnx.ModelProto:
    """x -> MatMul W0 -> [Dropout 0.5] -> MatMul W1 -> y, [plus an int64 ArgMax(y) output]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W0"),
             numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W1"),
             numpy_helper.from_array(np.array(0.5, dtype=np.float32), "ratio")]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"])]
    nodes += [helper.make_node("Dropout", ["h", "ratio"], ["d"]), helper.make_node("MatMul", ["d", "W1"], ["y"]),
              helper.make_node("ArgMax", ["y"], ["label"], axis=1)] if extra else \
        [helper.make_node("MatMul", ["h", "W1"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    outputs += [helper.make_tensor_value_info("label", TensorProto.INT64, None)] if extra else []
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_synflow_scores_in_eval_mode_on_float_outputs_only():
    """A twin left in train mode still scores with Dropout off, and an integer output adds nothing to R."""
    plain = score(Twin(_two_layer(extra=False)), "synflow")
    twin = Twin(_two_layer(extra=True)).train()
    for _ in range(2):  # train-mode Dropout would make two calls differ
        got = score(twin, "synflow")
        assert all(torch.equal(got[n], plain[n]) for n in plain)
    assert twin.training


@pytest.fixture(scope="module")
def vgg_small_model() -> onnx.ModelProto:
    """394k prunable weights: above the size where thresholds are bracketed from a sample."""
    return export(kaiming_init(VGG(cfg=[16, "M", 32, "M", 64, "M", 128, "M", 256]), seed=0), (1, 3, 16, 16))


@pytest.mark.parametrize("scope", ["global", "local"])
def test_loop_equals_iterating_the_public_steps(vgg_small_model, scope):
    """prune_twin (alive lists, dead entries hidden until compaction, sampled thresholds) gives the
    masks of the plain recipe: score the masked twin, select_masks among the unpruned, repeat."""
    density, n, floor = 0.05, 30, 1e-3  # ~10 % per iteration: the first four are sampled
    twin = Twin(vgg_small_model)
    names = prunable_tensors(twin)
    sizes = {name: twin.parameter(name).numel() for name in names}
    assert sum(sizes.values()) > 2 ** 18
    floors = {name: math.ceil(floor * size) for name, size in sizes.items()}
    masks = None
    for count in keep_schedule(sum(sizes.values()), density, n):
        scores = score(twin, "synflow")
        masks = select_masks(scores, count, scope, previous=masks, floors=floors)
        for name, mask in masks.items():
            twin.set_mask(name, mask)
    result = prune_twin(Twin(vgg_small_model), density=density, iterations=n, scope=scope, min_layer_density=floor)
    assert all(torch.equal(result.masks[name], masks[name]) for name in masks)


# ----- re-pruning an already pruned file (issue 10.4) ---------------------------------------------
def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_repruning_counts_stored_zeros_as_pruned(lenet_model, tmp_path):
    """A pruned file holds its pruned weights as zeros, without masks: a second, stronger pruning
    starts from them (kept is of the whole model, and only nonzero weights are kept)."""
    import onnxprune

    first = onnxprune.prune(lenet_model, compression=1, method="mag")
    again = onnxprune.prune(first.model, compression=2, method="synflow", iterations=5)
    assert again.report.kept == round(again.report.prunable * 0.01)
    for name, mask in again.masks.items():
        assert not (mask & ~first.masks[name]).any(), name  # nothing pruned before comes back
    same = onnxprune.prune(first.model, compression=1, method="mag")  # the density it has: nothing to do
    assert all(torch.equal(same.masks[n], first.masks[n]) for n in first.masks)


def test_repruning_to_a_higher_density_is_refused_in_one_line(lenet_model, tmp_path):
    import subprocess
    import sys

    import onnxprune

    pruned = _save(onnxprune.prune(lenet_model, compression=2, method="mag").model, tmp_path / "l.pruned.onnx")
    with pytest.raises(ScoringError, match=r"already keeps \d+ of \d+ .*density 0\.01\b.*density 0\.1 "):
        onnxprune.prune(pruned, compression=1, method="mag")
    exe = Path(sys.executable).parent / "onnxprune"
    out = tmp_path / "again.onnx"
    proc = subprocess.run([str(exe), "prune", str(pruned), "-c", "1", "-m", "mag", "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "already keeps" in lines[0] and "density 0.01" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
