"""Bad input never crashes, corrupts or lies (issue 6): a table of bad inputs through the real command.

Every case runs the installed `onnxprune` (next to sys.executable) in a subprocess, in a folder of its
own, and must: exit with the expected code, end stderr with one `error: ...` line holding the expected
fragments, print no traceback, leave every file in the folder byte-identical and add none (no partial
output, no temporary file). The subprocesses run in parallel threads (each pays the ~2-3 s torch
import; the models are tiny), so the table costs a few of those, not forty.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fuzzing import contract_problems, mlp, cnn, snapshot

EXE = Path(sys.executable).parent / "onnxprune"


# ----- models for the cases ------------------------------------------------------------------------
def save(folder: Path, model: onnx.ModelProto, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def single_node(op: str, inputs, outputs, inits, nodes_extra=(), domain: str = "", opsets=(("", 17),),
                **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, [i if isinstance(i, str) else i.name for i in inputs],
                            [o.name for o in outputs], name=f"my_{op.lower()}", domain=domain, **attrs)
    graph_inputs = [i for i in inputs if not isinstance(i, str)]
    graph = helper.make_graph([*nodes_extra, node], "g", graph_inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def custom_op_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    return single_node("FancyOp", [vi("x", TensorProto.FLOAT, ["N", 3]), "w"], [vi("y", TensorProto.FLOAT, ["N", 4])],
                       [w], domain="com.example", opsets=(("", 17), ("com.example", 1)))


def qlinearconv_model() -> onnx.ModelProto:
    """A quantized conv: uint8 activations, int8 weights, scales and zero points."""
    inits = [numpy_helper.from_array(np.float32(0.1), "xs"), numpy_helper.from_array(np.uint8(128), "xz"),
             numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "w"), numpy_helper.from_array(np.float32(0.05), "ws"),
             numpy_helper.from_array(np.int8(0), "wz"), numpy_helper.from_array(np.float32(0.2), "ys"),
             numpy_helper.from_array(np.uint8(128), "yz")]
    return single_node("QLinearConv", [vi("x", TensorProto.UINT8, [1, 1, 5, 5]), "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                       [vi("y", TensorProto.UINT8, [1, 2, 3, 3])], inits)


def dequantized_weights_model() -> onnx.ModelProto:
    """Float Conv whose weight is DequantizeLinear(int8 initializer): a QDQ-quantized graph."""
    inits = [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "wq"),
             numpy_helper.from_array(np.float32(0.05), "ws"), numpy_helper.from_array(np.int8(0), "wz")]
    dq = helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="dequant_w")
    return single_node("Conv", [vi("x", TensorProto.FLOAT, [1, 1, 5, 5]), "w"], [vi("y", TensorProto.FLOAT, [1, 2, 3, 3])],
                       inits, nodes_extra=[dq])


def no_weights_model() -> onnx.ModelProto:
    return single_node("Relu", [vi("x", TensorProto.FLOAT, ["N", 4])], [vi("y", TensorProto.FLOAT, ["N", 4])], [])


def integer_features_model() -> onnx.ModelProto:
    """int64 features -> Cast -> MatMul: an integer input that indexes nothing, so no value for it
    can be derived (token ids into an embedding get valid ids and prune; see test_real_models)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "w")]
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("MatMul", ["f", "w"], ["y"], name="proj")]
    graph = helper.make_graph(nodes, "g", [vi("ids", TensorProto.INT64, ["N", 5])],
                              [vi("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def symbolic_cnn() -> onnx.ModelProto:
    model = cnn()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    return model


def deep_mlp(depth: int = 40, width: int = 16) -> onnx.ModelProto:
    """Weights of 4 in a 16-wide stack: the SynFlow signal grows ~64x per layer, past float32's
    3.4e38 by layer ~22 (float64 holds up to ~170 layers)."""
    model = mlp((width,) * (depth + 1))
    for tensor in model.graph.initializer:
        if tensor.name.endswith("weight"):
            tensor.CopyFrom(numpy_helper.from_array(np.full(tuple(tensor.dims), 4.0, np.float32), tensor.name))
    return model


def external(location: str):
    """mlp() whose first weight lives in an external file at `location`."""
    @writes_file
    def build(folder: Path) -> Path:
        model = mlp()
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=location)
        tensor.external_data.add(key="length", value="512")
        return save(folder, model)
    return build


def npz(folder: Path, **arrays) -> Path:
    path = folder / "data.npz"
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def images(n=32, shape=(1, 8, 8)):
    return np.random.default_rng(0).integers(0, 255, (n, *shape), dtype=np.uint8)


# ----- the table -----------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    setup: Callable[[Path], list[str]]  # writes the files, returns the command line after `onnxprune`
    code: int
    fragments: tuple[str, ...]  # regexes, all searched (case-insensitive) in the last stderr line
    usage: bool = False  # a Click usage error: the usage block may precede the error line


def prune_cmd(model: Path, *extra: str, output: str | None = None) -> list[str]:
    out = output if output is not None else str(model.parent / "out.onnx")
    return ["prune", str(model), "-o", out, "--quiet", *extra]


def with_model(build, *extra, output=None, c: str | None = "1"):
    """Setup: save build() and prune it with `extra` options (and --compression c unless None)."""
    def setup(folder: Path) -> list[str]:
        model = build(folder) if getattr(build, "writes_file", False) else save(folder, build())
        args = ["--compression", c] if c is not None else []
        return prune_cmd(model, *args, *extra, output=output(folder) if callable(output) else output)
    return setup


def writes_file(build):
    """Mark a builder that writes the model file itself (given the folder) instead of returning a model."""
    build.writes_file = True
    return build


def raw(data: bytes):
    @writes_file
    def build(folder: Path) -> Path:
        path = folder / "model.onnx"
        path.write_bytes(data)
        return path
    return build


def data_case(**arrays):
    def setup(folder: Path) -> list[str]:
        model = save(folder, cnn())
        return prune_cmd(model, "--compression", "1", "--method", "snip", "--data", str(npz(folder, **arrays)))
    return setup


def under_regular_file(folder: Path) -> str:
    (folder / "plain.txt").write_text("not a folder")
    return str(folder / "plain.txt" / "out.onnx")


VALID = mlp().SerializeToString()
TENSOR = numpy_helper.from_array(np.ones(3, np.float32), "t").SerializeToString()
DEEP = deep_mlp()

CASES = [
    # --- the input file
    Case("model is a folder", lambda f: prune_cmd(f, "-c", "1", output=str(f / "o.onnx")), 2, (r"not a file",)),
    Case("model missing", lambda f: prune_cmd(f / "nope.onnx", "-c", "1"), 2, (r"no such file", "nope.onnx")),
    Case("empty file", with_model(raw(b"")), 2, (r"empty file",)),
    Case("truncated model", with_model(raw(VALID[: len(VALID) // 2])), 2, (r"not an ONNX model",)),
    Case("random bytes", with_model(raw(np.random.default_rng(1).bytes(300))), 2, (r"not an ONNX model",)),
    Case("protobuf, not a model", with_model(raw(TENSOR)), 2, (r"not an ONNX model",)),
    Case("text file", with_model(raw(b"ir_version: 8\ngraph {}\n")), 2, (r"not an ONNX model",)),
    Case("checker fails", with_model(lambda: _rename_input(mlp(), "fc0", "ghost")), 2,
         (r"invalid ONNX model", "ghost")),
    Case("shapes do not fit", with_model(lambda: _set_dim(mlp(), 1, 5)), 2, (r"invalid ONNX model", "fc0")),
    Case("opset from the future", with_model(lambda: _opset(mlp(), 99)), 2, (r"opset 99", "newer")),
    Case("external data missing", with_model(external("weights.bin")), 2, (r"missing", "weights.bin")),
    Case("external data ../../etc/passwd", with_model(external("../../etc/passwd")), 2, (r"outside the model's folder",)),
    Case("external data absolute path", with_model(external("/etc/passwd")), 2, (r"absolute location",)),
    # --- what the graph holds
    Case("unsupported custom op", with_model(custom_op_model), 2, (r"unsupported op FancyOp", "com.example", "my_fancyop")),
    Case("quantized QLinearConv", with_model(qlinearconv_model), 2, (r"QLinearConv", "my_qlinearconv")),
    Case("DequantizeLinear weights", with_model(dequantized_weights_model), 2,
         (r"no prunable weights", "DequantizeLinear", "dequant_w")),
    Case("no prunable weights", with_model(no_weights_model), 2, (r"no prunable",)),
    Case("integer features, data-free", with_model(integer_features_model), 2, (r"ids", r"int64|integer")),
    Case("symbolic dims, no --input-shape", with_model(symbolic_cnn), 2, (r"--input-shape", "x")),
    Case("--input-shape unknown input", with_model(cnn, "--input-shape", "image=1x1x8x8"), 2, (r"unknown input", "image")),
    Case("--input-shape wrong rank", with_model(symbolic_cnn, "--input-shape", "x=1x8x8"), 2, (r"rank|dims",)),
    Case("--input-shape malformed", with_model(cnn, "--input-shape", "x=1xAx8"), 2, (r"--input-shape",)),
    # --- options
    Case("--compression negative", with_model(mlp, c="-1"), 2, (r"--compression", ">= 0")),
    Case("--compression nan", with_model(mlp, c="nan"), 2, (r"--compression", "finite")),
    Case("--compression inf", with_model(mlp, c="inf"), 2, (r"--compression", "finite")),
    Case("--compression keeps < 1 weight", with_model(mlp, c="9"), 2, (r"fewer than one|no weight",)),
    Case("--density 0", with_model(mlp, "--density", "0", c=None), 2, (r"--density", r"\(0, 1\]")),
    Case("--density 1.5", with_model(mlp, "--density", "1.5", c=None), 2, (r"--density", r"\(0, 1\]")),
    Case("--sparsity 1", with_model(mlp, "--sparsity", "1", c=None), 2, (r"--sparsity", r"\[0, 1\)")),
    Case("--compression and --density", with_model(mlp, "--density", "0.1"), 2, (r"exactly one",)),
    Case("no target given", with_model(mlp, c=None), 2, (r"exactly one",)),
    Case("output folder missing", with_model(mlp, output=lambda f: str(f / "no" / "out.onnx")), 2, (r"does not exist",)),
    Case("output under a regular file", with_model(mlp, output=under_regular_file), 2, (r"not a folder",)),
    Case("output in read-only /proc", with_model(mlp, output="/proc/out.onnx"), 2, (r"not writable",)),
    Case("output is a folder", with_model(mlp, output=lambda f: str(f)), 2, (r"is a folder",)),
    Case("output is the input", with_model(mlp, output=lambda f: str(f / "model.onnx")), 2,
         (r"is the input", "--overwrite")),
    Case("--report in a missing folder", with_model(mlp, "--report", "/nonexistent/r.json"), 2, (r"does not exist",)),
    # --- data files
    Case("data method without --data", with_model(cnn, "--method", "snip"), 2, (r"--data",)),
    Case("--data missing file", with_model(cnn, "--method", "snip", "--data", "/nonexistent.npz"), 2, (r"nonexistent",)),
    Case("npz wrong keys", data_case(images=images(), labels=np.zeros(32, np.int64)), 2, (r"x_train|y_train",)),
    Case("npz images with 2 channels", data_case(x_train=images(shape=(2, 8, 8)), y_train=np.zeros(32, np.int64)),
         2, (r"channel",)),
    Case("npz labels not one per image", data_case(x_train=images(), y_train=np.zeros((32, 2), np.int64)), 2,
         (r"labels",)),
    Case("labels out of range", data_case(x_train=images(), y_train=np.full(32, 7, np.int64)), 2, (r"label",)),
    Case("empty dataset", data_case(x_train=images(n=0), y_train=np.zeros(0, np.int64)), 2, (r"empty|no ",)),
    # --- the other commands load through the same door
    Case("info on a truncated file", lambda f: ["info", str(raw(VALID[:40])(f))], 2, (r"not an ONNX model",)),
    Case("verify with escaping external data", lambda f: ["verify", str(external("../x/../../etc/passwd")(f))], 2,
         (r"outside the model's folder",)),
    # --- Click's own usage errors: usage block, then one error line, exit 2
    Case("unknown option", with_model(mlp, "--frobnicate"), 2, (r"no such option", "--frobnicate"), usage=True),
    Case("bad --method choice", with_model(mlp, "--method", "magic"), 2, (r"--method", "magic"), usage=True),
    Case("--iterations 0", with_model(mlp, "--iterations", "0"), 2, (r"--iterations",), usage=True),
    Case("--compression not a number", with_model(mlp, c="lots"), 2, (r"--compression", "lots"), usage=True),
    Case("missing MODEL argument", lambda f: ["prune", "-c", "1"], 2, (r"missing argument",), usage=True),
    Case("no command at all", lambda f: [], 2, (r"no command",), usage=True),
    Case("unknown command", lambda f: ["purne", "m.onnx"], 2, (r"no such command", "purne"), usage=True),
]


def _rename_input(model: onnx.ModelProto, node_name: str, new: str) -> onnx.ModelProto:
    next(n for n in model.graph.node if n.name == node_name).input[0] = new
    return model


def _set_dim(model: onnx.ModelProto, axis: int, value: int) -> onnx.ModelProto:
    model.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = value
    return model


def _opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    model.opset_import[0].version = version
    return model


# ----- running the table ------------------------------------------------------------------------
@dataclass
class Result:
    args: list[str]
    code: int
    stderr: str
    problems: list[str]


def run_case(case: Case, folder: Path) -> Result:
    folder.mkdir()
    args = case.setup(folder)
    before = snapshot(folder)
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    proc = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300, env=env, cwd=folder)
    problems = contract_problems(proc.returncode, proc.stdout, proc.stderr, folder, before, None,
                                 usage=case.usage, codes=(case.code,))
    return Result(args, proc.returncode, proc.stderr, problems)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    """Every case at once, in threads: the subprocesses overlap their start-up (torch import)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    folders = {case.id: root / re.sub(r"\W+", "_", case.id) for case in CASES}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case.id: pool.submit(run_case, case, folders[case.id]) for case in CASES}
        return {name: future.result() for name, future in futures.items()}


def test_table_is_large_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, results):
    result = results[case.id]
    last = (result.stderr.strip().splitlines() or [""])[-1]
    assert not result.problems, f"{result.args}: {result.problems}\n{result.stderr}"
    for fragment in case.fragments:
        assert re.search(fragment, last, re.IGNORECASE), f"{fragment!r} not in {last!r}"


def test_debug_shows_the_traceback_and_keeps_the_code(tmp_path):
    """--debug anywhere on the line: the traceback appears, the exit code and the last line stay."""
    model = save(tmp_path, no_weights_model())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(EXE), *prune_cmd(model, "-c", "1"), "--debug"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler installed (bit 15 of SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def test_sigterm_ends_with_one_line_and_nothing_left(tmp_path):
    """A pipeline's timeout (SIGTERM) mid-prune: exit 143, `error: terminated`, no temporary files.
    The signal is sent once the CLI's handler is in place (read from /proc, no sleep to tune)."""
    model = save(tmp_path, mlp((64,) * 9))
    before = snapshot(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([str(EXE), *prune_cmd(model, "-c", "2", "--iterations", "100000")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not _catches_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "error: terminated" and "Traceback" not in stderr
    assert snapshot(tmp_path) == before


def test_float32_scores_a_flow_beyond_its_range(tmp_path):
    """A flow of ~1e49 (past float32's 3.4e38) used to be an error in float32; the renormalized flow
    scores it, and keeps the masks float64 gives (in-process: no start-up)."""
    from click.testing import CliRunner

    from onnxprune.cli import main

    model = save(tmp_path, DEEP)
    kept = []
    for precision in ("float32", "float64"):
        out = tmp_path / f"{precision}.onnx"
        result = CliRunner().invoke(main, prune_cmd(model, "-c", "1", "--iterations", "1", "--precision", precision,
                                                    "--format", "dense", output=str(out)))
        assert result.exit_code == 0, result.stderr
        kept.append([numpy_helper.to_array(t) != 0 for t in onnx.load(str(out)).graph.initializer])
    assert all(np.array_equal(a, b) for a, b in zip(*kept))
