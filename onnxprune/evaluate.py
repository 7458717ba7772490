"""Accuracy of an ONNX file under onnxruntime: top-1, and top-5 when the model has more than 5 classes.

The file is what gets deployed, so the number comes from onnxruntime, not the twin. Images come from
the same loaders as training (train/data.py), fitted to the model's input (layout, channels, size).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataError, OnnxPruneError, arg
from .twin.module import InputSpec

NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


@dataclass
class EvalResult:
    top1: float
    top5: float | None  # None when the model has 5 classes or fewer
    correct1: int
    correct5: int | None
    total: int
    classes: int
    seconds: float
    provider: str


def providers(request: str = "auto") -> list[str]:
    """CUDA first when both onnxruntime and the machine have it (else onnxruntime logs a failed load)."""
    available = ort.get_available_providers()
    if request == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN libraries from the pip wheels torch brought
            ort.preload_dlls()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if request == "cuda":
        raise OnnxPruneError(f"{arg('device')} cuda: onnxruntime has no usable CUDA provider here")
    return ["CPUExecutionProvider"]


def session(model_path: str | Path, request: str = "auto") -> ort.InferenceSession:
    from .io import ort_session

    return ort_session(model_path, providers(request))


def input_spec(sess: ort.InferenceSession) -> tuple[InputSpec, np.dtype]:
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise DataError(f"the model has {len(inputs)} inputs; evaluation feeds one image input")
    arg = inputs[0]
    if arg.type not in NP_TYPES:
        raise DataError(f"model input '{arg.name}' is {arg.type}; evaluation feeds float images")
    shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return InputSpec(arg.name, 0, shape), np.dtype(NP_TYPES[arg.type])


def check_fit(sess: ort.InferenceSession, dataset: Dataset, name: str) -> list[str]:
    """Refuse a model whose outputs cannot be this dataset's classes, before the whole run (an
    ImageNet model on MNIST scores 0 % after minutes); the notes say how the images were adapted."""
    spec, dtype = input_spec(sess)
    x = dataset[0][0].unsqueeze(0).numpy().astype(dtype)
    fixed = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 1 else 1
    x = np.concatenate([x] * fixed)
    out = np.asarray(sess.run([sess.get_outputs()[0].name], {spec.name: x})[0])
    outputs, classes = int(np.prod(out.shape[1:])) if out.ndim > 1 else 1, len(dataset.classes)
    if outputs != classes:
        raise DataError(f"the model outputs {outputs} classes ({sess.get_outputs()[0].name} {list(out.shape)}); "
                        f"{name} has {classes}: evaluate it on the data it classifies")
    native, layout = getattr(dataset, "fit", (None, None))
    if native is None:
        return []
    notes = []
    if tuple(native[1:]) != tuple(layout.size):
        notes.append(f"{name} images are {native[1]}x{native[2]}; the model takes {layout.size[0]}x"
                     f"{layout.size[1]}: they are resized, so accuracy is not that of the model's own data")
    if native[0] != layout.channels:
        notes.append(f"{name} images have {native[0]} channel(s); the model takes {layout.channels}: converted")
    return notes


def evaluate(sess: ort.InferenceSession, dataset: Dataset, *, batch_size: int = 256, workers: int = 0,
             progress=None) -> EvalResult:
    """Run every image of `dataset` through `sess`. `progress(done, text)` is called per batch."""
    spec, dtype = input_spec(sess)
    fixed = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
    loader = DataLoader(dataset, batch_size=fixed or batch_size, num_workers=workers)
    output = sess.get_outputs()[0].name
    correct1 = correct5 = total = 0
    classes = 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        n = len(y)
        x = x.numpy().astype(dtype, copy=False)
        if fixed and n < fixed:  # a model with a fixed batch size gets its last batch padded
            x = np.concatenate([x, np.zeros((fixed - n, *x.shape[1:]), dtype)])
        scores = np.asarray(sess.run([output], {spec.name: x})[0])[:n].reshape(n, -1)
        classes = scores.shape[1]
        if int(y.max()) >= classes:
            raise DataError(f"the model outputs {classes} classes; the dataset has label {int(y.max())}")
        y = y.numpy()
        top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(axis=1).sum())
        total += n
        if progress:
            progress(step + 1, f"top-1 {100 * correct1 / total:.2f} %")
    if total == 0:
        raise DataError("the dataset is empty")
    top5 = classes > 5
    return EvalResult(correct1 / total, correct5 / total if top5 else None, correct1, correct5 if top5 else None,
                      total, classes, time.perf_counter() - start, sess.get_providers()[0])
