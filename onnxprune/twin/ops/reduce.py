"""Reductions: the Reduce* family, ArgMax/ArgMin, CumSum/CumProd.

Every Reduce* op takes `axes` as an attribute until its axes-as-input version (ReduceSum 13, the rest
18); both forms share one kernel `fn(x, dims, keepdim)` over a tuple of dims.
"""

from __future__ import annotations

import torch

from ..registry import add


def _prod(x, dims, keepdim):
    for d in sorted(dims, reverse=True):  # torch.prod reduces one dim at a time
        x = torch.prod(x, d, keepdim=keepdim)
    return x


def _extreme(fn, lowest):
    """amax/amin; an empty reduction gives the identity (the type's lowest value for max, the highest
    for min: -inf / +inf for floats, ONNX's rule) instead of failing."""
    def kernel(x, dims, keepdim):
        if x.dtype == torch.bool:  # amax/amin have no bool kernel: max over bools is any, min is all
            return kernel(x.to(torch.uint8), dims, keepdim).bool()
        if x.numel() == 0:
            shape = [1 if d in dims else s for d, s in enumerate(x.shape) if keepdim or d not in dims]
            if x.is_floating_point():
                fill = float("-inf") if lowest else float("inf")
            else:
                fill = torch.iinfo(x.dtype).min if lowest else torch.iinfo(x.dtype).max
            return torch.full(shape, fill, dtype=x.dtype, device=x.device)
        return fn(x, dims, keepdim)
    return kernel


KERNELS = {
    "ReduceSum": lambda x, d, k: torch.sum(x, d, k),
    "ReduceMean": lambda x, d, k: torch.mean(x, d, k),
    "ReduceMax": _extreme(lambda x, d, k: torch.amax(x, d, k), lowest=True),
    "ReduceMin": _extreme(lambda x, d, k: torch.amin(x, d, k), lowest=False),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), d, k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, d, k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, d, k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, d, k)),
    # logsumexp refuses empty inputs; log(sum(exp(empty))) is log(0) = -inf, as ONNX has it
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, k) if x.numel() else torch.log(torch.sum(x, d, k)),
}
AXES_INPUT_SINCE = {op: 18 for op in KERNELS} | {"ReduceSum": 13}


def _reduce(kernel, x, axes, keepdims, noop):
    if not axes and noop:
        return x
    dims = tuple(a % x.dim() for a in axes) if axes else tuple(range(x.dim()))
    # torch widens integer sums to int64 and needs a float for integer L2; ONNX keeps the input type.
    return kernel(x, dims, bool(keepdims)).to(x.dtype)


def _with_attribute(kernel):
    def handler(x, *, axes, keepdims):
        return _reduce(kernel, x, axes, keepdims, False)
    return handler


def _with_input(kernel):
    def handler(x, axes=None, *, keepdims, noop_with_empty_axes):
        return _reduce(kernel, x, axes.tolist() if axes is not None else [], keepdims, noop_with_empty_axes)
    return handler


for _op, _kernel in KERNELS.items():
    add(_op, _with_attribute(_kernel), since=1)
    add(_op, _with_input(_kernel), since=AXES_INPUT_SINCE[_op])


def _arg(fn):
    def handler(x, *, axis, keepdims, select_last_index=0):
        if select_last_index:  # torch returns the first extreme; search the flipped tensor
            return x.size(axis) - 1 - handler(x.flip(axis), axis=axis, keepdims=keepdims)
        return fn(x, dim=axis, keepdim=bool(keepdims))
    return handler


add("ArgMax", _arg(torch.argmax))
add("ArgMin", _arg(torch.argmin))


def _cumulative(fn, identity):
    def handler(x, axis, *, exclusive, reverse):
        dim = int(axis) % x.dim()
        y = x.flip(dim) if reverse else x
        if exclusive:  # shift right by one along dim, filling with the identity
            head = torch.full_like(y.narrow(dim, 0, 1), identity)
            y = torch.cat([head, y.narrow(dim, 0, y.size(dim) - 1)], dim)
        y = fn(y, dim).to(x.dtype)
        return y.flip(dim) if reverse else y
    return handler


add("CumSum", _cumulative(torch.cumsum, 0), since=11)
add("CumProd", _cumulative(torch.cumprod, 1), since=26)
