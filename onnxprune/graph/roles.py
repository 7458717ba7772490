"""What each input of an op *is*: the one table of tensor roles the rest of onnxprune reads.

A role names what a constant in that slot means to pruning and training: `weight` (prunable, scored,
masked), `bias`, the `scale` / `shift` of a normalization, its running `stat`istics (buffers, never
trained), a PRelu `slope`. Adding a weight op is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

WEIGHT, BIAS, SCALE, SHIFT, STAT, SLOPE = "weight", "bias", "scale", "shift", "stat", "slope"
# Roles whose tensor must not share storage with another slot while training (see train/untie.py).
OWNED = (BIAS, SCALE, SHIFT, STAT)
# Roles that train besides weights and biases.
AFFINE = (SCALE, SHIFT, SLOPE)


@dataclass(frozen=True)
class OpRoles:
    slots: Mapping[int, str] = field(default_factory=dict)  # input slot -> role
    macs: bool = False  # its multiply-accumulates are the model's cost (report, channel pruning)
    normalizes: bool = False  # a normalization layer


_NORM = {1: SCALE, 2: SHIFT}
_RECURRENT = {1: WEIGHT, 2: WEIGHT, 3: BIAS}  # W, R; B holds both biases. P (peepholes) stays dense.

OPS: dict[str, OpRoles] = {
    "Conv": OpRoles({1: WEIGHT, 2: BIAS}, macs=True),
    "ConvTranspose": OpRoles({1: WEIGHT, 2: BIAS}, macs=True),
    "Gemm": OpRoles({0: WEIGHT, 1: WEIGHT, 2: BIAS}, macs=True),  # either operand may be the constant
    "MatMul": OpRoles({0: WEIGHT, 1: WEIGHT}, macs=True),
    "DeformConv": OpRoles({1: WEIGHT, 3: BIAS}),  # X, W, offset, B, mask: the offsets are computed
    "LSTM": OpRoles(_RECURRENT),
    "GRU": OpRoles(_RECURRENT),
    "RNN": OpRoles(_RECURRENT),
    "BatchNormalization": OpRoles({**_NORM, 3: STAT, 4: STAT}, normalizes=True),
    "LayerNormalization": OpRoles(_NORM, normalizes=True),
    "InstanceNormalization": OpRoles(_NORM, normalizes=True),
    "GroupNormalization": OpRoles(_NORM, normalizes=True),
    "LRN": OpRoles(normalizes=True),
    "PRelu": OpRoles({1: SLOPE}),
}

# Ops through which a constant keeps its identity: one data input, values only moved or retyped
# (paddle2onnx Identity, tf2onnx / jax2onnx Transpose, mixed-precision Cast).
PASS_THROUGH = frozenset({"Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "CastLike"})


def slots(op_type: str) -> Mapping[int, str]:
    entry = OPS.get(op_type)
    return entry.slots if entry else {}


def counts_macs(op_type: str) -> bool:
    return op_type in OPS and OPS[op_type].macs


def normalizes(op_type: str) -> bool:
    return op_type in OPS and OPS[op_type].normalizes
