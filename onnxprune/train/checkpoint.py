"""One checkpoint file per training run, rewritten atomically after every epoch.

It holds the twin's state (parameters, BatchNorm statistics, masks), the optimizer's and the LR
schedule's, the finished epochs' records, and the run's identity (model file hash and the options that
shape the trajectory). --resume continues from it only when the identity matches; --epochs may differ,
so a finished run can be extended.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import OnnxPruneError, arg

VERSION = 1


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Checkpoint:
    def __init__(self, path: str | os.PathLike, identity: dict[str, Any]):
        self.path = Path(path)
        self.identity = identity

    def save(self, epoch: int, state: dict[str, Any], history: list[dict]) -> None:
        payload = {"version": VERSION, "identity": self.identity, "epoch": epoch, "history": history, **state}
        folder = self.path.parent if str(self.path.parent) else Path(".")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, self.path)  # a kill mid-save leaves the previous epoch's file intact
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved payload, None when there is no file; refuses a checkpoint of another run."""
        if not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 (any unreadable file is the same user error)
            raise OnnxPruneError(f"{self.path}: not a readable checkpoint ({type(err).__name__})") from None
        if not isinstance(payload, dict) or payload.get("version") != VERSION:
            raise OnnxPruneError(f"{self.path}: not an onnxprune training checkpoint")
        saved = payload.get("identity", {})
        differ = sorted(k for k in set(saved) | set(self.identity) if saved.get(k) != self.identity.get(k))
        if differ:
            raise OnnxPruneError(f"{self.path} belongs to another run ({', '.join(differ)} differ); "
                                 f"delete it or pass another {arg('checkpoint')}")
        return payload
