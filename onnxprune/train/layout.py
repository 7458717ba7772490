"""Fit dataset images ([C, H, W] floats) to what a model's input expects.

The model's input shape decides the layout (NCHW, NHWC, a flat vector, or [N, H, W] for one channel),
the channel count (grey images are repeated to three channels, colour images turned grey for one) and
the size (resized when the model fixes H and W). Anything else is a mismatch named in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError

# ITU-R BT.601 luma weights, as PIL's convert("L") uses.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Layout:
    """How a [..., C, H, W] image batch becomes the model's input."""

    kind: str  # "nchw", "nhwc", "flat" (one vector per image) or "nhw" (single channel, no channel dim)
    channels: int  # channels the model takes
    size: tuple[int, int]  # (H, W) the model takes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Channel adaptation and layout; `x` is normalized [..., C, H, W] at `size` already."""
        if x.shape[-3] != self.channels:
            x = x.expand(*x.shape[:-3], self.channels, *x.shape[-2:]) if x.shape[-3] == 1 else _grey(x)
        if self.kind == "nhwc":
            return x.movedim(-3, -1).contiguous()
        if self.kind == "flat":
            return x.reshape(*x.shape[:-3], -1)
        if self.kind == "nhw":
            return x.squeeze(-3)
        return x.contiguous()


def _grey(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * weights).sum(dim=-3, keepdim=True)


def _dims(spec) -> tuple:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in spec.shape)


def _shape_text(spec) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in (spec.shape or ())) + "]"


def plan_layout(spec, sample: tuple[int, int, int], what: str) -> Layout:
    """The Layout taking `sample`-shaped images ([C, H, W]) to `spec` (an InputSpec, or None for NCHW).

    `what` names the data in error messages (e.g. "cifar10 images").
    """
    c, h, w = sample
    if spec is None or spec.shape is None:
        return Layout("nchw", c, (h, w))
    dims = _dims(spec)
    name = f"model input '{spec.name}' {_shape_text(spec)}"
    if len(dims) == 4:
        a, b, last = dims[1], dims[2], dims[3]
        # Channels are the small dim: [N,3,32,32] is NCHW, [N,32,32,3] NHWC; a symbolic last dim is W.
        nhwc = last is not None and last <= 4 and not (a is not None and a <= last)
        kind, mc, size = ("nhwc", last, (a, b)) if nhwc else ("nchw", a, (b, last))
        return Layout(kind, _channels(mc or c, c, name, what), (size[0] or h, size[1] or w))
    if len(dims) == 3:
        _channels(1, c, name, what)
        return Layout("nhw", 1, (dims[1] or h, dims[2] or w))
    if len(dims) == 2:
        if dims[1] is not None and dims[1] != c * h * w:
            raise DataError(f"{name} takes vectors of {dims[1]} values; {what} are {c}x{h}x{w} = {c * h * w}")
        return Layout("flat", c, (h, w))
    raise DataError(f"{name} is not an image batch (rank {len(dims)}); {what} are {c}x{h}x{w}")


def _channels(model: int, data: int, name: str, what: str) -> int:
    if model == data or (data, model) in ((1, 3), (3, 1)):
        return model
    raise DataError(f"{name} takes {model} channel(s); {what} have {data}")
