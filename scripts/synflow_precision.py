"""SynFlow in float32 (renormalized flow from the start) against float64 (exact): masks and cost.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/synflow_precision.py [--compressions 1 2 3] [--iterations 100]

For each model and compression: the Jaccard index of the kept sets of the two precisions, and the
seconds per iteration of each (SynFlow's loop, the same twin rebuilt per run), with their ratio.
Models: the paper's CIFAR VGG-16 and ResNet-20 (Kaiming init, BatchNorm), the committed zoo files,
and any --onnx file (e.g. DNSMOS bak_ovr, with --input-shape NAME=1x901x161).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from models.torch_nets import VGG, ResNet20, export, kaiming_init  # noqa: E402
from onnxprune.commands.options import parse_input_shape  # noqa: E402
from onnxprune.pruning import prune_twin  # noqa: E402
from onnxprune.twin import Twin  # noqa: E402
from synflow_reference import jaccard  # noqa: E402


def models(extra: list[Path]) -> dict[str, onnx.ModelProto]:
    out = {"vgg16": export(kaiming_init(VGG()), (1, 3, 32, 32)), "resnet20": export(kaiming_init(ResNet20()), (1, 3, 32, 32))}
    for name in ("lenet5", "keras_cnn", "flax_cnn", "paddle_cnn", "keras_transformer", "flax_transformer"):
        out[name] = onnx.load(str(ROOT / "models" / "zoo" / f"{name}.onnx"))
    out.update({path.stem: onnx.load(str(path)) for path in extra})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compressions", type=float, nargs="+", default=[1, 2, 3])
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--onnx", type=Path, nargs="*", default=[])
    p.add_argument("--only", nargs="*")
    p.add_argument("--input-shape", action="append", default=[])
    args = p.parse_args()
    shapes = dict(parse_input_shape(t) for t in args.input_shape)
    print("| model | compression | Jaccard f32 vs f64 | s/iter f64 | s/iter f32 | f32 / f64 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models(args.onnx).items():
        if args.only and name not in args.only:
            continue
        given = {k: v for k, v in shapes.items() if k in {i.name for i in model.graph.input}}
        for c in args.compressions:
            runs = {}
            for precision in (torch.float64, torch.float32):
                twin = Twin(model).eval()
                runs[precision] = prune_twin(twin, method="synflow", density=10 ** -c, iterations=args.iterations,
                                             precision=precision, input_shapes=given or None)
            wide, narrow = runs[torch.float64], runs[torch.float32]
            ratio = narrow.seconds_per_iteration / wide.seconds_per_iteration
            print(f"| {name} | {c:g} | {jaccard(narrow.masks, wide.masks):.4f} | {wide.seconds_per_iteration:.4f} "
                  f"| {narrow.seconds_per_iteration:.4f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
