"""Op handlers, one module per family; importing this package registers them all."""

from . import (  # noqa: F401
    activations, attention, controlflow, conv, detection, elementwise, image, linalg, linear,
    losses, misc, ml, norm, pool, quant, random, reduce, resample, rnn, sequence, shape, signal,
    tensor, training,
)
