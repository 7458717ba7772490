"""Optimizer steps of the ai.onnx.preview.training domain: Adagrad, Momentum, Adam.

Each takes the learning rate R and step count T, then groups of tensors (X..., G..., state...) for
any number of parameters, and returns the updated X... followed by the updated states.
"""

from __future__ import annotations

import torch

from ..registry import register

DOMAIN = "ai.onnx.preview.training"


def _groups(tensors, per_param):
    n = len(tensors) // per_param
    return [tensors[i::n] for i in range(n)]  # (x, g, state...) of each parameter


@register("Adagrad", since=1, domain=DOMAIN)
def adagrad(r, t, *tensors, decay_factor, epsilon, norm_coefficient):
    rate = r / (1 + t * decay_factor)
    xs, hs = [], []
    for x, g, h in _groups(tensors, 3):
        g = norm_coefficient * x + g
        h = h + g * g
        xs.append(x - rate * g / (torch.sqrt(h) + epsilon))
        hs.append(h)
    return tuple(xs + hs)


@register("Momentum", since=1, domain=DOMAIN)
def momentum(r, t, *tensors, alpha, beta, mode, norm_coefficient):
    first = bool(t == 0)  # the gradient's coefficient is 1 on the first step
    xs, vs = [], []
    for x, g, v in _groups(tensors, 3):
        g = norm_coefficient * x + g
        v = alpha * v + (1 if first else beta) * g
        xs.append(x - r * (g + alpha * v if mode == "nesterov" else v))
        vs.append(v)
    return tuple(xs + vs)


@register("Adam", since=1, domain=DOMAIN)
def adam(r, t, *tensors, alpha, beta, epsilon, norm_coefficient, norm_coefficient_post):
    step = float(t)
    rate = r * (1 - beta ** step) ** 0.5 / (1 - alpha ** step) if step > 0 else r  # bias correction
    xs, vs, hs = [], [], []
    for x, g, v, h in _groups(tensors, 4):
        g = norm_coefficient * x + g
        v = alpha * v + (1 - alpha) * g
        h = beta * h + (1 - beta) * g * g
        xs.append((1 - norm_coefficient_post) * (x - rate * v / (torch.sqrt(h) + epsilon)))
        vs.append(v)
        hs.append(h)
    return tuple(xs + vs + hs)
