"""Batch order that does not depend on the number of processes.

Each epoch draws one permutation from (seed, epoch) and cuts it into global batches of --batch-size;
process r takes the r-th contiguous part of every global batch. One process and N processes thus see
the same global batches in the same order, and a resumed run draws exactly what the killed run would
have drawn.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class GlobalBatches(Sampler):
    """Yields this process's share (a list of indices) of each global batch."""

    def __init__(self, n: int, batch_size: int, *, rank: int = 0, world: int = 1, shuffle: bool = True,
                 seed: int = 0):
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        batches = list(order.split(self.batch_size))
        # Every process needs at least one sample per step (DDP steps in lockstep).
        return [b for b in batches if len(b) >= self.world]

    def sizes(self) -> list[int]:
        return [len(b) for b in self.global_batches()]

    def __iter__(self):
        for batch in self.global_batches():
            yield share(len(batch), self.rank, self.world, batch).tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


def share(n: int, rank: int, world: int, items=None):
    """Process `rank`'s contiguous part of `items` (default range(n)): sizes differ by at most one."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return (torch.arange(n) if items is None else items)[start:stop]
