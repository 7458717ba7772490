"""Two operations the prune loop runs over every unpruned entry each iteration, where torch's CPU
kernels are slow: boolean compaction (~15 ns per entry in torch: nonzero, then a gather; numpy ~1 ns)
and nonzero of a sparse mask (~2x). On CPU they go through numpy (zero-copy views); other devices
use torch unchanged."""

from __future__ import annotations

import numpy as np
import torch


def compress(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """values[keep] for a 1-D tensor and a bool mask."""
    if values.device.type == "cpu":
        return torch.from_numpy(values.numpy()[keep.numpy()])
    return values[keep]


def flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """Sorted int64 positions of the True entries of a 1-D bool mask."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)
