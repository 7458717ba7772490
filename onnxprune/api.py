"""The Python API: `onnxprune.prune(model_or_path, compression=..., method=...)` and friends.

The `onnxprune prune` command is a thin layer over `prune()`: same option names, same defaults.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import onnx
import torch

from .choices import DEVICES, FORMATS
from .choices import PRECISIONS as PRECISION_NAMES
from .density import target_density
from .errors import DataError, OnnxPruneError, OnnxPruneWarning, arg
from .io import external_files, load_model, prepared, save_model
from .pruning import DATA_METHODS, prune_twin
from .pruning.inputs import index_bounds, integer_input, resolve_shapes
from .pruning.scorers import scorer
from .report import Report, layer_macs, layer_rows
from .twin import Twin
from .twin.tensors import FLOAT_TYPES, TORCH_DTYPES
from .writeback import twin_tensors, write_back

PRECISIONS = {name: getattr(torch, name) for name in PRECISION_NAMES}  # "float64" -> torch.float64


@dataclass
class Pruned:
    """What `prune()` returns: the pruned model (not yet written), the masks and the report."""

    model: onnx.ModelProto
    masks: dict[str, torch.Tensor]  # bool, on the CPU, by ONNX tensor name (channel mode: none)
    report: Report | dict[str, Any]  # channel mode: structured.summary's dict
    twin: Twin | None  # masked twin of the input model, for evaluation or training (channel mode: None)
    external_data: bool = False  # the input kept its weights in an external file; so will the output
    # channel mode: "tensor:axis" -> the indices kept along it, for every axis that lost channels
    kept: dict[str, list[int]] | None = None

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, inputs: tuple = ()) -> int:
        """Write atomically (external data if the input had it, or over 2 GB); returns bytes written."""
        from .io import check_output_path

        path = check_output_path(path, overwrite=overwrite, inputs=inputs)
        written = save_model(self.model, path, external_data=True if self.external_data else None)
        output = {**file_info(path), "files": [str(p) for p in written]}
        if isinstance(self.report, dict):
            self.report["output"] = output
        else:
            self.report.output = output
        return output["bytes"]


# ----- feeds --------------------------------------------------------------------------------------
def example_feeds(twin: Twin, shapes: Mapping[str, tuple[int, ...]], *, seed: int | None = None,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """One input per graph input: standard normal floats (seeded), or zeros when seed is None.
    Integer and bool inputs get valid values (`pruning.inputs.integer_input`): token ids within the
    embedding table they index (random when seeded), attention masks ones, other integers zeros."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    bounds = index_bounds(twin)
    feeds = {}
    for spec in twin.inputs:
        dtype = TORCH_DTYPES.get(spec.elem_type, torch.float32)
        shape = tuple(shapes[spec.name])
        if spec.elem_type in FLOAT_TYPES:
            value = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) if gen is not None \
                else torch.zeros(shape, dtype=dtype)
        elif spec.elem_type in TORCH_DTYPES:
            value = integer_input(spec, shape, bounds.get(spec.name), generator=gen)
        else:
            value = torch.zeros(shape, dtype=dtype)
        feeds[spec.name] = value.to(device)
    return feeds


def load_twin(model_or_path: onnx.ModelProto | str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> Twin:
    """The exact PyTorch twin of an ONNX model (path or ModelProto)."""
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_model(model_or_path)
    return Twin(model, dtype=dtype).eval()


def pick_device(device: str | torch.device) -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OnnxPruneError(f"{arg('device')} {name!r}: no CUDA device is available here")
    try:
        return torch.device(name)
    except RuntimeError:
        raise OnnxPruneError(f"{arg('device')} must be one of {', '.join(DEVICES)}, not {name!r}") from None


# ----- files -------------------------------------------------------------------------------------
def file_info(path: str | os.PathLike) -> dict[str, Any]:
    """Path, sha256 and size of an ONNX file (size includes its `<name>.data` external file if any)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    size = path.stat().st_size + sum(p.stat().st_size for p in external_files(path))
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": size}


def model_info(model: onnx.ModelProto) -> dict[str, Any]:
    """sha256 and size of the serialized model (sha256 None over protobuf's 2 GB limit)."""
    try:
        data = model.SerializeToString()
    except ValueError:  # over 2 GB: only savable with external data
        return {"path": None, "sha256": None, "bytes": model.ByteSize()}
    return {"path": None, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


# ----- data for data-driven methods ---------------------------------------------------------------
def check_data(method: str, data: Any, data_methods: tuple[str, ...] = DATA_METHODS) -> None:
    """Data is given exactly when the method scores on it: missing, an error; unused, a warning."""
    if method in data_methods and data is None:
        what = "weights" if method in DATA_METHODS else "channels"
        raise DataError(f"method {method} scores {what} on data: give {arg('data')}, an .npz with x_train / y_train")
    if method not in data_methods and data is not None:
        warnings.warn(OnnxPruneWarning(f"{arg('data')} is ignored: {method} does not look at data (only "
                                       f"{', '.join(data_methods)} do)"), stacklevel=3)


def load_batches(data, twin: Twin, shapes: Mapping[str, tuple[int, ...]] | None, *, batch_size: int,
                 n_batches: int, seed: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) batches from an .npz path (x_train / y_train) or any iterable of pairs."""
    if isinstance(data, (str, os.PathLike)):
        from .train.data import npz_batches  # imports torchvision (3 s): only when data is read

        spec = twin.inputs[0] if len(twin.inputs) == 1 else None
        batches = list(npz_batches(Path(data), batch_size, n_batches, input_spec=spec, seed=seed))
    else:
        batches = list(data)
    if not batches:
        raise DataError("the data gave no batch")
    if shapes and len(shapes) == 1:
        expected = next(iter(shapes.values()))[1:]
        got = tuple(batches[0][0].shape[1:])
        if got != tuple(expected):
            raise DataError(f"data samples have shape {'x'.join(map(str, got))}, the model's input "
                            f"{'x'.join(map(str, expected))} (per sample)")
    return [(x.to(device), y.to(device)) for x, y in batches]


def _unlabelled(data) -> bool:
    """Whether `data` is read without labels: a folder, "random", an npz without x_train (one array
    per input) or without y_train (images with no labels, as `compare` and `train --teacher` take
    them). An npz with both goes through load_batches, shuffled as training reads it."""
    if not isinstance(data, (str, os.PathLike)):
        return False
    path = Path(data)
    if str(data) == "random" or path.is_dir():
        return True
    try:
        with np.load(path, allow_pickle=False) as f:
            return "x_train" not in f.files or "y_train" not in f.files
    except (OSError, ValueError):
        return False  # load_batches names the problem


def unlabelled_batches(data, model: onnx.ModelProto, *, batch_size: int, n_batches: int,
                       input_shapes: Mapping[str, tuple[int, ...]] | None, seed: int, images=None,
                       ) -> list[tuple[dict[str, torch.Tensor], None]]:
    """(inputs by name, None) batches for a label-free criterion, read as `compare` reads its data."""
    from .fidelity import load_inputs

    feeds = load_inputs(data, model, split="train", samples=batch_size * n_batches, input_shapes=input_shapes,
                        seed=seed, images=images)
    rows = len(next(iter(feeds.values())))
    return [({k: torch.from_numpy(v[i:i + batch_size]) for k, v in feeds.items()}, None)
            for i in range(0, rows, batch_size)]


# ----- pruning ------------------------------------------------------------------------------------
def prune(model_or_path: onnx.ModelProto | str | os.PathLike, *, compression: float | None = None,
          density: float | None = None, sparsity: float | None = None, method: str | None = None,
          iterations: int | None = None, schedule: str = "exponential", scope: str | None = None,
          prune_bias: bool = False, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
          data: str | os.PathLike | Iterable | None = None, batch_size: int = 64, data_batches: int = 1,
          format: str = "auto", precision: str | torch.dtype = "float64", device: str = "auto", seed: int = 0,
          exclude: Iterable[str] = (), min_layer_density: float = 0.0,
          progress: Callable[[int, int], None] | None = None, structure: str | None = None,
          macs: float | None = None, latency: float | None = None, round_to: int | None = None,
          best_effort: bool = False, images: Any = None, approximate: bool = False,
          output_kinds: Mapping[str, str] | None = None) -> Pruned:
    """Prune a model; returns the pruned ModelProto and its report (`Pruned`). Nothing is written:
    call `.save(path)` on the result.

    `structure="weight"` (the default) zeroes single weights and keeps the graph: `compression` c keeps
    10**-c of the prunable weights (or give `density` / `sparsity`); `.masks` says which. `structure=
    "channel"` (implied by `macs` or `latency`) removes whole channels and writes a smaller dense graph:
    the target is `macs`, `latency` or a weight density; `.kept` gives the indices kept per tensor
    axis (see onnxprune.structured.prune_channels for its options). Its label-free criterion (taylor)
    also reads `data` as a folder of images (`images`: fidelity.images.ImageOptions), "random", or an
    npz with one array per input. `approximate` (channel only) also removes channels whose removal
    changes the computation (onnxprune.structured: normalization statistics, padded folds), for
    recovery by `train --teacher`. `output_kinds` (channel, taylor): output name -> what it holds
    (logits, probs, log_probs, values) where the graph cannot tell.
    """
    structure = structure or ("channel" if macs is not None or latency is not None else "weight")
    if structure == "channel":
        return _prune_channels(model_or_path, compression=compression, density=density, sparsity=sparsity,
                               method=method, iterations=iterations, schedule=schedule, scope=scope,
                               prune_bias=prune_bias, input_shapes=input_shapes, data=data, batch_size=batch_size,
                               data_batches=data_batches, format=format, precision=precision, device=device,
                               seed=seed, exclude=exclude, min_layer_density=min_layer_density, progress=progress,
                               macs=macs, latency=latency, round_to=round_to, best_effort=best_effort, images=images,
                               approximate=approximate, output_kinds=output_kinds)
    if structure != "weight":
        raise OnnxPruneError(f"{arg('structure')} must be one of weight, channel, not {structure!r}")
    for name, value in (("round_to", round_to), ("best_effort", best_effort or None), ("image_size", images),
                        ("approximate", approximate or None), ("output_kinds", output_kinds or None)):
        if value is not None:
            raise OnnxPruneError(f"{arg(name)} applies to {arg('structure')} channel only")
    method, scope = method or "synflow", scope or "global"
    start = time.perf_counter()
    keep = target_density(compression, density, sparsity)
    scorer(method)  # checks the name (the one place it is checked) before the model loads
    if format not in FORMATS:
        raise OnnxPruneError(f"{arg('format')} must be one of {', '.join(FORMATS)}, not {format!r}")
    dtype = PRECISIONS.get(precision, precision) if isinstance(precision, str) else precision
    if dtype not in PRECISIONS.values():
        raise OnnxPruneError(f"{arg('precision')} must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    check_data(method, data)
    dev = pick_device(device)

    if isinstance(model_or_path, onnx.ModelProto):
        model, source, external = prepared(model_or_path), model_info(model_or_path), False
    else:
        model, source = load_model(model_or_path), file_info(model_or_path)
        external = source["bytes"] > Path(model_or_path).stat().st_size
    twin = Twin(model).to(dev).eval()  # the twin of a deployed model: BatchNorm on running statistics
    shapes = resolve_shapes(twin, input_shapes, strict=False)
    if shapes is None and (input_shapes or method == "synflow"):
        resolve_shapes(twin, input_shapes)  # raises the message naming the input that still lacks a shape
    given = dict(input_shapes or {})
    # Non-float inputs (token ids) get no made-up shape for scoring: SynFlow refuses them unless given.
    floats = {spec.name for spec in twin.inputs if spec.elem_type in FLOAT_TYPES}
    scoring_shapes = {n: s for n, s in (shapes or given).items() if n in floats or n in given}
    batches = None
    if method in DATA_METHODS:
        batches = load_batches(data, twin, shapes, seed=seed, batch_size=batch_size, n_batches=data_batches, device=dev)
    result = prune_twin(twin, method=method, density=keep, iterations=iterations, schedule=schedule,
                        scope=scope, prune_bias=prune_bias, exclude=tuple(exclude),
                        min_layer_density=min_layer_density, batches=batches,
                        input_shapes=scoring_shapes,
                        precision=dtype, seed=seed, progress=progress)
    pruned = write_back(model, twin_tensors(twin, result.prunable), fmt=format)
    storage = {t.values.name: "sparse" for t in pruned.graph.sparse_initializer}
    macs = layer_macs(twin, example_feeds(twin, shapes, device=dev)) if shapes is not None else None
    report = Report(
        method=method, target_density=keep, prunable=result.total, kept=result.kept,
        layers=layer_rows(twin, result.prunable, result.masks, macs, storage),
        iterations=result.iterations, seconds=time.perf_counter() - start,
        settings={"schedule": schedule, "scope": scope, "prune_bias": prune_bias, "exclude": list(exclude),
                  "min_layer_density": min_layer_density, "precision": str(dtype).replace("torch.", ""),
                  "format": format, "seed": seed, "device": str(dev), "scoring_seconds": round(result.seconds, 4),
                  # what an iteration costs next to one forward+backward pass (the floor for SynFlow)
                  "seconds_per_iteration": round(result.seconds_per_iteration, 4),
                  "forward_backward_seconds": round(result.scoring_seconds_per_iteration, 4),
                  # exact, or renormalized where the flow left float64's range (prune/linearize.py)
                  **({"synflow_flow": "renormalized" if result.renormalized else "exact"}
                     if method == "synflow" else {})},
        input=source, output=model_info(pruned))
    report.connected = _connected(model, twin, report.collapsed)
    masks = {name: mask.detach().bool().cpu() for name, mask in result.masks.items()}
    return Pruned(pruned, masks, report, twin, external)


def _prune_channels(model_or_path, *, method, data, batch_size, data_batches, input_shapes, seed, format,
                    prune_bias, device, precision, progress, round_to, images=None, **options) -> Pruned:
    """prune(structure="channel"): onnxprune.structured.prune_channels, its result as a `Pruned`."""
    from .choices import CHANNEL_DATA_METHODS
    from .structured import DEFAULT_METHOD, ROUND_TO, prune_channels

    if prune_bias:  # a bias goes with its channel; none is pruned alone
        raise OnnxPruneError(f"{arg('prune_bias')} does not apply to {arg('structure')} channel")
    if format != "auto":  # the rewritten graph is dense: nothing is stored sparse
        raise OnnxPruneError(f"{arg('format')} does not apply to {arg('structure')} channel (the output is a dense, "
                             "smaller graph)")
    if str(device) not in ("auto", "cpu"):  # the analysis and the scores run on the CPU
        raise OnnxPruneError(f"{arg('device')} does not apply to {arg('structure')} channel (it scores on the CPU)")
    method = method or DEFAULT_METHOD[data is not None]
    check_data(method, data, DATA_METHODS + CHANNEL_DATA_METHODS)
    if isinstance(model_or_path, onnx.ModelProto):
        model, source, external = model_or_path, model_info(model_or_path), False
    else:
        model, source = load_model(model_or_path), file_info(model_or_path)
        external = bool(external_files(Path(model_or_path)))
    batches = None
    if method in CHANNEL_DATA_METHODS and _unlabelled(data):
        batches = unlabelled_batches(data, model, batch_size=batch_size, n_batches=data_batches,
                                     input_shapes=input_shapes, seed=seed, images=images)
    elif method in DATA_METHODS + CHANNEL_DATA_METHODS:
        twin = load_twin(model)
        batches = load_batches(data, twin, input_shapes or None, batch_size=batch_size, n_batches=data_batches,
                               seed=seed, device=torch.device("cpu"))
    result = prune_channels(model, method=method, input_shapes=input_shapes, batches=batches, seed=seed,
                            precision=precision if isinstance(precision, str) else str(precision).replace("torch.", ""),
                            round_to=ROUND_TO if round_to is None else round_to, progress=progress, **options)
    result.report.update(input=source)
    return Pruned(result.model, {}, result.report, None, external, kept=result.report["kept_indices"])


def _connected(model: onnx.ModelProto, twin: Twin, collapsed: list[str]) -> bool:
    """Whether the output still depends on the input: nodes whose weight was emptied are cut."""
    from .paths import reaches_output

    emptied = set(collapsed)
    cut = {use.node for use in twin.weight_uses if use.role == "weight" and use.source in emptied}
    return reaches_output(model.graph, cut)
