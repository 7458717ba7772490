"""Recurrent layers: RNN, GRU, LSTM (ONNX gate orders: GRU z, r, h; LSTM i, o, f, c).

One loop over time per direction; the input projection x·Wᵀ + Wb is computed for all steps at once.
Steps past a batch item's sequence length keep its state and output zeros; the reverse direction
reads each item's valid steps backwards.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..registry import register

# name -> (fn(x, alpha, beta), default alpha, default beta); alpha/beta only for the ones that take them
ACTIVATIONS = {
    "Relu": (lambda x, a, b: torch.relu(x), None, None),
    "Tanh": (lambda x, a, b: torch.tanh(x), None, None),
    "Sigmoid": (lambda x, a, b: torch.sigmoid(x), None, None),
    "Softsign": (lambda x, a, b: F.softsign(x), None, None),
    "Softplus": (lambda x, a, b: F.softplus(x), None, None),
    "Affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "LeakyRelu": (lambda x, a, b: F.leaky_relu(x, a), 0.01, None),
    "ThresholdedRelu": (lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)), 1.0, None),
    "ScaledTanh": (lambda x, a, b: a * torch.tanh(b * x), 1.0, 1.0),
    "HardSigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0, 1), 0.2, 0.5),
    "Elu": (lambda x, a, b: F.elu(x, a), 1.0, None),
}


@functools.lru_cache(maxsize=None)
def _activations(names, alphas, betas):
    """The activation functions, with alphas / betas consumed in order by those that take them."""
    alphas, betas, out = list(alphas), list(betas), []
    for name in names:
        fn, a, b = ACTIVATIONS[name]
        a = alphas.pop(0) if a is not None and alphas else a
        b = betas.pop(0) if b is not None and betas else b
        out.append(functools.partial(lambda x, fn, a, b: fn(x, a, b), fn=fn, a=a, b=b))
    return out


def _reverse(x, lens):
    """Each batch item's first lens[b] steps backwards (time is axis 0, batch axis 1)."""
    if lens is None:
        return x.flip(0)
    t = torch.arange(x.shape[0], device=x.device).reshape(-1, 1)
    idx = torch.where(t < lens, lens - 1 - t, t)  # [time, batch]
    return torch.gather(x, 0, idx.reshape(idx.shape + (1,) * (x.dim() - 2)).expand(x.shape))


def _run(cell, x, w, r, b, lens, states, direction, layout):
    """Run `cell` over the sequence in each direction; returns Y [T, dirs, B, H] and final states."""
    if layout:
        x, states = x.transpose(0, 1), [s.transpose(0, 1) if s is not None else None for s in states]
    dirs, hidden = w.shape[0], r.shape[-1]
    lens = lens.long().reshape(1, -1) if lens is not None else None
    ys, finals = [], []
    for d in range(dirs):
        backward = direction == "reverse" or d == 1
        seq = _reverse(x, lens) if backward else x
        wb, rb = (b[d].chunk(2) if b is not None else (0, 0))
        proj = seq @ w[d].T + wb
        state = [s[d] if s is not None else torch.zeros(x.shape[1], hidden, dtype=x.dtype, device=x.device)
                 for s in states]
        outs = []
        for t in range(x.shape[0]):
            new = cell(proj[t], state, r[d], rb, d)
            if lens is not None:  # finished items keep their state
                live = (t < lens).reshape(-1, 1)
                new = [torch.where(live, n, s) for n, s in zip(new, state)]
                outs.append(torch.where(live, new[0], torch.zeros_like(new[0])))
            else:
                outs.append(new[0])
            state = new
        y = torch.stack(outs)
        ys.append(_reverse(y, lens) if backward else y)
        finals.append(state)
    y = torch.stack(ys, 1)
    finals = [torch.stack(s) for s in zip(*finals)]
    if layout:
        return (y.permute(2, 0, 1, 3), *[s.transpose(0, 1) for s in finals])
    return (y, *finals)


def _clip(x, clip):
    return x.clamp(-clip, clip) if clip is not None else x


@register("RNN", since=7)
def rnn(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations, clip=None, direction, hidden_size, layout=0):
    fns = _activations(tuple(activations or ["Tanh", "Tanh"]), tuple(activation_alpha or ()),
                       tuple(activation_beta or ()))

    def cell(xp, state, r_d, rb, d):
        return [fns[d](_clip(xp + state[0] @ r_d.T + rb, clip))]

    return _run(cell, x, w, r, b, sequence_lens, [initial_h], direction, layout)


@register("GRU", since=7)
def gru(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations, clip=None, direction, hidden_size, layout=0, linear_before_reset):
    fns = _activations(tuple(activations or ["Sigmoid", "Tanh"] * 2), tuple(activation_alpha or ()),
                       tuple(activation_beta or ()))

    def cell(xp, state, r_d, rb, d):
        f, g = fns[2 * d], fns[2 * d + 1]
        h = state[0]
        xz, xr, xh = xp.chunk(3, -1)
        rz, rr, rh = r_d.chunk(3, 0)
        bz, br, bh = rb.chunk(3) if torch.is_tensor(rb) else (0, 0, 0)
        z = f(_clip(xz + h @ rz.T + bz, clip))
        reset = f(_clip(xr + h @ rr.T + br, clip))
        if linear_before_reset:
            cand = g(_clip(xh + reset * (h @ rh.T + bh), clip))
        else:
            cand = g(_clip(xh + (reset * h) @ rh.T + bh, clip))
        return [(1 - z) * cand + z * h]

    return _run(cell, x, w, r, b, sequence_lens, [initial_h], direction, layout)


@register("LSTM", since=7)
def lstm(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, activation_alpha=None,
         activation_beta=None, activations, clip=None, direction, hidden_size, input_forget, layout=0):
    fns = _activations(tuple(activations or ["Sigmoid", "Tanh", "Tanh"] * 2), tuple(activation_alpha or ()),
                       tuple(activation_beta or ()))

    def cell(xp, state, r_d, rb, d):
        f, g, h_act = fns[3 * d:3 * d + 3]
        h, c = state
        pi, po, pf = p[d].chunk(3) if p is not None else (0, 0, 0)
        i, o, fg, cand = (xp + h @ r_d.T + rb).chunk(4, -1)
        i = f(_clip(i + pi * c, clip))
        fg = 1 - i if input_forget else f(_clip(fg + pf * c, clip))
        c = fg * c + i * g(_clip(cand, clip))
        o = f(_clip(o + po * c, clip))
        return [o * h_act(c), c]

    return _run(cell, x, w, r, b, sequence_lens, [initial_h, initial_c], direction, layout)
