"""Fuzz `onnxprune prune` with mutated small models and check the bad-input contract on every case.

    OMP_NUM_THREADS=1 python scripts/fuzz.py [--examples 500] [--seed 0] [--subprocess]

The contract (issue 6): exit 0 or 2 (1 is an internal error: a bug to fix), never a traceback, the
input file byte-identical, no partial output or temporary file left in the folder, and a success
writes a model that loads (our checks and onnxruntime) whenever the input did.
The machinery (models, mutations, contract checks) lives in tests/fuzzing.py; tests/test_fuzz.py runs
a bounded number of these examples in CI, this script runs longer ones and prints every failing case
(the mutation, the command, the stderr) so it can be reproduced.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):  # the package, and tests/fuzzing.py (a plain module, as in the tests)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fuzzing import draw, fuzz_case, run_inprocess, run_subprocess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subprocess", action="store_true", help="run the installed command (slower)")
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    failures, codes, start = 0, {}, time.time()
    for i in range(opts.examples):
        base, names, seed = draw(rng)
        with tempfile.TemporaryDirectory() as tmp:
            outcome = fuzz_case(Path(tmp), base, names, seed, run_subprocess if opts.subprocess else run_inprocess)
        codes[outcome.code] = codes.get(outcome.code, 0) + 1
        if outcome.problems:
            failures += 1
            print(f"FAIL #{i} base={base} mutations={names} seed={seed}: {outcome.problems}")
            print("   ", (outcome.stderr.strip().splitlines() or [""])[-1][:300])
    print(f"{opts.examples} examples in {time.time() - start:.0f} s; exit codes {codes}; {failures} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
