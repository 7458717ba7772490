"""Export small Paddle models with paddle2onnx into models/zoo/ (see models/README.md).

Run in a throwaway venv (PaddlePaddle and paddle2onnx are not onnxprune dependencies):
    python3 -m venv /tmp/venv-paddle && /tmp/venv-paddle/bin/pip install paddlepaddle paddle2onnx
    /tmp/venv-paddle/bin/python models/export_paddle.py
Weights are Paddle's initialization under a fixed seed (no downloads).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import paddle
from paddle import nn

ZOO = Path(__file__).resolve().parent / "zoo"


class CNN(nn.Layer):
    """NCHW CNN: conv-BN-ReLU, max pool, grouped conv + Hardswish, adaptive pool, dropout, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
        self.bn = nn.BatchNorm2D(8)
        self.conv2 = nn.Conv2D(8, 16, 3, stride=2, padding=1, groups=2)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(nn.functional.relu(self.bn(self.conv1(x))), 2)
        x = nn.functional.hardswish(self.conv2(x))
        return self.fc(self.drop(paddle.flatten(self.pool(x), 1)))


class MLP(nn.Layer):
    """LayerNorm + GELU MLP on 16 features (Paddle's Linear weight is [in, out], MatMul-style)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.norm = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        return nn.functional.softmax(self.fc2(nn.functional.gelu(self.norm(self.fc1(x)))), axis=-1)


def _randomize_batchnorm(model: CNN, rng: np.random.Generator) -> None:
    """Fresh BN is the identity; random statistics make the exported affine map non-trivial."""
    bn = model.bn
    for tensor, values in ((bn.weight, rng.uniform(0.5, 1.5, 8)), (bn.bias, rng.normal(0, 0.1, 8)),
                           (bn._mean, rng.normal(0, 0.1, 8)), (bn._variance, rng.uniform(0.5, 1.5, 8))):
        tensor.set_value(values.astype(np.float32))


def export(model: nn.Layer, shape: list, name: str, opset: int = 13) -> None:
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / name)
        paddle.onnx.export(model, prefix, input_spec=[paddle.static.InputSpec(shape, "float32", "x")],
                           opset_version=opset)
        proto = onnx.load(prefix + ".onnx")
    path = ZOO / f"{name}.onnx"
    onnx.save(proto, path)
    print(f"{path.name}: {path.stat().st_size} bytes, ops {sorted({n.op_type for n in proto.graph.node})}")


if __name__ == "__main__":
    paddle.seed(0)
    ZOO.mkdir(exist_ok=True)
    cnn = CNN()
    _randomize_batchnorm(cnn, np.random.default_rng(0))
    export(cnn, [None, 3, 32, 32], "paddle_cnn")
    export(MLP(), [None, 16], "paddle_mlp")
