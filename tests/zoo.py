"""The model zoo: torchvision nets exported with both torch exporters, plus the files committed in models/zoo/.

Tests (and the CLI tests) import it as a plain module (`from zoo import ...`; pytest puts tests/ on
sys.path):

    zoo_names() -> list[str]                       every model name, without exporting anything
    zoo_model(name) -> onnx.ModelProto             one model (a fresh copy; callers may mutate it)
    zoo_models() -> dict[str, onnx.ModelProto]     all of them, name -> model
    sample_feeds(model, batch=2, seed=0) -> dict   random inputs for the model's graph inputs

Torchvision names are "<arch>-torchscript" (torch.onnx.export dynamo=False: opset 17, BatchNormalization
kept, dynamic batch) and "<arch>-dynamo" (dynamo=True: BN folded where foldable, batch fixed at 1).
Committed files are named by their stem ("keras_cnn", "sklearn_mlp_classifier", ...).

Exports are slow (dynamo takes seconds per model), so each is written once to a disk cache keyed by the
code that builds and exports the models (here and in models/torch_nets.py) and by the
torch/torchvision/onnx versions:
$ONNXPRUNE_ZOO_CACHE if set, else .pytest_cache/d/onnxprune-zoo/<key>/ under the repository root.
Weights are random (seeded), never downloaded; BatchNorm statistics are randomized so BN is not the
identity.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
ZOO_DIR = ROOT / "models" / "zoo"
EXPORTERS = ("torchscript", "dynamo")
IMAGE = (3, 32, 32)  # every architecture below runs at 32x32 (densenet/efficientnet reach 1x1 features)


def _vit():
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10)


def _torchvision(arch: str) -> Callable[[], object]:
    def build():
        import torchvision

        return getattr(torchvision.models, arch)(weights=None, num_classes=10)
    return build


ARCHS: dict[str, Callable[[], object]] = {
    **{arch: _torchvision(arch) for arch in ("resnet18", "mobilenet_v3_small", "squeezenet1_1",
                                             "shufflenet_v2_x0_5", "densenet121", "efficientnet_b0")},
    "vit_tiny": _vit,
}


def torch_names() -> list[str]:
    return [f"{arch}-{exporter}" for arch in ARCHS for exporter in EXPORTERS]


# The committed files, named explicitly: models/zoo/ also receives outputs (README command 1 writes
# lenet5.pruned.onnx there), and a glob would test those as if they were zoo models.
COMMITTED = ("flax_cnn", "flax_transformer", "keras_cnn", "keras_transformer", "lenet5", "paddle_cnn",
             "paddle_mlp", "sklearn_mlp_classifier", "sklearn_mlp_regressor")


def committed_names() -> list[str]:
    return list(COMMITTED)


def zoo_names() -> list[str]:
    return torch_names() + committed_names()


def zoo_model(name: str) -> onnx.ModelProto:
    """One zoo model by name (exported on first use, then read from the disk cache)."""
    return onnx.load_from_string(_model_bytes(name))


def zoo_models() -> dict[str, onnx.ModelProto]:
    return {name: zoo_model(name) for name in zoo_names()}


def sample_feeds(model: onnx.ModelProto, *, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float inputs for every graph input that is not an initializer; symbolic dims
    (the batch, in every zoo model) become `batch`."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


# ----- torch exports ------------------------------------------------------------------------------------
def _model_bytes(name: str) -> bytes:
    if name in committed_names():
        return (ZOO_DIR / f"{name}.onnx").read_bytes()
    arch, _, exporter = name.rpartition("-")
    if arch not in ARCHS or exporter not in EXPORTERS:
        raise KeyError(f"no zoo model '{name}'; known: {', '.join(zoo_names())}")
    path = cache_dir() / f"{name}.onnx"
    if not path.exists():
        _write_atomic(path, export_torch(arch, exporter).SerializeToString())
    return path.read_bytes()


def cache_dir() -> Path:
    base = Path(os.environ.get("ONNXPRUNE_ZOO_CACHE") or ROOT / ".pytest_cache" / "d" / "onnxprune-zoo")
    path = base / _cache_key()
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache  # once per process: the key must not change under a running test session
def _cache_key() -> str:
    import torch
    import torchvision

    # a change to how models are built or exported (here or in the export helper) makes a fresh cache
    code = [inspect.getsource(fn) for fn in (_vit, _torchvision, build_torch, _randomize, export_torch)]
    key = hashlib.sha256("\n".join(code + [repr(IMAGE), repr(sorted(ARCHS))]).encode())
    key.update((ROOT / "models" / "torch_nets.py").read_bytes())
    key.update(f"{torch.__version__} {torchvision.__version__} {onnx.__version__}".encode())
    return key.hexdigest()[:16]


def _write_atomic(path: Path, data: bytes) -> None:
    # Another test process may export the same model at the same time: never expose a partial file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build_torch(arch: str, seed: int = 0):
    """The torch module behind a zoo name, seeded and with non-trivial BN statistics and heads."""
    import torch

    torch.manual_seed(seed)
    model = ARCHS[arch]()
    _randomize(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def _randomize(model, gen) -> None:
    """Random BN affine maps and statistics (fresh BN is the identity), and random weights where torchvision
    initializes to zero (the ViT head), so every layer's arithmetic shows in the output."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            elif isinstance(m, nn.Linear) and not m.weight.any():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def export_torch(arch: str, exporter: str) -> onnx.ModelProto:
    """Export through models.torch_nets.export (the project's one export helper)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from models.torch_nets import export

    # The dynamo exporter prints progress lines to stdout: keep test and CLI output clean.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return export(build_torch(arch), (1, *IMAGE), dynamo=exporter == "dynamo")
