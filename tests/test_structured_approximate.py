"""`prune --structure channel --approximate`: channels whose removal changes the computation (a
LayerNorm's statistics over a transformer's hidden size, a constant folded into a padded Conv), with
the report's measured deviation and `verify --reference` against the reference this mode defines."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from models.torch_nets import AttentionStack, export
from onnxprune.structured import analyze, prune_channels
from onnxprune.structured.producers import PADDED_FOLD
from onnxprune.structured.rules_per_channel import NORM_STATISTICS
from test_structured import OffsetNet, run
from test_structured_heads import CountFromElsewhere, build, head_channels

CLI = [sys.executable, "-m", "onnxprune"]


@pytest.fixture(scope="module")
def block() -> onnx.ModelProto:
    torch.manual_seed(0)
    return export(AttentionStack(layers=1, d=32, inputs=8, heads=4), (1, 6, 8), dynamo=True)


def test_layer_norm_over_the_hidden_size_goes_in_approximate_mode_only(block, tmp_path):
    """Exact mode freezes the residual stream (LayerNorm normalizes over it) and says which flag opens
    it; approximate mode prunes it, the LayerNorms normalizing over the kept channels. The report
    measures how far that moved the output (it does: the zeroed original is no longer its equal), and
    verify judges the file against the original with those LayerNorms masked to the kept channels."""
    exact, loose = analyze(block), analyze(block, approximate=True)
    assert any("--approximate" in reason for reason in exact.reasons)
    assert loose.coverage() == 1.0 > exact.coverage()
    result = prune_channels(block, macs=0.5, approximate=True, round_to=1)
    stream = loose.approximate[NORM_STATISTICS]
    assert result.removed[stream].any() and result.report["approximate"]["channels"][NORM_STATISTICS] > 0
    assert result.report["approximate"]["deviation"]["logits"] > 1e-3
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 6, 8)).astype(np.float32)}
    assert run(result.model, feeds)[0].shape == run(block, feeds)[0].shape
    path, out = tmp_path / "block.onnx", tmp_path / "pruned.onnx"
    onnx.save(block, path)
    onnx.save(result.model, out)
    done = subprocess.run(CLI + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "means over the kept channels: max relative diff" in done.stdout, \
        done.stdout + done.stderr


def test_exact_mode_and_its_report_are_unchanged(block):
    """Without the flag nothing approximate is removed, and the report has no approximate entry."""
    result = prune_channels(block, macs=0.8, round_to=1, best_effort=True)
    assert "approximate" not in result.report
    assert not result.graph.approximate


def test_an_approximation_that_gains_nothing_is_undone():
    """The LayerNorm's channels are the graph output, frozen anyway: labelling them approximate would
    only freeze more, so approximate mode keeps exact mode's coverage there and says why."""
    torch.manual_seed(0)
    model = export(torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.LayerNorm(32)), (1, 6, 8))
    exact, loose = analyze(model), analyze(model, approximate=True)
    assert loose.coverage() == pytest.approx(exact.coverage()) and not loose.approximate
    assert any("frozen elsewhere" in reason for reason in loose.reasons)


def test_a_hidden_size_read_for_the_head_size_is_pinned(tmp_path):
    """torch's TorchScript export of nn.MultiheadAttention reads the hidden size E through Shape and
    sizes the heads with E / H: exact mode freezes the stream there. Approximate mode pins that count
    (the Shape's output gets back what the removed channels took off, the zeroed reference's count)
    and gives each Reshape of a narrowed tensor a constant of its own: the stream goes, the file runs
    with the original's output shapes, and verify matches it with the reference."""
    torch.manual_seed(0)
    model = export(AttentionStack(layers=1, d=32, inputs=8, heads=4), (1, 6, 8))
    exact, loose = analyze(model), analyze(model, approximate=True)
    assert loose.coverage() == 1.0 > exact.coverage()
    result = prune_channels(model, macs=0.5, approximate=True, round_to=1)
    assert result.removed[loose.approximate[NORM_STATISTICS]].any()
    shapes = {n.output[0] for n in result.model.graph.node if n.op_type == "Shape"}
    assert any(n.op_type == "Add" and n.input[0] in shapes for n in result.model.graph.node)
    for batch in (1, 3):
        feeds = {"input": np.random.default_rng(batch).standard_normal((batch, 6, 8)).astype(np.float32)}
        assert run(result.model, feeds)[0].shape == run(model, feeds)[0].shape
    path, out = tmp_path / "mha.onnx", tmp_path / "pruned.onnx"
    onnx.save(model, path)
    onnx.save(result.model, out)
    done = subprocess.run(CLI + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "verified" in done.stdout, done.stdout + done.stderr


def test_a_count_read_for_other_channels_gets_a_constant_in_approximate_mode():
    """b's units are viewed with the count read from a's at run time: exact mode freezes both
    (tests/test_structured_heads.py); approximate mode gives b's view a constant of its own, which
    is exact (the output equals the zeroed reference's)."""
    model = build(CountFromElsewhere())
    loose = analyze(model, approximate=True)
    a, b = (head_channels(loose, f"{name}.weight", 0) for name in "ab")
    assert loose.coverage() == 1.0 and not loose.frozen[a].any() and not loose.frozen[b].any()
    result = prune_channels(model, macs=0.5, approximate=True, round_to=1)
    assert result.removed[a].any() and result.removed[b].any()
    assert max(result.report["approximate"]["deviation"].values(), default=0.0) < 1e-5


def test_padded_fold_is_judged_against_edge_padding(tmp_path):
    """A constant channel read by a padded Conv: approximate mode folds it into the bias (the border
    differs from the original's zero padding), the report names the rule, and verify judges the file
    against the original with those channels padded by their own value (edge), at exact mode's
    tolerance: a folded bias off by 1e-2 fails."""
    torch.manual_seed(0)
    model = export(OffsetNet().eval(), (1, 3, 10, 10))
    loose = analyze(model, approximate=True)
    point = next(ch for (t, ax), ch in loose.keys().items() if t.startswith("point") and ax == 0)
    assert not loose.frozen[point].any() and PADDED_FOLD in loose.approximate
    path, out = tmp_path / "offsets.onnx", tmp_path / "pruned.onnx"
    onnx.save(model, path)
    done = subprocess.run(CLI + ["prune", str(path), "--structure", "channel", "--macs", "0.5", "--approximate",
                                 "--round-to", "1", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and "approximate:" in done.stdout, done.stderr
    done = subprocess.run(CLI + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "not judged" not in done.stdout and "(allowed 1e-05)" in done.stdout, \
        done.stdout + done.stderr
    pruned = onnx.load(str(out))
    record = json.loads(next(p.value for p in pruned.metadata_props if p.key == "onnxprune.removed_channels"))
    [border] = record["borders"]
    conv = next(n for n in pruned.graph.node if n.output[0] == border["node"])
    bias = next(t for t in pruned.graph.initializer if t.name == conv.input[2])
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + np.float32(1e-2), bias.name))
    onnx.save(pruned, tmp_path / "off.onnx")
    done = subprocess.run(CLI + ["verify", str(tmp_path / "off.onnx"), "--reference", str(path)], capture_output=True,
                          text=True)
    assert done.returncode != 0, done.stdout


def test_approximate_in_weight_mode_is_one_line_exit_2(tmp_path, block):
    path = tmp_path / "block.onnx"
    onnx.save(block, path)
    done = subprocess.run(CLI + ["prune", str(path), "--approximate", "-o", str(tmp_path / "o.onnx")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "--approximate applies to --structure channel only" in done.stderr


def test_class_token_expanded_to_the_batch_is_a_parameter_of_the_stream():
    """torchvision's ViT concatenates class_token.expand(n, -1, -1) to the patches (TorchScript writes
    the target shape as Where(Equal(shape, -1), 1, shape) of the batch): the token is sliced with the
    stream's channels instead of freezing it, so what stops the stream is the LayerNorm, named as such."""
    import zoo

    cg = analyze(zoo.zoo_model("vit_tiny-torchscript"))
    assert not any("Expand" in reason for reason in cg.reasons)
    assert any(t == "class_token" for t, _ in cg.keys())
    assert any("LayerNormalization" in reason and "--approximate" in reason for reason in cg.reasons)


def test_hand_written_layer_norm_averages_the_kept_channels(tmp_path):
    """paddle2onnx writes LayerNorm as ReduceMean / Sub / Pow / ReduceMean / Sqrt / Div: in approximate
    mode both means run over the kept channels (the report names the rule and the moved output);
    exact mode names the flag. verify judges the file against the original with those means written
    out over the kept positions (the record names them), at exact mode's tolerance."""
    from pathlib import Path

    from onnxprune.structured.rules_per_channel import MEAN_STATISTICS

    path = Path(__file__).resolve().parents[1] / "models" / "zoo" / "paddle_mlp.onnx"
    model = onnx.load(path)
    assert any("--approximate: " + MEAN_STATISTICS in reason for reason in analyze(model).reasons)
    result = prune_channels(model, macs=0.5, approximate=True, best_effort=True)
    assert result.report["approximate"]["channels"][MEAN_STATISTICS] > 0
    assert max(result.report["approximate"]["deviation"].values()) > 1e-3
    out = tmp_path / "pruned.onnx"
    onnx.save(result.model, out)
    done = subprocess.run(CLI + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "not judged" not in done.stdout and "(allowed 1e-05)" in done.stdout, \
        done.stdout + done.stderr
    means = json.loads(next(p.value for p in result.model.metadata_props
                            if p.key == "onnxprune.removed_channels"))["means"]
    assert means and all(m["removed"] and m["width"] > len(m["removed"]) for m in means)


def test_graphs_with_constant_nodes_record_their_removals():
    """paddle2onnx writes every parameter as a Constant node (no inputs): recording a pruning, with or
    without approximate rules, reads each node's inputs only where it has some."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value.astype(np.float32), name))
              for name, value in (("w0", rng.normal(size=(8, 3, 3, 3))), ("s", np.array([0.5])),
                                  ("g", rng.normal(size=(1, 8, 1, 1))), ("w1", rng.normal(size=(4, 8, 1, 1))))]
    nodes = consts + [helper.make_node("Conv", ["x", "w0"], ["c0"]), helper.make_node("Mul", ["c0", "s"], ["m"]),
                      helper.make_node("ReduceMean", ["m"], ["avg"], axes=[1], keepdims=1),
                      helper.make_node("Sub", ["m", "avg"], ["d"]), helper.make_node("Mul", ["d", "g"], ["dg"]),
                      helper.make_node("Conv", ["dg", "w1"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for approximate in (False, True):
        result = prune_channels(model, macs=0.6, approximate=approximate, round_to=1, best_effort=True)
        assert result.removed.any() == approximate  # the mean over channels holds them in exact mode


def jax2tf_layer_norm(width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """x [N, 8] -> Gemm -> Relu -> LayerNorm written out as jax2tf writes it (magika): mean and mean
    square as ReduceSum times the constant 1 / width, var = max(E[x^2] - E[x]^2, 0), and
    rsqrt(var + eps) times the scale as one computed factor -> + shift -> MatMul to 4 outputs."""
    h = onnx.helper
    rng = np.random.default_rng(seed)
    consts = {"w0": rng.standard_normal((width, 8)), "b0": rng.standard_normal(width), "axes": np.array([1]),
              "recip": np.array(1.0 / width), "zero": np.array(0.0), "eps": np.array(1e-5),
              "scale": rng.uniform(0.5, 1.5, width), "shift": rng.standard_normal(width) * 0.1,
              "w1": rng.standard_normal((width, 4))}
    init = [onnx.numpy_helper.from_array(v.astype(np.int64 if k == "axes" else np.float32), k) for k, v in consts.items()]
    steps = [("Gemm", ["x", "w0", "b0"], "g", {"transB": 1}), ("Relu", ["g"], "r", {}),
             ("ReduceSum", ["r", "axes"], "sum", {}), ("Mul", ["sum", "recip"], "mean", {}),
             ("Mul", ["r", "r"], "sq", {}), ("ReduceSum", ["sq", "axes"], "sumsq", {}),
             ("Mul", ["recip", "sumsq"], "meansq", {}), ("Mul", ["mean", "mean"], "mean2", {}),
             ("Sub", ["meansq", "mean2"], "diff", {}), ("Max", ["zero", "diff"], "var", {}),
             ("Add", ["var", "eps"], "vareps", {}), ("Sqrt", ["vareps"], "std", {}),
             ("Reciprocal", ["std"], "inv", {}), ("Mul", ["inv", "scale"], "factor", {}),
             ("Sub", ["r", "mean"], "centred", {}), ("Mul", ["centred", "factor"], "normed", {}),
             ("Add", ["normed", "shift"], "ln", {}), ("MatMul", ["ln", "w1"], "y", {})]
    nodes = [h.make_node(op, ins, [out], **kw) for op, ins, out, kw in steps]
    graph = h.make_graph(nodes, "jax2tf_ln", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])], init)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_a_sum_divided_by_the_width_averages_the_kept_channels(tmp_path):
    """jax2tf's LayerNorm (magika's) sums over the channels and multiplies by the constant 1 / width:
    approximate mode removes the normalized channels and rewrites that constant to 1 / kept for the
    readers of those sums alone, slicing the scale inside the computed rsqrt * scale factor. verify
    judges the file against the original with both sums written out over the kept channels; exact
    mode names the flag; with the constant 1 / width wrong, the sums are not means and stay frozen."""
    from onnxprune.structured.rules_per_channel import MEAN_STATISTICS

    model, path, out = jax2tf_layer_norm(), tmp_path / "ln.onnx", tmp_path / "pruned.onnx"
    onnx.save(model, path)
    assert any("--approximate: " + MEAN_STATISTICS in reason for reason in analyze(model).reasons)
    result = prune_channels(model, macs=0.5, approximate=True, round_to=1, best_effort=True)
    assert result.report["approximate"]["channels"][MEAN_STATISTICS] == 8
    onnx.save(result.model, out)
    done = subprocess.run(CLI + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "not judged" not in done.stdout and "(allowed 1e-05)" in done.stdout, \
        done.stdout + done.stderr
    recips = [onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name.startswith("recip")]
    assert sorted(float(v) for v in recips) == pytest.approx([1 / 16, 1 / 8, 1 / 8])
    wrong = jax2tf_layer_norm()
    next(t for t in wrong.graph.initializer if t.name == "recip").CopyFrom(
        onnx.numpy_helper.from_array(np.array(1 / 15, np.float32), "recip"))
    assert not analyze(wrong, approximate=True).sites


def tokens_layer_norm(shift: float = 0.0, extra_reader: bool = False, seed: int = 0) -> onnx.ModelProto:
    """magika's first block, small: x [N, 8, 4] -> MatMul to 6 channels -> Relu -> Reshape [N, 4, 12] (two
    tokens side by side) -> a LayerNorm over the 4 tokens written out as jax2tf does (ReduceSum times
    1 / 4; mean and variance reshaped and broadcast to [N, 1, 12] through one shared Cast(Concat)
    shape; Reciprocal(Sqrt(var + eps)); a scale and a shift per token, the shift `shift` times a
    ramp) -> MatMul to 3. `extra_reader`: that shape also sizes a Reshape of 3 rows of x, an output."""
    h = onnx.helper
    rng = np.random.default_rng(seed)
    consts = {"w0": rng.standard_normal((4, 6)), "start": np.array([0]), "one": np.array([1]), "four": np.array([4]),
              "twelve": np.array([12]), "three": np.array([3]), "axes": np.array([1]), "quarter": np.array(0.25), "zero": np.array(0.0),
              "eps": np.array(1e-5), "scale": rng.uniform(0.5, 1.5, (1, 4, 1)),
              "shift": shift * np.linspace(-1, 1, 4).reshape(1, 4, 1), "w1": rng.standard_normal((12, 3))}
    ints = {"start", "one", "four", "twelve", "three", "axes"}
    init = [onnx.numpy_helper.from_array(v.astype(np.int64 if k in ints else np.float32), k) for k, v in consts.items()]
    steps = [("MatMul", ["x", "w0"], "d", {}), ("Relu", ["d"], "r", {}), ("Shape", ["x"], "shape", {}),
             ("Slice", ["shape", "start", "one"], "batch", {}), ("Concat", ["batch", "four", "twelve"], "tok", {"axis": 0}),
             ("Reshape", ["r", "tok"], "t", {}), ("Concat", ["batch", "one", "twelve"], "row64", {"axis": 0}),
             ("Cast", ["row64"], "row", {"to": onnx.TensorProto.INT64}),
             ("ReduceSum", ["t", "axes"], "sum", {"keepdims": 0}), ("Mul", ["sum", "quarter"], "mean", {}),
             ("Mul", ["t", "t"], "sq", {}), ("ReduceSum", ["sq", "axes"], "sumsq", {"keepdims": 0}),
             ("Mul", ["sumsq", "quarter"], "meansq", {}), ("Mul", ["mean", "mean"], "mean2", {}),
             ("Sub", ["meansq", "mean2"], "diff", {}), ("Max", ["zero", "diff"], "var", {}),
             ("Reshape", ["var", "row"], "var1", {}), ("Expand", ["var1", "row"], "varb", {}),
             ("Add", ["varb", "eps"], "vareps", {}), ("Sqrt", ["vareps"], "std", {}),
             ("Reciprocal", ["std"], "inv", {}), ("Mul", ["inv", "scale"], "factor", {}),
             ("Reshape", ["mean", "row"], "mean1", {}), ("Expand", ["mean1", "row"], "meanb", {}),
             ("Sub", ["t", "meanb"], "centred", {}), ("Mul", ["centred", "factor"], "normed", {}),
             ("Add", ["normed", "shift"], "ln", {}), ("MatMul", ["ln", "w1"], "y", {})]
    outputs = [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 3])]
    if extra_reader:
        steps += [("Slice", ["x", "start", "three", "axes"], "rows", {}), ("Reshape", ["rows", "row"], "other", {})]
        outputs.append(h.make_tensor_value_info("other", onnx.TensorProto.FLOAT, ["N", 1, 12]))
    nodes = [h.make_node(op, ins, [out], **kw) for op, ins, out, kw in steps]
    graph = h.make_graph(nodes, "tokens_ln", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 4])],
                         outputs, init)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_a_norm_over_tokens_keeps_channels_apart(tmp_path, shift):
    """A LayerNorm over the tokens (magika's) normalizes each channel on its own, so its channels go in
    exact mode: the shared [N, 1, C] shape of its Reshapes and Expands is rewritten once, for all of
    them, and verify finds the file equal to the zeroed original. With a shift that varies per token,
    a removed channel is that shift, a map of constants: the MatMul reading it gets the map's product
    added after it (the input's shape is fixed but for the batch), still exact. A reader of the
    shared shape that keeps its size (a Reshape of the input's rows) freezes the channels."""
    model, path, out = tokens_layer_norm(shift), tmp_path / "tokens.onnx", tmp_path / "pruned.onnx"
    onnx.save(model, path)
    result = prune_channels(model, macs=0.5, round_to=1, best_effort=True)
    assert 0 < result.removed.sum() < 6 and not result.report.get("approximate")
    onnx.save(result.model, out)
    done = subprocess.run(CLI + ["verify", str(out), "--reference", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "not judged" not in done.stdout and "(allowed 1e-05)" in done.stdout, \
        done.stdout + done.stderr
    kept = 6 - int(result.removed.sum())
    sizes = {t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert sizes["twelve"].tolist() == [2 * kept]
    added = [n for n in result.model.graph.node if n.op_type == "Add" and n.output[0] == "y"]
    assert len(added) == (shift > 0) and all(sizes[n.input[1]].shape == (1, 4, 3) for n in added)
    shared = analyze(tokens_layer_norm(shift, extra_reader=True))
    assert shared.frozen.all() and any("keeps its size" in reason for reason in shared.reasons)
