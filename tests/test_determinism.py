"""Same input + same --seed gives a byte-identical output file, on CPU, across processes (issue 6).

Each run is a separate `onnxprune` process with a different PYTHONHASHSEED, so nothing may depend on
set or dict-of-str ordering, and the runs overlap in threads. The report records the versions that
produced the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from fuzzing import cnn

EXE = Path(sys.executable).parent / "onnxprune"
VOLATILE = {"seconds", "scoring_seconds", "seconds_per_iteration", "forward_backward_seconds", "output", "input"}  # timings; paths (hashes compared apart)

RUNS = {  # name -> (extra options, seed, PYTHONHASHSEED)
    "synflow_a": (["--method", "synflow", "--iterations", "5"], 0, "1"),
    "synflow_b": (["--method", "synflow", "--iterations", "5"], 0, "2"),
    "rand_a": (["--method", "rand"], 3, "1"),
    "rand_b": (["--method", "rand"], 3, "2"),
    "rand_other_seed": (["--method", "rand"], 4, "1"),
    "snip_a": (["--method", "snip", "--data", "{data}", "--batch-size", "8", "--data-batches", "2"], 5, "1"),
    "snip_b": (["--method", "snip", "--data", "{data}", "--batch-size", "8", "--data-batches", "2"], 5, "2"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[bytes, dict]]:
    folder = tmp_path_factory.mktemp("determinism")
    model = folder / "model.onnx"
    model.write_bytes(cnn(seed=1).SerializeToString())
    data = folder / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.integers(0, 255, (64, 1, 8, 8), dtype=np.uint8), y_train=rng.integers(0, 3, 64))

    def run(name: str) -> tuple[bytes, dict]:
        extra, seed, hash_seed = RUNS[name]
        out, report = folder / f"{name}.onnx", folder / f"{name}.json"
        args = ["prune", str(model), "-o", str(out), "--report", str(report), "--compression", "1",
                "--seed", str(seed), "--device", "cpu", "--quiet", *[a.format(data=data) for a in extra]]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED=hash_seed)
        proc = subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return out.read_bytes(), json.loads(report.read_text())

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(RUNS, pool.map(run, RUNS)))


def _stable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


@pytest.mark.parametrize("method", ["synflow", "rand", "snip"])
def test_same_seed_same_bytes(runs, method):
    (bytes_a, report_a), (bytes_b, report_b) = runs[f"{method}_a"], runs[f"{method}_b"]
    assert bytes_a == bytes_b
    assert _stable(report_a) == _stable(report_b)
    assert report_a["output"]["sha256"] == report_b["output"]["sha256"]
    assert report_a["input"]["sha256"] == report_b["input"]["sha256"]


def test_the_seed_matters(runs):
    """Random pruning with another seed writes another file (so the equality above is not vacuous)."""
    assert runs["rand_a"][0] != runs["rand_other_seed"][0]


def test_report_records_versions(runs):
    report = runs["synflow_a"][1]
    assert report["onnxprune_version"] == metadata.version("onnxprune")
    versions = report["versions"]
    installed = {"onnx": "onnx", "torch": "torch", "numpy": "numpy", "onnxruntime": "onnxruntime-gpu"}
    for key, package in installed.items():  # local tags (torch's "+cu132") are not in the metadata
        assert versions[key].split("+")[0] == metadata.version(package).split("+")[0], key
    assert report["seed"] == 0 and report["device"] == "cpu"
