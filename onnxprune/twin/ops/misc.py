"""Ops the model zoo needs that no other family module covers: the ai.onnx.ml ops skl2onnx puts around
a scikit-learn MLP's arithmetic (input scaling, class-label lookup)."""

from __future__ import annotations

import torch
from onnx import TensorProto

from ..registry import register

ML = "ai.onnx.ml"


@register("Scaler", domain=ML)
def scaler(x, *, offset, scale, ctx):
    # Y = (X - offset) * scale, per feature (last axis) or one value for all; the output is always float.
    dtype = ctx.dtype(TensorProto.FLOAT)
    offset = torch.tensor(offset or [0.0], dtype=dtype, device=x.device)
    scale = torch.tensor(scale or [1.0], dtype=dtype, device=x.device)
    return (x.to(dtype) - offset) * scale


@register("ArrayFeatureExtractor", domain=ML)
def array_feature_extractor(x, indices):
    # Picks entries of the last axis; a 1-D input acts as one row (onnxruntime's [1, k] result).
    x = x.reshape(1, -1) if x.dim() == 1 else x
    return x.index_select(-1, indices.reshape(-1).long())
