"""Run the twin over onnx's backend node test cases and print passed / attempted / total per op.

    OMP_NUM_THREADS=1 python scripts/conformance.py [--op Conv] [--failures] [--float64]

The machinery (case loading, running, comparing, tolerances; what *attempted* and *passes* mean) lives
in tests/conformance_cases.py; tests/test_conformance.py holds the thresholds. This script prints the
table, and with --failures each case not passed with why. Exits 0 whatever the counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):  # the package, and tests/conformance_cases.py (a plain module, as in the tests)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

from conformance_cases import Outcome, load_cases, run_all, table  # noqa: E402


def report(outcomes: list[Outcome], seconds: float, failures: bool) -> None:
    rows = table(outcomes)
    width = max([len(op) for op in rows] + [2])
    print(f"{'op':<{width}}  passed  attempted  total")
    for op, (passed, attempted, total) in rows.items():
        flag = "" if passed == total else "  *"
        print(f"{op:<{width}}  {passed:6d}  {attempted:9d}  {total:5d}{flag}")
    passed = sum(o.passed for o in outcomes)
    attempted = sum(o.attempted for o in outcomes)
    full = sum(p == t for p, _, t in rows.values())
    print(f"\ntotal: {passed} passed / {attempted} attempted / {len(outcomes)} cases; "
          f"{full} of {len(rows)} ops pass every case ({seconds:.1f} s)")
    if failures:
        for o in outcomes:
            if not o.passed:
                kind = "FAIL" if o.attempted else "SKIP"
                print(f"{kind} {o.op:<{width}} {o.name}: {o.reason[:300]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", help="only the cases of this op type")
    parser.add_argument("--failures", action="store_true", help="list each case not passed, with why")
    parser.add_argument("--float64", action="store_true",
                        help="run the twin in float64 mode (float outputs compared at their own type's tolerance)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = load_cases(args.op)
    start = time.perf_counter()
    outcomes = run_all(cases, torch.float64 if args.float64 else torch.float32)
    report(outcomes, time.perf_counter() - start, args.failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
