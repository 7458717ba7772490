"""Attribute and input access shared by the rule modules."""

from __future__ import annotations

import onnx
from onnx import helper


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def input_at(node: onnx.NodeProto, slot: int) -> str:
    return node.input[slot] if slot < len(node.input) else ""
