"""The twin: a torch.nn.Module that runs an ONNX graph and holds its initializers as parameters.

Initializers are never transformed (no transposes, no folding of Gemm's alpha): a parameter's value is
the initializer's value, so writing back is a plain copy. Names are the ONNX names; torch forbids '.'
in registered names, so tensors live in lists and `parameter(name)` / `onnx_parameters()` map ONNX
names to them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import InvalidModelError, UnsupportedOpError
from . import ops  # noqa: F401  (registers every handler)
from .context import Context
from .program import GraphProgram, Step, opset_of
from .registry import describe
from ..graph import GraphFacts, WeightUse, roles
from .tensors import FLOAT_TYPES, ONNX_TYPES, to_torch


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, ONNX element type and shape (int, or str for a symbolic dim, or None)."""

    name: str
    elem_type: int
    shape: tuple[int | str | None, ...] | None


def _value_spec(value: onnx.ValueInfoProto) -> InputSpec:
    tensor = _tensor_type(value.type)
    shape = None
    if tensor.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    return InputSpec(value.name, tensor.elem_type, shape)


def _tensor_type(tp: onnx.TypeProto) -> onnx.TypeProto.Tensor:
    """The tensor type of a tensor input, or of the elements of a sequence / optional input."""
    kind = tp.WhichOneof("value")
    if kind == "sequence_type":
        return _tensor_type(tp.sequence_type.elem_type)
    if kind == "optional_type":
        return _tensor_type(tp.optional_type.elem_type)
    return tp.tensor_type


def _fold_constants(facts: GraphFacts, ctx: Context) -> tuple[dict[str, np.ndarray], set[str]]:
    """Initializers (dense and sparse) plus Constant / ConstantOfShape outputs, as numpy arrays, and
    the names computed by nodes (those nodes leave the program)."""
    arrays = facts.constant_values()
    folded = set()
    for node in facts.nodes:
        out = node.output[0] if node.output else ""
        if node.op_type not in ("Constant", "ConstantOfShape") or out not in facts.constants:
            continue
        if out not in arrays:  # a string Constant (or a malformed node): no torch form to compute with
            raise UnsupportedOpError(f"unsupported {describe(node, opset_of(node, ctx.opsets))}: "
                                     "string values have no torch equivalent")
        folded.add(out)
    return arrays, folded


class Twin(nn.Module):
    """Runs `model` in torch. Float initializers are parameters by ONNX name (see `onnx_parameters`)."""

    def __init__(self, model: onnx.ModelProto, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("the twin computes in torch.float32 or torch.float64")
        graph = model.graph
        self.model = model
        self.ctx = Context(float_dtype=dtype, opsets={
            ("" if o.domain in ("", "ai.onnx") else o.domain): o.version for o in model.opset_import})
        self.facts = GraphFacts(graph)  # roles, producers, constants: read once, shared by every stage
        arrays, folded = _fold_constants(self.facts, self.ctx)
        self.weight_uses: list[WeightUse] = self.facts.weight_uses
        sources = {use.source for use in self.weight_uses}
        stats = self.facts.slot_inputs(roles.STAT)  # BatchNorm statistics are buffers, not parameters
        self.elem_types: dict[str, int] = {}
        self._params = nn.ParameterList()
        self._param_index: dict[str, int] = {}
        self._consts = nn.Module()  # buffers, registered as c0, c1, ...
        self._const_names: list[str] = []
        self._masks = nn.Module()  # mask buffers by parameter index, m0, m1, ...
        for name, array in arrays.items():
            try:
                tensor = to_torch(array)
            except TypeError:
                continue  # string tensors: no torch form; ops reading them fail at build
            elem_type = ONNX_TYPES[tensor.dtype]
            self.elem_types[name] = elem_type
            if elem_type in FLOAT_TYPES:
                tensor = tensor.to(self.ctx.dtype(elem_type))
            # Folded Constant nodes are parameters only when they are weights (DESIGN: Constant nodes
            # are constants unless a Conv/Gemm/MatMul weight traces back to them).
            trainable = elem_type in FLOAT_TYPES and name not in stats and (name not in folded or name in sources)
            if trainable:
                self._param_index[name] = len(self._params)
                self._params.append(nn.Parameter(tensor))
            else:
                self._consts.register_buffer(f"c{len(self._const_names)}", tensor)
                self._const_names.append(name)
        self.inputs = [_value_spec(v) for v in graph.input if v.name not in arrays]
        self.output_names = [v.name for v in graph.output]
        body = [n for n in graph.node if not (n.output and n.output[0] in folded)]
        self.program = GraphProgram(body, self.output_names, set(arrays) | {s.name for s in self.inputs}, self.ctx)
        self.eval()  # nn.Module starts in training mode; the twin, like onnxruntime, starts in inference

    # ----- names -----------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def parameter(self, name: str) -> nn.Parameter:
        return self._params[self._param_index[name]]

    def onnx_parameters(self) -> dict[str, nn.Parameter]:
        """ONNX initializer name -> the nn.Parameter holding it (its exact name, dots and all)."""
        return {name: self._params[i] for name, i in self._param_index.items()}

    def onnx_buffers(self) -> dict[str, torch.Tensor]:
        """Non-trainable constants (integer tensors, BatchNorm statistics, folded Constants) by name."""
        consts = self._consts._buffers
        return {name: consts[f"c{i}"] for i, name in enumerate(self._const_names)}

    def onnx_tensors(self) -> dict[str, torch.Tensor]:
        """Every named constant, masked where a mask is set (what the graph computes with)."""
        # Runs at every forward: read the module dicts directly (nn.Module attribute lookups cost
        # ~30x more on a ResNet-20, measured 283 us vs 9.5 us per call).
        values = self.onnx_buffers()
        params, masks = self._params._parameters, self._masks._buffers
        for name, i in self._param_index.items():
            mask = masks.get(f"m{i}")
            values[name] = params[str(i)] if mask is None else params[str(i)] * mask
        return values

    # ----- masks ----------------------------------------------------------------------------------
    def set_mask(self, name: str, mask: torch.Tensor | None) -> None:
        """Multiply parameter `name` by `mask` in every forward (None removes the mask)."""
        i = self._param_index[name]
        if mask is None:
            self._masks._buffers.pop(f"m{i}", None)
            return
        param = self._params[i]
        if tuple(mask.shape) != tuple(param.shape):
            raise ValueError(f"mask for '{name}' has shape {tuple(mask.shape)}, the tensor {tuple(param.shape)}")
        self._masks.register_buffer(f"m{i}", mask.to(device=param.device, dtype=param.dtype))

    def mask(self, name: str) -> torch.Tensor | None:
        return self._masks._buffers.get(f"m{self._param_index[name]}")

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: m for name in self._param_index if (m := self.mask(name)) is not None}

    # ----- precision and op overrides -------------------------------------------------------------
    @torch.no_grad()
    def set_precision(self, dtype: torch.dtype) -> None:
        """Recompute in float32 or float64; float tensors are converted in place (Parameters stay)."""
        self.ctx.float_dtype = dtype
        tensors = list(self.onnx_parameters().items()) + list(self.onnx_buffers().items())
        for name, tensor in tensors:
            if self.elem_types.get(name) in FLOAT_TYPES:
                tensor.data = tensor.data.to(self.ctx.dtype(self.elem_types[name]))
        for buf_name, mask in list(self._masks._buffers.items()):
            self._masks._buffers[buf_name] = mask.to(self._params[int(buf_name[1:])].dtype)

    @contextlib.contextmanager
    def precision(self, dtype: torch.dtype) -> Iterator["Twin"]:
        before = self.ctx.float_dtype
        self.set_precision(dtype)
        try:
            yield self
        finally:
            self.set_precision(before)

    @contextlib.contextmanager
    def overridden(self, change: Callable[[Step], Callable[..., Any] | None], *,
                   nested: bool = True) -> Iterator["Twin"]:
        """Run with some nodes' handlers changed for a while, then put back (SynFlow's linearization,
        the MAC counter). `change(step)` returns a callable taking the node's inputs positionally (it
        may wrap `step.fn`, the handler in force) or None to keep the step as it is; `nested` reaches
        If / Loop / Scan bodies. Overrides stack: each exit undoes its own, last in, first out."""
        saved = self.program.override(change, nested)
        try:
            yield self
        finally:
            self.program.restore(saved)

    def replaced_ops(self, handlers: Mapping[str, Callable[..., Any]]):
        """Run with other handlers for some op types (e.g. SynFlow's linearization), then restore.

        A replacement takes the node's inputs positionally and may declare any of the node's
        attributes as keyword-only arguments, like a registered handler.
        """
        program = self.program
        return self.overridden(lambda step: program.bind(step.node, handlers[step.node.op_type])
                               if step.node.op_type in handlers else None)

    def train(self, mode: bool = True) -> "Twin":
        super().train(mode)
        self.ctx.training = mode
        return self

    # ----- running --------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Feed inputs by name (tensors or numpy arrays); returns every graph output by name."""
        env: dict[str, Any] = self.onnx_tensors()
        device = next(iter(env.values())).device if env else None
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InvalidModelError(f"missing input '{spec.name}'")
            env[spec.name] = self._feed(feeds[spec.name], spec, device)
        return dict(zip(self.output_names, self.program.run(env)))

    def _feed(self, value: Any, spec: InputSpec, device: torch.device | None) -> Any:
        """A tensor input at the twin's precision; a sequence input as a list; an empty optional as None."""
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [self._feed(v, spec, device) for v in value]
        value = torch.as_tensor(value, device=device) if not isinstance(value, torch.Tensor) else value
        if value.is_floating_point():  # the declared float type, or the value's own when undeclared
            elem_type = spec.elem_type if spec.elem_type in FLOAT_TYPES else ONNX_TYPES[value.dtype]
            value = value.to(self.ctx.dtype(elem_type))
        return value

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Inputs positionally (graph order) or by name; one output as a tensor, several as a tuple."""
        feeds = dict(zip(self.input_names, args), **kwargs)
        outputs = tuple(self.run(feeds).values())
        return outputs[0] if len(outputs) == 1 else outputs
