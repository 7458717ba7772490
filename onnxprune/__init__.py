"""onnxprune: prune any ONNX model at initialization through an exact PyTorch twin."""

__version__ = "0.1.0"
