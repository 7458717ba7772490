"""Op handlers, one module per family; importing this package registers them all."""

from . import activations, controlflow, conv, elementwise, linalg, linear, losses, misc, norm, pool, quant, reduce, resample, sequence, shape, signal, tensor  # noqa: F401
