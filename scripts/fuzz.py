"""Fuzz `onnxprune prune` with mutated small models and check the bad-input contract on every case.

    OMP_NUM_THREADS=1 python scripts/fuzz.py [--examples 500] [--seed 0] [--subprocess]

The contract (issue 6): exit 0 or 2 (1 is an internal error: a bug to fix), never a traceback, the
input file byte-identical, no partial output or temporary file left in the folder, and a success
writes a model that loads (our checks and onnxruntime) whenever the input did.
tests/test_fuzz.py runs a bounded number of these examples in CI; this script runs longer ones and
prints every failing case (the mutation, the command, the stderr) so it can be reproduced.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
        tensor.CopyFrom(numpy_helper.from_array(array.astype(dtype), tensor.name))
    return model


def rewire(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    """Point one node input at another existing value, or rename a graph input/output."""
    names = [v.name for v in model.graph.input] + [t.name for t in model.graph.initializer]
    names += [o for n in model.graph.node for o in n.output]
    node = _pick(rng, list(model.graph.node))
    if node is not None and node.input and rng.random() < 0.7:
        node.input[rng.randrange(len(node.input))] = rng.choice(names + [""])
    else:
        value = _pick(rng, list(model.graph.input) + list(model.graph.output))
        value.name = rng.choice(names + ["renamed"])
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
                                    remove_initializer, change_types, rewire, change_opset)}


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
                      output: Path | None, *, usage: bool = False, codes=(0, 2)) -> list[str]:
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
    new = sorted(set(after) - set(before) - ({output.name} if output is not None and code == 0 else set()))
    if new:
        problems.append(f"files left behind: {new}")
    if code != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        if not lines or not lines[-1].startswith("error: "):
            problems.append(f"last stderr line is not 'error: ...': {lines[-1:]}")
        elif not usage and len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, expected one")
    return problems


def output_problems(input_path: Path, output: Path) -> list[str]:
    """A success must write a model that our loader and onnxruntime accept, if the input was."""
    from onnxprune.errors import OnnxPruneError
    from onnxprune.io import load_model

    if not output.is_file():
        return ["exit 0 without an output file"]
    try:
        load_model(output)
    except OnnxPruneError as err:
        return [f"output does not load: {err}"]
    if _ort_loads(input_path) and not _ort_loads(output):
        return ["onnxruntime loads the input but not the output"]
    return []


def _ort_loads(path: Path) -> bool:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001 (any failure means "does not load")
        return False


def prune_args(input_path: Path, output: Path, rng: random.Random) -> list[str]:
    """A cheap prune command line: a data-free method, few iterations, a small compression."""
    method = rng.choice(["synflow", "mag", "rand"])
    args = ["prune", str(input_path), "-o", str(output), "--compression", str(rng.choice([0.3, 1, 2])),
            "--method", method, "--seed", "0", "--quiet"]
    if method == "synflow":
        args += ["--iterations", str(rng.randint(1, 3))]
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
    output = folder / "pruned.onnx"
    args = prune_args(source, output, rng)
    before = snapshot(folder)
    code, stdout, stderr = runner(args)
    outcome = Outcome(code, stdout, stderr)
    outcome.problems = contract_problems(code, stdout, stderr, folder, before, output)
    if code == 0 and not outcome.problems:
        outcome.problems += output_problems(source, output)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subprocess", action="store_true", help="run the installed command (slower)")
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    failures, codes, start = 0, {}, time.time()
    for i in range(opts.examples):
        base = rng.choice(sorted(BASES))
        names = rng.sample(sorted(MUTATORS), rng.randint(1, 3))
        seed = rng.randrange(2**31)
        with tempfile.TemporaryDirectory() as tmp:
            outcome = fuzz_case(Path(tmp), base, names, seed, run_subprocess if opts.subprocess else run_inprocess)
        codes[outcome.code] = codes.get(outcome.code, 0) + 1
        if outcome.problems:
            failures += 1
            print(f"FAIL #{i} base={base} mutations={names} seed={seed}: {outcome.problems}")
            print("   ", (outcome.stderr.strip().splitlines() or [""])[-1][:300])
    print(f"{opts.examples} examples in {time.time() - start:.0f} s; exit codes {codes}; {failures} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
