"""The loop's state: which entries of each prunable tensor are still unpruned.

One flat array holds, tensor after tensor, the sorted flat indices of the unpruned ("alive") entries;
`counts[j]` of them belong to tensor j. It only ever shrinks. Scorers may attach per-entry payloads
(SynFlow keeps the alive |θ| there, so each iteration gathers only the gradient); removal compacts
the index and every payload in one pass each.
"""

from __future__ import annotations

from typing import Callable

import torch


def _index_dtype(n: int) -> torch.dtype:
    # int32 indices halve the memory traffic of the per-iteration gathers (index_select takes both).
    return torch.int32 if n < 2**31 else torch.int64


def compress(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """values[keep]. On CPU through numpy: torch's boolean indexing costs ~15 ns per entry there
    (nonzero, then a gather), numpy's ~1 ns, and this runs over every alive entry per iteration."""
    if values.device.type == "cpu":
        return torch.from_numpy(values.numpy()[keep.numpy()])
    return values[keep]


class Alive:
    def __init__(self, masks: list[torch.Tensor | None], sizes: list[int], device: torch.device):
        parts, dtype = [], _index_dtype(max(sizes, default=0))
        for mask, n in zip(masks, sizes):
            if mask is None:
                parts.append(torch.arange(n, dtype=dtype, device=device))
            else:
                parts.append(torch.nonzero(mask.reshape(-1) != 0).squeeze(1).to(dtype))
        self.counts = [p.numel() for p in parts]
        self.index = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int32, device=device)
        self.payloads: dict[str, torch.Tensor] = {}

    @property
    def total(self) -> int:
        return self.index.numel()

    def offsets(self) -> list[int]:
        out = [0]
        for c in self.counts:
            out.append(out[-1] + c)
        return out

    def segments(self, values: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-tensor views of `values` (default: the index) laid out like the alive entries."""
        values = self.index if values is None else values
        bounds = self.offsets()
        return [values[bounds[j]:bounds[j + 1]] for j in range(len(self.counts))]

    def payload(self, key: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A per-entry array kept aligned with the alive entries (made on first use)."""
        if key not in self.payloads:
            self.payloads[key] = make()
        return self.payloads[key]

    def remove(self, positions: torch.Tensor) -> list[torch.Tensor]:
        """Drop sorted `positions` (into the alive entries); returns each tensor's removed flat indices."""
        bounds = self.offsets()
        cuts = torch.searchsorted(positions, torch.tensor(bounds, device=positions.device)).tolist()
        removed = self.index[positions].long()
        per_tensor = [removed[cuts[j]:cuts[j + 1]] for j in range(len(self.counts))]
        self.counts = [c - (cuts[j + 1] - cuts[j]) for j, c in enumerate(self.counts)]
        if positions.numel():
            keep = torch.ones(self.total, dtype=torch.bool, device=positions.device)
            keep[positions] = False
            self.index = compress(self.index, keep)
            self.payloads = {k: compress(v, keep) for k, v in self.payloads.items()}
        return per_tensor

    def masks(self, sizes: list[int], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        out = []
        for seg, n, shape in zip(self.segments(), sizes, shapes):
            flat = torch.zeros(n, dtype=torch.bool, device=seg.device)
            flat[seg.long()] = True
            out.append(flat.reshape(shape))
        return out
