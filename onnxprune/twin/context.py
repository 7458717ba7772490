"""The twin's runtime context, handed to handlers that declare a `ctx` keyword."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .tensors import FLOAT_TYPES, ONNX_TYPES, torch_dtype


@dataclass
class Context:
    """What a handler may need beyond its inputs and attributes.

    `float_dtype`: the twin's precision. In float64 mode every float type computes in float64 (a Cast
    to FLOAT must not drop precision back); in float32 mode element types are honoured exactly, as
    onnxruntime does. `training`: BatchNormalization uses batch statistics (unless not
    `batch_statistics`: then it normalizes with its running ones, left as they are), Dropout is active.
    """

    float_dtype: torch.dtype = torch.float32
    training: bool = False
    batch_statistics: bool = True  # in training; False: BatchNormalization keeps its running statistics
    bn_momentum: float | None = None  # torch's momentum (weight of the batch) instead of the node's
    opsets: dict[str, int] = field(default_factory=dict)

    def dtype(self, elem_type: int) -> torch.dtype:
        if self.float_dtype == torch.float64 and elem_type in FLOAT_TYPES:
            return torch.float64
        return torch_dtype(elem_type)

    def promote(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor an op creates (Constant, ConstantOfShape...) in the twin's precision if it is float."""
        if tensor.is_floating_point():
            return tensor.to(self.dtype(ONNX_TYPES[tensor.dtype]))
        return tensor
