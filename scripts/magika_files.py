"""magika (a trained file-type classifier from its wheel, a jax2tf export) pruned and recovered on the
files of this machine (issues 23 and 30): no labels, no download.

Inputs are built as magika builds them (its config: the first and the last 1,024 bytes of a file,
leading / trailing whitespace stripped, padded with 256), from files under /usr, /etc and the
virtual environment, at most 40 per file extension so that many types appear; recovery and
held-out files are disjoint (`--per-extension` for more of them). For each mode (exact, --approximate) and MAC target, through the
installed command: `prune --structure channel --macs T --data RECOVERY.npz` (taylor), `compare`
with the dense original on the held-out files (top-1 agreement of its 214 classes) right after
pruning and after `train --teacher --dataset npz` (its wall time is the recovery time), and the
onnxruntime speed-up (batch 1, one thread, median of 15). onnxsim 0.8.1 prunes nothing in this file.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/magika_files.py [--macs 0.5] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import real_models  # noqa: E402
from trained_wheels import figures, onnxprune, speedup  # noqa: E402

ROOTS = ["/usr/lib/python3", "/usr/share", "/usr/bin", "/usr/lib/x86_64-linux-gnu", "/etc", "/usr/include",
         sys.prefix]
SIDE, BLOCK, PADDING = 1024, 4096, 256  # magika 1.0.3 standard_v3_3's config.min.json


def features(path: str) -> list[int]:
    """The model's input for one file: its first and last SIDE bytes, as magika reads them."""
    with open(path, "rb") as f:
        head = f.read(BLOCK).lstrip()[:SIDE]
        f.seek(max(0, os.path.getsize(path) - BLOCK))
        tail = f.read(BLOCK).rstrip()[-SIDE:]
    return list(head) + [PADDING] * (SIDE - len(head)) + [PADDING] * (SIDE - len(tail)) + list(tail)


def local_files(per_extension: int, seed: int) -> list[str]:
    by_extension = defaultdict(list)
    for root in ROOTS:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) >= 8:
                    by_extension[os.path.splitext(name)[1]].append(path)
    rng, picked = random.Random(seed), []
    for _, paths in sorted(by_extension.items()):
        rng.shuffle(paths)
        picked += sorted(paths[:per_extension])
    rng.shuffle(picked)
    return picked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--macs", type=float, nargs="+", default=[0.5])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--recovery", type=int, default=2048)
    p.add_argument("--heldout", type=int, default=512)
    p.add_argument("--per-extension", type=int, default=40, help="at most this many files of one extension")
    p.add_argument("--modes", nargs="+", choices=["exact", "approximate"], default=["exact", "approximate"])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    [model] = real_models.fetch({"magika==1.0.3": real_models.PACKAGES["magika==1.0.3"]})
    dense = onnx.load(str(model))
    name = dense.graph.input[0].name
    files = local_files(args.per_extension, seed=0)
    if len(files) < args.recovery + args.heldout:
        raise SystemExit(f"only {len(files)} files found")
    x = np.array([features(f) for f in files[:args.recovery + args.heldout]], dtype=np.int32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        recovery, held = Path(tmp) / "recovery.npz", Path(tmp) / "heldout.npz"
        np.savez(recovery, **{name: x[:args.recovery]})
        np.savez(held, **{name: x[args.recovery:]})
        print(f"{len(files)} files ({args.recovery} for recovery, {args.heldout} held out)", flush=True)
        for approximate in (mode == "approximate" for mode in args.modes):
            for target in args.macs:
                pruned, recovered = Path(tmp) / "pruned.onnx", Path(tmp) / "recovered.onnx"
                report = onnxprune("prune", model, "--structure", "channel", "--macs", target, "--data", recovery,
                                   "--best-effort", *(["--approximate"] if approximate else []), "-o", pruned, "-q",
                                   "--overwrite")
                row = {"approximate": approximate, "target": target,
                       "macs": round(report["macs"]["kept"] / report["macs"]["total"], 3),
                       "pruned": figures(onnxprune("compare", pruned, model, "--data", held))}
                start = time.perf_counter()
                onnxprune("train", pruned, "--teacher", model, "--dataset", "npz", "--data-dir", recovery,
                          "--epochs", args.epochs, "-o", recovered, "-q", "--overwrite")
                row["recovery_seconds"] = round(time.perf_counter() - start, 1)
                row["recovered"] = figures(onnxprune("compare", recovered, model, "--data", held))
                row["speedup"] = speedup(dense, recovered, {name: (1, 2048)})
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
