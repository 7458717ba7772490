"""Inputs without labels, one array per graph input, batch first, in the input's dtype.

- An .npz whose arrays are named after the model's inputs (token ids, masks, bytes: any dtype).
- An .npz of images with `x_train` / `x_test` (labels optional): `split` picks one, and images are
  fitted and normalized exactly as `train` and `eval` do (train/data.py), so the model sees what it
  was trained on.
- An .npz with one array, for a one-input model.
- A folder of images without class subfolders (images.py), for a one-input image model.
- "random": drawn from each input's type (`random_inputs`): floats N(0, 1), token ids uniform below
  the size of the embedding table they index, attention masks ones, other integers zeros.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from ..errors import DataError
from .images import ImageOptions, folder_images


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    constants = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in constants]


def load_inputs(data: str | Path, model: onnx.ModelProto, *, split: str = "test", samples: int | None = None,
                input_shapes: Mapping[str, tuple[int, ...]] | None = None, seed: int = 0,
                images: ImageOptions | None = None) -> dict[str, np.ndarray]:
    """{input name: array} of up to `samples` rows (all of them when None)."""
    if str(data) == "random":
        return random_inputs(model, samples or 256, input_shapes=input_shapes, seed=seed)
    path = Path(data)
    if path.is_dir():
        feeds = folder_inputs(path, model, images or ImageOptions())
        return {k: v[:samples] for k, v in feeds.items()} if samples else feeds
    arrays = _arrays(path)
    feeds = named_arrays(path, model, arrays)
    if feeds is None:
        feeds = _unnamed(path, model, arrays, split)
    rows = {len(a) for a in feeds.values()}
    if len(rows) != 1 or 0 in rows:
        raise DataError(f"{path}: the input arrays have different or zero row counts ({sorted(rows)})")
    return {k: v[:samples] for k, v in feeds.items()} if samples else feeds


def folder_inputs(folder: Path, model: onnx.ModelProto, options: ImageOptions) -> dict[str, np.ndarray]:
    """A one-input model's samples from a folder of images (fidelity/images.py)."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise DataError(f"{folder}: a folder of images feeds one input; the model has {len(inputs)}")
    return {inputs[0].name: _typed(folder_images(folder, inputs[0], options), inputs[0], folder)}


def random_inputs(model, rows: int, *, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """`rows` samples per input of `model` (a ModelProto, or its Twin), drawn as api.example_feeds
    draws them: the given or declared shape, its first dim `rows`; any other symbolic dim must be given."""
    from ..api import example_feeds
    from ..errors import OnnxPruneError
    from ..pruning.inputs import resolve_shapes
    from ..twin import Twin

    twin = model if isinstance(model, Twin) else Twin(model)
    try:
        shapes = resolve_shapes(twin, input_shapes)
    except OnnxPruneError as err:
        raise DataError(f"random inputs need every non-batch dim: {err}") from None
    shapes = {name: (rows, *shape[1:]) for name, shape in shapes.items()}
    return {name: value.numpy() for name, value in example_feeds(twin, shapes, seed=seed).items()}


def named_arrays(path: str | Path, model: onnx.ModelProto,
                 arrays: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray] | None:
    """The npz's arrays for every model input, by name and typed, or None when it does not name them all
    (an images npz, say). `arrays`: the npz already read."""
    arrays = _arrays(Path(path)) if arrays is None else arrays
    inputs = graph_inputs(model)
    if not all(v.name in arrays for v in inputs):
        return None
    return {v.name: _typed(arrays[v.name], v, Path(path)) for v in inputs}


def _unnamed(path: Path, model: onnx.ModelProto, arrays: dict[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
    """A one-input model's images (x_<split>) or the npz's only array."""
    inputs = graph_inputs(model)
    names = [v.name for v in inputs]
    if f"x_{split}" in arrays and len(inputs) == 1:
        return {names[0]: _images(path, model, split)}
    if len(arrays) == 1 and len(inputs) == 1:
        return {names[0]: _typed(next(iter(arrays.values())), inputs[0], path)}
    raise DataError(f"{path}: npz has no array for model input(s) {', '.join(n for n in names if n not in arrays)} "
                    f"(it has {', '.join(arrays) or 'nothing'}; name one array per input, or give x_{split})")


def _arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable npz file ({err})") from None


def _typed(array: np.ndarray, value: onnx.ValueInfoProto, path: Path) -> np.ndarray:
    tensor = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    rank = len(tensor.shape.dim)
    if array.ndim != rank:
        raise DataError(f"{path}: array for input '{value.name}' has rank {array.ndim}; the input has rank {rank}")
    if np.issubdtype(array.dtype, np.floating) != np.issubdtype(dtype, np.floating):
        raise DataError(f"{path}: array for input '{value.name}' is {array.dtype}; the input is {np.dtype(dtype)}")
    return np.ascontiguousarray(array.astype(dtype, copy=False))


def _images(path: Path, model: onnx.ModelProto, split: str) -> np.ndarray:
    """x_<split> fitted and normalized as train/eval do (labels are not needed)."""
    from ..train.data import load_dataset
    from ..twin.module import InputSpec

    value = graph_inputs(model)[0]
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in value.type.tensor_type.shape.dim)
    spec = InputSpec(value.name, value.type.tensor_type.elem_type, dims)
    data = load_dataset("npz", path, train=split == "train", input_spec=spec, augment=False, labels=False)
    x = data.x if data.transform is None else np.stack([data[i][0].numpy() for i in range(len(data))])
    return _typed(np.asarray(x), value, path)

