"""The Python API's side of the contract: its errors name the Python arguments (the CLI shows the
flags instead), the choices the CLI offers are the engine's, and shapes follow one rule."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune import choices
from onnxprune.cli import flags, main
from onnxprune.errors import OnnxPruneError, OnnxPruneWarning
from onnxprune.io import save_model
from onnxprune.pruning import SCORERS, prune_twin, resolve_shapes
from onnxprune.twin import Twin


def mlp(shape=("N", 8)):
    """x -> MatMul W0 -> Relu -> MatMul W1 -> y, with x declared as `shape` (str: symbolic)."""
    rng = np.random.default_rng(0)
    w0 = numpy_helper.from_array(rng.standard_normal((shape[-1], 16)).astype(np.float32), "W0")
    w1 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W1")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W0"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W1"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:-1], 4])], [w0, w1])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def refused(**kwargs) -> str:
    model = kwargs.pop("model", None) or mlp()
    with pytest.raises(OnnxPruneError) as err:
        onnxprune.prune(model, **{"compression": 1, "iterations": 1, "device": "cpu", **kwargs})
    message = str(err.value)
    assert "--" not in message and "\x1f" not in message, message  # arguments, not flags
    return message


# ----- errors name arguments ----------------------------------------------------------------------
def test_symbolic_dim_names_input_shapes():
    message = refused(model=mlp(("N", "seq", 8)))
    assert "input 'x' has symbolic dim 1 ('seq')" in message and "input_shapes" in message


@pytest.mark.parametrize("shapes, words", [
    ({"image": (1, 8)}, ("input_shapes names unknown input(s) ['image']", "['x']")),
    ({"x": (1, 2, 8)}, ("input_shapes", "rank 3", "rank 2")),
    ({"x": (1, 9)}, ("input_shapes", "dim 1 is fixed to 8")),
])
def test_given_shapes_are_checked(shapes, words):
    message = refused(input_shapes=shapes)
    assert all(w in message for w in words), message


@pytest.mark.parametrize("kwargs, words", [
    ({"method": "snip"}, ("method snip scores weights on data: give data",)),
    ({"method": "magic"}, ("unknown method 'magic'", ", ".join(choices.METHODS))),
    ({"format": "zip"}, ("format must be one of", "auto")),
    ({"precision": "float16"}, ("precision must be one of float64, float32",)),
    ({"scope": "layer"}, ("unknown scope 'layer'",)),
])
def test_option_errors_name_the_argument(kwargs, words):
    message = refused(**kwargs)
    assert all(w in message for w in words), message


def test_unused_data_warns_with_the_argument():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        onnxprune.prune(mlp(), compression=1, method="mag", data=[(torch.ones(2, 8), torch.zeros(2))],
                        device="cpu")
    [warning] = [w for w in caught if issubclass(w.category, OnnxPruneWarning)]
    assert str(warning.message).startswith("data is ignored: mag does not look at data")


def test_the_cli_shows_flags_for_the_same_errors(tmp_path):
    save_model(mlp(("N", "seq", 8)), tmp_path / "m.onnx")
    got = CliRunner().invoke(main, ["prune", str(tmp_path / "m.onnx"), "-c", "1"])
    assert got.exit_code == 2 and "give its shape with --input-shape" in got.output
    assert flags()["input_shapes"] == "--input-shape" and flags()["format"] == "--format"


# ----- one source of choices ----------------------------------------------------------------------
def test_choices_are_the_engines():
    from onnxprune.pruning import loop, masks, scorers
    from onnxprune.commands.prune import prune as prune_command

    assert tuple(SCORERS) == choices.METHODS == scorers.METHODS
    assert scorers.DATA_METHODS == choices.DATA_METHODS == tuple(n for n, c in SCORERS.items() if c.needs_data)
    assert loop.SCHEDULES is choices.SCHEDULES and masks.SCOPES is choices.SCOPES
    offered = {p.name: tuple(p.type.choices) for p in prune_command.params if hasattr(p.type, "choices")}
    assert offered == {"method": choices.METHODS + choices.CHANNEL_METHODS, "schedule": choices.SCHEDULES, "scope": choices.SCOPES,
                       "fmt": choices.FORMATS, "precision": choices.PRECISIONS, "device": choices.DEVICES,
                       "structure": choices.STRUCTURES, "layout": choices.LAYOUTS, "color": choices.COLORS}


def test_choices_import_nothing_heavy():
    code = "import sys, onnxprune.choices; print(sorted({'torch', 'onnx', 'numpy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


# ----- one shape rule -----------------------------------------------------------------------------
def test_engine_and_api_resolve_shapes_alike():
    twin = Twin(mlp(("N", "seq", 8)))
    assert resolve_shapes(twin, strict=False) is None
    assert resolve_shapes(twin, {"x": (2, 5, 8)}) == {"x": (2, 5, 8)}
    assert resolve_shapes(Twin(mlp())) == {"x": (1, 8)}  # a symbolic batch dim becomes 1
    # prune_twin's SynFlow feed goes through the same checks as the API's shapes
    with pytest.raises(OnnxPruneError, match="unknown input"):
        prune_twin(twin, density=0.5, iterations=1, input_shapes={"image": (1, 5, 8)})
    with pytest.raises(OnnxPruneError, match="rank 2"):
        prune_twin(twin, density=0.5, iterations=1, input_shapes={"x": (5, 8)})


def test_one_prune_for_both_structures(tmp_path):
    """`onnxprune.prune(structure="channel")` returns the same `Pruned` as weight mode: the smaller
    model, its report, `.kept` (indices kept per tensor axis) in place of masks, and `.save()`."""
    import onnxruntime as ort

    model = mlp((2, 8))
    result = onnxprune.prune(model, structure="channel", macs=0.5, method="l2", round_to=1)
    assert isinstance(result, onnxprune.Pruned) and result.masks == {} and result.twin is None
    assert result.report["macs"]["kept"] <= 0.5 * result.report["macs"]["total"]
    assert result.kept == {"W0:1": result.kept["W0:1"], "W1:0": result.kept["W0:1"]} and len(result.kept["W0:1"]) == 8
    written = result.save(tmp_path / "small.onnx")
    assert written == result.report["output"]["bytes"] == (tmp_path / "small.onnx").stat().st_size
    session = ort.InferenceSession(str(tmp_path / "small.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((2, 8), np.float32)})[0].shape == (2, 4)
    implied = onnxprune.prune(model, macs=0.5, method="l2", round_to=1)  # --macs means channels
    assert implied.kept == result.kept


@pytest.mark.parametrize("kwargs, needle", [
    (dict(structure="channel", macs=0.5, format="sparse"), "format does not apply to structure channel"),
    (dict(structure="channel", macs=0.5, prune_bias=True), "prune_bias does not apply to structure channel"),
    (dict(structure="channel", macs=0.5, device="cuda"), "device does not apply to structure channel"),
    (dict(compression=1, round_to=4), "round_to applies to structure channel only"),
    (dict(compression=1, best_effort=True), "best_effort applies to structure channel only"),
    (dict(compression=1, structure="block"), "structure must be one of weight, channel"),
])
def test_options_that_mean_nothing_in_a_structure_are_refused(kwargs, needle):
    assert needle in refused(**kwargs)


@pytest.mark.parametrize("flag", ["--benchmark", "--best-effort", "--round-to=4"])
def test_channel_flags_are_refused_in_weight_mode(tmp_path, flag):
    path = tmp_path / "m.onnx"
    save_model(mlp((2, 8)), path)
    result = CliRunner().invoke(main, ["prune", str(path), "-c", "1", "-m", "mag", flag])
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1].startswith(f"error: {flag.split('=')[0]}")
    assert not (tmp_path / "m.pruned.onnx").exists()
