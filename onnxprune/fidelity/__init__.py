"""How closely a pruned model follows its original, label-free: the same inputs through both in
onnxruntime, compared output by output (metrics.py), on inputs from an .npz or drawn at random
(samples.py). `onnxprune compare` prints it and gates on it.

    from onnxprune.fidelity import compare, load_inputs
    report = compare("small.onnx", "model.onnx", load_inputs("inputs.npz", "model.onnx"))
"""

from .metrics import agreement, check_interfaces, compare
from .samples import load_inputs

__all__ = ["agreement", "check_interfaces", "compare", "load_inputs"]
