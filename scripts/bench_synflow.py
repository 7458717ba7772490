"""Benchmark: onnxprune's SynFlow loop vs a plain re-implementation of the reference loop.

Model: torchvision resnet18 (num_classes=10) at 3x32x32, seeded init. The reference
(tests/synflow_reference.py, the loop the tests check the twin against) runs on the native
torchvision module the way the Synaptic-Flow code does (every parameter and buffer made non-negative,
eval mode, all-ones input, masks multiplied into the weights, a kthvalue over ALL scores every
iteration, `score <= threshold` pruned), in float64 like onnxprune's default. onnxprune runs on the
model exported to ONNX. Prints the median of a few runs of each (wall and CPU time: on a shared
machine CPU time is the steadier comparison), the ratio, the Jaccard index of the kept sets and the
kept counts. The two runs alternate, so both see the same machine load.

The Jaccard index falls short of 1 by the final count alone: the reference keeps
total - int((1 - density) * total) (111721 here), onnxprune exactly round(total * density) (111720).

    .venv/bin/python scripts/bench_synflow.py [--runs 3] [--iterations 100] [--compression 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # synflow_reference.py, the reference loop the tests check against
sys.path.insert(0, str(ROOT))

from models.torch_nets import export  # noqa: E402
from onnxprune.pruning import prune_twin  # noqa: E402
from onnxprune.twin import Twin  # noqa: E402
from synflow_reference import jaccard, reference_synflow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--compression", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    density = 10 ** -args.compression
    shape = (3, 32, 32)
    model = torchvision.models.resnet18(num_classes=10).eval()
    twin = Twin(export(model, (1, *shape)))

    ours_times, ref_times, ours_cpu, ref_cpu = [], [], [], []
    for _ in range(args.runs):
        for name in list(twin.masks()):
            twin.set_mask(name, None)
        start, cpu = time.perf_counter(), time.process_time()
        result = prune_twin(twin, method="synflow", density=density, iterations=args.iterations)
        ours_times.append(time.perf_counter() - start)
        ours_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        ref, _ = reference_synflow(model, shape, density, args.iterations)
        ref_times.append(time.perf_counter() - start)
        ref_cpu.append(time.process_time() - cpu)
        print(f"run {len(ref_times)}: onnxprune {ours_times[-1]:.2f} s, reference {ref_times[-1]:.2f} s", flush=True)
    ours, reference = statistics.median(ours_times), statistics.median(ref_times)
    missing = sorted(set(ref) ^ set(result.masks))
    if missing:
        raise SystemExit(f"prunable tensors differ between the two: {missing}")
    ref_kept = sum(int(m.sum()) for m in ref.values())
    print(f"resnet18 (10 classes) 3x32x32, {result.total} prunable weights, compression {args.compression}, "
          f"{args.iterations} iterations, {args.threads} thread(s), {args.runs} run(s)")
    print(f"onnxprune  median {ours:7.2f} s   runs {', '.join(f'{t:.2f}' for t in ours_times)}")
    print(f"reference  median {reference:7.2f} s   runs {', '.join(f'{t:.2f}' for t in ref_times)}")
    print(f"ratio      {ours / reference:.3f}   (CPU time: onnxprune {statistics.median(ours_cpu):.2f} s, "
          f"reference {statistics.median(ref_cpu):.2f} s, ratio "
          f"{statistics.median(ours_cpu) / statistics.median(ref_cpu):.3f})")
    print(f"jaccard    {jaccard(result.masks, ref):.6f}")
    print(f"kept       onnxprune {result.kept}  reference {ref_kept}  target {round(result.total * density)}")


if __name__ == "__main__":
    main()
