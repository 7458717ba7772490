"""What scorers feed the twin: SynFlow's all-ones input, or data batches, and the loss on them."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from onnx import helper

from ..errors import DataError, ScoringError
from ..twin import Twin
from ..twin.tensors import FLOAT_TYPES, torch_dtype


def _shape(spec, input_shapes: Mapping[str, Any]) -> tuple[int, ...]:
    """The spec's shape with a symbolic batch (first) dim set to 1; other symbolic dims must be given."""
    if spec.name in input_shapes:
        return tuple(int(d) for d in input_shapes[spec.name])
    if spec.shape is None:
        raise ScoringError(f"input '{spec.name}' has no declared shape: give its shape (--input-shape; input_shapes in the API)")
    dims = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        elif axis == 0:
            dims.append(1)
        else:
            raise ScoringError(f"input '{spec.name}' has symbolic dim {axis} ('{dim}'): give its shape "
                               f"(--input-shape; input_shapes in the API)")
    return tuple(dims)


def ones_feeds(twin: Twin, input_shapes: Mapping[str, Any] | None = None,
               input_values: Mapping[str, torch.Tensor] | None = None, *,
               device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """SynFlow's input: all ones of each float input's shape, batch 1, in the twin's precision.

    Non-float inputs (token ids, masks) have no neutral value: their values must be given
    (`input_values`), or at least a shape (`input_shapes`: zeros for integers, True for booleans).
    """
    input_shapes, input_values = input_shapes or {}, input_values or {}
    feeds = {}
    for spec in twin.inputs:
        if spec.name in input_values:
            feeds[spec.name] = torch.as_tensor(input_values[spec.name], device=device)
            continue
        if spec.elem_type not in FLOAT_TYPES and spec.name not in input_shapes:
            kind = helper.tensor_dtype_to_string(spec.elem_type)
            raise ScoringError(f"input '{spec.name}' is {kind}: SynFlow has no all-ones value for it: "
                               f"give its shape to score with zeros (--input-shape {spec.name}=...; input_values / "
                               f"input_shapes in the API)")
        shape = _shape(spec, input_shapes)
        if spec.elem_type in FLOAT_TYPES:
            feeds[spec.name] = torch.ones(shape, dtype=twin.ctx.dtype(spec.elem_type), device=device)
        else:
            dtype = torch_dtype(spec.elem_type)
            fill = True if dtype == torch.bool else 0
            feeds[spec.name] = torch.full(shape, fill, dtype=dtype, device=device)
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
