"""Op handlers, one module per family; importing this package registers them all."""

from . import activations, conv, elementwise, linear, norm, pool, shape  # noqa: F401
