"""Plumbing shared by the paper-reproduction scripts (layer_collapse, conservation, iterations).

Networks as ONNX twins, the random data SNIP/GraSP get here, per-layer mask statistics, and the
outputs (CSV + PNG under docs/figures). Every experiment goes through the public engine API
(`onnxprune.pruning.prune_twin`) on an exported ONNX file, as a user's model would.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # models.torch_nets lives at the repo root, not in the package

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # scripts run headless
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from models.torch_nets import VGG, ResNet20, export, kaiming_init  # noqa: E402
from onnxprune.twin import Twin  # noqa: E402

FIGURES = ROOT / "docs" / "figures"
PNG_LIMIT = 300_000  # bytes; figures are committed
CIFAR_SHAPE = (1, 3, 32, 32)
NETWORKS: dict[str, tuple[str, Callable[[], torch.nn.Module]]] = {
    "vgg16": ("VGG-16", VGG),
    "resnet20": ("ResNet-20", ResNet20),
}
# Paper's colours per method, so every figure reads the same way.
COLORS = {"rand": "tab:gray", "mag": "tab:orange", "snip": "tab:green", "grasp": "tab:purple",
          "synflow": "tab:blue"}
LABELS = {"rand": "Random", "mag": "Magnitude", "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow"}


# ----- command line --------------------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--small", action="store_true", help="the quick configuration (minutes on 2 CPU cores)")
    p.add_argument("--out", type=Path, default=FIGURES, help="folder for the PNG and CSV (default docs/figures)")
    p.add_argument("--seed", type=int, default=0, help="initialization, random data and random pruning seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    return p


def set_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


def compressions(start: float, stop: float, step: float) -> list[float]:
    n = int(round((stop - start) / step))
    return [round(start + i * step, 6) for i in range(n + 1)]


# ----- networks --------------------------------------------------------------------------------------
def prunable_total(twin: Twin) -> int:
    from onnxprune.pruning import prunable_tensors

    return sum(twin.parameter(name).numel() for name in prunable_tensors(twin))


def feasible(grid: list[float], total: int) -> list[float]:
    """The compressions that keep at least one weight (round(total × 10**-c) >= 1; the engine refuses
    to keep none): e.g. ResNet-20's 270,896 weights stop at c = 5.5."""
    return [c for c in grid if round(total * 10.0 ** -c) >= 1]


def cifar_twin(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Twin:
    """The paper's CIFAR network `name`, Kaiming-initialized, exported to ONNX and loaded as a twin."""
    model = kaiming_init(NETWORKS[name][1](), seed=seed)
    return Twin(export(model, CIFAR_SHAPE), dtype=dtype)


def random_batches(shape: tuple[int, ...], *, n_batches: int, batch_size: int, num_classes: int = 10,
                   seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Data-free stand-in for SNIP/GraSP: standard Gaussian inputs and uniformly random labels."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn((batch_size, *shape[1:]), generator=gen),
             torch.randint(0, num_classes, (batch_size,), generator=gen)) for _ in range(n_batches)]


def clear_masks(twin: Twin) -> None:
    """Start every experiment from the dense network (prune_twin leaves its masks on the twin)."""
    for name in list(twin.masks()):
        twin.set_mask(name, None)


def prune(twin: Twin, method: str, compression: float, **kwargs):
    """prune_twin at `compression` (density 10**-c) on the dense twin; returns the PruneResult."""
    from onnxprune.pruning import prune_twin  # late: the engine may not exist when plotting only

    clear_masks(twin)
    return prune_twin(twin, method=method, density=10.0 ** -compression, **kwargs)


def disconnected(twin: Twin) -> bool:
    """No input-output path of unpruned weights left (the masks set on the twin).

    SynFlow's R on the masked network, with |θ| and an all-ones input, is a sum over input-output
    paths of products of weights; it is 0 exactly when every path is cut, and then every SynFlow score
    is 0. (Exact here: biases, BN shifts and running means are 0 at initialization, so nothing but
    paths feeds the output.) A fully pruned layer inside a residual branch does not disconnect.
    """
    from onnxprune.pruning import score

    return all(float(s.sum()) == 0.0 for s in score(twin, "synflow", precision=torch.float64).values())


def layer_kept(result) -> list[tuple[str, int, int]]:
    """(tensor name, size, kept) per prunable tensor, in the engine's (graph) order."""
    return [(name, result.masks[name].numel(), int(result.masks[name].sum())) for name in result.prunable]


def collapsed(result) -> int:
    """Layers whose weight tensor lost every entry: the network is cut there (paper Sec. 3)."""
    return sum(kept == 0 for _, _, kept in layer_kept(result))


def critical_compression(sizes: Iterable[int]) -> float:
    """Compression beyond which collapse is unavoidable: every layer keeping a single weight."""
    sizes = list(sizes)
    return float(torch.log10(torch.tensor(sum(sizes) / len(sizes), dtype=torch.float64)))


def max_safe_compression(points: list[tuple[float, int]]) -> str:
    """Largest grid compression with no collapsed layer at it or anywhere below it."""
    best = None
    for c, n_collapsed in sorted(points):
        if n_collapsed:
            break
        best = c
    if best is None:
        return f"< {min(c for c, _ in points):g}"
    return f"≥ {best:g}" if best == max(c for c, _ in points) else f"{best:g}"


# ----- outputs ---------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows_for(args, csv_path: Path, run) -> list[dict]:
    """The script's rows: re-read from its CSV with --plot-only, else computed by `run(args)` and saved."""
    if args.plot_only:
        return read_csv(csv_path)
    with Timer() as t:
        rows = run(args)
    write_csv(csv_path, rows)
    log(f"total {t}")
    return rows


def rows_per_network(args, csv_path: Path, run_network) -> list[dict]:
    """`rows_for` over `args.networks`, the CSV rewritten after each network (a long run keeps the
    networks it finished); the run's `<name>.partial.csv` checkpoint goes once all are done."""
    def run(args) -> list[dict]:
        rows = []
        for net in args.networks:
            rows += run_network(net, args)
            write_csv(csv_path, rows)
        (csv_path.parent / f"{csv_path.stem}.partial.csv").unlink(missing_ok=True)
        return rows
    return rows_for(args, csv_path, run)


def save_figure(fig, path: Path) -> int:
    """Save as PNG under PNG_LIMIT (lowering dpi if needed), reload it to prove it opens; returns bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for dpi in (110, 90, 72, 60):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        if buffer.tell() < PNG_LIMIT:
            break
    path.write_bytes(buffer.getvalue())
    plt.close(fig)
    image = plt.imread(path)  # raises if the file is not a readable PNG
    if image.ndim != 3 or min(image.shape[:2]) < 100:
        raise RuntimeError(f"{path}: unexpected image shape {image.shape}")
    return path.stat().st_size


class Timer:
    """Wall seconds, and CPU seconds of this process (what a dedicated machine's wall time would be
    with one thread, when the shared one is busy)."""

    def __enter__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start

    def __str__(self) -> str:
        return f"{self.seconds:.0f}s wall, {self.cpu_seconds:.0f}s CPU"


def log(*parts) -> None:
    print(*parts, flush=True)
