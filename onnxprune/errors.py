"""Errors a user can cause. The CLI prints each as one line and exits with its code."""

from __future__ import annotations

import re


class OnnxPruneError(Exception):
    """Bad input or bad usage: one clear line, exit 2, nothing written."""

    exit_code = 2

    def __str__(self) -> str:
        # The contract is one line: messages built from library errors (onnx's checker writes
        # several lines) are flattened here, once, instead of at every raise site.
        return one_line(super().__str__())


class InvalidModelError(OnnxPruneError):
    """The file is not a loadable, valid ONNX model."""


class UnsupportedOpError(OnnxPruneError):
    """The graph uses an op (or an attribute of one) the twin cannot run exactly."""


class QuantizedModelError(OnnxPruneError):
    """The model is already quantized: its weights are integers, with no float value to score."""


class ScoringError(OnnxPruneError):
    """Scoring cannot proceed (no prunable weights, overflow, missing input shape...)."""


class DataError(OnnxPruneError):
    """A dataset or data file is missing, malformed or does not fit the model."""


class OutputError(OnnxPruneError):
    """The output path cannot be written (missing or read-only folder, would overwrite the input)."""


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace and newlines into single spaces and cap the length."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    text = text.replace("==> Context: ", "")
    return text if len(text) <= limit else text[: limit - 3] + "..."
