"""Channel pruning speed: onnxruntime CPU latency of dense vs channel-pruned models, plus MAC coverage.

    python scripts/bench_structured.py --models resnet50 resnet18 --macs 0.5 --threads 2
    python scripts/bench_structured.py --models --onnx bert.onnx --input-shape input_ids=1x128 ...

Models are torchvision architectures with random weights (no download), exported with the
TorchScript exporter (dynamo=False, BatchNorm kept) at 224x224, 1000 classes. Channels are scored
by SynFlow (10 iterations, data-free) by default, ranked globally, and each layer's kept channels are
rounded to a multiple of 8 (--round-to), which onnxruntime's CPU kernels run fastest. Latency is
the median of --runs timed runs after warm-up, dense and pruned interleaved in the same process
(the same load hits both). Coverage = fraction of Conv/Gemm/MatMul MACs in layers with a
prunable channel axis.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxprune.structured.latency import latency, session  # noqa: E402


def build(arch: str, size: int):
    import torch
    import torchvision

    from models.torch_nets import export

    torch.manual_seed(0)
    return export(getattr(torchvision.models, arch)(weights=None), (1, 3, size, size))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["resnet50", "resnet18", "mobilenet_v2", "vgg16_bn"])
    p.add_argument("--macs", type=float, default=0.5)
    p.add_argument("--method", default="synflow")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--scope", choices=["global", "local"], default="global")
    p.add_argument("--round-to", type=int, default=8, help="round kept channels per layer to a multiple")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--onnx", nargs="*", default=[], metavar="PATH",
                   help="ONNX files to time as well (exports of other frameworks, transformers)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=AxB",
                   help="input shapes for the --onnx files (an input a file lacks is ignored)")
    p.add_argument("--coverage-models", nargs="*", default=[],
                   help="models for which only the MAC coverage is printed (no timing)")
    args = p.parse_args()

    from onnxprune.structured import prune_channels

    from onnxprune.structured import analyze

    for arch in args.coverage_models:
        model = build(arch, args.size)
        cg = analyze(model, {model.graph.input[0].name: (1, 3, args.size, args.size)})
        top = sorted(cg.reasons.items(), key=lambda kv: -kv[1])[:2]
        print(f"| {arch} | coverage {cg.coverage():.1%} | frozen {int(cg.frozen.sum())}/{cg.n_channels} | "
              f"{'; '.join(f'{n}: {r}' for r, n in top)} |", flush=True)
    rows = []
    for arch in args.models:
        model = build(arch, args.size)
        start = time.perf_counter()
        result = prune_channels(model, method=args.method, macs=args.macs, iterations=args.iterations,
                                scope=args.scope, round_to=args.round_to,
                                input_shapes={model.graph.input[0].name: (1, 3, args.size, args.size)})
        seconds = time.perf_counter() - start
        report = result.report
        dense, pruned = session(model, args.threads), session(result.model, args.threads)
        for batch in args.batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, args.size, args.size)).astype(np.float32)
            t_dense, t_pruned = latency([dense, pruned], {dense.get_inputs()[0].name: x}, args.runs)
            rows.append((arch, batch, report["coverage"], report["macs"]["kept"] / report["macs"]["total"], seconds,
                         t_dense * 1e3, t_pruned * 1e3, t_dense / t_pruned))
            print(_fmt(rows[-1]), flush=True)
    given = {n: tuple(int(d) for d in v.split("x")) for n, v in (item.split("=") for item in args.input_shape)}
    for path in args.onnx:
        rows.extend(_time_file(Path(path), given, args))
    print("\n| model | batch | MAC coverage | MACs kept | prune s | dense ms | pruned ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(_fmt(row))


def _time_file(path: Path, given: dict, args) -> list[tuple]:
    """One file: prune its channels as for the torchvision models, time both at each batch."""
    import onnx

    from onnxprune.structured import prune_channels
    from onnxprune.structured.latency import compare

    model = onnx.load(str(path))
    inputs = {v.name for v in model.graph.input}
    shapes = {n: s for n, s in given.items() if n in inputs} or None
    start = time.perf_counter()
    result = prune_channels(model, method=args.method, macs=args.macs, iterations=args.iterations,
                            scope=args.scope, round_to=args.round_to, input_shapes=shapes)
    seconds, report, rows = time.perf_counter() - start, result.report, []
    for batch in args.batches:
        at = {n: (batch, *s[1:]) for n, s in shapes.items()} if shapes else None
        timing = compare(model, result.model, input_shapes=at, batch=batch, runs=args.runs, threads=args.threads)
        rows.append((path.stem, batch, report["coverage"], report["macs"]["kept"] / report["macs"]["total"], seconds,
                     timing["dense_ms"], timing["pruned_ms"], timing["speedup"]))
        print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(row) -> str:
    arch, batch, cov, kept, seconds, dense, pruned, speed = row
    return (f"| {arch} | {batch} | {cov:.1%} | {kept:.3f} | {seconds:.1f} | {dense:.1f} | {pruned:.1f} | "
            f"{speed:.2f}x |")


if __name__ == "__main__":
    main()
