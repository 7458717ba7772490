"""What scorers feed the twin: SynFlow's all-ones input, or data batches, and the loss on them; and
the values of integer inputs (token ids, attention masks) that any made-up feed must respect."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
import onnx
from onnx import helper

from ..errors import DataError, ScoringError, arg
from ..twin import Twin
from ..twin.tensors import FLOAT_TYPES, torch_dtype


def resolve_shapes(twin: Twin, input_shapes: Mapping[str, Any] | None = None, *, strict: bool = True,
                   names: Iterable[str] | None = None) -> dict[str, tuple[int, ...]] | None:
    """Concrete shape per graph input (of `names`, default all), the one rule for every made-up feed.

    A given shape must name a graph input and fit the declared one: same rank, every fixed dim equal
    (onnxruntime would refuse it, and torch might read a missing batch dim as unbatched). An input not
    given keeps its declared shape with a symbolic batch (first) dim set to 1; any other symbolic dim,
    or an undeclared rank, needs `input_shapes`: an error (strict), or None for the whole mapping.
    """
    given = dict(input_shapes or {})
    unknown = sorted(set(given) - set(twin.input_names))
    if unknown:
        raise ScoringError(f"{arg('input_shapes')} names unknown input(s) {unknown}; the model's inputs are "
                           f"{twin.input_names}")
    wanted = None if names is None else set(names)
    shapes = {}
    for spec in twin.inputs:
        if wanted is not None and spec.name not in wanted:
            continue
        if spec.name in given:
            shapes[spec.name] = _fits_declared(spec, tuple(int(d) for d in given[spec.name]))
            continue
        missing = _missing_dim(spec)
        if missing is not None:
            if not strict:
                return None
            raise ScoringError(f"{missing}: give its shape with {arg('input_shapes')}")
        shapes[spec.name] = tuple(d if _fixed(d) else 1 for d in spec.shape)
    return shapes


def _fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0  # a dim_param, an unnamed dim (None) or 0 is symbolic


def _shown(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _missing_dim(spec) -> str | None:
    """What keeps the declared shape from being made concrete (only a batch dim may be set to 1)."""
    if spec.shape is None:
        return f"input '{spec.name}' has no declared shape"
    for axis, dim in enumerate(spec.shape[1:], start=1):
        if not _fixed(dim):
            return f"input '{spec.name}' has symbolic dim {axis} ('{dim}') in {_shown(spec.shape)}"
    return None


def _fits_declared(spec, shape: tuple[int, ...]) -> tuple[int, ...]:
    if spec.shape is None:
        return shape
    given, declared = _shown(shape), _shown(spec.shape)
    if len(shape) != len(spec.shape):
        raise ScoringError(f"the shape {given} given for input '{spec.name}' ({arg('input_shapes')}) has rank "
                           f"{len(shape)}; the input is {declared} (rank {len(spec.shape)})")
    for axis, (d, g) in enumerate(zip(spec.shape, shape)):
        if _fixed(d) and d != g:
            raise ScoringError(f"the shape {given} given for input '{spec.name}' ({arg('input_shapes')}) does not "
                               f"fit: dim {axis} is fixed to {d} ({declared})")
    return shape


# Ops through which an integer input keeps being the same indices (cast, reshaped, unsqueezed).
INDEX_PASS = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Expand"}
MASK_NAMES = re.compile(r"mask", re.I)  # attention_mask, input_mask: 1 = attend
ZERO_NAMES = re.compile(r"token_type|segment|type_ids", re.I)  # sentence A everywhere


def index_bounds(twin: Twin) -> dict[str, int]:
    """Integer graph input -> number of rows it may index: for each Gather it feeds as indices (through
    casts and reshapes), the gathered table's dim on the Gather's axis; the smallest over all of them."""
    graph = twin.model.graph
    tables = {**twin.onnx_buffers(), **twin.onnx_parameters()}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))
    bounds = {}
    for spec in twin.inputs:
        if spec.elem_type in FLOAT_TYPES or spec.elem_type == onnx.TensorProto.BOOL:
            continue
        found, todo, seen = [], [spec.name], set()
        while todo:
            name = todo.pop()
            seen.add(name)
            for node, slot in consumers.get(name, []):
                if node.op_type in INDEX_PASS and slot == 0:
                    todo += [o for o in node.output[:1] if o not in seen]
                elif node.op_type == "Gather" and slot == 1 and node.input[0] in tables:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    table = tables[node.input[0]]
                    if table.dim():
                        found.append(int(table.shape[axis % table.dim()]))
        if found:
            bounds[spec.name] = min(found)
    return bounds


def integer_input(spec, shape: tuple[int, ...], bound: int | None, *, generator: torch.Generator | None = None,
                  device: torch.device | None = None) -> torch.Tensor:
    """A made-up value for an integer or bool input: attention masks attend everywhere (integer masks
    are ones, Hugging Face's 1 = attend; boolean masks False, torch's key_padding_mask True = padding),
    token type ids zeros, embedding indices random in [0, bound) (`generator`) or the fixed id 1 (0
    where the table has one row), other integers zeros and other booleans True."""
    dtype = torch_dtype(spec.elem_type)
    if dtype == torch.bool:
        return torch.full(shape, not MASK_NAMES.search(spec.name), dtype=dtype, device=device)
    if MASK_NAMES.search(spec.name):
        return torch.ones(shape, dtype=dtype, device=device)
    if bound is None or ZERO_NAMES.search(spec.name):
        return torch.zeros(shape, dtype=dtype, device=device)
    if generator is not None:
        return torch.randint(0, bound, shape, generator=generator, dtype=torch.int64).to(dtype).to(device)
    return torch.full(shape, min(1, bound - 1), dtype=dtype, device=device)


def ones_feeds(twin: Twin, input_shapes: Mapping[str, Any] | None = None,
               input_values: Mapping[str, torch.Tensor] | None = None, *,
               device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """SynFlow's input: all ones of each float input's shape, batch 1, in the twin's precision.

    Token inputs get the values an all-ones input means for an embedding-first model: every token id
    is the same valid id, 1 (not 0, commonly the padding row, which may be all zeros and would
    carry no signal), so the signal entering the network is one embedding row, made non-negative
    like every parameter, at every position; attention masks attend everywhere and token
    type ids zeros. A token input is an integer input that indexes a Gather's table, or is named like
    a mask or type ids. Other integer inputs have no neutral value: they are zeros (True for
    booleans), as in `verify`, when their shape is fixed (a scalar sample rate) or given
    (`input_shapes`); else their values must be given (`input_values`).
    """
    input_shapes, input_values = input_shapes or {}, input_values or {}
    bounds = index_bounds(twin)
    made_up = [spec for spec in twin.inputs if spec.name not in input_values]
    for spec in made_up:
        token = spec.name in bounds or MASK_NAMES.search(spec.name) or ZERO_NAMES.search(spec.name)
        static = spec.shape is not None and all(_fixed(d) for d in spec.shape)
        if spec.elem_type not in FLOAT_TYPES and spec.name not in input_shapes and not token and not static:
            kind = helper.tensor_dtype_to_string(spec.elem_type)
            raise ScoringError(f"input '{spec.name}' is {kind}: SynFlow has no all-ones value for it: give its "
                               f"shape with {arg('input_shapes')} to score with zeros")
    shapes = resolve_shapes(twin, input_shapes, names=[spec.name for spec in made_up])
    feeds = {}
    for spec in twin.inputs:
        shape = shapes.get(spec.name)
        if shape is None:
            feeds[spec.name] = torch.as_tensor(input_values[spec.name], device=device)
        elif spec.elem_type in FLOAT_TYPES:
            feeds[spec.name] = torch.ones(shape, dtype=twin.ctx.dtype(spec.elem_type), device=device)
        else:
            feeds[spec.name] = integer_input(spec, shape, bounds.get(spec.name), device=device)
    return feeds


def batch_feeds(twin: Twin, inputs: Any, device: torch.device | None = None) -> dict[str, Any]:
    """A batch's inputs by graph input name: one tensor, a sequence in graph order, or a dict."""
    if isinstance(inputs, Mapping):
        feeds = dict(inputs)
    elif isinstance(inputs, (tuple, list)):
        feeds = dict(zip(twin.input_names, inputs))
    else:
        feeds = {twin.input_names[0]: inputs} if twin.input_names else {}
    missing = [n for n in twin.input_names if n not in feeds]
    if missing:
        raise DataError(f"the data batches do not provide model input(s) {', '.join(missing)}")
    return {k: torch.as_tensor(v, device=device) for k, v in feeds.items()}


def float_outputs(outputs: Mapping[str, Any]) -> list[torch.Tensor]:
    return [v for v in outputs.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def batch_loss(twin: Twin, batch: tuple[Any, Any], device: torch.device | None = None, *,
               temperature: float = 1.0) -> torch.Tensor:
    """Loss of the twin's first float output on one (inputs, labels) batch: cross-entropy for integer
    labels (class indices), mean squared error for float labels of the output's shape."""
    inputs, labels = batch
    outputs = float_outputs(twin.run(batch_feeds(twin, inputs, device)))
    if not outputs:
        raise ScoringError("the model has no float output to compute a loss on")
    out = outputs[0] / temperature if temperature != 1.0 else outputs[0]
    labels = torch.as_tensor(labels, device=out.device)
    if labels.is_floating_point():
        return F.mse_loss(out, labels.to(out.dtype))
    classes = out.shape[1] if out.dim() > 1 else 0
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise DataError(f"labels must be class indices in [0, {classes}) for the model's output "
                        f"{'x'.join(map(str, out.shape))}; the data has {int(labels.min())}..{int(labels.max())}")
    return F.cross_entropy(out, labels.long())


def materialize(batches: Iterable[Any] | None, method: str) -> list[Any]:
    if batches is None:
        raise ScoringError(f"{method} needs data: give batches of (inputs, labels)")
    batches = list(batches)
    if not batches:
        raise ScoringError(f"{method} needs data: the batches are empty")
    return batches
