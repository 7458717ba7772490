"""SynFlow's cost per iteration, relative to one forward + backward of the linearized twin.

    python scripts/bench_synflow_cost.py [--iterations 5] [--threads 1] [--models resnet18,lstm,...]

For each model: `fb`, the best of three SynFlow scoring passes (forward + backward of the linearized,
non-negative twin on the all-ones input, in float64) inside a session; then a SynFlow loop of
`--iterations` at compression 2, whose seconds per iteration (the loop only, no setup) divided by
`fb` is the ratio. Everything an iteration adds to the pass (gathering alive gradients, threshold
selection, pruning the session's weights) shows as ratio - 1. Prints a table and the median ratio;
the target is at most 3 for every model. Models are built here with random weights (torchvision
architectures at 224², a tiny ViT, an LSTM, a 12-block attention stack whose exact flow overflows
float64 and is renormalized, a Resize + ConvTranspose decoder at 640², a 54k-parameter audio model on
10 s of 16 kHz audio).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.torch_nets import AttentionStack, export  # noqa: E402
from onnxprune.pruning import prunable_tensors, prune_twin  # noqa: E402
from onnxprune.pruning.scorers import SynFlow  # noqa: E402
from onnxprune.twin import Twin  # noqa: E402


class Decoder(nn.Module):
    """An OCR-detector-like net: strided encoder, FPN merge with nearest and bilinear Resize, two
    ConvTranspose back to full resolution."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 3, 2, 1), nn.ReLU())
        self.l3, self.l2, self.l1 = nn.Conv2d(4 * c, c, 1), nn.Conv2d(2 * c, c, 1), nn.Conv2d(c, c, 1)
        self.up = nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2), nn.ReLU(), nn.ConvTranspose2d(c, 1, 2, 2), nn.Sigmoid())

    def forward(self, x):
        f1 = self.e1(x)
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        p = nn.functional.interpolate(self.l3(f3), scale_factor=2.0) + self.l2(f2)
        p = nn.functional.interpolate(p, scale_factor=2.0, mode="bilinear") + self.l1(f1)
        return self.up(nn.functional.interpolate(p, scale_factor=0.5))


class Audio(nn.Module):
    """~56k parameters of 1-D convs: cheap weights, a long input (the issue's 123 s audio model)."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv1d(1, 32, 9, 2, 4), nn.ReLU(), nn.Conv1d(32, 48, 9, 2, 4), nn.ReLU(),
                               nn.Conv1d(48, 48, 9, 2, 4), nn.ReLU(), nn.Conv1d(48, 48, 9, 1, 4), nn.ReLU())
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc(self.f(x).mean(-1))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(40, 128, num_layers=2, batch_first=True), nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def _torchvision(arch: str):
    def build():
        import torchvision

        return getattr(torchvision.models, arch)(weights=None, num_classes=10), (1, 3, 224, 224)
    return build


def _vit():
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=224, patch_size=16, num_layers=4, num_heads=4, hidden_dim=128,
                             mlp_dim=256, num_classes=10), (1, 3, 224, 224)


MODELS = {
    "resnet18": _torchvision("resnet18"),
    "densenet121": _torchvision("densenet121"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    "vit-4x128": _vit,
    "lstm-2x128": lambda: (Recurrent(), (1, 100, 40)),
    "attention-12x64": lambda: (AttentionStack(), (1, 64, 16)),
    "decoder-640": lambda: (Decoder(), (1, 3, 640, 640)),
    "audio-160k": lambda: (Audio(), (1, 1, 160000)),
}


def measure(name: str, iterations: int) -> dict:
    torch.manual_seed(0)
    module, shape = MODELS[name]()
    twin = Twin(export(module.eval(), shape))
    names = prunable_tensors(twin)
    with SynFlow(twin, names) as session:
        session.flow()  # warm-up; settles exact vs renormalized
        passes = []
        for _ in range(3):
            start = time.perf_counter()
            session.flow()
            passes.append(time.perf_counter() - start)
    start = time.perf_counter()
    result = prune_twin(twin, density=0.01, iterations=iterations)
    total = time.perf_counter() - start
    fb = min(passes)
    return {"model": name, "params": result.total, "fb": fb, "per_iter": result.seconds_per_iteration,
            "scoring": result.scoring_seconds_per_iteration, "total": total,
            "ratio": result.seconds_per_iteration / fb, "flow": "renormalized" if result.renormalized else "exact"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| model | prunable | flow | fwd+bwd s | s / iteration | of it scoring s | loop s ({args.iterations} it) "
          f"| ratio |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    ratios = []
    for name in args.models.split(","):
        row = measure(name, args.iterations)
        ratios.append(row["ratio"])
        print(f"| {row['model']} | {row['params']:,} | {row['flow']} | {row['fb']:.3f} | {row['per_iter']:.3f} | "
              f"{row['scoring']:.3f} | {row['total']:.2f} | {row['ratio']:.2f} |", flush=True)
    print(f"\nmedian ratio {statistics.median(ratios):.2f}, max {max(ratios):.2f} (target: every model at most 3)")


if __name__ == "__main__":
    main()
