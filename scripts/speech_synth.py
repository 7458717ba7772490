"""Speech-like audio made offline, for models that score speech (DNSMOS) and have no data at hand.

A source-filter synthesizer: a glottal pulse train with a moving pitch (jitter, declination) through
cascaded formant resonators, one vowel per syllable, noise-burst consonants between them, pauses
between words; then the damage a quality model is meant to hear: additive noise (white, pink,
brown, mains hum, babble of other synthetic voices) at a random SNR, reverberation, band limiting
and clipping. No recording and no download: every clip is a function of its seed.
"""

from __future__ import annotations

import numpy as np

RATE = 16000
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (660, 1720, 2410),
          (490, 1350, 1690), (570, 840, 2410), (440, 1020, 2240), (640, 1190, 2390), (390, 1990, 2550)]


def _convolve(x: np.ndarray, response: np.ndarray) -> np.ndarray:
    """x through a filter given by its impulse response, as long as x (FFT convolution)."""
    n = len(x) + len(response) - 1
    return np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(response, n), n)[:len(x)]


def _band(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """x with only the frequencies in [low, high] Hz, soft edges (a zero-phase FFT mask)."""
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    mask = 1 / (1 + (low / np.maximum(freqs, 1)) ** 4) / (1 + (freqs / high) ** 8)
    return np.fft.irfft(np.fft.rfft(x) * mask, len(x))


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """A second-order resonance at `freq` Hz (Klatt's formant filter, unit gain at 0 Hz): its impulse
    response, run until it has decayed, convolved with x."""
    r = np.exp(-np.pi * bandwidth / RATE)
    c = 2 * r * np.cos(2 * np.pi * freq / RATE)
    n = int(np.log(1e-4) / np.log(r)) + 2
    h = np.zeros(n)
    h[0], h[1] = 1.0, c
    for k in range(2, n):  # h[k] = c h[k-1] - r^2 h[k-2]
        h[k] = c * h[k - 1] - r * r * h[k - 2]
    return _convolve(x, h * (1 - c + r * r))


def _syllable(rng: np.random.Generator, f0: float, seconds: float) -> np.ndarray:
    n = int(seconds * RATE)
    pitch = f0 * (1 + 0.08 * np.sin(np.linspace(0, rng.uniform(1, 3) * np.pi, n))) * np.linspace(1.05, 0.95, n)
    pitch *= 1 + 0.01 * rng.standard_normal(n)  # jitter
    phase = np.cumsum(pitch / RATE)
    source = np.diff(np.floor(phase), prepend=0.0) * 1.0  # one pulse per period
    source = _convolve(source, 0.97 ** np.arange(300))  # glottal roll-off
    voiced = source + 0.02 * rng.standard_normal(n)  # breath
    for k, formant in enumerate(VOWELS[rng.integers(len(VOWELS))]):
        voiced = _resonator(voiced, formant * rng.uniform(0.9, 1.1), 60 + 40 * k)
    envelope = np.sin(np.linspace(0, np.pi, n)) ** 0.6
    return voiced * envelope


def _consonant(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.03, 0.12) * RATE)
    low, high = sorted(rng.uniform(1500, 7500, 2))
    return _band(rng.standard_normal(n), low, high + 300) * np.hanning(n) * rng.uniform(0.05, 0.4)


def speech(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One synthetic talker: words of 1-4 syllables with pauses, normalized to peak 1."""
    total, parts, f0 = int(seconds * RATE), [], rng.uniform(90, 240)
    while sum(len(p) for p in parts) < total:
        for _ in range(rng.integers(1, 5)):
            if rng.random() < 0.6:
                parts.append(_consonant(rng))
            parts.append(_syllable(rng, f0 * rng.uniform(0.9, 1.15), rng.uniform(0.08, 0.3)))
        parts.append(np.zeros(int(rng.uniform(0.05, 0.5) * RATE)))
    x = np.concatenate(parts)[:total]
    return x / max(np.abs(x).max(), 1e-9)


def _noise(rng: np.random.Generator, n: int, seconds: float) -> np.ndarray:
    kind = rng.integers(5)
    if kind == 0:  # white
        return rng.standard_normal(n)
    if kind in (1, 2):  # pink (1/f) or brown (1/f^2)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum /= np.maximum(np.arange(len(spectrum)), 1) ** (0.5 * kind)
        return np.fft.irfft(spectrum, n)
    if kind == 3:  # mains hum and its harmonics
        t = np.arange(n) / RATE
        base = rng.choice([50.0, 60.0])
        return sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 6))
    return sum(speech(rng, seconds)[:n] for _ in range(4))  # babble


def clip(seed: int, seconds: float = 9.01) -> np.ndarray:
    """A degraded speech clip of `seconds` at 16 kHz, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = speech(rng, seconds)
    n = len(x)
    if rng.random() < 0.4:  # reverberation: exponentially decaying noise as the room's response
        tail = int(rng.uniform(0.1, 0.6) * RATE)
        room = rng.standard_normal(tail) * np.exp(-np.arange(tail) / (tail / 6))
        room[0] = 1.0
        x = _convolve(x, room)
    if rng.random() < 0.85:
        noise = _noise(rng, n, seconds)
        snr = rng.uniform(-5, 35)
        x = x + noise * np.sqrt(np.mean(x ** 2) / max(np.mean(noise ** 2), 1e-12) / 10 ** (snr / 10))
    if rng.random() < 0.3:  # a narrow-band channel
        x = _band(x, 1.0, rng.uniform(2500, 5000))
    x = x / max(np.abs(x).max(), 1e-9) * rng.uniform(0.1, 0.9)
    if rng.random() < 0.15:  # clipping
        limit = rng.uniform(0.05, 0.3)
        x = np.clip(x * (limit / 0.05), -limit, limit)
    return x.astype(np.float32)
