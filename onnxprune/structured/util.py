"""Attribute and input access shared by the rule modules."""

from __future__ import annotations

import onnx

from ..graph import attr  # noqa: F401  (the rule modules' attribute reader)


def input_at(node: onnx.NodeProto, slot: int) -> str:
    return node.input[slot] if slot < len(node.input) else ""
