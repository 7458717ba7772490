"""LeNet-5 on mnist10k, channel-pruned at initialization, trained and evaluated with the onnxprune CLI.

The structured counterpart of lenet_mnist.py, same recipe: LeNet-5 (conv 6-16, fc 120-84-10) with
Kaiming-normal weights and zero biases, exported to ONNX; channels removed with
`onnxprune prune --structure channel --macs F` (F = 0.5 and 0.25 of the Conv/Gemm MACs kept; SynFlow
with its 100 iterations, and magnitude one shot; global scope, default floor of one channel per
layer), which writes a physically smaller dense graph; each trained 10 epochs with Adam, lr 1e-3,
batch 64 (`onnxprune train`) and scored by onnxruntime (`onnxprune eval`) on the 2,000 test images.
Also onnxruntime CPU latency of each trained file (1 thread; the lowest of --repeats medians of --runs
calls, all sessions interleaved; batch 1 and 256). The table goes to stdout and docs/figures/lenet_channels.csv.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/lenet_channels.py [--epochs 10] [--data tests/data/mnist10k.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from _common import FIGURES, write_csv
from lenet_mnist import ROOT, onnxprune, one_run  # the CLI runner and the train/eval recipe
from models.torch_nets import LeNet5, export, kaiming_init
from onnxprune.io import save_model
from onnxprune.structured.latency import latency, session  # interleaved onnxruntime timing

# (label, method, MAC fraction kept); None = the dense file
RUNS = [
    ("dense", None, 1.0),
    ("SynFlow 50% MACs", "synflow", 0.5),
    ("SynFlow 25% MACs", "synflow", 0.25),
    ("magnitude 50% MACs", "mag", 0.5),
    ("magnitude 25% MACs", "mag", 0.25),
]


def parameters(path: Path) -> int:
    model = onnx.load(str(path))
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def widths(path: Path) -> str:
    """Output channels / units of each Conv and Gemm, read from the file: e.g. 6-16-120-84-10."""
    model = onnx.load(str(path))
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in shapes:
            dims = shapes[node.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            out.append(dims[0] if node.op_type == "Conv" or trans_b else dims[1])
    return "-".join(str(w) for w in out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "mnist10k.npz")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=200, help="timed onnxruntime runs per session and batch size")
    parser.add_argument("--repeats", type=int, default=5, help="latency: the lowest of this many medians")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--csv", type=Path, default=FIGURES / "lenet_channels.csv",
                        help="the table as CSV (default docs/figures/lenet_channels.csv)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    parser.add_argument("--only", nargs="*", metavar="LABEL", help="a subset of runs by method_F, e.g. mag_0.5 dense_1")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found (pass --data PATH/mnist10k.npz)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        dense = folder / "lenet5.onnx"
        save_model(export(kaiming_init(LeNet5(), seed=args.seed), (1, 1, 28, 28)), dense)
        dense_params = parameters(dense)
        print(f"LeNet-5 on {args.data.name}: Adam lr 1e-3, batch 64, {args.epochs} epochs, seed {args.seed}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
        rows, trained = [], {}
        for label, method, fraction in RUNS:
            key = f"{method or 'dense'}_{fraction:g}"
            if args.only and key not in args.only:
                continue
            run_dir = folder / key  # one_run names its files by method: one folder per run keeps them apart
            run_dir.mkdir(exist_ok=True)
            model, macs, weights = dense, 1.0, 1.0
            if method is not None:
                model, report = run_dir / "pruned.onnx", run_dir / "prune.json"
                onnxprune("prune", dense, "--structure", "channel", "--macs", fraction, "-m", method, "--seed",
                          args.seed, "-o", model, "--report", report, "--overwrite", "--quiet")
                r = json.loads(report.read_text())
                macs = r["macs"]["kept"] / r["macs"]["total"]
                weights = r["weights"]["kept"] / r["weights"]["total"]
            result = one_run(run_dir, model, None, 0, args)
            trained[key] = run_dir / "dense_c0.trained.onnx"
            rows.append({"run": label, "method": method or "dense", "macs_target": fraction, "macs_kept": macs,
                         "prunable_weights_kept": weights, "params": parameters(model),
                         "params_kept": parameters(model) / dense_params, "widths": widths(model),
                         "twin": result["twin"], "ort": result["ort"], "train_seconds": result["seconds"]})
            print(f"  {label:<20} widths {rows[-1]['widths']:<16} MACs {100 * macs:6.2f}%  "
                  f"params {100 * rows[-1]['params_kept']:6.2f}%  ORT top-1 {100 * result['ort']:6.2f}%  "
                  f"train {result['seconds']:.0f}s", flush=True)
        # latency: every trained file in one process, sessions interleaved (drift hits all alike)
        sessions = [session(onnx.load(str(trained[k])), 1) for k in trained]
        for batch in (1, 256):
            x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
            feeds = {sessions[0].get_inputs()[0].name: x}
            # the lowest of several interleaved medians: the machine is shared, and load comes in phases
            medians = [latency(sessions, feeds, args.runs) for _ in range(args.repeats)]
            for row, seconds in zip(rows, np.min(medians, axis=0)):
                row[f"ort_ms_batch{batch}"] = 1e3 * float(seconds)
        base = rows[0] if rows[0]["method"] == "dense" else None
        print()
        print("| run | widths (conv-conv-fc-fc-fc) | MACs kept | params kept | ORT top-1 % | ORT ms, batch 1 | "
              "ORT ms, batch 256 |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            speed = (f" ({base['ort_ms_batch256'] / r['ort_ms_batch256']:.2f}×)" if base and r is not base else "")
            print(f"| {r['run']} | {r['widths']} | {100 * r['macs_kept']:.1f} % | {100 * r['params_kept']:.1f} % "
                  f"({r['params']:,}) | {100 * r['ort']:.2f} | {r['ort_ms_batch1']:.3f} | "
                  f"{r['ort_ms_batch256']:.2f}{speed} |")
        write_csv(args.csv, [{**r, "epochs": args.epochs, "seed": args.seed} for r in rows])
        print(f"wrote {args.csv}")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
