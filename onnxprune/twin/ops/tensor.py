"""Indexing and rearranging: Split, Where, Expand, Tile, Pad, TopK, the Gather/Scatter family, OneHot,
Compress, Trilu, Range, EyeLike, NonZero, Unique, ReverseSequence, DepthToSpace/SpaceToDepth,
CenterCropPad, TensorScatter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import register
from ..tensors import int_list, torch_dtype


def _positive(indices: torch.Tensor, size: int) -> torch.Tensor:
    """ONNX indices may count from the end."""
    indices = indices.long()
    return torch.where(indices < 0, indices + size, indices)


# ----- Split ------------------------------------------------------------------------------------------
def _split(x, sizes, axis, parts):
    if not sizes:  # equal parts; when uneven, every part but the last has ceil(size / parts)
        size = x.shape[axis]
        chunk = size // parts if size % parts == 0 else size // parts + 1
        sizes = [chunk] * (parts - 1) + [size - chunk * (parts - 1)]
    return tuple(torch.split(x, sizes, dim=axis))


@register("Split", since=1)
def split_attr(x, split_input=None, *, axis, split, n_outputs):
    return _split(x, split or int_list(split_input), axis, n_outputs)


@register("Split", since=13)
def split(x, sizes=None, *, axis, n_outputs):
    return _split(x, int_list(sizes), axis, n_outputs)


@register("Split", since=18)
def split_18(x, sizes=None, *, axis, num_outputs=None, n_outputs):
    return _split(x, int_list(sizes), axis, num_outputs or n_outputs)


# ----- broadcasting and repetition --------------------------------------------------------------------
@register("Where", since=9)
def where(condition, x, y):
    return torch.where(condition, x, y)


@register("Expand", since=8)
def expand(x, shape):
    return x.expand(torch.broadcast_shapes(x.shape, tuple(int_list(shape))))


@register("Tile", since=6)
def tile(x, repeats):
    return x.repeat(int_list(repeats)) if x.dim() else x


# ----- Pad ----------------------------------------------------------------------------------------------
def _pad_indices(size, before, after, mode, device):
    """Source index of every output position along one axis, for the non-constant modes."""
    idx = torch.arange(-before, size + after, device=device)
    if mode == "edge":
        return idx.clamp(0, size - 1)
    if mode == "wrap":
        return idx % size
    period = 2 * (size - 1)  # reflect: mirror about the first and last element
    idx = idx.abs() % period if period else torch.zeros_like(idx)
    return torch.where(idx >= size, period - idx, idx)


def _pad(x, pads, mode, value, axes=None):
    rank = x.dim()
    axes = [a % rank for a in axes] if axes else list(range(rank))
    n = len(axes)
    if mode == "constant":
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[a + rank] = pads[i], pads[i + n]
        flat = []
        for a in reversed(range(rank)):  # F.pad: last dim first; negative pads crop
            flat += [full[a], full[a + rank]]
        return F.pad(x, flat, value=value)
    for i, a in enumerate(axes):
        if pads[i] or pads[i + n]:
            x = x.index_select(a, _pad_indices(x.shape[a], pads[i], pads[i + n], mode, x.device))
    return x


@register("Pad", since=1)
def pad_attr_1(x, *, mode, paddings, value):
    return _pad(x, paddings, mode, value)


@register("Pad", since=2)
def pad_attr(x, *, mode, pads, value):
    return _pad(x, pads, mode, value)


@register("Pad", since=11)
def pad(x, pads, constant_value=None, axes=None, *, mode):
    value = constant_value.item() if constant_value is not None and constant_value.numel() else 0
    return _pad(x, int_list(pads), mode, value, int_list(axes))


# ----- TopK ---------------------------------------------------------------------------------------------
def _topk(x, k, axis, largest):
    # A stable sort keeps equal values in index order, which ONNX requires (torch.topk does not);
    # sorted output also satisfies sorted=0, whose order ONNX leaves open.
    values, indices = torch.sort(x, dim=axis, descending=bool(largest), stable=True)
    return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)


@register("TopK", since=1)
def topk_attr(x, *, axis, k):
    return _topk(x, k, axis, True)


@register("TopK", since=10)
def topk(x, k, *, axis, largest=1, sorted=1):  # noqa: A002 (ONNX attribute name)
    return _topk(x, int(k.reshape(-1)[0]), axis, largest)


# ----- Gather / Scatter ---------------------------------------------------------------------------------
@register("GatherElements", since=11)
def gather_elements(x, indices, *, axis):
    return torch.gather(x, axis, _positive(indices, x.shape[axis]))


@register("GatherND", since=11)
def gather_nd(x, indices, *, batch_dims=0):
    batch = x.shape[:batch_dims]
    k = indices.shape[-1]
    data = x.reshape((-1,) + x.shape[batch_dims:])
    idx = indices.reshape((data.shape[0],) + indices.shape[batch_dims:])
    rows = torch.arange(data.shape[0], device=x.device).reshape((-1,) + (1,) * (idx.dim() - 2))
    cols = tuple(_positive(idx[..., i], data.shape[1 + i]) for i in range(k))
    out = data[(rows,) + cols]
    return out.reshape(batch + indices.shape[batch_dims:-1] + x.shape[batch_dims + k:])


_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _scatter_elements(x, indices, updates, axis, reduction):
    idx = _positive(indices, x.shape[axis])
    if reduction == "none":
        return x.scatter(axis, idx, updates)
    return x.scatter_reduce(axis, idx, updates, _REDUCE[reduction], include_self=True)


@register("Scatter", since=9)
def scatter(x, indices, updates, *, axis):
    return _scatter_elements(x, indices, updates, axis, "none")


@register("ScatterElements", since=11)
def scatter_elements(x, indices, updates, *, axis, reduction="none"):
    return _scatter_elements(x, indices, updates, axis, reduction)


@register("ScatterND", since=11)
def scatter_nd(x, indices, updates, *, reduction="none"):
    k = indices.shape[-1]
    # Linear positions over the first k dims turn ScatterND into a row scatter over x viewed as 2-D.
    strides = torch.tensor([math.prod(x.shape[i + 1:k]) for i in range(k)], device=x.device)
    rows = (torch.stack([_positive(indices[..., i], x.shape[i]) for i in range(k)], -1) * strides).sum(-1)
    data = x.reshape((math.prod(x.shape[:k]), -1))
    upd = updates.reshape((rows.numel(), -1))
    index = rows.reshape(-1, 1).expand(upd.shape)
    if reduction == "none":
        out = data.scatter(0, index, upd)
    else:
        out = data.scatter_reduce(0, index, upd, _REDUCE[reduction], include_self=True)
    return out.reshape(x.shape)


@register("TensorScatter", since=24)
def tensor_scatter(cache, update, write_indices=None, *, axis, mode):
    axis %= cache.dim()
    size, length = cache.shape[axis], update.shape[axis]
    start = write_indices.long() if write_indices is not None else torch.zeros(
        cache.shape[0], dtype=torch.long, device=cache.device)
    pos = start.reshape(-1, 1) + torch.arange(length, device=cache.device)  # [batch, length]
    if mode == "circular":
        pos = pos % size
    shape = [1] * cache.dim()
    shape[0], shape[axis] = cache.shape[0], length
    index = pos.reshape(shape).expand(update.shape)
    return cache.scatter(axis, index, update)


# ----- one-hot, masks, ranges ---------------------------------------------------------------------------
@register("OneHot", since=9)
def one_hot(indices, depth, values, *, axis):
    depth = int(depth.reshape(-1)[0])
    idx = indices.long()
    idx = torch.where(idx < 0, idx + depth, idx)
    hot = idx.unsqueeze(-1) == torch.arange(depth, device=idx.device)
    axis = axis % (indices.dim() + 1)
    return torch.where(hot.movedim(-1, axis), values[1], values[0])


@register("Compress", since=9)
def compress(x, condition, *, axis=None):
    keep = torch.nonzero(condition.reshape(-1)).reshape(-1)
    if axis is None:
        return x.reshape(-1).index_select(0, keep)
    return x.index_select(axis, keep)


@register("Trilu", since=14)
def trilu(x, k=None, *, upper):
    k = int(k) if k is not None else 0
    return torch.triu(x, k) if upper else torch.tril(x, k)


@register("Range", since=11)
def range_(start, limit, delta):
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)


@register("EyeLike", since=9)
def eye_like(x, *, dtype=None, k, ctx):
    rows = torch.arange(x.shape[0], device=x.device).reshape(-1, 1)
    cols = torch.arange(x.shape[1], device=x.device)
    return (cols - rows == k).to(ctx.dtype(dtype) if dtype else x.dtype)


@register("NonZero", since=9)
def non_zero(x):
    return torch.nonzero(x).T if x.dim() else torch.nonzero(x.reshape(1)).T[:0]


@register("Unique", since=11)
def unique(x, *, axis=None, sorted):  # noqa: A002 (ONNX attribute name)
    flat, dim = (x.reshape(-1), 0) if axis is None else (x, axis % x.dim())
    y, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True, dim=dim)
    size = flat.shape[dim]
    positions = torch.arange(size, device=x.device)
    first = torch.full((y.shape[dim],), size, device=x.device).scatter_reduce(0, inverse, positions, "amin")
    if not sorted:  # order of first occurrence
        order = first.argsort()
        y, counts, first = y.index_select(dim, order), counts[order], first[order]
        inverse = order.argsort()[inverse]
    return y, first, inverse, counts


@register("ReverseSequence", since=10)
def reverse_sequence(x, sequence_lens, *, batch_axis, time_axis):
    t = torch.arange(x.shape[time_axis], device=x.device)
    lens = sequence_lens.long().reshape(-1, 1)
    idx = torch.where(t < lens, lens - 1 - t, t)  # [batch, time]
    shape = [1] * x.dim()
    shape[batch_axis], shape[time_axis] = x.shape[batch_axis], x.shape[time_axis]
    idx = (idx if batch_axis < time_axis else idx.T).reshape(shape).expand(x.shape)
    return torch.gather(x, time_axis, idx)


# ----- space <-> depth ----------------------------------------------------------------------------------
@register("SpaceToDepth", since=1)
def space_to_depth(x, *, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = blocksize
    order = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)  # mode: opset 28
    y = x.reshape(n, c, h // b, b, w // b, b).permute(order)
    return y.reshape(n, c * b * b, h // b, w // b)


@register("DepthToSpace", since=1)
def depth_to_space(x, *, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:  # CRD
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@register("CenterCropPad", since=18)
def center_crop_pad(x, shape, *, axes=None):
    axes = [a % x.dim() for a in axes] if axes else list(range(x.dim()))
    for a, target in zip(axes, int_list(shape)):
        size = x.shape[a]
        if target < size:
            x = x.narrow(a, (size - target) // 2, target)
        elif target > size:
            before = (target - size) // 2
            x = _pad(x, [before, target - size - before], "constant", 0, [a])
    return x


_FLOAT_OF_SIZE = {2: torch.float16, 4: torch.float32, 8: torch.float64}


@register("BitCast", since=26)
def bit_cast(x, *, to):
    # The bits themselves, so the ONNX type as given (never the float64 mode's promotion). In float64
    # mode a float input may have been widened: narrow it back to the float of the target's width
    # (float16 for 2 bytes: a bfloat16 input's bits are not recoverable there).
    dtype = torch_dtype(to)
    if x.is_floating_point() and x.element_size() != dtype.itemsize:
        x = x.to(_FLOAT_OF_SIZE[dtype.itemsize])
    return x.view(dtype)


@register("Col2Im", since=18)
def col2im(x, image_shape, block_shape, *, dilations, pads, strides):
    # Sum every column entry into the image position its (kernel offset, block) pair covers.
    image, kernel = int_list(image_shape), int_list(block_shape)
    n = len(image)
    dilations, strides, pads = dilations or [1] * n, strides or [1] * n, pads or [0] * (2 * n)
    linear = torch.zeros((), dtype=torch.long, device=x.device)
    inside = torch.ones((), dtype=torch.bool, device=x.device)
    for i in range(n):
        blocks = (image[i] + pads[i] + pads[i + n] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        pos = (torch.arange(kernel[i], device=x.device).reshape(-1, 1) * dilations[i]
               + torch.arange(blocks, device=x.device) * strides[i] - pads[i])  # [kernel_i, blocks_i]
        shape = [1] * (2 * n)
        shape[i], shape[n + i] = kernel[i], blocks
        pos = pos.reshape(shape)
        inside = inside & (pos >= 0) & (pos < image[i])
        linear = linear * image[i] + pos
    k = math.prod(kernel)
    inside, linear = inside.reshape(k, -1), linear.reshape(k, -1)
    cols = x.reshape(x.shape[0], -1, k, inside.shape[1])
    out = torch.zeros(x.shape[0], cols.shape[1], math.prod(image), dtype=x.dtype, device=x.device)
    out.index_add_(2, linear[inside], cols[:, :, inside])
    return out.reshape(x.shape[0], cols.shape[1], *image)
