"""The op registry: (domain, op type, since-version) -> handler.

A handler is a plain function. It takes the node's inputs positionally (None for a missing optional
input) and the node's attributes as keyword-only arguments, already decoded and with the op schema's
defaults filled in, so handlers never restate defaults. Two keyword names are reserved:
`ctx` (the twin's runtime context: training flag, precision policy) and `n_outputs` (how many outputs the
node asks for). A handler registered `since=N` serves every opset from N until a newer registration.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import onnx
from onnx import defs, helper, numpy_helper

from ..errors import UnsupportedOpError

Handler = Callable[..., Any]
RESERVED = ("ctx", "n_outputs")

_HANDLERS: dict[tuple[str, str], list[tuple[int, Handler]]] = {}


def canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def register(op_type: str | tuple[str, ...], since: int = 1, domain: str = "") -> Callable[[Handler], Handler]:
    """Register a handler for one op type (or several sharing one function)."""
    op_types = (op_type,) if isinstance(op_type, str) else op_type

    def decorate(fn: Handler) -> Handler:
        for op in op_types:
            add(op, fn, since=since, domain=domain)
        return fn

    return decorate


def add(op_type: str, fn: Handler, since: int = 1, domain: str = "") -> None:
    versions = _HANDLERS.setdefault((canonical_domain(domain), op_type), [])
    if any(v == since for v, _ in versions):
        raise ValueError(f"{domain or 'ai.onnx'}::{op_type} since {since} is registered twice")
    versions.append((since, fn))
    versions.sort(key=lambda item: item[0])


def lookup(op_type: str, domain: str, opset: int) -> Handler | None:
    """The handler with the highest since-version not above `opset`, or None."""
    best = None
    for since, fn in _HANDLERS.get((canonical_domain(domain), op_type), ()):
        if since <= opset:
            best = fn
    return best


def supported_ops() -> list[tuple[str, str]]:
    return sorted(_HANDLERS)


def _schema(op_type: str, domain: str, opset: int):
    try:
        return defs.get_schema(op_type, opset, canonical_domain(domain))
    except defs.SchemaError:
        return None


def decode_attribute(attr: onnx.AttributeProto) -> Any:
    """Attribute value as plain Python: str for strings, numpy for tensors, GraphProto for graphs."""
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8") for v in value]
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, onnx.SparseTensorProto):
        from ..graph.constants import sparse_to_dense

        return sparse_to_dense(value)
    return value


def node_attributes(node: onnx.NodeProto, opset: int) -> dict[str, Any]:
    """Every attribute of the node's schema, given or defaulted (None when the schema has no default)."""
    values: dict[str, Any] = {}
    schema = _schema(node.op_type, node.domain, opset)
    if schema is not None:
        for name, spec in schema.attributes.items():
            has_default = spec.default_value is not None and spec.default_value.type != 0
            values[name] = decode_attribute(spec.default_value) if has_default else None
    for attr in node.attribute:
        values[attr.name] = decode_attribute(attr)
    return values


def describe(node: onnx.NodeProto, opset: int) -> str:
    domain = node.domain or "ai.onnx"
    return f"{node.op_type} (domain {domain}, opset {opset}) at node '{node.name or node.output[0]}'"


def bind(node: onnx.NodeProto, opset: int, ctx: Any, fn: Handler | None = None,
         compile_graph: Callable[[onnx.GraphProto], Any] | None = None) -> Handler:
    """Resolve the node's handler once and bind its attributes; fail naming op, domain, opset, node.

    `fn` replaces the registered handler (the twin's op overrides); it may ignore attributes.
    `compile_graph` turns graph attributes (If/Loop/Scan bodies) into callables, once, here.
    """
    strict = fn is None
    fn = fn or lookup(node.op_type, node.domain, opset)
    if fn is None:
        raise UnsupportedOpError(f"unsupported op {describe(node, opset)}")
    try:
        params = inspect.signature(fn).parameters
    except ValueError:  # torch builtins (torch.relu, ...) registered from tables take inputs only
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    attrs = node_attributes(node, opset)
    given = {a.name for a in node.attribute}
    # An attribute the node sets but the handler does not implement would be silently ignored:
    # refuse it instead, so the twin is never quietly wrong.
    unknown = sorted(given - accepted - set(RESERVED)) if strict and not takes_any else []
    if unknown:
        raise UnsupportedOpError(f"unsupported attribute {', '.join(unknown)} of {describe(node, opset)}")
    kwargs = {k: v for k, v in attrs.items() if takes_any or k in accepted}
    if compile_graph is not None:
        kwargs = {k: _compiled(v, compile_graph) for k, v in kwargs.items()}
    if "ctx" in accepted:
        kwargs["ctx"] = ctx
    if "n_outputs" in accepted:
        kwargs["n_outputs"] = len(node.output)
    if not kwargs:
        return fn
    return _Bound(fn, kwargs)


def _compiled(value: Any, compile_graph: Callable[[onnx.GraphProto], Any]) -> Any:
    if isinstance(value, onnx.GraphProto):
        return compile_graph(value)
    if isinstance(value, list) and value and isinstance(value[0], onnx.GraphProto):
        return [compile_graph(g) for g in value]
    return value


class _Bound:
    """A handler with its attributes bound (a partial that keeps a readable repr)."""

    __slots__ = ("fn", "kwargs")

    def __init__(self, fn: Handler, kwargs: dict[str, Any]):
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, *inputs: Any) -> Any:
        return self.fn(*inputs, **self.kwargs)

    def __repr__(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__name__}"
