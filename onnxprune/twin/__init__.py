"""The ONNX -> PyTorch twin: an exact interpreter whose parameters are the ONNX initializers."""

from .module import InputSpec, Twin
from .registry import register, supported_ops
from ..graph import WeightUse, weight_uses

__all__ = ["InputSpec", "Twin", "WeightUse", "register", "supported_ops", "weight_uses"]
