"""Several processes (torchrun): DistributedDataParallel, gloo on CPU and nccl on CUDA.

The same `onnxprune train` command runs under `torchrun --nproc_per_node N -m onnxprune train ...`;
torchrun's WORLD_SIZE/RANK/LOCAL_RANK environment turns this on. --batch-size stays the global batch:
each global batch is split across the processes and the loss is scaled so that DDP's gradient average
equals the single-process mean over the whole batch (see loop.py). BatchNormalization uses each
process's own batch statistics (as torch's DDP does without SyncBatchNorm), so only networks without
BN train bit-for-bit like one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import OnnxPruneError, arg


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of `values` over the processes (float64, exact for counts)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def sync_buffers(self, module: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm statistics drift apart per process)."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(request: str, local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA when present (one GPU per process under torchrun), else CPU."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(request)
    except RuntimeError:
        raise OnnxPruneError(f"unknown device '{request}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OnnxPruneError(f"{arg('device')} cuda: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def setup(request: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when there is one; returns (Dist, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(request, info.local_rank)
    if info.active and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device
