"""onnxprune: prune any ONNX model at initialization through an exact PyTorch twin.

    import onnxprune
    result = onnxprune.prune("model.onnx", compression=2, method="synflow")
    result.save("model.pruned.onnx")   # result.model, result.masks, result.report
"""

import importlib

__version__ = "0.1.0"

# Loaded on first use (PEP 562): `import onnxprune` and `onnxprune --help` stay fast without torch.
_EXPORTS = {
    "prune": ("api", "prune"),
    "Pruned": ("api", "Pruned"),
    "load_twin": ("api", "load_twin"),
    "Twin": ("twin", "Twin"),
    "write_back": ("writeback", "write_back"),
    "twin_tensors": ("writeback", "twin_tensors"),
    "OnnxPruneError": ("errors", "OnnxPruneError"),
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)
