"""SynFlow's policy for general graphs: make the network linear while it is being scored.

SynFlow's theory (and its reference code) runs a ReLU network with non-negative parameters on an
all-ones input: every ReLU then passes its input unchanged, so the network is linear and its synaptic
saliencies are conserved layer by layer. ONNX graphs carry other nonlinearities; scored as they are,
a Tanh saturates and a LayerNorm zeroes the all-ones signal, and whole layers score 0. So, while
scoring (see DESIGN.md "SynFlow on general graphs"):

- elementwise activations act as the identity (`IDENTITY_OPS`);
- self-gating activations written out as `x * gate(x)` (SiLU as Mul(x, Sigmoid(x)), Erf/tanh GELU,
  Mish, HardSwish via HardSigmoid or Clip) become `x`: the gate takes its value for a large positive
  input ("open"), which is what these activations do on SynFlow's growing non-negative signal;
- a bounded gate scaling *another* tensor (squeeze-and-excitation: x * Sigmoid(fc(fc(pool(x)))))
  becomes g / stopgrad(g): value 1, so the block is linear in x, while its weights still score
  (`open_cross_gate`);
- LayerNormalization / InstanceNormalization / GroupNormalization keep only their affine part, LRN
  is the identity; a LayerNorm written out (opset < 17: Sub(x, ReduceMean(x)), then a Div by
  Sqrt(ReduceMean(Pow(., 2)) + eps)) loses its centering and scaling the same way;
- BatchNormalization always uses its running statistics (an affine map), never batch statistics.
- Sqrt and Pow pass no gradient back where their input is exactly 0: a unit whose inputs are all
  pruned (an STFT bin) carries no flow, where their infinite derivative would make every score nan.

Everything else (pooling, Add, Concat, Reshape, ...) runs as it is.

That flow is computed exactly as long as float64 holds it. Products of two signal-carrying tensors
(attention's QKᵀ and PV, x·x and Pow in audio front-ends, gates of an unrolled recurrence) multiply
the exponents of the flow, and a deep stack or a long recurrence leaves float64's range. Only then
(`renormalized`, chosen by the SynFlow scorer on the first scoring) every weight-dependent node output
is divided by the power of two nearest below its largest entry, a stop-gradient constant: values stay
O(1) and so do the gradients. A power-of-two factor is exact in binary floating point, so along a
chain of homogeneous ops the scores are the exact flow times one global factor; where branches or
biases are summed, each summand enters at its own normalized scale (the exact flow is not
representable there). Graphs whose flow float64 holds are scored exactly as before.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import onnx
import torch
import torch.nn.functional as F

from ..twin import Twin
from ..twin.ops.elementwise import pow_

IDENTITY_OPS = ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "Tanh",
                "Softplus", "Softsign", "Gelu", "HardSwish", "Mish", "ThresholdedRelu", "Clip", "Softmax",
                "LogSoftmax", "LRN")

# Ops that can be the gate of an `x * gate(x)` pattern (their open value: `_open_gate`).
GATES = ("Sigmoid", "Tanh", "Erf", "HardSigmoid", "Clip")
# Ops through which a gate's input, or the gated operand, is still "x" (scaled, shifted, powered).
_SCALING = ("Add", "Sub", "Mul", "Div", "Pow")
_UNARY_SAME = ("Identity", "Cast", "Softplus")
_MAX_CHAIN = 6


def identity(x, *_):
    return x


def layer_norm_affine(x, scale, bias=None, *, n_outputs):
    y = x * scale if bias is None else x * scale + bias
    return y if n_outputs == 1 else (y, *([None] * (n_outputs - 1)))


def _channelwise(v, x):
    return v.reshape(1, -1, *([1] * (x.dim() - 2)))


def instance_norm_affine(x, scale, bias):
    return x * _channelwise(scale, x) + _channelwise(bias, x)


def group_norm_affine(x, scale, bias, *, num_groups):
    channels = x.shape[1]
    if scale.numel() != channels:  # opset 18 form: one scale per group
        scale, bias = (v.repeat_interleave(channels // num_groups) for v in (scale, bias))
    return x * _channelwise(scale, x) + _channelwise(bias, x)


def batch_norm_running(x, scale, bias, mean, var, *, epsilon, n_outputs):
    y = F.batch_norm(x, mean.detach(), var.detach(), scale, bias, False, 0.0, epsilon)
    return y if n_outputs == 1 else (y, mean, var)


def _dead_input_carries_no_flow(fn):
    """`fn` whose gradient is 0 where its input is exactly 0. Sqrt and x**p (p < 1) have an infinite
    derivative there, and a unit whose inputs were all pruned (an STFT bin, say) sits there: its
    inf·0 would turn every score nan. A pruned unit carries no flow, so it passes none back."""
    def run(x, *rest):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad):
            return fn(x, *rest)
        dead = x == 0
        live = fn(torch.where(dead, torch.ones_like(x), x), *rest)
        return torch.where(dead, fn(x.detach(), *rest), live)
    return run


HANDLERS = {
    **{op: identity for op in IDENTITY_OPS},
    "Sqrt": _dead_input_carries_no_flow(torch.sqrt),
    "Pow": _dead_input_carries_no_flow(pow_),
    "LayerNormalization": layer_norm_affine,
    "InstanceNormalization": instance_norm_affine,
    "GroupNormalization": group_norm_affine,
    "BatchNormalization": batch_norm_running,
}


class _Graph:
    """Pattern questions over the twin's graph facts (producers, consumers, constants)."""

    def __init__(self, twin: Twin):
        self.facts = twin.facts
        self.constants = set(twin.elem_types)

    def root(self, name: str, budget: int = _MAX_CHAIN) -> str:
        """The value `name` is a scaled / shifted / powered copy of (itself if none); `budget` bounds
        how many nodes back it looks."""
        while budget > 0:
            budget -= 1
            node = self.facts.producer(name)
            if node is None:
                return name
            if node.op_type in _UNARY_SAME:
                name = node.input[0]
                continue
            if node.op_type not in _SCALING:
                return name
            roots = {self.root(i, budget) for i in node.input if i and i not in self.constants}
            if len(roots) != 1:
                return name
            name = roots.pop()
        return name

    def gated_operand(self, node: onnx.NodeProto) -> str | None:
        """The other operand of the Mul that `node`'s output gates (through constant scalings), or None."""
        value = node.output[0]
        for _ in range(_MAX_CHAIN):
            users = self.facts.consumers(value)
            if len(users) != 1 or users[0].op_type not in _SCALING[:4]:
                return None
            user = users[0]
            others = [i for i in user.input if i != value]
            if user.op_type == "Mul" and len(others) == 1 and others[0] not in self.constants:
                return others[0]
            if not all(i in self.constants for i in others):
                return None
            value = user.output[0]
        return None

    def is_gate(self, node: onnx.NodeProto) -> bool:
        """Does `node` gate its own input, i.e. feed (through constant scalings) a Mul by that input?"""
        other = self.gated_operand(node)
        return other is not None and self.root(other) == self.root(node.input[0])

    def squeeze_of(self, gate: onnx.NodeProto) -> tuple[onnx.NodeProto, int] | None:
        """The node (and input slot) where a cross gate's path reads the tensor it gates (the SE
        block's squeeze, e.g. GlobalAveragePool(x)), found walking back from the gate."""
        target = self.root(self.gated_operand(gate))
        pending = [gate]
        for _ in range(4 * _MAX_CHAIN):
            if not pending:
                return None
            node = pending.pop(0)
            for slot, name in enumerate(node.input):
                if not name or name in self.constants:
                    continue
                if self.root(name) == target:
                    return node, slot
                if (producer := self.facts.producer(name)) is not None:
                    pending.append(producer)
        return None

    def is_centering(self, node: onnx.NodeProto) -> bool:
        """Sub(x, ReduceMean(x)): the centering of a LayerNorm written out (opset < 17 exports)."""
        mean = self.facts.producer(node.input[1])
        return mean is not None and mean.op_type == "ReduceMean" and mean.input[0] == node.input[0]

    def is_std_scaling(self, node: onnx.NodeProto) -> bool:
        """Div(a, f(ReduceMean(g(a)))), e.g. a / Sqrt(ReduceMean(Pow(a, 2)) + eps): the scaling of a
        LayerNorm written out."""
        a, pending = node.input[0], [node.input[1]]
        for _ in range(_MAX_CHAIN):
            nodes = [p for p in map(self.facts.producer, pending) if p is not None]
            for n in nodes:
                if n.op_type == "ReduceMean" and self.root(n.input[0]) == self.root(a):
                    return True
            pending = [i for n in nodes if n.op_type in _SCALING + ("Sqrt", "Reciprocal", "Identity", "Cast")
                       for i in n.input if i and i not in self.constants]
        return False


# Gates bounded by 1 that may scale another tensor (squeeze-and-excitation blocks).
CROSS_GATES = ("Sigmoid", "HardSigmoid", "Tanh", "Erf")


def open_cross_gate(g, *_):
    """A gate on another tensor: value 1 (open, as for self-gates), gradient d(log g).

    Linearized to the identity, `x * g` would multiply two growing signals, so R's exponent doubles
    at every SE block; MobileNetV3 and EfficientNet overflow even float64. As g / stopgrad(g) the
    block passes x unchanged and the gate's weights still score: by Euler's theorem on the
    degree-1 gate path, each gate layer's scores sum to the flow through the gated tensor, the same
    conservation every other layer obeys (the squeeze reads x detached, `_detached_input`, so the
    layers before the block are not credited twice). Where g is 0 (its path pruned away) the gate stays open
    with no gradient.
    """
    scale = g.detach()
    alive = scale > 0
    return torch.where(alive, g / torch.where(alive, scale, torch.ones_like(scale)), torch.ones_like(g))


def _detached_input(fn, slot: int):
    """`fn` reading input `slot` detached: the squeeze of an SE block, so the layers before the block
    are credited once, through the gated tensor, and not again through the gate's log-derivative."""
    def run(*inputs):
        inputs = list(inputs)
        inputs[slot] = inputs[slot].detach()
        return fn(*inputs)
    return run


def _open_gate(node: onnx.NodeProto):
    """The gate's saturated value: 1 for Sigmoid/Tanh/Erf/HardSigmoid, the upper bound for Clip."""
    if node.op_type != "Clip":
        return lambda x, *_: torch.ones_like(x)
    upper = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "max"), None)
    if upper is not None:  # Clip before opset 11: bounds are attributes
        return lambda x, *_: torch.full_like(x, upper)
    if len(node.input) > 2 and node.input[2]:
        return lambda x, lo=None, hi=None: torch.ones_like(x) * hi.to(x.dtype)
    return None  # unbounded above: not a gate


def _node_override(graph: _Graph, node: onnx.NodeProto):
    """A replacement for one node of a written-out pattern, or None."""
    if node.op_type in GATES and graph.is_gate(node):
        return _open_gate(node)
    if node.op_type in CROSS_GATES and graph.gated_operand(node) is not None:
        return open_cross_gate  # squeeze-and-excitation: Mul(x, Sigmoid(fc(fc(pool(x)))))
    if node.op_type == "Sub" and graph.is_centering(node):
        return identity  # x - mean(x) -> x
    if node.op_type == "Div" and graph.is_std_scaling(node):
        return identity  # a / sqrt(mean(a²) + eps) -> a
    return None


def _pattern_changes(twin: Twin):
    """The `Twin.overridden` change for every written-out pattern of the top-level graph: a pattern
    node gets its replacement, an SE block's squeeze reads the gated tensor detached."""
    graph, replaced, detached = _Graph(twin), {}, {}
    for step in twin.program.steps:
        fn = _node_override(graph, step.node)
        if fn is not None:
            replaced[id(step.node)] = fn
        if fn is open_cross_gate and (squeeze := graph.squeeze_of(step.node)) is not None:
            detached.setdefault(id(squeeze[0]), []).append(squeeze[1])

    def change(step):
        key = id(step.node)
        if key not in replaced and key not in detached:
            return None
        fn = replaced.get(key, step.fn)
        for slot in detached.get(key, ()):
            fn = _detached_input(fn, slot)
        return fn
    return change


@contextlib.contextmanager
def linearized(twin: Twin) -> Iterator[Twin]:
    """Run the twin under the linearization policy; the original handlers come back on exit."""
    with twin.replaced_ops(HANDLERS), twin.overridden(_pattern_changes(twin), nested=False):
        yield twin


def _unit_scaled(value):
    """`value` divided by the power of two at or below its largest magnitude (a stop-gradient constant);
    tensors that do not depend on the scored weights, empty or all-zero ones pass unchanged."""
    if not (isinstance(value, torch.Tensor) and value.requires_grad and value.is_floating_point() and value.numel()):
        return value
    peak = value.detach().abs().amax()
    usable = torch.isfinite(peak) & (peak > 0)
    exponent = torch.where(usable, torch.floor(torch.log2(torch.where(usable, peak, 1.0))), 0.0)
    return value * torch.exp2(-exponent)


def _renormalizing(fn):
    def run(*inputs):
        result = fn(*inputs)
        if isinstance(result, (tuple, list)):
            return type(result)(_unit_scaled(r) for r in result)
        return _unit_scaled(result)
    return run


@contextlib.contextmanager
def renormalized(twin: Twin) -> Iterator[Twin]:
    """Every node's weight-dependent outputs rescaled to a largest entry in [1, 2) by a power of two
    (see the module docstring): SynFlow's fallback when the exact flow leaves float64's range. Enter
    it inside `linearized` (it wraps the handlers in place then); the handlers come back on exit."""
    # Loop / Scan bodies too: an unrolled recurrence grows step by step.
    with twin.overridden(lambda step: _renormalizing(step.fn)):
        yield twin
