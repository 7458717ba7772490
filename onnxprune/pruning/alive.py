"""The loop's state: which entries of each prunable tensor are still unpruned.

One flat array lists, tensor after tensor, sorted flat indices of entries; `lengths[j]` of them
belong to tensor j. Removing entries only marks them dead (their positions are remembered); the list
is compacted once a quarter of it is dead, since compaction is a pass over everything and an
iteration removes only a few percent. Scores of dead entries are hidden as +inf (`hide_dead`), which
no selection of the lowest scores ever picks. Scorers may attach per-entry payloads (SynFlow keeps
the entries' |θ| there, so an iteration gathers only the gradient); compaction carries them along.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .fastpath import compress

COMPACT_AT = 0.25  # dead fraction of the list that triggers compaction


def _index_dtype(n: int) -> torch.dtype:
    # int32 indices halve the memory traffic of the per-iteration gathers (index_select takes both).
    return torch.int32 if n < 2**31 else torch.int64


class Alive:
    def __init__(self, masks: list[torch.Tensor | None], sizes: list[int], device: torch.device):
        parts, dtype = [], _index_dtype(max(sizes, default=0))
        for mask, n in zip(masks, sizes):
            if mask is None:
                parts.append(torch.arange(n, dtype=dtype, device=device))
            else:
                parts.append(torch.nonzero(mask.reshape(-1) != 0).squeeze(1).to(dtype))
        self.counts = [p.numel() for p in parts]  # unpruned entries per tensor
        self.lengths = list(self.counts)  # list entries per tensor, dead ones included
        self.index = torch.cat(parts) if parts else torch.empty(0, dtype=dtype, device=device)
        self.payloads: dict[str, torch.Tensor] = {}
        self._dead: list[torch.Tensor] = []  # sorted positions removed since the last compaction
        self._n_dead = 0

    @property
    def total(self) -> int:
        """Unpruned entries."""
        return sum(self.counts)

    @property
    def size(self) -> int:
        """List entries (unpruned and dead)."""
        return self.index.numel()

    def offsets(self) -> list[int]:
        out = [0]
        for n in self.lengths:
            out.append(out[-1] + n)
        return out

    def segments(self, values: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-tensor views of `values` (default: the index) laid out like the list."""
        values = self.index if values is None else values
        bounds = self.offsets()
        return [values[bounds[j]:bounds[j + 1]] for j in range(len(self.lengths))]

    def payload(self, key: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A per-entry array kept aligned with the list (made on first use)."""
        if key not in self.payloads:
            self.payloads[key] = make()
        return self.payloads[key]

    def hide_dead(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores of the list with dead entries set to +inf: selecting the lowest never takes them."""
        if self._dead:
            scores.index_fill_(0, torch.cat(self._dead), math.inf)
        return scores

    def remove(self, positions: torch.Tensor) -> list[torch.Tensor]:
        """Drop sorted list `positions` (unpruned entries); returns each tensor's removed flat indices."""
        bounds = self.offsets()
        cuts = torch.searchsorted(positions, torch.tensor(bounds, device=positions.device)).tolist()
        removed = self.index[positions].long()
        per_tensor = [removed[cuts[j]:cuts[j + 1]] for j in range(len(self.lengths))]
        self.counts = [c - (cuts[j + 1] - cuts[j]) for j, c in enumerate(self.counts)]
        if positions.numel():
            self._dead.append(positions)
            self._n_dead += positions.numel()
            if self._n_dead > COMPACT_AT * self.size:
                self.compact()
        return per_tensor

    def compact(self) -> None:
        if not self._dead:
            return
        keep = torch.ones(self.size, dtype=torch.bool, device=self.index.device)
        keep[torch.cat(self._dead)] = False
        self.index = compress(self.index, keep)
        self.payloads = {k: compress(v, keep) for k, v in self.payloads.items()}
        self.lengths = list(self.counts)
        self._dead, self._n_dead = [], 0

    def masks(self, sizes: list[int], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        self.compact()
        out = []
        for seg, n, shape in zip(self.segments(), sizes, shapes):
            flat = torch.zeros(n, dtype=torch.bool, device=seg.device)
            flat[seg.long()] = True
            out.append(flat.reshape(shape))
        return out
