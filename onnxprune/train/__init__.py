"""Training a pruned ONNX model through its twin: data, masks from the file's zeros, the loop, DDP.

Kept light (no torch import) so the CLI can list choices without loading anything.
"""

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "npz", "random")
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "rms")
