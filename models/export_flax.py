"""Export small Flax (nnx) models with jax2onnx into models/zoo/ (see models/README.md).

Run in a throwaway venv (JAX, Flax and jax2onnx are not onnxprune dependencies):
    python3 -m venv /tmp/venv-jax && /tmp/venv-jax/bin/pip install jax flax jax2onnx
    /tmp/venv-jax/bin/python models/export_flax.py
Weights are Flax's initialization from a fixed PRNG seed (no downloads).
"""

from __future__ import annotations

from pathlib import Path

import jax
import onnx
from flax import nnx
from jax2onnx import to_onnx

ZOO = Path(__file__).resolve().parent / "zoo"


class CNN(nnx.Module):
    """NHWC CNN: conv-BN-ReLU, strided conv, average pool, dense head."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 8, kernel_size=(3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
        self.head = nnx.Linear(16 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv1(x)))
        x = nnx.avg_pool(nnx.relu(self.conv2(x)), window_shape=(2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


class Encoder(nnx.Module):
    """One pre-norm transformer block on [N, 8, 16] tokens, mean-pooled into a linear head."""

    def __init__(self, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(16, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=16, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(16, rngs=rngs)
        self.fc1 = nnx.Linear(16, 32, rngs=rngs)
        self.fc2 = nnx.Linear(32, 16, rngs=rngs)
        self.head = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(nnx.gelu(self.fc1(self.norm2(x)), approximate=False))
        return self.head(x.mean(axis=1))


def _randomize_batchnorm(model: CNN, key: jax.Array) -> None:
    """Fresh BN is the identity; random statistics make the exported affine map non-trivial."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    bn = model.bn
    bn.scale[...] = jax.random.uniform(k1, bn.scale.shape, minval=0.5, maxval=1.5)
    bn.bias[...] = 0.1 * jax.random.normal(k2, bn.bias.shape)
    bn.mean[...] = 0.1 * jax.random.normal(k3, bn.mean.shape)
    bn.var[...] = jax.random.uniform(k4, bn.var.shape, minval=0.5, maxval=1.5)


def export(model: nnx.Module, shape: tuple, name: str) -> None:
    proto = to_onnx(model, [shape], model_name=name, opset=18)
    path = ZOO / f"{name}.onnx"
    onnx.save(proto, path)
    print(f"{path.name}: {path.stat().st_size} bytes, ops {sorted({n.op_type for n in proto.graph.node})}")


if __name__ == "__main__":
    ZOO.mkdir(exist_ok=True)
    cnn = CNN(nnx.Rngs(0))
    _randomize_batchnorm(cnn, jax.random.key(1))
    export(cnn, ("B", 32, 32, 3), "flax_cnn")
    export(Encoder(nnx.Rngs(0)), ("B", 8, 16), "flax_transformer")
