"""Op handlers, one module per family; importing this package registers them all."""

from . import activations, controlflow, conv, elementwise, linear, losses, norm, pool, reduce, resample, sequence, shape, tensor  # noqa: F401
