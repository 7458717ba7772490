"""Export small scikit-learn models with skl2onnx into models/zoo/ (see models/README.md).

Run in a throwaway venv (scikit-learn and skl2onnx are not onnxprune dependencies):
    python3 -m venv /tmp/venv-skl && /tmp/venv-skl/bin/pip install scikit-learn skl2onnx
    /tmp/venv-skl/bin/python models/export_sklearn.py
The models are fitted on a fixed synthetic data set (no downloads), so the files are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from skl2onnx import to_onnx
from sklearn.datasets import make_classification, make_regression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ZOO = Path(__file__).resolve().parent / "zoo"
FEATURES = 16


def _save(model: onnx.ModelProto, name: str) -> None:
    path = ZOO / f"{name}.onnx"
    onnx.save(model, path)
    print(f"{path.name}: {path.stat().st_size} bytes, ops {sorted({n.op_type for n in model.graph.node})}")


def mlp_classifier() -> onnx.ModelProto:
    """Scaler + 2-hidden-layer ReLU MLP, 3 classes; outputs an int64 label and float probabilities."""
    x, y = make_classification(n_samples=256, n_features=FEATURES, n_informative=8, n_classes=3, random_state=0)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=50, random_state=0))
    pipe.fit(x, y)
    # zipmap=False: probabilities as a [N, classes] tensor instead of a sequence of maps.
    return to_onnx(pipe, x[:1].astype(np.float32), options={id(pipe): {"zipmap": False}}, target_opset=17)


def mlp_regressor() -> onnx.ModelProto:
    """A tanh MLP regressor (plain MatMul/Add/Tanh graph)."""
    x, y = make_regression(n_samples=256, n_features=FEATURES, random_state=0)
    model = MLPRegressor(hidden_layer_sizes=(24,), activation="tanh", max_iter=50, random_state=0)
    model.fit(x, y / np.abs(y).max())
    return to_onnx(model, x[:1].astype(np.float32), target_opset=17)


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # ConvergenceWarning: 50 iterations are plenty for a test model
    ZOO.mkdir(exist_ok=True)
    _save(mlp_classifier(), "sklearn_mlp_classifier")
    _save(mlp_regressor(), "sklearn_mlp_regressor")
