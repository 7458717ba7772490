"""ai.onnx.ml ops that compute on tensors (misc.py holds the ones skl2onnx puts around an MLP).

The rest of the domain (ZipMap's maps, string label encoders, tree ensembles, SVMs...) is refused at
build by the registry, naming op, domain, opset and node.
"""

from __future__ import annotations

from ..registry import register

ML = "ai.onnx.ml"


@register("Binarizer", since=1, domain=ML)
def binarizer(x, *, threshold):
    return (x > threshold).to(x.dtype)
