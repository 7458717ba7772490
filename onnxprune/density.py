"""The kept fraction a user asks for: exactly one of compression (10**-c kept, the SynFlow paper's
convention), density (the fraction kept) or sparsity (the fraction removed).

Pure arithmetic, no torch or onnx: the CLI checks a target before it loads anything."""

from __future__ import annotations

import math

from .errors import OnnxPruneError, arg


def target_density(compression: float | None = None, density: float | None = None,
                   sparsity: float | None = None) -> float:
    """Fraction of prunable weights kept: 10**-compression, density, or 1 - sparsity (exactly one)."""
    given = [(n, v) for n, v in (("compression", compression), ("density", density), ("sparsity", sparsity))
             if v is not None]
    if len(given) != 1:
        names = " / ".join(f"--{n}" for n, _ in given) if given else "none"
        raise OnnxPruneError(f"give exactly one of {arg('compression')}, {arg('density')}, {arg('sparsity')} (got {names})")
    name, value = given[0]
    if not math.isfinite(value):
        raise OnnxPruneError(f"--{name} must be a finite number, not {value}")
    if name == "compression":
        if value < 0:
            raise OnnxPruneError(f"{arg('compression')} must be >= 0 (it keeps 10**-C of the weights), not {value}")
        return 10.0 ** -value
    kept = value if name == "density" else 1.0 - value
    if not 0.0 < kept <= 1.0:
        bounds = "in (0, 1]" if name == "density" else "in [0, 1)"
        raise OnnxPruneError(f"--{name} must be {bounds}, not {value}")
    return kept
