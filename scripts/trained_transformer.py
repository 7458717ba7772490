"""A transformer trained offline, pruned at 0.5 of its MACs exactly and with `--approximate`, and
recovered by distillation (issue 23: fidelity after `train --teacher` on a trained transformer).

The model: models/torch_nets.AttentionStack (pre-norm blocks: LayerNorm, nn.MultiheadAttention, GELU
MLP; mean over tokens, linear head), 4 blocks of width 64 and 4 heads, reading an MNIST digit as 28
tokens of 28 pixels (its rows). torch.export writes it with a dynamic batch. It is trained from its
random initialization with onnxprune itself (`onnxprune train`, labelled, on the 8,000 MNIST-10k
training images, inputs in [0, 1]), so every weight is learned, then for each mode:
`prune --structure channel --macs 0.5 --data RECOVERY` (taylor on the training images without labels,
one array named after the input) [--approximate], `compare` against the dense model on the 2,000
held-out images before and after `train --teacher --epochs R` on the training images (its wall time
is the recovery time), accuracy against the held-out labels, and the onnxruntime speed-up (batch 1, one thread,
median of 15). Everything runs through the installed command.

Beside it, onnxsim 0.8.1 where it is on the path (installed aside): `apply_transformer_block_pruning`
(drops whole pre-norm attention or MLP sub-blocks, ranked by how little each changes its input on 64
training images) with the fewest blocks that reach the MAC target, and `apply_structured_wanda_pruning`
bisected to it, each then `apply_pruning_finetune` on those images. Its attention-head pruning matches
only fused Attention nodes, which this export has none of.

    PYTHONPATH=/tmp/simlib OMP_NUM_THREADS=2 .venv/bin/python scripts/trained_transformer.py [--epochs 8]
        [--recovery 2] [--scope local|global] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from models.torch_nets import AttentionStack  # noqa: E402
from trained_wheels import speedup  # noqa: E402

EXE = Path(sys.executable).parent / "onnxprune"
MNIST = ROOT / "tests" / "data" / "mnist10k.npz"


def onnxprune(*args) -> str:
    done = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"onnxprune {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return done.stdout


def export(path: Path) -> None:
    torch.manual_seed(0)
    model = AttentionStack(layers=4, d=64, inputs=28, heads=4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.rand(2, 28, 28),), dynamo=True, input_names=["rows"],
                                    output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    program.save(str(path))


def arrays(folder: Path) -> tuple[Path, Path, Path, np.ndarray, np.ndarray]:
    """(labelled npz, recovery npz, held-out npz, held-out images, held-out labels): rows as tokens, in
    [0, 1]. The unlabelled files hold one array named after the model's input, read as they are."""
    data = np.load(MNIST)
    x_train, x_test = (data[k].reshape(-1, 28, 28).astype(np.float32) / 255 for k in ("x_train", "x_test"))
    np.savez(folder / "labelled.npz", x_train=x_train, y_train=data["y_train"], x_test=x_test, y_test=data["y_test"])
    np.savez(folder / "recovery.npz", rows=x_train)
    np.savez(folder / "heldout.npz", rows=x_test)
    return folder / "labelled.npz", folder / "recovery.npz", folder / "heldout.npz", x_test, data["y_test"]


def accuracy(model: Path, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"rows": x[i:i + 500]})[0] for i in range(0, len(x), 500)])
    return round(float((logits.argmax(1) == y).mean()), 4)


def figures(model: Path, dense: Path, heldout: Path, folder: Path) -> dict:
    report = folder / "compare.json"
    onnxprune("compare", model, dense, "--data", heldout, "--report", report, "--overwrite")
    logits = json.loads(report.read_text())["outputs"]["logits"]
    return {"agreement": round(logits["top1_agreement"], 4), "kl": float(f"{logits['kl']:.3g}")}


def block_row(dense: onnx.ModelProto, calibration: list[dict], target: float, heldout: dict) -> dict:
    """onnxsim's block dropping with the fewest blocks that keep <= target MACs, then its finetune."""
    try:
        from onnxsim.finetune import apply_pruning_finetune
        from onnxsim.pruning import apply_transformer_block_pruning
    except ImportError:
        return {"onnxsim_blocks": "not installed"}
    from compare_onnxsim import macs
    from trained_wheels import figures

    from onnxprune.fidelity import compare as fidelity_compare

    total, start = macs(dense), time.perf_counter()
    for blocks in range(1, len(dense.graph.node)):
        pruned = apply_transformer_block_pruning(dense, calibration_data=calibration, num_blocks_to_drop=blocks)
        kept = macs(pruned) / total
        if kept <= target or pruned == dense:
            break
    if kept > target:
        return {"onnxsim_blocks": f"cannot reach {target} of MACs ({kept:.3f} with every block it matches dropped)"}
    row = {"onnxsim_blocks": blocks, "onnxsim_macs": round(kept, 3),
           "onnxsim_pruned": figures(fidelity_compare(pruned, dense, heldout))}
    tuned = apply_pruning_finetune(dense, pruned, calibration_data=calibration)
    row["onnxsim_finetuned"] = figures(fidelity_compare(tuned, dense, heldout))
    row["onnxsim_seconds"] = round(time.perf_counter() - start, 1)
    row["onnxsim_speedup"] = speedup(dense, tuned, {"rows": (1, 28, 28)})
    return row


def onnxsim_rows(dense: Path, recovery: Path, heldout: Path, target: float) -> list[dict]:
    from trained_wheels import onnxsim_row

    model = onnx.load(str(dense))
    x = np.load(recovery)["rows"]
    calibration = [{"rows": x[i:i + 8]} for i in range(0, 64, 8)]
    feeds = {"rows": np.load(heldout)["rows"]}
    return [{"mode": "onnxsim blocks", **block_row(model, calibration, target, feeds)},
            {"mode": "onnxsim wanda", **onnxsim_row(model, calibration, target, feeds, {"rows": (1, 28, 28)})}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=8, help="labelled epochs of the dense model")
    p.add_argument("--recovery", type=int, default=2, help="epochs of train --teacher")
    p.add_argument("--macs", type=float, default=0.5)
    p.add_argument("--scope", choices=["local", "global"], help="prune --scope (default: the command's)")
    p.add_argument("--no-onnxsim", action="store_true", help="leave onnxsim's rows out")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        labelled, recovery, heldout, x_test, y_test = arrays(folder)
        init, dense = folder / "init.onnx", folder / "dense.onnx"
        export(init)
        start = time.perf_counter()
        onnxprune("train", init, "--dataset", "npz", "--data-dir", labelled, "--no-normalize", "--epochs", args.epochs,
                  "-o", dense, "-q")
        print(f"dense: accuracy {accuracy(dense, x_test, y_test)} after {args.epochs} epochs "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        for mode in ("exact", "approximate"):
            pruned, recovered, report = (folder / f"{mode}{suffix}" for suffix in (".onnx", ".recovered.onnx", ".json"))
            onnxprune("prune", dense, "--structure", "channel", "--macs", args.macs, "--data", recovery,
                      "--best-effort", *(["--approximate"] if mode == "approximate" else []),
                      *(["--scope", args.scope] if args.scope else []), "-o", pruned,
                      "--report", report, "-q")
            pruning = json.loads(report.read_text())
            row = {"mode": mode, "scope": pruning["scope"],
                   "macs": round(pruning["macs"]["kept"] / pruning["macs"]["total"], 3),
                   "pruned": figures(pruned, dense, heldout, folder)}
            start = time.perf_counter()
            onnxprune("train", pruned, "--teacher", dense, "--dataset", "npz", "--data-dir", recovery,
                      "--no-normalize", "--epochs", args.recovery, "-o", recovered, "-q")
            row["recovery_seconds"] = round(time.perf_counter() - start, 1)
            row["recovered"] = figures(recovered, dense, heldout, folder)
            row["accuracy"] = {"dense": accuracy(dense, x_test, y_test), "pruned": accuracy(pruned, x_test, y_test),
                               "recovered": accuracy(recovered, x_test, y_test)}
            row["speedup"] = speedup(onnx.load(str(dense)), recovered, {"rows": (1, 28, 28)})
            print(json.dumps(row), flush=True)
            rows.append(row)
        if not args.no_onnxsim:
            for row in onnxsim_rows(dense, recovery, heldout, args.macs):
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
