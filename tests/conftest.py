"""Shared fixtures. The repo root goes on sys.path so tests can import `models.torch_nets`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Two cores: one torch thread per test process keeps timings steady and avoids oversubscription.
torch.set_num_threads(int(os.environ.get("ONNXPRUNE_TEST_THREADS", "2")))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
