"""Signal processing: DFT, STFT, the window generators, MelWeightMatrix.

ONNX holds complex tensors as real ones with a trailing axis of 2 (real, imaginary); a real signal
has a trailing axis of 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..registry import register


def _complex(x):
    """[..., 1|2] real representation -> complex (or real) tensor without the trailing axis."""
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()  # torch.fft: no half on CPU
    return torch.complex(x[..., 0], x[..., 1]) if x.shape[-1] == 2 else x[..., 0]


def _real(z, dtype):
    return (torch.view_as_real(z) if z.is_complex() else z.unsqueeze(-1)).to(dtype)


def _dft(x, length, axis, inverse, onesided):
    axis %= x.dim()
    if length is None:  # an inverse of a one-sided spectrum restores an even length
        length = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    signal = _complex(x)
    if inverse:
        z = torch.fft.irfft(signal, length, dim=axis) if onesided else torch.fft.ifft(signal, length, dim=axis)
    else:
        z = torch.fft.fft(signal, length, dim=axis)
        if onesided:
            z = z.narrow(axis, 0, length // 2 + 1)
    return _real(z, x.dtype)


def _scalar(t):
    return int(t.reshape(-1)[0]) if t is not None and t.numel() else None


@register("DFT", since=17)
def dft_17(x, dft_length=None, *, axis, inverse, onesided):
    return _dft(x, _scalar(dft_length), axis, inverse, onesided)


@register("DFT", since=20)
def dft(x, dft_length=None, axis=None, *, inverse, onesided):
    return _dft(x, _scalar(dft_length), _scalar(axis) if axis is not None else -2, inverse, onesided)


@register("STFT", since=17)
def stft(x, frame_step, window=None, frame_length=None, *, onesided):
    size = _scalar(frame_length) or (window.shape[0] if window is not None else x.shape[-2])
    step = _scalar(frame_step)
    frames = x.unfold(1, size, step).movedim(-1, -2)  # [batch, frames, size, 1|2]
    if window is not None:
        frames = frames * window.to(x.dtype).reshape(-1, 1)
    return _dft(frames, size, 2, False, onesided)


def _window(fn):
    """A window generator: n = 0..size-1 over a period of size (periodic) or size - 1 (symmetric)."""
    def handler(size, *, output_datatype, periodic, ctx):
        count = _scalar(size)
        n = torch.arange(count, dtype=torch.float64, device=size.device)
        return fn(n, count if periodic else count - 1).to(ctx.dtype(output_datatype))
    return handler


register("HannWindow", since=17)(_window(lambda n, period: torch.sin(n * math.pi / period) ** 2))
register("HammingWindow", since=17)(_window(
    lambda n, period: 25 / 46 - (1 - 25 / 46) * torch.cos(2 * math.pi * n / period)))
register("BlackmanWindow", since=17)(_window(
    lambda n, period: 0.42 - 0.5 * torch.cos(2 * math.pi * n / period) + 0.08 * torch.cos(4 * math.pi * n / period)))


@register("MelWeightMatrix", since=17)
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *,
                      output_datatype, ctx):
    # A constant of its scalar inputs, built the way onnx's reference builds it (triangular filters
    # between mel-spaced bins; integer bin edges).
    bins, length, rate = _scalar(num_mel_bins), _scalar(dft_length), _scalar(sample_rate)
    low, high = (2595 * np.log1p(float(e) / 700) / np.log(10) for e in (lower_edge_hertz, upper_edge_hertz))
    edges = np.arange(bins + 2) * ((high - low) / (bins + 2)) + low
    edges = (((length + 1) * (700 * np.expm1(edges / 2595 * np.log(10)))) // rate).astype(int)
    out = np.zeros((length // 2 + 1, bins))
    for i in range(bins):
        left, centre, right = edges[i:i + 3]
        if centre == left:
            out[centre, i] = 1
        else:
            out[left:centre + 1, i] = (np.arange(left, centre + 1) - left) / (centre - left)
        if right > centre:
            out[centre:right, i] = (right - np.arange(centre, right)) / (right - centre)
    return torch.from_numpy(out).to(num_mel_bins.device, ctx.dtype(output_datatype))
