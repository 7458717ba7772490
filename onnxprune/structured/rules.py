"""Propagation rules: how each op moves, creates, ties or consumes channel labels (see graph.py).

A rule gets (analysis, node index) and reads its inputs' labels. Ops not in RULES freeze every
channel that reaches them: the analysis only removes what it can prove it rewrites exactly. The
rules live by op family: producers.py (Conv, Gemm, MatMul, embeddings), rules_per_channel.py
(norms, activations, pooling, ...), rules_layout.py (Concat, Split, Slice), rules_views.py
(Reshape and the Shape reads that size it), rules_elementwise.py (Add, Mul, Div, Where, ...).
"""

from __future__ import annotations

from .producers import conv, conv_transpose, embedding, gemm, matmul
from .rules_elementwise import div, elementwise, power
from .rules_layout import concat, slice_op, split
from .rules_per_channel import (Rule, clip, gather, group_norm, norm, pad, pool, reciprocal, reduce, same_axis_size,
                                softmax_like, transpose, unary)
from .rules_views import expand, reshape, shape

# f(0) = 0: a removed (zero) channel stays zero.
ZERO_UNARY = {"Relu", "LeakyRelu", "Tanh", "Elu", "Selu", "Celu", "Gelu", "Erf", "HardSwish", "Mish", "Softsign",
              "Neg", "Abs", "Sqrt", "Sign", "Sin", "Floor", "Ceil", "Round", "ThresholdedRelu", "Identity",
              "Dropout", "Cast", "Atan", "Asin", "Sinh", "Tan", "IsNaN", "IsInf"}  # IsNaN(0) is False: 0
# f(0) finite but not 0: the channel's value is a constant that a consumer could not drop.
OTHER_UNARY = {"Sigmoid", "HardSigmoid", "Softplus", "Exp", "Cos", "Cosh", "Not"}
POOLS = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
REDUCES = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare"}
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}

PART_RULES = {"Unsqueeze", "Squeeze", "Reshape", "Transpose", "Gather", "Split"}

RULES: dict[str, Rule] = {
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    "BatchNormalization": norm(1, 2, 2), "InstanceNormalization": norm(1, 2, 0),
    "GroupNormalization": group_norm,
    **{op: unary(True) for op in ZERO_UNARY}, **{op: unary(False) for op in OTHER_UNARY},
    "Clip": clip, "Reciprocal": reciprocal, **{op: pool for op in POOLS}, **{op: reduce for op in REDUCES},
    "Resize": same_axis_size, "Upsample": same_axis_size, "Pad": pad, "Transpose": transpose,
    "Softmax": softmax_like, "LogSoftmax": softmax_like, "LayerNormalization": softmax_like,
    "Concat": concat, "Split": split, "Slice": slice_op, **{op: reshape for op in RESHAPES}, "Shape": shape,
    "Expand": expand,
    "Gather": lambda a, i: (gather if a.nodes[i].input[0] in a.labels else embedding)(a, i),
    "Add": elementwise("all"), "Sub": elementwise("all"), "Sum": elementwise("all"),
    "Max": elementwise("all"), "Min": elementwise("all"),  # a norm's max(var, 0): 0 where every operand is
    "Mul": elementwise("any"), "PRelu": elementwise("first"), "Div": div, "Pow": power,
    # HF's where(isnan(p), 0, p): the condition and both branches share positions; 0 only where all are
    "Where": elementwise("all"),
}
