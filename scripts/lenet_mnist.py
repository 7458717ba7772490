"""LeNet-5 on mnist10k, pruned at initialization, trained and evaluated with the onnxprune CLI.

Recipe (the SynFlow paper's small-scale setup): LeNet-5 (conv 6-16, fc 120-84-10) with Kaiming-normal
weights and zero biases, exported to ONNX; pruned with SynFlow (100 iterations) at compression 1 and 2
and with global magnitude at 1 and 2 (compression 0 = the dense file); each trained 10 epochs with Adam,
lr 1e-3, batch 64 (`onnxprune train`); scored by onnxruntime (`onnxprune eval`) on the 2,000 test images.
Reference figures come from a plain torch implementation of the same recipe (one seed).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/lenet_mnist.py [--data tests/data/mnist10k.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.torch_nets import LeNet5, export, kaiming_init  # noqa: E402
from onnxprune.io import save_model  # noqa: E402

# (label, method, compression, reference top-1 % from the plain torch run)
RUNS = [
    ("dense", None, 0, 98.1),
    ("SynFlow x10", "synflow", 1, 96.2),
    ("SynFlow x100", "synflow", 2, 89.4),
    ("magnitude x10", "mag", 1, 94.3),
    ("magnitude x100", "mag", 2, 11.5),
]


def onnxprune(*args) -> None:
    """Run the installed CLI as a user would; stop with its message on failure."""
    cmd = [sys.executable, "-m", "onnxprune", *[str(a) for a in args]]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr}")


def one_run(folder: Path, dense: Path, method: str | None, compression: float, args) -> dict:
    name = f"{method or 'dense'}_c{compression:g}"
    model = dense
    if method is not None:
        model = folder / f"{name}.onnx"
        onnxprune("prune", dense, "-m", method, "-c", compression, "-o", model, "--seed", args.seed, "--overwrite")
    trained, report, scored = (folder / f"{name}.{s}" for s in ("trained.onnx", "train.json", "eval.json"))
    start = time.perf_counter()
    onnxprune("train", model, "--dataset", "npz", "--data-dir", args.data, "--epochs", args.epochs, "--optimizer",
              "adam", "--lr", 1e-3, "--batch-size", 64, "--seed", args.seed, "-o", trained, "--report", report,
              "--checkpoint", folder / f"{name}.ckpt", "--quiet")
    seconds = time.perf_counter() - start
    onnxprune("eval", trained, "--dataset", "npz", "--data-dir", args.data, "--report", scored, "--quiet")
    train_report, eval_report = json.loads(report.read_text()), json.loads(scored.read_text())
    return {"density": train_report["density"], "twin": train_report["final"]["test_accuracy"],
            "ort": eval_report["top1"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "mnist10k.npz")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    parser.add_argument("--init", choices=["kaiming", "torch"], default="kaiming",
                        help="kaiming: Kaiming-normal weights, zero biases (the paper's); torch: PyTorch's defaults")
    parser.add_argument("--only", nargs="*", metavar="METHOD_C", help="a subset of runs, e.g. mag_c2 synflow_c1")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found (pass --data PATH/mnist10k.npz)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        dense = folder / "lenet5.onnx"
        net = LeNet5() if args.init == "torch" else kaiming_init(LeNet5(), seed=args.seed)
        save_model(export(net, (1, 1, 28, 28)), dense)
        print(f"LeNet-5 on {args.data.name}: Adam lr 1e-3, batch 64, {args.epochs} epochs, seed {args.seed}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        header = f"{'run':<16} {'kept':>8} {'twin %':>8} {'ORT top-1 %':>12} {'reference %':>12} {'diff':>6} {'train s':>8}"
        print(header, flush=True)
        rows = []
        for label, method, compression, reference in RUNS:
            if args.only and f"{method or 'dense'}_c{compression:g}" not in args.only:
                continue
            r = one_run(folder, dense, method, compression, args)
            diff = 100 * r["ort"] - reference
            rows.append({"run": label, "method": method or "dense", "compression": compression,
                         "reference": reference, **r})
            print(f"{label:<16} {100 * r['density']:>7.2f}% {100 * r['twin']:>8.2f} {100 * r['ort']:>12.2f} "
                  f"{reference:>12.1f} {diff:>+6.1f} {r['seconds']:>8.1f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
