"""Loading and saving ONNX files: validation on the way in, atomic writes on the way out.

Loading never writes and never trusts the file: every failure is an InvalidModelError with one line
naming the file and the reason. Saving goes through a temporary file (or folder) next to the target and
one rename, so a failure never leaves a partial output behind, and output paths can be checked before
any expensive work starts (`check_output_path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

import onnx
from onnx import defs, external_data_helper, helper, numpy_helper, shape_inference

from .errors import DataError, InvalidModelError, OutputError, QuantizedModelError, arg, one_line
from .graph.facts import nested_graphs, subgraphs
from .graph.rewrite import hoist_subgraph_weights


# ----- loading -------------------------------------------------------------------------------------
def load_model(path: str | os.PathLike, *, allow_quantized: bool = False) -> onnx.ModelProto:
    """Read and check an ONNX file (external data resolved); InvalidModelError on anything wrong.

    An already-quantized model is refused here (QuantizedModelError), before any twin is built,
    unless `allow_quantized` (for commands that only read it, like `info`). Weights defined inside
    If / Loop / Scan bodies are moved to the main graph (`hoist_subgraph_weights`: same computation),
    where the twin holds, scores and writes back weights.
    """
    path = Path(path)
    model = _parse(path)
    if not allow_quantized:
        refuse_quantized(model, path)
    _load_external_data(model, path)
    _check(model, path)
    _check_types_and_shapes(model, path)
    hoist_subgraph_weights(model)
    return model


def prepared(model: onnx.ModelProto) -> onnx.ModelProto:
    """A model given in memory, prepared as `load_model` prepares a file (quantized ones refused,
    subgraph weights hoisted), on a copy: the caller's model stays as it was."""
    refuse_quantized(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    hoist_subgraph_weights(copy)
    return copy


# Ops that compute on integer (quantized) weights or activations. DequantizeLinear counts only when it
# reads a stored tensor: then the weights it feeds are integers (QDQ weights); on activations it is
# fake quantization around float weights, which stay prunable.
QUANT_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear"}
_MS_QUANT = re.compile(r"^(QLinear|QOrdered|DynamicQuantize|Q(Attention|Gemm|EmbedLayerNormalization)$|"
                       r"(De)?[Qq]uantize)|Integer|NBits|Bnb4|FpQ4|BlockQuantized")


def quantization_ops(graph: onnx.GraphProto) -> list[tuple[str, str]]:
    """(op type, node name) of each quantized computation in the graph, subgraphs included."""
    stored = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    stored |= {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    found = []
    for node in graph.node:
        ms = node.domain == "com.microsoft"
        if (node.domain in ("", "ai.onnx") and node.op_type in QUANT_OPS) or (ms and _MS_QUANT.search(node.op_type)) \
                or (node.op_type == "DequantizeLinear" and node.input and node.input[0] in stored):
            found.append((node.op_type, node.name or node.output[0]))
        for sub in subgraphs(node):
            found += quantization_ops(sub)
    return found


def refuse_quantized(model: onnx.ModelProto, where: str | os.PathLike = "the model") -> None:
    """QuantizedModelError naming the quantization ops, if there are any."""
    by_op: dict[str, list[str]] = {}
    for op, node in quantization_ops(model.graph):
        by_op.setdefault(op, []).append(node)
    if by_op:
        shown = ", ".join(f"{op} ('{nodes[0]}'{f' and {len(nodes) - 1} more' if len(nodes) > 1 else ''})"
                          for op, nodes in by_op.items())
        raise QuantizedModelError(f"{where}: the model is already quantized ({shown}): its weights are "
                                  "integers, so it has no prunable weights; prune the float model before "
                                  "quantizing it")


def _parse(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise InvalidModelError(f"{path}: no such file")
    if not path.is_file():
        raise InvalidModelError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InvalidModelError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except MemoryError:
        raise InvalidModelError(f"{path}: not an ONNX model (too large to parse)") from None
    except Exception as err:  # noqa: BLE001 (the protobuf parser's errors vary by backend; all mean "not a model")
        raise InvalidModelError(f"{path}: not an ONNX model (cannot parse it: {type(err).__name__})") from None
    # Random bytes sometimes parse as a protobuf message; an ONNX model has at least a graph.
    if not model.HasField("graph") or not (model.graph.node or model.graph.output):
        raise InvalidModelError(f"{path}: not an ONNX model (the file holds no graph)")
    return model


def external_files(path: str | os.PathLike) -> list[Path]:
    """The external data files next to `path` that its tensors name (read without loading the data)."""
    path = Path(path)
    skeleton = onnx.load(str(path), load_external_data=False)
    names = {e.value for t in _external_tensors(skeleton) for e in t.external_data if e.key == "location"}
    return [path.parent / n for n in sorted(names) if (path.parent / n).is_file()]


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in _stored_tensors(model) if external_data_helper.uses_external_data(t)]


def _stored_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto the model holds, read from public protobuf fields only: each graph's
    initializers and sparse initializers (values and indices), every node attribute's tensors (t,
    tensors, sparse_tensor, sparse_tensors: Constant's value and sparse_value among them), in the main
    graph, in every If / Loop / Scan body at any depth, and in the model's local functions."""

    def sparse(tensor: onnx.SparseTensorProto) -> Iterator[onnx.TensorProto]:
        yield tensor.values
        yield tensor.indices

    def in_attributes(nodes) -> Iterator[onnx.TensorProto]:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield from sparse(attr.sparse_tensor)
                for tensor in attr.sparse_tensors:
                    yield from sparse(tensor)

    def in_graph(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:  # this graph's own, not its bodies'
        yield from graph.initializer
        for tensor in graph.sparse_initializer:
            yield from sparse(tensor)
        yield from in_attributes(graph.node)

    for graph in (model.graph, *nested_graphs(model.graph)):
        yield from in_graph(graph)
    for function in model.functions:  # a function is no graph: its nodes, then the bodies they hold
        yield from in_attributes(function.node)
        for node in function.node:
            for sub in subgraphs(node):
                for graph in (sub, *nested_graphs(sub)):
                    yield from in_graph(graph)


def _check_location(tensor: onnx.TensorProto, folder: Path, path: Path) -> None:
    """Refuse locations outside the model's folder before anything is opened (onnx checks too; this
    gives the clear message, and does not depend on onnx's version)."""
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    where = f"{path}: external data of tensor '{tensor.name}'"
    if not location:
        raise InvalidModelError(f"{where} has no location")
    if os.path.isabs(location) or Path(location).drive or location.startswith(("/", "\\")):
        raise InvalidModelError(f"{where} has an absolute location '{location}' (refused: it must be a file "
                                "in the model's folder)")
    target = (folder / location).resolve()
    if folder.resolve() not in target.parents:
        raise InvalidModelError(f"{where} points outside the model's folder ('{location}'): refused")
    if not (folder / location).exists():
        raise InvalidModelError(f"{where} is missing: '{location}' not found next to the model")


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    folder = path.parent
    tensors = _external_tensors(model)
    for tensor in tensors:
        _check_location(tensor, folder, path)
    try:
        for tensor in tensors:
            external_data_helper.load_external_data_for_tensor(tensor, str(folder))
    except Exception as err:  # noqa: BLE001 (onnx raises ValidationError, OSError, ValueError here)
        raise InvalidModelError(f"{path}: external data cannot be read ({err})") from None


def _check(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001 (ValidationError mostly; the C++ checker may raise others)
        raise InvalidModelError(f"{path}: invalid ONNX model: {one_line(str(err)) or type(err).__name__}") from None
    versions = defs.C.schema_version_map()
    for opset in model.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        if domain in versions and opset.version > versions[domain][1]:
            raise InvalidModelError(f"{path}: opset {opset.version} of domain '{opset.domain or 'ai.onnx'}' is "
                                    f"newer than this onnx knows (up to {versions[domain][1]})")
    if not model.graph.output:
        raise InvalidModelError(f"{path}: the graph has no outputs")
    _check_tensors(model.graph, path)


def _check_tensors(graph: onnx.GraphProto, path: Path) -> None:
    """Every stored tensor decodes to its declared shape. The checker only refuses too little data;
    too much (or an unknown element type) would fail later, wherever the tensor is first read."""
    tensors = list(graph.initializer)
    tensors += [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
    tensors += [a.t for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    for tensor in tensors:
        try:
            helper.tensor_dtype_to_np_dtype(tensor.data_type)
        except Exception:  # noqa: BLE001 (KeyError for unknown codes)
            raise InvalidModelError(f"{path}: tensor '{tensor.name}' has unknown element type "
                                    f"{tensor.data_type}") from None
        try:
            numpy_helper.to_array(tensor)
        except Exception as err:  # noqa: BLE001 (ValueError mostly: data and dims disagree)
            raise InvalidModelError(f"{path}: tensor '{tensor.name}' has data that does not fit its shape "
                                    f"{list(tensor.dims)} ({one_line(str(err))})") from None


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its large tensors' data, for shape inference (cheap for any model size).

    Initializers over 64 elements and sparse initializers become graph inputs of the same type and
    shape (inference needs no weight values; small ones, like Reshape's target shape, stay). value_info
    and output shapes are dropped: exporters leave stale ones that onnxruntime ignores, and a conflict
    there is not something the twin would compute wrong. Output element types stay.
    """
    skeleton, graph = onnx.ModelProto(), model.graph
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    out = skeleton.graph
    out.name = graph.name
    out.node.extend(graph.node)
    out.input.extend(graph.input)
    out.output.extend(graph.output)
    for output in out.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    declared = {v.name for v in graph.input}
    stubs = [(t.name, t.data_type, t.dims) for t in graph.initializer if _is_large(t)]
    stubs += [(s.values.name, s.values.data_type, s.dims) for s in graph.sparse_initializer]
    out.input.extend(helper.make_tensor_value_info(name, elem, list(dims))
                     for name, elem, dims in stubs if name not in declared)
    out.initializer.extend(t for t in graph.initializer if not _is_large(t))
    return skeleton


def _is_large(tensor: onnx.TensorProto) -> bool:
    size = 1
    for d in tensor.dims:
        size *= d
    return size > 64


def _check_types_and_shapes(model: onnx.ModelProto, path: Path) -> None:
    """onnx's strict type and shape inference: a graph whose types or static shapes do not fit
    together (a Gemm whose weight does not match its input, a Conv fed int64) is refused here, naming
    the node, instead of failing somewhere inside torch later."""
    try:
        shape_inference.infer_shapes(_skeleton(model), check_type=True, strict_mode=True)
    except Exception as err:  # noqa: BLE001 (InferenceError mostly; the C++ side may raise others)
        message = re.sub(r"\[(Shape|Type)InferenceError\]|Inference error\(s\):", "", str(err))
        raise InvalidModelError(f"{path}: invalid ONNX model: types or shapes do not fit: "
                                f"{one_line(message).strip(' :')}") from None


def ort_session(path: str | os.PathLike | bytes, providers=("CPUExecutionProvider",), *, log_level: int = 3,
                threads: int = 0):
    """An onnxruntime session on the file. A file onnxruntime refuses to load (an op or opset it lacks,
    an IR version newer than it reads) is the user's input: InvalidModelError in one line, not a crash.
    `log_level` 4 also silences the error ORT logs before raising a failed run (reported in one line by
    the caller instead). `threads`: intra-op threads (0: onnxruntime's own choice), one inter-op."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = log_level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        source = path if isinstance(path, bytes) else str(path)  # bytes: a serialized model in memory
        return ort.InferenceSession(source, options, providers=list(providers))
    except Exception as err:  # noqa: BLE001 (onnxruntime's own exception types)
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        name = "the model" if isinstance(path, bytes) else path
        raise InvalidModelError(f"{name}: onnxruntime cannot load it ({first})") from None


def ort_refusal(err: Exception, feeds: dict) -> DataError | None:
    """onnxruntime refusing to run on the given inputs (a Reshape or LSTM that does not fit the shapes
    the user chose) as a DataError naming those shapes; None for any other exception. The caller
    decides whether the inputs or the file are to blame (e.g. the original model fails as well)."""
    if not type(err).__module__.startswith("onnxruntime"):
        return None
    shapes = ", ".join(f"{name}={'x'.join(map(str, getattr(v, 'shape', ()))) or 'scalar'}" for name, v in feeds.items())
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(err).splitlines()[0] if str(err) else "")
    return DataError(f"onnxruntime cannot run the model on inputs {shapes} (give other shapes with {arg('input_shapes')}): "
                     f"{reason}")


# ----- saving --------------------------------------------------------------------------------------
def check_output_path(path: str | os.PathLike, *, overwrite: bool = False,
                      inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse an output path that cannot or must not be written, before any work is done.

    The folder must exist and accept a new file: probed by creating (and removing) a temporary file,
    because permission bits say nothing when running as root, and /proc or read-only mounts refuse
    anyway. An existing file, or one of `inputs`, is only replaced with `overwrite`.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise OutputError(f"output {path} is a folder")
    if not folder.exists():
        raise OutputError(f"output {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"output {path}: {folder} is not a folder")
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(source, path) and not overwrite:
            raise OutputError(f"output {path} is the input file; pass {arg('overwrite')} to replace it")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} already exists; pass {arg('overwrite')} to replace it")
    probe = None
    try:
        with _signals_held():  # a SIGTERM between creating and naming the file would leave it behind
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
            os.close(fd)
    except OSError as err:
        raise OutputError(f"output {path}: folder {folder} is not writable ({err.strerror})") from None
    finally:
        if probe is not None:
            os.unlink(probe)
    return path


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT (and SIGALRM, which carries the CLI's retry of a SIGTERM that arrived during an
    import) wait until the block is done, then are delivered: for the few statements that create a
    temporary file and hand its name to the `finally` that removes it."""
    held = {signal.SIGTERM, signal.SIGINT, *([signal.SIGALRM] if hasattr(signal, "SIGALRM") else [])}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        if previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _usual_mode() -> int:
    """The permissions a plain `open(path, "w")` gives: 0666 less the umask (read without changing it
    for good: os.umask only sets)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; it replaces `path` only if the block succeeds.

    For any writer that takes a file name (onnx, matplotlib, json): a failure leaves nothing behind.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output {path}: folder {folder} does not exist")
    tmp = None
    try:
        try:
            with _signals_held():  # the name reaches the `finally` below before any SIGTERM is raised
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=folder)
                os.close(fd)
        except OSError as err:
            raise OutputError(f"output {path}: folder {folder} is not writable ({err.strerror})") from None
        os.chmod(tmp, _usual_mode())  # mkstemp creates 0600
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(payload: Any, path: str | os.PathLike) -> None:
    """A JSON report, written atomically like every other output."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *,
               external_data: bool | None = None) -> list[Path]:
    """Write atomically (temp file in the same folder, then rename): never a half-written output.

    Models over 2 GB must keep weights in an external file (protobuf's limit); `external_data=None`
    decides by size. Then the model and its `<name>.data` are written into a temporary folder next to
    the target and moved into place at the end (onnx appends to an existing data file, so writing it
    in place would grow a stale one). Returns the files written: the model, then its data file.
    """
    path = Path(path)
    if external_data is None:
        external_data = model.ByteSize() > 2**31 - 2**20
    if not external_data:
        with atomic_path(path) as tmp:
            tmp.write_bytes(model.SerializeToString())
        return [path]
    folder = path.parent if str(path.parent) else Path(".")
    data_name = f"{path.name}.data"
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
    except OSError as err:
        raise OutputError(f"output {path}: folder {folder} is not writable ({err.strerror})") from None
    try:
        onnx.save_model(model, str(staging / path.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        # onnx moved the weights out of `model` into the file: read them back so the caller's model
        # is unchanged.
        onnx.load_external_data_for_model(model, str(staging))
        written = [path]
        if (staging / data_name).exists():  # onnx writes no data file when every tensor is under 1 KB
            os.chmod(staging / data_name, _usual_mode())  # onnx creates it 0600; the model is 0644
            os.replace(staging / data_name, folder / data_name)
            written.append(folder / data_name)
        os.chmod(staging / path.name, _usual_mode())
        os.replace(staging / path.name, path)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
