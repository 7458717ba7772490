"""SynFlow speed and memory on torchvision models: a plain reference loop vs onnxprune vs the CLI.

For each model (torchvision, weights=None, never downloaded; seeded init) and device:
- reference: the Synaptic-Flow loop re-implemented on the native torch model (tests/synflow_reference.py,
  the loop the tests check the twin against): every parameter and buffer made non-negative (signs
  restored after each scoring pass), eval mode, an all-ones input of batch 1, R = sum of outputs,
  score |θ·∂R/∂θ| of Conv/Linear weights, exponential schedule, a kthvalue over all scores each
  iteration with `score <= threshold` pruned, float64;
- onnxprune: `prune_twin` (method synflow, float64) on the twin of the exported ONNX file;
- cli: `onnxprune prune model.onnx --compression C -o out.onnx --iterations N --device D`, end to end
  (process start, imports, load, twin, pruning, write-back, save; its peak is host RSS on any device).
Each measurement runs in a fresh subprocess (peak memory = that process's ru_maxrss, or the CUDA
allocator's peak on GPU); timings exclude building the model/twin except for the CLI. Medians of
--runs runs. Devices without CUDA report "unmeasured".

    .venv/bin/python scripts/bench_zoo.py --small    # docs/figures/bench_zoo.{png,csv} + a Markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # synflow_reference.py, the reference loop the tests check against
sys.path.insert(0, str(ROOT))

FIGURES = ROOT / "docs" / "figures"
CLI = ROOT / ".venv" / "bin" / "onnxprune"
MODELS = ("resnet18", "resnet50", "vgg16_bn", "mobilenet_v2")
SMALL_MODELS = ("resnet18", "mobilenet_v2")
KINDS = ("reference", "onnxprune", "cli")


# ----- workers (one fresh process per measurement) ------------------------------------------------
def torchvision_model(name: str, num_classes: int, seed: int):
    import torch
    import torchvision

    torch.manual_seed(seed)  # the same init for the native model and the exported file
    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)


def _peak_mb(device: str) -> float:
    """Peak memory of this process so far: the CUDA allocator's on GPU, else the peak RSS.

    The RSS peak is read from VmHWM, which belongs to this process's own address space: ru_maxrss of
    a freshly spawned process starts at its parent's RSS (Linux carries it across fork/vfork + exec),
    which here would be the driver's, model export included."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    density = 10.0 ** -args.compression
    import torchvision  # noqa: F401 (imports before the baseline: the job's own memory is peak - base)

    from onnxprune.io import load_model
    from onnxprune.pruning import prune_twin
    from onnxprune.twin import Twin

    from synflow_reference import reference_synflow

    base = _peak_mb("cpu")
    if args.worker == "reference":
        model = torchvision_model(args.model, args.num_classes, args.seed)
        _sync(args.device)
        start = time.perf_counter()
        # copy=False: converts `model` itself, so the peak holds one model, not the float32 original too
        masks, _ = reference_synflow(model, (3, args.size, args.size), density, args.iterations,
                                     device=args.device, copy=False)
        kept = int(sum(m.sum() for m in masks.values()))
        _sync(args.device)
    else:
        twin = Twin(load_model(args.onnx)).to(args.device)
        _sync(args.device)
        start = time.perf_counter()
        kept = prune_twin(twin, method="synflow", density=density, iterations=args.iterations,
                          precision=torch.float64).kept
        _sync(args.device)
    return {"seconds": time.perf_counter() - start, "peak_mb": _peak_mb(args.device), "base_mb": base, "kept": kept}


def cli_worker(args) -> dict:
    """Runs the installed CLI as a child; its peak RSS is the largest child's (the only child; this
    worker imports nothing heavy, so the CLI does not inherit a large starting ru_maxrss from it)."""
    out = Path(args.onnx).with_suffix(".pruned.onnx")
    command = [str(CLI), "prune", args.onnx, "--compression", str(args.compression), "-o", str(out),
               "--iterations", str(args.iterations), "--device", args.device, "--quiet", "--overwrite"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"CLI failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    out.unlink(missing_ok=True)
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "command": " ".join(command[1:])}


# ----- driver ------------------------------------------------------------------------------------
def measure(kind: str, model: str, onnx_path: Path, device: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--model", model, "--onnx", str(onnx_path),
               "--device", device, "--iterations", str(args.iterations), "--compression", str(args.compression),
               "--size", str(args.size), "--num-classes", str(args.num_classes), "--seed", str(args.seed),
               "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{kind} {model} on {device} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_model(model: str, folder: Path, args) -> tuple[Path, int]:
    """Export once per model (untimed); returns the file and the number of prunable weights."""
    import onnx
    import torch
    from torch import nn

    from models.torch_nets import export

    net = torchvision_model(model, args.num_classes, args.seed)
    n_weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    path = folder / f"{model}.onnx"
    with torch.no_grad():
        onnx.save(export(net, (1, 3, args.size, args.size)), path)
    return path, n_weights


def bench_model(model: str, folder: Path, cuda: bool, args) -> dict:
    onnx_path, n_weights = export_model(model, folder, args)
    row = {"model": model, "input": f"1x3x{args.size}x{args.size}", "num_classes": args.num_classes,
           "prunable": n_weights, "iterations": args.iterations, "compression": args.compression,
           "runs": args.runs, "threads": args.threads}
    for device in args.device:
        for kind in KINDS:
            key = f"{kind}_{device}"
            if device == "cuda" and not cuda:
                row[f"{key}_s"] = row[f"{key}_peak_mb"] = "unmeasured"
                continue
            if kind == "cli" and not CLI.exists():
                row[f"{key}_s"] = row[f"{key}_peak_mb"] = "no CLI"
                continue
            results = [measure(kind, model, onnx_path, device, args) for _ in range(args.runs)]
            row[f"{key}_s"] = round(statistics.median(r["seconds"] for r in results), 3)
            row[f"{key}_peak_mb"] = round(statistics.median(r["peak_mb"] for r in results))
            if "kept" in results[0]:
                row[f"{key}_base_mb"] = round(statistics.median(r["base_mb"] for r in results))
                row[f"{key}_kept"] = results[0]["kept"]
            print(f"{model:13s} {kind:9s} {device}: {[round(r['seconds'], 2) for r in results]} s, "
                  f"peak {row[f'{key}_peak_mb']} MB", flush=True)
        ref, ours = row.get(f"reference_{device}_s"), row.get(f"onnxprune_{device}_s")
        row[f"speedup_{device}"] = round(ref / ours, 2) if isinstance(ref, float) and isinstance(ours, float) \
            else "unmeasured"
    onnx_path.unlink()
    return row


def versions() -> str:
    import onnx
    import onnxruntime
    import torch
    import torchvision

    return (f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores")


def markdown(rows: list[dict]) -> str:
    head = ("| model | input | prunable weights | kept ref / onnxprune | reference loop (s) | onnxprune (s) | "
            "speed-up | peak RSS ref / onnxprune (MB) | CLI end-to-end (s) | CLI peak RSS (MB) | "
            "CUDA ref / onnxprune / CLI (s) |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    lines = []
    for r in rows:
        get = lambda key: r.get(key, "—")  # noqa: E731 (a device not asked for)
        gpu = get("reference_cuda_s")
        if gpu not in ("unmeasured", "—"):
            gpu = f"{gpu} / {get('onnxprune_cuda_s')} / {get('cli_cuda_s')}"
        speedup = get("speedup_cpu")
        lines.append(f"| {r['model']} | {r['input']} | {int(r['prunable']) / 1e6:.1f} M | "
                     f"{get('reference_cpu_kept')} / {get('onnxprune_cpu_kept')} | {get('reference_cpu_s')} | "
                     f"{get('onnxprune_cpu_s')} | {speedup}{'×' if isinstance(speedup, float) else ''} | "
                     f"{get('reference_cpu_peak_mb')} / {get('onnxprune_cpu_peak_mb')} | {get('cli_cpu_s')} | "
                     f"{get('cli_cpu_peak_mb')} | {gpu} |")
    return head + "\n".join(lines)


def plot(rows: list[dict], path: Path) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import plt, save_figure

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.27
    for i, (kind, color) in enumerate(zip(KINDS, ("tab:gray", "tab:blue", "tab:green"))):
        xs = [j + (i - 1) * width for j in range(len(rows))]
        seconds = [r.get(f"{kind}_cpu_s") if isinstance(r.get(f"{kind}_cpu_s"), float) else 0 for r in rows]
        peaks = [r.get(f"{kind}_cpu_peak_mb") if isinstance(r.get(f"{kind}_cpu_peak_mb"), int) else 0 for r in rows]
        label = {"reference": "reference loop", "onnxprune": "onnxprune (prune_twin)", "cli": "CLI end to end"}[kind]
        ax_t.bar(xs, seconds, width, label=label, color=color)
        ax_m.bar(xs, peaks, width, label=label, color=color)
    for ax, label in ((ax_t, "seconds (median)"), (ax_m, "peak RSS of the process (MB)")):
        ax.set_xticks(range(len(rows)), [r["model"] for r in rows])
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    ax_t.legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"SynFlow, compression {r0['compression']}, {r0['iterations']} iterations, float64, CPU, "
                 f"{r0['threads']} thread(s), median of {r0['runs']} runs", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="resnet18 + mobilenet_v2, 10 iterations, 3 runs")
    p.add_argument("--models", nargs="+", choices=MODELS, default=None)
    p.add_argument("--iterations", type=int, default=None, help="SynFlow iterations (default 100; --small 10)")
    p.add_argument("--runs", type=int, default=None,
                   help="runs per measurement, median reported (default 5; --small 3)")
    p.add_argument("--compression", type=float, default=2.0)
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--num-classes", type=int, default=1000, help="torchvision default 1000, or e.g. 10")
    p.add_argument("--device", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"],
                   help="devices to measure; cuda reports 'unmeasured' where there is none")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1: shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=FIGURES)
    p.add_argument("--from-csv", action="store_true", help="redraw the figure and table from the existing CSV")
    p.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.device = args.device[0]
    else:
        args.models = args.models or list(SMALL_MODELS if args.small else MODELS)
        args.iterations = args.iterations or (10 if args.small else 100)
        args.runs = args.runs or (3 if args.small else 5)
    return args


def main() -> None:
    args = options()
    if args.worker:
        result = cli_worker(args) if args.worker == "cli" else worker(args)
        print(json.dumps(result))
        return
    if args.from_csv:
        report(read_rows(args.out / "bench_zoo.csv"), args.out)
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    folder = Path(tempfile.mkdtemp(prefix="bench_zoo_"))
    start = time.perf_counter()
    try:
        rows = [bench_model(model, folder, cuda, args) for model in args.models]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    from _common import write_csv

    write_csv(args.out / "bench_zoo.csv", rows)
    print(f"\n{versions()}; {args.threads} torch thread(s); total {time.perf_counter() - start:.0f}s")
    report(rows, args.out)


def report(rows: list[dict], out: Path) -> None:
    size = plot(rows, out / "bench_zoo.png")
    print(f"\n{markdown(rows)}\n\nwrote {out / 'bench_zoo.csv'} and {out / 'bench_zoo.png'} ({size // 1024} KB)")


def read_rows(path: Path) -> list[dict]:
    """The CSV back with numbers as numbers (ints stay ints: the table and plot tell them apart)."""
    import csv

    def typed(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as f:
        return [{k: typed(v) for k, v in row.items()} for row in csv.DictReader(f)]


if __name__ == "__main__":
    main()
