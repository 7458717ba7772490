"""Side by side: onnxprune's channel pruning vs onnxsim 0.8.1's `apply_structured_pruning`.

onnxsim is not a project dependency. Install it somewhere throwaway and put it on the path:

    .venv/bin/pip install --no-deps --target /tmp/simlib onnxsim==0.8.1
    PYTHONPATH=/tmp/simlib .venv/bin/python scripts/compare_onnxsim.py --macs 0.5

For each model (the test zoo: torchvision nets exported both ways, and the committed files), both
tools aim at the same fraction of Conv/Gemm/MatMul MACs kept (MACs counted here, from measured
shapes, the same way for both). onnxsim takes a channel sparsity, so it is bisected to the budget.
Columns: MACs reached, whether the result passes onnx.checker and runs in onnxruntime, onnxprune's
exactness (max relative difference to the original with the removed channels zeroed; onnxsim has
no such reference, so for it only "runs" is shown), latency at batch 1, and seconds to prune.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def macs(model: onnx.ModelProto) -> float:
    """Conv/ConvTranspose/Gemm/MatMul multiply-accumulates at batch 1, from measured shapes."""
    from onnxprune.structured.shapes import value_shapes

    shapes = value_shapes(model)
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = shapes[node.input[1]]
            total += np.prod(shapes[node.output[0]]) * np.prod(w[1:])
        elif node.op_type == "ConvTranspose":
            w = shapes[node.input[1]]
            total += np.prod(shapes[node.input[0]]) * np.prod(w[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes[node.input[0]]
            k = a[0] if node.op_type == "Gemm" and attrs(node).get("transA", 0) else a[-1]
            total += np.prod(shapes[node.output[0]]) * k
    return float(total)


def runs(model: onnx.ModelProto, feeds) -> tuple[bool, list | None, float]:
    try:
        onnx.checker.check_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        s = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        out = s.run(None, feeds)
        one = {k: v[:1] for k, v in feeds.items()}
        s.run(None, one)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            s.run(None, one)
            times.append(time.perf_counter() - start)
        return True, out, float(np.median(times))
    except Exception:  # noqa: BLE001  (any failure: the graph is broken)
        return False, None, float("nan")


def onnxsim_at(model, budget: float, total: float):
    from onnxsim.pruning import apply_structured_pruning

    lo, hi, best, start = 0.0, 0.95, None, time.perf_counter()
    for _ in range(7):  # bisect the channel sparsity to the MAC budget
        mid = (lo + hi) / 2
        try:
            pruned = apply_structured_pruning(model, sparsity=mid)
        except Exception as err:  # noqa: BLE001
            return None, f"error: {type(err).__name__}", time.perf_counter() - start
        try:
            kept = macs(pruned) / total
        except Exception as err:  # noqa: BLE001  (its graph does not run in onnxruntime)
            return None, f"output does not run ({type(err).__name__})", time.perf_counter() - start
        if kept <= budget:
            best, hi = (pruned, kept), mid
        else:
            lo = mid
            best = best or (pruned, kept)
    return best, "", time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--macs", type=float, default=0.5)
    p.add_argument("--models", nargs="*")
    args = p.parse_args()
    import zoo

    from onnxprune.structured import prune_channels, zeroed

    names = args.models or zoo.zoo_names()
    print("| model | onnxprune MACs | runs | exact (rel) | ms | s | onnxsim MACs | runs | ms | s |")
    print("|---|---:|---|---:|---:|---:|---:|---|---:|---:|")
    for name in names:
        model = zoo.zoo_model(name)
        feeds = zoo.sample_feeds(model, batch=2)
        total = macs(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            try:
                ours = prune_channels(model, method="mag", macs=args.macs)
                ok, out, ms = runs(ours.model, feeds)
                _, ref, _ = runs(zeroed(ours.graph, ours.removed), feeds)
                exact = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in zip(out, ref))
                mine = f"{macs(ours.model) / total:.3f} | {'yes' if ok else 'NO'} | {exact:.1e} | {ms * 1e3:.2f}"
            except Exception as err:  # noqa: BLE001
                mine = f"- | error: {type(err).__name__} | - | -"
            ours_s = time.perf_counter() - start
            best, note, sim_s = onnxsim_at(model, args.macs, total)
        if best is None:
            theirs = f"- | {note} | -"
        else:
            ok, _, ms = runs(best[0], feeds)
            theirs = f"{best[1]:.3f} | {'yes' if ok else 'NO'} | {ms * 1e3:.2f}"
        print(f"| {name} | {mine} | {ours_s:.1f} | {theirs} | {sim_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
