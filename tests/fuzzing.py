"""Fuzzing machinery for `onnxprune prune` (issue 6): small valid models, mutations, and the bad-input
contract checked on every case.

The contract: exit 0 or 2 (1 is an internal error: a bug to fix), never a traceback, the input file
byte-identical, no partial output or temporary file left in the folder, and a success writes a model
that loads (our checks and onnxruntime) whenever the input did, with a report that tells the truth.

A test-support module like zoo.py: tests import it as a plain module (`from fuzzing import ...`;
pytest puts tests/ on sys.path). tests/test_fuzz.py runs a bounded number of examples in CI,
tests/test_errors.py and tests/test_determinism.py reuse its models and contract checks, and
scripts/fuzz.py is the command-line runner for long runs (`python scripts/fuzz.py --examples 5000`).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION, OPSET = 8, 17  # what onnxruntime here loads; the twin supports it


# ----- small valid models (built with onnx.helper: no torch export, milliseconds) ----------------
def _init(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    model.producer_name = "onnxprune-tests"
    return model


def mlp(widths=(8, 16, 4), *, seed: int = 0, batch="N") -> onnx.ModelProto:
    """Gemm/Relu stack, input "x" [batch, widths[0]], output "y"."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        inits += [_init(rng, f"fc{i}.weight", b, a), numpy_helper.from_array(np.zeros(b, np.float32), f"fc{i}.bias")]
        out = "y" if i == len(widths) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"fc{i}.weight", f"fc{i}.bias"], [f"z{i}" if out != "y" else out],
                                      name=f"fc{i}", transB=1))
        if out != "y":
            nodes.append(helper.make_node("Relu", [f"z{i}"], [out], name=f"relu{i}"))
        prev = out
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, widths[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, widths[-1]])
    return _model(nodes, [x], [y], inits)


def cnn(*, seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool-Conv-GlobalAveragePool-Flatten-Gemm on [N, 1, 8, 8]."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "c1.w", 4, 1, 3, 3), numpy_helper.from_array(np.zeros(4, np.float32), "c1.b"),
             numpy_helper.from_array(np.ones(4, np.float32), "bn.g"), numpy_helper.from_array(np.zeros(4, np.float32), "bn.b"),
             numpy_helper.from_array(np.zeros(4, np.float32), "bn.m"), numpy_helper.from_array(np.ones(4, np.float32), "bn.v"),
             _init(rng, "c2.w", 6, 4, 3, 3), _init(rng, "fc.w", 3, 6), numpy_helper.from_array(np.zeros(3, np.float32), "fc.b")]
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "bn.g", "bn.b", "bn.m", "bn.v"], ["b"], name="bn"),
        helper.make_node("Relu", ["b"], ["c"], name="relu"),
        helper.make_node("MaxPool", ["c"], ["d"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["d", "c2.w"], ["e"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["e"], ["f"], name="gap"),
        helper.make_node("Flatten", ["f"], ["g"], name="flat"),
        helper.make_node("Gemm", ["g", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    return _model(nodes, [x], [y], inits)


BASES = {"mlp": mlp, "cnn": cnn}


# ----- mutations -------------------------------------------------------------------------------------
def _pick(rng: random.Random, items):
    return items[rng.randrange(len(items))] if items else None


def flip_bytes(model: onnx.ModelProto, rng: random.Random) -> bytes:
    data = bytearray(model.SerializeToString())
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def truncate(model: onnx.ModelProto, rng: random.Random) -> bytes:
    data = model.SerializeToString()
    return data[: rng.randrange(len(data))]


def drop_node(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    if model.graph.node:
        del model.graph.node[rng.randrange(len(model.graph.node))]
    return model


def change_dims(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """A dim of a graph input/output (value or symbolic) or of an initializer (with or without data)."""
    kind = rng.choice(["input", "output", "init", "init_data", "rank"])
    if kind in ("input", "output"):
        value = _pick(rng, list(model.graph.input if kind == "input" else model.graph.output))
        dims = value.type.tensor_type.shape.dim
        if dims:
            dim = dims[rng.randrange(len(dims))]
            choice = rng.choice(["value", "zero", "param", "negative"])
            if choice == "param":
                dim.dim_param = rng.choice(["H", "N", "seq"])
            else:
                dim.dim_value = {"value": rng.randint(1, 40), "zero": 0, "negative": -3}[choice]
    elif kind == "rank":
        value = _pick(rng, list(model.graph.input))
        dims = value.type.tensor_type.shape.dim
        if rng.random() < 0.5 and dims:
            del dims[rng.randrange(len(dims))]
        else:
            dims.add().dim_value = rng.randint(1, 4)
    else:
        tensor = _pick(rng, list(model.graph.initializer))
        array = numpy_helper.to_array(tensor)
        shape = list(array.shape) or [1]
        shape[rng.randrange(len(shape))] = rng.randint(1, 9)
        if kind == "init":  # dims only: data no longer matches
            del tensor.dims[:]
            tensor.dims.extend(shape)
        else:  # consistent data of another shape: the graph no longer fits
            new = numpy_helper.from_array(np.resize(array, shape).astype(array.dtype), tensor.name)
            tensor.CopyFrom(new)
    return model


def change_attribute(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    node = _pick(rng, [n for n in model.graph.node])
    if node is None:
        return model
    choice = rng.choice(["value", "delete", "add", "type"])
    attrs = list(node.attribute)
    if choice == "add" or not attrs:
        name = rng.choice(["alpha", "beta", "transA", "transB", "group", "strides", "pads", "axis", "bogus",
                           "kernel_shape", "dilations", "epsilon", "auto_pad"])
        value = rng.choice([0, 1, 2, -1, 1.5, [1, 1], [2, 2, 2, 2], [0, 0, 0], "SAME_UPPER", "VALID", "x"])
        node.attribute.append(helper.make_attribute(name, value))
    elif choice == "delete":
        node.attribute.remove(rng.choice(attrs))
    else:
        attr = rng.choice(attrs)
        if choice == "type":
            new = helper.make_attribute(attr.name, rng.choice([1.0, 3, "a", [1, 2]]))
        elif attr.type == onnx.AttributeProto.INT:
            new = helper.make_attribute(attr.name, rng.choice([-1, 0, 2, 3, 1000]))
        elif attr.type == onnx.AttributeProto.INTS:
            new = helper.make_attribute(attr.name, [rng.choice([-1, 0, 1, 2, 5]) for _ in range(rng.randint(0, 5))])
        elif attr.type == onnx.AttributeProto.FLOAT:
            new = helper.make_attribute(attr.name, rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf")]))
        else:
            new = helper.make_attribute(attr.name, rng.choice(["NOTSET", "SAME_LOWER", "VALID", "bogus"]))
        attr.CopyFrom(new)
    return model


def remove_initializer(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    if model.graph.initializer:
        del model.graph.initializer[rng.randrange(len(model.graph.initializer))]
    return model


def change_types(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """Element type of an input or output, or an initializer's data converted to another type."""
    types = [TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT8, TensorProto.BOOL,
             TensorProto.STRING, TensorProto.UINT8, TensorProto.BFLOAT16]
    if rng.random() < 0.5:
        value = _pick(rng, list(model.graph.input) + list(model.graph.output))
        value.type.tensor_type.elem_type = rng.choice(types)
    else:
        tensor = _pick(rng, list(model.graph.initializer))
        array = numpy_helper.to_array(tensor)
        dtype = rng.choice([np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_])
        with np.errstate(invalid="ignore"):  # NaN or inf cast to an integer type: any value will do
            tensor.CopyFrom(numpy_helper.from_array(array.astype(dtype), tensor.name))
    return model


def rewire(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """Point one node input at another value defined before it (the graph stays sorted), or rename a
    graph input/output."""
    nodes = list(model.graph.node)
    if nodes and rng.random() < 0.7:
        i = rng.randrange(len(nodes))
        names = [v.name for v in model.graph.input] + [t.name for t in model.graph.initializer]
        names += [o for n in nodes[:i] for o in n.output]
        if nodes[i].input:
            nodes[i].input[rng.randrange(len(nodes[i].input))] = rng.choice(names + [""])
    else:
        value = _pick(rng, list(model.graph.input) + list(model.graph.output))
        value.name = rng.choice(["renamed", "y", "x", "fc0.weight"])
    return model


def poison_weights(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """NaN, inf, huge, tiny or zero values in one initializer (all valid for the checker)."""
    tensor = _pick(rng, [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT])
    array = numpy_helper.to_array(tensor).copy()
    value = rng.choice([np.nan, np.inf, -np.inf, 1e38, 1e-45, 0.0])
    if rng.random() < 0.3:
        array[...] = value
    else:
        array.reshape(-1)[rng.randrange(array.size)] = value
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return model


def swap_op(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """Another elementwise activation in place of one (attributes dropped: they belonged to the old op)."""
    unary = ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softplus", "Identity", "Abs", "Neg", "Exp",
             "HardSwish", "Softsign", "Sqrt", "Log", "Reciprocal", "Gelu"]
    node = _pick(rng, [n for n in model.graph.node if len(n.input) == 1 and len(n.output) == 1])
    node.op_type = rng.choice(unary)
    del node.attribute[:]
    return model


def insert_node(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """A pass-through node (Identity, Cast to float, Transpose twice) in front of some node input."""
    nodes = list(model.graph.node)
    i = rng.randrange(len(nodes))
    slot = rng.randrange(len(nodes[i].input))
    source, mid = nodes[i].input[slot], f"inserted_{rng.randrange(10**6)}"
    kind = rng.choice(["Identity", "Cast", "Transpose", "Dropout"])
    if kind == "Cast":
        new = [helper.make_node("Cast", [source], [mid], to=TensorProto.FLOAT)]
    elif kind == "Transpose":
        new = [helper.make_node("Transpose", [source], [mid + "t"]), helper.make_node("Transpose", [mid + "t"], [mid])]
    else:
        new = [helper.make_node(kind, [source], [mid])]
    nodes[i].input[slot] = mid
    for j, node in enumerate(new):
        model.graph.node.insert(i + j, node)
    return model


def conv_attrs(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """Plausible Conv / pool attribute changes (strides, pads, dilations, auto_pad, ceil_mode)."""
    node = _pick(rng, [n for n in model.graph.node if n.op_type in ("Conv", "MaxPool", "AveragePool")])
    name, value = rng.choice([("strides", [2, 2]), ("pads", [0, 0, 0, 0]), ("pads", [2, 1, 0, 1]),
                              ("dilations", [2, 2]), ("auto_pad", "SAME_UPPER"), ("auto_pad", "VALID"),
                              ("kernel_shape", [3, 3]), ("ceil_mode", 1), ("group", 2)])
    if name == "ceil_mode" and node.op_type == "Conv":
        return model
    kept = [a for a in node.attribute if a.name != name and not (name == "auto_pad" and a.name == "pads")]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])
    return model


def change_opset(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    choice = rng.choice(["version", "ir", "domain", "op_type"])
    if choice == "version":
        model.opset_import[0].version = rng.choice([1, 6, 7, 9, 11, 13, 21, 29, 100])
    elif choice == "ir":
        model.ir_version = rng.choice([0, 3, 7, 10, 13, 15])
    elif choice == "domain":
        node = _pick(rng, list(model.graph.node))
        node.domain = rng.choice(["com.microsoft", "custom", "ai.onnx.ml"])
        if rng.random() < 0.5:
            model.opset_import.append(helper.make_opsetid(node.domain, 1))
    else:
        node = _pick(rng, list(model.graph.node))
        node.op_type = rng.choice(["Foo", "QLinearConv", "DequantizeLinear", "Conv", "Gemm", "MatMul", "Relu",
                                   "Loop", "Add", "Softmax"])
    return model


MUTATORS = {f.__name__: f for f in (flip_bytes, truncate, drop_node, change_dims, change_attribute,
                                    remove_initializer, change_types, rewire, change_opset, poison_weights,
                                    swap_op, insert_node, conv_attrs)}
# The mutations that keep a model loadable most of the time: drawn more often, so the fuzz reaches
# the twin and the engine instead of stopping at the loader.
DEEP = ("poison_weights", "swap_op", "insert_node", "conv_attrs", "change_dims", "rewire")


def mutate(model: onnx.ModelProto, names: list[str], rng: random.Random) -> bytes:
    """Apply the named mutations in order; returns the file's bytes (byte mutations end the chain)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for name in names:
        try:
            result = MUTATORS[name](model, rng)
        except Exception:  # noqa: BLE001 (an earlier mutation left nothing for this one to act on)
            continue
        if isinstance(result, bytes):
            return result
        model = result
    return model.SerializeToString()


# ----- the contract ------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file in `folder` (hidden temp files included: they must not appear)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    problems: list[str] = field(default_factory=list)


def contract_problems(code: int, stdout: str, stderr: str, folder: Path, before: dict[str, str],
                      output: Path | None, *, usage: bool = False, codes=(0, 2),
                      extra_outputs: tuple[Path, ...] = ()) -> list[str]:
    """Everything the run did against the contract (empty list: it kept it)."""
    problems = []
    if code not in codes:
        problems.append(f"exit code {code}")
    text = stdout + stderr
    if "Traceback" in text or "internal error" in text:
        problems.append("traceback or internal error in output")
    after = snapshot(folder)
    changed = [n for n in before if after.get(n) != before[n]]
    if changed:
        problems.append(f"input files changed or removed: {changed}")
    written = {p.name for p in (output, *extra_outputs) if p is not None} if code == 0 else set()
    new = sorted(set(after) - set(before) - written)
    if new:
        problems.append(f"files left behind: {new}")
    if code != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        if not lines or not lines[-1].startswith("error: "):
            problems.append(f"last stderr line is not 'error: ...': {lines[-1:]}")
        elif not usage and len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, expected one")
    return problems


def output_problems(input_path: Path, output: Path, report_path: Path | None = None) -> list[str]:
    """A success must write a model that our loader and onnxruntime accept (when they accept the
    input), and a report that tells the truth about it."""
    from onnxprune.errors import OnnxPruneError
    from onnxprune.io import load_model

    if not output.is_file():
        return ["exit 0 without an output file"]
    try:
        model = load_model(output)
    except OnnxPruneError as err:
        return [f"output does not load: {err}"]
    if _ort_session(input_path) is not None and _ort_session(output) is None:
        return ["onnxruntime loads the input but not the output"]
    return report_problems(model, report_path) if report_path is not None else []


def report_problems(model: onnx.ModelProto, report_path: Path) -> list[str]:
    """The report's counts: kept == round(prunable x target density), and no layer of the written file
    holds more non-zeros than the report says it kept."""
    import json

    from onnxprune.graph.constants import stored_tensors

    if not report_path.is_file():
        return ["exit 0 without the report"]
    report = json.loads(report_path.read_text())
    problems = []
    if report["kept_params"] != round(report["prunable_params"] * report["target_density"]):
        problems.append(f"report: kept {report['kept_params']} != round({report['prunable_params']} x "
                        f"{report['target_density']})")
    stored = stored_tensors(model.graph)
    for layer in report["layers"]:
        if layer["name"] not in stored:
            continue  # a folded constant source: not stored as a tensor of that name
        nonzero = int(np.count_nonzero(stored[layer["name"]][1]))
        if nonzero > layer["kept"]:
            problems.append(f"report: layer {layer['name']} kept {layer['kept']} but the file has {nonzero} non-zeros")
    if sum(layer["kept"] for layer in report["layers"]) != report["kept_params"]:
        problems.append("report: per-layer kept counts do not add up")
    return problems


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 (any failure means "does not load")
        return None


def ort_runs(path: Path) -> bool:
    """onnxruntime runs the model on ones (symbolic dims 1): then a twin refusing to run a node of it
    is a twin bug, not a bad model."""
    session = _ort_session(path)
    if session is None:
        return False
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                 "tensor(float16)": np.float16}.get(spec.type)
        if dtype is None:
            return False
        feeds[spec.name] = np.ones(shape, dtype) if dtype != np.int64 else np.zeros(shape, dtype)
    try:
        session.run(None, feeds)
        return True
    except Exception:  # noqa: BLE001
        return False


def prune_args(input_path: Path, output: Path, report: Path, rng: random.Random) -> list[str]:
    """A cheap prune command line: a data-free method, few iterations, a small compression, and a
    random pick of the other options."""
    method = rng.choice(["synflow", "synflow", "mag", "rand"])
    args = ["prune", str(input_path), "-o", str(output), "--report", str(report), "--compression",
            str(rng.choice([0.3, 1, 2])), "--method", method, "--seed", "0", "--quiet"]
    if method == "synflow":
        args += ["--iterations", str(rng.randint(1, 3))]
    extras = [["--scope", "local"], ["--prune-bias"], ["--format", "dense"], ["--format", "sparse"],
              ["--schedule", "linear"], ["--precision", "float32"], ["--exclude", "fc0*"],
              ["--min-layer-density", "0.05"], ["--input-shape", "x=2x8"], ["--input-shape", "x=1x1x8x8"]]
    for extra in rng.sample(extras, rng.randint(0, 3)):
        args += extra
    return args


def onnxprune_command() -> list[str]:
    exe = Path(sys.executable).parent / "onnxprune"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "onnxprune"]


def run_subprocess(args: list[str], timeout: float = 120) -> tuple[int, str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(onnxprune_command() + args, capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def run_inprocess(args: list[str]) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from onnxprune.cli import main

    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout, result.stderr


def fuzz_case(folder: Path, base: str, names: list[str], seed: int, runner=run_inprocess) -> Outcome:
    """Write one mutated model into `folder`, prune it, and check the contract."""
    rng = random.Random(seed)
    source = folder / "model.onnx"
    source.write_bytes(mutate(BASES[base](seed=seed % 3), names, rng))
    output, report = folder / "pruned.onnx", folder / "report.json"
    args = prune_args(source, output, report, rng)
    before = snapshot(folder)
    code, stdout, stderr = runner(args)
    outcome = Outcome(code, stdout, stderr)
    outcome.problems = contract_problems(code, stdout, stderr, folder, before, output, extra_outputs=(report,))
    if code == 0 and not outcome.problems:
        outcome.problems += output_problems(source, output, report)
    if "cannot run on these inputs" in stderr and ort_runs(source):
        outcome.problems.append("the twin cannot run a node that onnxruntime runs")
    return outcome


def draw(rng: random.Random) -> tuple[str, list[str], int]:
    """One example: a base model, 1-3 mutations (half the time only the deep ones), a seed."""
    pool = sorted(MUTATORS) if rng.random() < 0.5 else list(DEEP)
    return rng.choice(sorted(BASES)), rng.sample(pool, rng.randint(1, 3)), rng.randrange(2**31)
