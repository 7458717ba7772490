"""Training throughput of the twin against the same network written natively in torch.

One step = forward, cross-entropy, backward, Adam step, on a fixed random batch. The two models are
timed in alternating blocks (so load from other processes hits both alike) and the median step time
of each is compared: ratio = native median / twin median (>= 1 means the twin is as fast).

Cases: LeNet-5 (batch 64, 1x28x28) and CIFAR ResNet-20 (batch 128, 3x32x32), each dense and with 90 %
of the prunable weights masked (twin: twin.set_mask; native: torch_prune.custom_from_mask,
torch's own masking by forward pre-hook).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_train.py [--steps 30] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.torch_nets import LeNet5, ResNet20, export, kaiming_init  # noqa: E402
from onnxprune.twin.module import Twin  # noqa: E402

CASES = {"LeNet-5": (LeNet5, (64, 1, 28, 28)), "ResNet-20": (ResNet20, (128, 3, 32, 32))}


def random_masks(shapes: dict[str, torch.Size], density: float, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: (torch.rand(shape, generator=gen) < density).float() for name, shape in shapes.items()}


def native_model(cls, density: float | None) -> nn.Module:
    torch.manual_seed(0)
    model = kaiming_init(cls())
    if density is not None:
        layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        masks = random_masks({n: m.weight.shape for n, m in layers.items()}, density)
        for name, layer in layers.items():
            torch_prune.custom_from_mask(layer, "weight", masks[name])
    return model


def twin_model(cls, shape, density: float | None) -> Twin:
    torch.manual_seed(0)
    twin = Twin(export(kaiming_init(cls()), (1, *shape[1:])))
    if density is not None:
        params = twin.onnx_parameters()
        names = dict.fromkeys(u.source for u in twin.weight_uses if u.role == "weight")
        for name, mask in random_masks({n: params[n].shape for n in names}, density).items():
            twin.set_mask(name, mask)
    return twin.train()


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()

    def step() -> float:
        start = clock()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        return clock() - start

    return step


def bench(name: str, density: float | None, steps: int, block: int, device: torch.device) -> tuple[float, float]:
    cls, shape = CASES[name]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device)
    y = torch.randint(0, 10, (shape[0],), generator=gen).to(device)
    runs = {"native": stepper(native_model(cls, density).to(device), x, y),
            "twin": stepper(twin_model(cls, shape, density).to(device), x, y)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for step in runs.values():  # warm-up (allocator, first-call dispatch)
        for _ in range(3):
            step()
    while len(times["twin"]) < steps:
        for key, step in runs.items():
            times[key] += [step() for _ in range(block)]
    return statistics.median(times["native"]), statistics.median(times["twin"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model and case")
    parser.add_argument("--block", type=int, default=5, help="steps per alternating block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--clock", choices=list(CLOCK), default="wall",
                        help="cpu: process CPU time, steadier on a busy machine (1 thread only)")
    args = parser.parse_args()
    global clock
    clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device}, {args.steps} steps, "
          f"{args.clock} clock")
    print(f"{'network':<10} {'weights':<12} {'native ms':>10} {'twin ms':>10} {'ratio':>7}")
    for name in args.cases:
        for density in (None, 0.1):
            native, twin = bench(name, density, args.steps, args.block, device)
            label = "dense" if density is None else f"{density:.0%} kept"
            print(f"{name:<10} {label:<12} {1e3 * native:>10.2f} {1e3 * twin:>10.2f} {native / twin:>7.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
