"""A graph resolved once into steps (node -> bound handler), then run over a name -> tensor dict.

Kept apart from the Twin module so control-flow handlers (If, Loop, Scan) can run subgraphs with the
same machinery: a graph attribute is compiled once into a `Subgraph` that reads the enclosing scope's
values (ONNX lets a subgraph use any name visible where its node runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import onnx
import torch
from onnx import numpy_helper

from ..errors import InvalidModelError
from . import registry
from ..graph.constants import sparse_to_dense
from .tensors import to_torch


@dataclass
class Step:
    node: onnx.NodeProto
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    captures: tuple[str, ...] = ()  # outer-scope values the node's subgraphs read
    subgraphs: tuple["Subgraph", ...] = ()
    drop: tuple[str, ...] = ()  # values whose last use is this step (freed after it)


def opset_of(node: onnx.NodeProto, opsets: dict[str, int]) -> int:
    domain = registry.canonical_domain(node.domain)
    if domain not in opsets:
        raise InvalidModelError(f"node '{node.name}' uses domain '{node.domain}' that the model does not import")
    return opsets[domain]


def graph_captures(graph: onnx.GraphProto) -> set[str]:
    """Names a graph reads but does not define: values of the enclosing scope (nested graphs included)."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    defined |= {t.values.name for t in graph.sparse_initializer}
    read: set[str] = set()
    for node in graph.node:
        read |= node_reads(node)
        defined |= set(node.output)
    read |= {v.name for v in graph.output}
    return read - defined


def node_reads(node: onnx.NodeProto) -> set[str]:
    """The node's inputs plus whatever its graph attributes capture from the scope around the node."""
    names = set(node.input)
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            names |= graph_captures(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for g in attr.graphs:
                names |= graph_captures(g)
    return names - {""}


def toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where each input is produced first (ONNX requires it; some exporters slip)."""
    ready, pending, order = set(available) | {""}, [(n, node_reads(n)) for n in nodes], []
    while pending:
        rest = [(n, r) for n, r in pending if not r <= ready]
        done = [n for n, r in pending if r <= ready]
        if not done:
            node, reads = rest[0]
            missing = sorted(reads - ready)
            raise InvalidModelError(f"node '{node.name or node.op_type}' reads undefined value(s) {missing}")
        order += done
        for n in done:
            ready.update(n.output)
        pending = rest
    return order


class GraphProgram:
    """Steps of one graph. `available` names values the caller provides (inputs, constants, outer scope)."""

    def __init__(self, nodes: list[onnx.NodeProto], outputs: list[str], available: set[str], ctx: Any,
                 implicit: set[str] = frozenset()):
        self.ctx = ctx
        self.outputs = list(outputs)
        self.steps = [self._step(node) for node in toposort(list(nodes), available | set(implicit))]
        self._mark_last_uses(set(outputs) | set(implicit))

    def _step(self, node: onnx.NodeProto, fn=None) -> Step:
        subgraphs: list[Subgraph] = []

        def compile_graph(graph: onnx.GraphProto) -> Subgraph:
            subgraphs.append(Subgraph(graph, self.ctx))
            return subgraphs[-1]

        bound = registry.bind(node, opset_of(node, self.ctx.opsets), self.ctx, fn, compile_graph)
        captures = tuple(sorted(node_reads(node) - set(node.input)))
        return Step(node, bound, tuple(node.input), tuple(node.output), captures, tuple(subgraphs))

    def _mark_last_uses(self, keep: set[str]) -> None:
        seen: set[str] = set(keep)
        for step in reversed(self.steps):
            uses = set(step.inputs) | set(step.captures)
            step.drop = tuple(n for n in uses if n and n not in seen)
            seen.update(uses)

    def override(self, change: Callable[[Step], Callable[..., Any] | None], nested: bool) -> list[tuple[Step, Any]]:
        """Give each step the handler `change(step)` returns (None: keep it), in subgraphs (If / Loop /
        Scan bodies) too when `nested`; returns the (step, old handler) pairs `restore` puts back."""
        saved: list[tuple[Step, Any]] = []
        for step in self.steps:
            fn = change(step)
            if fn is not None:
                saved.append((step, step.fn))
                step.fn = fn
            for sub in step.subgraphs if nested else ():
                saved += sub.program.override(change, nested)
        return saved

    @staticmethod
    def restore(saved: list[tuple[Step, Any]]) -> None:
        for step, fn in reversed(saved):  # last in, first out: a step changed twice gets its first back
            step.fn = fn

    def bind(self, node: onnx.NodeProto, handler: Callable[..., Any]) -> Callable[..., Any]:
        """`handler` bound to `node`'s attributes as a registered handler would be."""
        return self._step(node, handler).fn

    def run(self, env: dict[str, Any]) -> list[Any]:
        """Run every step over `env` (mutated) and return the graph outputs in order."""
        for step in self.steps:
            for sub in step.subgraphs:
                sub.outer = env
            try:
                result = step.fn(*[env[name] if name else None for name in step.inputs])
            except torch.cuda.OutOfMemoryError:
                raise  # the machine's limit, not the model's fault
            except (RuntimeError, ValueError, IndexError) as err:
                # torch refusing shapes or values the checker could not see statically (input-dependent
                # shapes, attribute values): the model does not run on these inputs. Name the node.
                raise InvalidModelError(f"node '{step.node.name or step.node.output[0]}' ({step.node.op_type}) "
                                        f"cannot run on these inputs: {err}") from err
            if len(step.outputs) == 1:
                env[step.outputs[0]] = result[0] if isinstance(result, tuple) else result
            else:
                for name, value in zip(step.outputs, result if isinstance(result, tuple) else (result,)):
                    if name:
                        env[name] = value
            for name in step.drop:
                env.pop(name, None)
        return [env[name] for name in self.outputs]


class Subgraph:
    """A graph attribute (If branch, Loop/Scan body) compiled once.

    Called with its formal inputs, it returns its outputs as a list. Outer-scope values come from
    `outer`, the enclosing program's env, which that program sets right before running the node.
    """

    def __init__(self, graph: onnx.GraphProto, ctx: Any):
        self.ctx = ctx
        self.input_names = [v.name for v in graph.input]
        self.constants = {t.name: to_torch(numpy_helper.to_array(t)) for t in graph.initializer}
        self.constants.update({t.values.name: to_torch(sparse_to_dense(t)) for t in graph.sparse_initializer})
        self.captures = sorted(graph_captures(graph))
        self.outer: dict[str, Any] = {}
        available = set(self.input_names) | set(self.constants)
        self.program = GraphProgram(list(graph.node), [v.name for v in graph.output], available, ctx,
                                    implicit=set(self.captures))

    def __call__(self, *inputs: Any) -> list[Any]:
        env = {name: self.outer[name] for name in self.captures}
        device = next((v.device for v in [*inputs, *env.values()] if isinstance(v, torch.Tensor)), None)
        env.update((name, self._constant(t, device)) for name, t in self.constants.items())
        env.update(zip(self.input_names, inputs))
        return self.program.run(env)

    def _constant(self, tensor: torch.Tensor, device: torch.device | None) -> torch.Tensor:
        """An initializer of the subgraph at the twin's precision, on the device the values are on."""
        return self.ctx.promote(tensor).to(device) if device is not None else self.ctx.promote(tensor)
