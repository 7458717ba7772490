"""Random generators: RandomNormal/Uniform (and their *Like forms), Bernoulli, Multinomial.

Draws come from torch's generator, so they never equal another runtime's draws; a `seed` attribute
makes a node repeat the same draw on every run, as ONNX asks. RandomNormal / RandomUniform have no
input to take a device from and draw on the CPU.
"""

from __future__ import annotations

import torch

from ..registry import register


def _generator(seed, device):
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


def _normal(shape, dtype, mean, scale, seed, device):
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.normal_(mean, scale, generator=_generator(seed, device))


def _uniform(shape, dtype, low, high, seed, device):
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.uniform_(low, high, generator=_generator(seed, device))


@register("RandomNormal", since=1)
def random_normal(*, dtype, mean, scale, seed=None, shape, ctx):
    return _normal(shape, ctx.dtype(dtype), mean, scale, seed, "cpu")


@register("RandomUniform", since=1)
def random_uniform(*, dtype, high, low, seed=None, shape, ctx):
    return _uniform(shape, ctx.dtype(dtype), low, high, seed, "cpu")


@register("RandomNormalLike", since=1)
def random_normal_like(x, *, dtype=None, mean, scale, seed=None, ctx):
    return _normal(x.shape, ctx.dtype(dtype) if dtype is not None else x.dtype, mean, scale, seed, x.device)


@register("RandomUniformLike", since=1)
def random_uniform_like(x, *, dtype=None, high, low, seed=None, ctx):
    return _uniform(x.shape, ctx.dtype(dtype) if dtype is not None else x.dtype, low, high, seed, x.device)


@register("Bernoulli", since=15)
def bernoulli(x, *, dtype=None, seed=None, ctx):
    draws = torch.bernoulli(x, generator=_generator(seed, x.device))
    return draws.to(ctx.dtype(dtype) if dtype is not None else x.dtype)


@register("Multinomial", since=7)
def multinomial(x, *, dtype, sample_size, seed=None, ctx):
    # x holds unnormalized log-probabilities per batch row.
    probs = torch.softmax(x.double(), dim=-1)
    draws = torch.multinomial(probs, sample_size, replacement=True, generator=_generator(seed, x.device))
    return draws.to(ctx.dtype(dtype))
