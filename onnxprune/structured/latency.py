"""onnxruntime CPU latency of a dense model against its channel-pruned rewrite, measured alike.

Runs alternate between the two sessions after a warm-up, so load on a shared machine hits both the
same way; the figure is the median of `runs` timed calls. Used by `prune --structure channel
--benchmark` and scripts/bench_structured.py.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import numpy as np
import onnx


def session(model: onnx.ModelProto, threads: int = 0):
    """A CPU session with the default optimizations (0 threads: onnxruntime's own choice)."""
    from ..io import ort_session

    return ort_session(model.SerializeToString(), threads=threads)


def latency(sessions, feeds: Mapping[str, np.ndarray], runs: int) -> list[float]:
    """Median seconds per session; runs alternate between the sessions so drift hits both alike."""
    feeds = dict(feeds)
    times: list[list[float]] = [[] for _ in sessions]
    for s in sessions:
        s.run(None, feeds)
    for _ in range(runs):
        for t, s in zip(times, sessions):
            start = time.perf_counter()
            s.run(None, feeds)
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def fit_latency(dense: onnx.ModelProto, make: Callable[[float], onnx.ModelProto], target: float, *,
                input_shapes=None, steps: int = 7, runs: int = 15) -> tuple[float, list[dict[str, float]]]:
    """The largest MAC fraction whose pruned model (`make(fraction)`) measures at most `target` of the
    dense model's onnxruntime latency (CPU, batch 1, one thread), bisected on measured latency: the
    runtime's own kernels decide, widths and fusions included. Returns it (the smallest tried if none
    fits) and every step's {"macs", "latency"} (pruned / dense)."""
    from .shapes import input_feeds

    feeds = input_feeds(dense, input_shapes, seed=0, batch=1)
    reference = session(dense, threads=1)
    lo, hi, best, steps_taken = 0.0, 1.0, None, []
    for _ in range(steps):
        mid = (lo + hi) / 2
        before, after = latency([reference, session(make(mid), threads=1)], feeds, runs)
        steps_taken.append({"macs": mid, "latency": after / before})
        if after / before <= target:
            best, lo = mid, mid
        else:
            hi = mid
    return (hi if best is None else best), steps_taken


def compare(dense: onnx.ModelProto, pruned: onnx.ModelProto, *, input_shapes=None, batch: int = 1,
            runs: int = 20, threads: int = 0) -> dict[str, float]:
    """{"dense_ms", "pruned_ms", "speedup", "batch", "runs"} on random inputs at `batch`."""
    from .shapes import input_feeds

    feeds = input_feeds(dense, input_shapes, seed=0, batch=batch)
    before, after = latency([session(dense, threads), session(pruned, threads)], feeds, runs)
    return {"dense_ms": 1e3 * before, "pruned_ms": 1e3 * after, "speedup": before / after, "batch": batch,
            "runs": runs}
