"""Errors a user can cause. The CLI prints each as one line and exits with its code.

A message names what the caller can change as `arg("input_shapes")`: the Python API user reads the
argument's name (`str(err)`), the CLI's error handler shows the flag instead (`--input-shape`), from
its table of options. The library never writes a flag itself.
"""

from __future__ import annotations

import re
from typing import Mapping

_MARK = "\x1f"  # ASCII unit separator: never part of a message, and not whitespace for one_line
_ARG = re.compile(f"{_MARK}([A-Za-z_][A-Za-z0-9_]*){_MARK}")


def arg(name: str) -> str:
    """The Python argument `name`, marked in a message so that the CLI can show its flag instead."""
    return f"{_MARK}{name}{_MARK}"


def render(text: str, names: Mapping[str, str] | None = None) -> str:
    """`text` with each marked argument as `names[argument]` (the CLI's flags), else its Python name."""
    names = names or {}
    return _ARG.sub(lambda m: names.get(m.group(1), m.group(1)), str(text))


class _Rendered:
    """str() of an error or warning shows the Python argument names of its marked arguments."""

    def message(self, names: Mapping[str, str] | None = None) -> str:
        """One line, with marked arguments as `names` gives them (the CLI passes its flags)."""
        return one_line(render(Exception.__str__(self), names))

    def __str__(self) -> str:
        return self.message()


class OnnxPruneError(_Rendered, Exception):
    """Bad input or bad usage: one clear line, exit 2, nothing written."""

    exit_code = 2

    # The contract is one line: messages built from library errors (onnx's checker writes several
    # lines) are flattened by `message`, once, instead of at every raise site.


class OnnxPruneWarning(_Rendered, UserWarning):
    """A warning whose message may name arguments (`arg`), shown like OnnxPruneError's."""


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
