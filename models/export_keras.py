"""Export small Keras models with tf2onnx into models/zoo/ (see models/README.md).

Run in a throwaway venv (TensorFlow and tf2onnx are not onnxprune dependencies):
    python3 -m venv /tmp/venv-tf && /tmp/venv-tf/bin/pip install tensorflow-cpu tf2onnx
    /tmp/venv-tf/bin/python models/export_keras.py
Weights are Keras' seeded random initialization (no downloads). Keras 3 models are traced as a
tf.function (tf2onnx's from_keras targets Keras 2), which is the same graph tf2onnx would see.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tensorflow import keras  # noqa: E402
from tensorflow.keras import layers  # noqa: E402

ZOO = Path(__file__).resolve().parent / "zoo"


def _randomize_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    """Fresh BN layers are the identity; random statistics make the exported affine maps non-trivial."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def cnn() -> keras.Model:
    """NHWC CNN: conv-BN-ReLU, depthwise-separable block, max pool, global pool, dense softmax."""
    inputs = keras.Input((32, 32, 3), batch_size=None, name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.Conv2D(16, 1, activation="relu6")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, strides=2, padding="valid", activation="swish")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="keras_cnn")


def transformer() -> keras.Model:
    """A one-block transformer encoder on [N, 8, 16] tokens: MultiHeadAttention, LayerNorm, GELU MLP."""
    inputs = keras.Input((8, 16), name="tokens")
    attn = layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
    x = layers.LayerNormalization(epsilon=1e-5)(inputs + attn)
    # Erf-form GELU written out: Keras' own gelu lowers to Erfc, which tf2onnx cannot convert.
    gelu = layers.Activation(lambda t: 0.5 * t * (1.0 + tf.math.erf(t / np.sqrt(2.0))))
    mlp = layers.Dense(16)(gelu(layers.Dense(32)(x)))
    x = layers.LayerNormalization(epsilon=1e-5)(x + mlp)
    outputs = layers.Dense(4)(layers.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs, name="keras_transformer")


def export(model: keras.Model, name: str, opset: int = 17) -> None:
    spec = [tf.TensorSpec((None,) + tuple(model.input.shape[1:]), tf.float32, name=model.input.name)]
    function = tf.function(lambda x: model(x, training=False))
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset)
    path = ZOO / f"{name}.onnx"
    onnx.save(proto, path)
    print(f"{path.name}: {path.stat().st_size} bytes, ops {sorted({n.op_type for n in proto.graph.node})}")


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    ZOO.mkdir(exist_ok=True)
    model = cnn()
    _randomize_batchnorm(model, np.random.default_rng(0))
    export(model, "keras_cnn")
    export(transformer(), "keras_transformer")
