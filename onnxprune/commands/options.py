"""Option helpers the commands share: input shapes, the default output path, side-output checks."""

from __future__ import annotations

from pathlib import Path

from ..errors import OnnxPruneError


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """NAME=1x3x224x224 -> ("NAME", (1, 3, 224, 224)). The name may itself contain '='; the last one splits."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise OnnxPruneError(f"--input-shape {text!r}: expected NAME=DIMxDIMx... with positive dims, "
                             "e.g. input=1x3x224x224")
    return name, shape


def default_output(model: Path) -> Path:
    """MODEL.pruned.onnx beside the input."""
    stem = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.pruned.onnx")


def check_side_outputs(paths, model: Path, output: Path, *, overwrite: bool) -> None:
    """--report / --plot paths, checked before any work: writable, and neither model file."""
    from .. import io

    for extra in (p for p in paths if p is not None):
        if extra.resolve() in (model.resolve(), output.resolve()):
            raise OnnxPruneError(f"{extra}: --report / --plot must not name the input or output model")
        io.check_output_path(extra, overwrite=overwrite)
