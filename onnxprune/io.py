"""Loading and saving ONNX files: validation on the way in, atomic writes on the way out."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .errors import InvalidModelError, OnnxPruneError


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file (external data resolved); InvalidModelError on anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise InvalidModelError(f"{path}: not an ONNX model ({type(err).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise InvalidModelError(f"{path}: not an ONNX model (no graph)")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise InvalidModelError(f"{path}: external data cannot be read ({err})") from None
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidModelError(f"{path}: invalid ONNX model: {first}") from None
    return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None) -> None:
    """Write atomically (temp file in the same folder, then rename): never a half-written output.

    Models over 2 GB must keep weights in an external file (protobuf's limit); `external_data=None`
    decides by size.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OnnxPruneError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxPruneError(f"{path}: folder {folder} is not writable")
    if external_data is None:
        external_data = model.ByteSize() > 2**31 - 2**20
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    data_name = f"{path.name}.data"
    try:
        if external_data:
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            with open(tmp, "wb") as out:
                out.write(model.SerializeToString())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
