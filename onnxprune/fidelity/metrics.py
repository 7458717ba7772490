"""Output-by-output agreement of a pruned model with its original, both run in onnxruntime.

| output kind (graph/outputs.py) | figures                                                          |
|--------------------------------|------------------------------------------------------------------|
| class scores                   | top-1 agreement (same argmax), top-5 agreement (the original's   |
|                                | top class among the pruned model's 5 best), mean KL(orig || pruned) |
| other float values             | relative L2 error, mean cosine similarity per sample, max |diff|  |

An output's `agreement` (what --min-agreement gates on) is its top-1 agreement for class scores and
its mean cosine similarity otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from ..errors import DataError
from ..graph.outputs import output_kinds as read_kinds


def run_all(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Every float output on all rows, batch by batch (onnxruntime, CPU)."""
    from ..structured.latency import session

    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    rows = len(next(iter(feeds.values()))) if feeds else 0
    fixed = {i.shape[0] for i in sess.get_inputs() if i.shape and isinstance(i.shape[0], int) and i.name in feeds}
    if fixed:  # an export with a fixed batch (torch.export's 1): run it at that batch
        batch_size = min(fixed)
        if rows % batch_size:
            raise DataError(f"the model takes batches of exactly {batch_size}; give a multiple of {batch_size} inputs")
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, rows, batch_size):
        out = sess.run(names, {k: v[start:start + batch_size] for k, v in feeds.items()})
        for n, value in zip(names, out):
            parts[n].append(np.asarray(value))
    return {n: np.concatenate(v) for n, v in parts.items() if v and np.issubdtype(v[0].dtype, np.floating)}


def compare(pruned: onnx.ModelProto | str | Path, original: onnx.ModelProto | str | Path,
            feeds: Mapping[str, np.ndarray], *, batch_size: int = 64,
            output_kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """{"samples", "outputs": {name: {"kind", figures..., "agreement"}}, "agreement": the lowest};
    `output_kinds` (name -> kind) where the caller knows better than the graph (graph.outputs)."""
    from ..io import load_model

    pruned, original = (m if isinstance(m, onnx.ModelProto) else load_model(m) for m in (pruned, original))
    check_interfaces(pruned, original)
    kinds = read_kinds(original, dict(output_kinds or {}))
    got, want = run_all(pruned, feeds, batch_size), run_all(original, feeds, batch_size)
    outputs = {}
    for name, reference in want.items():
        value = got[name]
        if value.shape != reference.shape:
            raise DataError(f"output '{name}' is {list(value.shape)} in the pruned model, {list(reference.shape)} "
                            "in the original")
        kind = kinds.get(name, "values")
        outputs[name] = {"kind": kind, **(classes(value, reference, kind) if kind != "values"
                                          else values(value, reference))}
    rows = len(next(iter(feeds.values()))) if feeds else 0
    return {"samples": rows, "outputs": outputs, "agreement": agreement(outputs)}


def agreement(outputs: Mapping[str, Mapping[str, Any]]) -> float:
    return min((o["agreement"] for o in outputs.values()), default=1.0)


def check_interfaces(pruned: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """The two models take the same inputs and give the same outputs, by name and element type."""
    from .samples import graph_inputs

    def signature(values):
        return [(v.name, v.type.tensor_type.elem_type) for v in values]

    for what, a, b in (("inputs", graph_inputs(pruned), graph_inputs(original)),
                       ("outputs", pruned.graph.output, original.graph.output)):
        if signature(a) != signature(b):
            raise DataError(f"the two models' {what} differ: {[n for n, _ in signature(a)]} vs "
                            f"{[n for n, _ in signature(b)]}")


def _log_probs(x: np.ndarray, kind: str) -> np.ndarray:
    x = x.astype(np.float64)
    if kind == "probs":
        return np.log(np.clip(x, 1e-12, None))
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)  # log-softmax (exact for log_probs too)


def classes(value: np.ndarray, reference: np.ndarray, kind: str) -> dict[str, float]:
    top1 = float((value.argmax(-1) == reference.argmax(-1)).mean())
    k = min(5, value.shape[-1])
    best = np.argsort(-value, axis=-1)[..., :k]
    top5 = float((best == reference.argmax(-1)[..., None]).any(-1).mean())
    lp, lq = _log_probs(reference, kind), _log_probs(value, kind)
    kl = float((np.exp(lp) * (lp - lq)).sum(-1).mean())
    return {"top1_agreement": top1, "top5_agreement": top5, "kl": kl, "agreement": top1}


def values(value: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a, b = value.astype(np.float64), reference.astype(np.float64)
    diff = a - b
    norm = np.linalg.norm(b)
    rel = float(np.linalg.norm(diff) / norm) if norm > 0 else float(np.linalg.norm(diff) > 0)
    a2, b2 = a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1), b.reshape(len(b), -1) if b.ndim else b.reshape(1, 1)
    na, nb = np.linalg.norm(a2, axis=1), np.linalg.norm(b2, axis=1)
    both = (na > 0) & (nb > 0)
    cos = np.where(both, (a2 * b2).sum(1) / np.where(both, na * nb, 1), (na == nb).astype(np.float64))
    return {"relative_l2": rel, "cosine": float(cos.mean()), "max_abs_diff": float(np.abs(diff).max(initial=0.0)),
            "agreement": float(cos.mean())}
