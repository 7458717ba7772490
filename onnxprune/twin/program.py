"""A graph resolved once into steps (node -> bound handler), then run over a name -> tensor dict.

Kept apart from the Twin module so control-flow handlers (If, Loop, Scan) can run subgraphs with the
same machinery; a subgraph sees the enclosing scope's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import onnx

from ..errors import InvalidModelError
from . import registry


@dataclass
class Step:
    node: onnx.NodeProto
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    drop: tuple[str, ...] = ()  # values whose last use is this step (freed after it)


def opset_of(node: onnx.NodeProto, opsets: dict[str, int]) -> int:
    domain = registry.canonical_domain(node.domain)
    if domain not in opsets:
        raise InvalidModelError(f"node '{node.name}' uses domain '{node.domain}' that the model does not import")
    return opsets[domain]


def toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where each input is produced first (ONNX requires it; some exporters slip)."""
    ready, pending, order = set(available) | {""}, list(nodes), []
    while pending:
        rest = [n for n in pending if not set(n.input) <= ready]
        done = [n for n in pending if set(n.input) <= ready]
        if not done:
            missing = sorted(set(rest[0].input) - ready)
            raise InvalidModelError(f"node '{rest[0].name or rest[0].op_type}' reads undefined value(s) {missing}")
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
        bound = registry.bind(node, opset_of(node, self.ctx.opsets), self.ctx, fn)
        return Step(node, bound, tuple(node.input), tuple(node.output))

    def _mark_last_uses(self, keep: set[str]) -> None:
        seen: set[str] = set(keep)
        for step in reversed(self.steps):
            step.drop = tuple(n for n in set(step.inputs) if n and n not in seen)
            seen.update(step.inputs)

    def rebind(self, overrides: dict[str, Callable[..., Any]]) -> list[tuple[int, Callable[..., Any]]]:
        """Swap handlers of the given op types; returns what to restore."""
        saved = []
        for i, step in enumerate(self.steps):
            fn = overrides.get(step.node.op_type)
            if fn is not None:
                saved.append((i, step.fn))
                step.fn = self._step(step.node, fn).fn
        return saved

    def restore(self, saved: list[tuple[int, Callable[..., Any]]]) -> None:
        for i, fn in saved:
            self.steps[i].fn = fn

    def run(self, env: dict[str, Any]) -> list[Any]:
        """Run every step over `env` (mutated) and return the graph outputs in order."""
        for step in self.steps:
            result = step.fn(*[env[name] if name else None for name in step.inputs])
            if len(step.outputs) == 1:
                env[step.outputs[0]] = result[0] if isinstance(result, tuple) else result
            else:
                for name, value in zip(step.outputs, result if isinstance(result, tuple) else (result,)):
                    if name:
                        env[name] = value
            for name in step.drop:
                env.pop(name, None)
        return [env[name] for name in self.outputs]
