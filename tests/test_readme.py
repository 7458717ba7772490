"""The README's two commands, in order: command 1 (prune the shipped LeNet-5) must be re-runnable and
must not change what command 2 (the tests) sees. Command 1 writes models/zoo/lenet5.pruned.onnx, next
to the committed zoo; the zoo tests once globbed that folder and then tested the output as a model."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import onnx

import zoo

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "onnxprune"


def readme_command_1() -> list[str]:
    """The `onnxprune ...` part of README command 1, run with this venv's installed command."""
    text = (ROOT / "README.md").read_text()
    line = next(l for l in text.splitlines() if "onnxprune prune" in l and "&&" in l)
    tail = line[line.index("onnxprune prune"):]
    return [str(EXE), *shlex.split(re.split(r"\s*(?:&&|;|\|)\s*", tail)[0])[1:]]


def test_readme_command_1_reruns_then_zoo_tests_pass():
    command = readme_command_1()
    output = ROOT / "models" / "zoo" / "lenet5.pruned.onnx"
    for attempt in (1, 2):  # a user runs it again: it must not fail on its own earlier output
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"run {attempt}: {done.stderr}"
        assert output.exists()
    # Command 2 runs the test selection that globbed the zoo: in this order it must still pass.
    selection = ["tests/test_twin_models.py::test_zoo_float64_is_exact",
                 "tests/test_cli_prune.py::test_zoo_matrix"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "lenet5",
                           *selection], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\b\d+ passed", done.stdout)
    assert "lenet5.pruned" not in " ".join(zoo.zoo_names())
    onnx.checker.check_model(onnx.load(output))
