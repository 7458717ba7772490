"""Errors a user can cause. The CLI prints each as one line and exits with its code."""


class OnnxPruneError(Exception):
    """Bad input or bad usage: one clear line, exit 2, nothing written."""

    exit_code = 2


class InvalidModelError(OnnxPruneError):
    """The file is not a loadable, valid ONNX model."""


class UnsupportedOpError(OnnxPruneError):
    """The graph uses an op (or an attribute of one) the twin cannot run exactly."""


class ScoringError(OnnxPruneError):
    """Scoring cannot proceed (no prunable weights, overflow, missing input shape...)."""


class DataError(OnnxPruneError):
    """A dataset or data file is missing, malformed or does not fit the model."""
