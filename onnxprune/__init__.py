"""onnxprune: prune any ONNX model at initialization through an exact PyTorch twin.

    import onnxprune
    result = onnxprune.prune("model.onnx", compression=2, method="synflow")
    result.save("model.pruned.onnx")   # result.model, result.masks, result.report
"""

import importlib
import sys
import types

__version__ = "0.1.0"

# Loaded on first use (PEP 562): `import onnxprune` and `onnxprune --help` stay fast without torch.
_EXPORTS = {
    "Pruned": ("api", "Pruned"),
    "load_twin": ("api", "load_twin"),
    "Twin": ("twin", "Twin"),
    "write_back": ("writeback", "write_back"),
    "twin_tensors": ("writeback", "twin_tensors"),
    "OnnxPruneError": ("errors", "OnnxPruneError"),
}
__all__ = ["__version__", "prune", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)


class _Package(types.ModuleType):
    """`onnxprune.prune` names both the API function and the engine subpackage (onnxprune/prune/).
    Importing the subpackage makes Python bind it as this package's attribute `prune`, which would
    hide the function; this property keeps `onnxprune.prune` the function. The subpackage stays
    importable as always (`from onnxprune.prune import prune_twin`: it lives in sys.modules)."""

    @property
    def prune(self):
        from .api import prune

        return prune

    @prune.setter
    def prune(self, submodule) -> None:
        pass  # the import system binding onnxprune/prune/: sys.modules already has it


sys.modules[__name__].__class__ = _Package
