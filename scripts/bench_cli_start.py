"""How long `onnxprune` takes to answer help and usage errors (issue 10: target under 0.5 s here).

Runs each command line N times through the installed entry point and prints the median wall and CPU
time (user + sys of the child), and whether torch got imported on the way.

    python scripts/bench_cli_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXE = str(Path(sys.executable).parent / "onnxprune")
LINES = [["--help"], ["prune", "--help"], ["train", "--help"], ["verify", "--help"], ["--version"],
         ["prune"], ["prune", "missing.onnx", "--compression", "-1"]]
CHECK = ("import sys; from onnxprune.cli import main\n"
         "try: main({args!r})\nexcept SystemExit: pass\n"
         "print('torch' in sys.modules, file=sys.stderr)")


def timed(args: list[str]) -> tuple[float, float]:
    before = os.times()
    start = time.perf_counter()
    subprocess.run([EXE, *args], capture_output=True)
    wall = time.perf_counter() - start
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def imports_torch(args: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-c", CHECK.format(args=args)], capture_output=True, text=True)
    return done.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    print(f"{'command':45} {'wall median':>12} {'CPU median':>11}  torch imported")
    for args in LINES:
        samples = [timed(args) for _ in range(runs)]
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        print(f"{'onnxprune ' + ' '.join(args):45} {wall:10.3f} s {cpu:9.3f} s  {imports_torch(args)}")


if __name__ == "__main__":
    main()
