"""Conformance machinery (issue 11): the twin over onnx's backend node test cases, compared with their
numpy references.

Each case (onnx.backend.test.case.node.collect_testcases) is one op: a single-node model, or the
op's function body expanded into several nodes (`*_expanded*` cases, counted under the op they
expand). A case is *attempted* when the twin has a handler for every node of its graph (subgraphs
included) at the case's opsets and torch can hold every value it feeds or expects (not: strings,
float4e2m1); it *passes* when the twin builds, runs in float32 mode and every output matches the
numpy reference (dtype, shape, and values within the tolerance of the dtype: see TOLERANCES).

A test-support module like zoo.py and fuzzing.py: tests import it as a plain module
(`from conformance_cases import ...`; pytest puts tests/ on sys.path). tests/test_conformance.py holds
the thresholds; scripts/conformance.py is the command-line runner that prints the per-op table.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.twin import Twin
from onnxprune.twin import registry
from onnxprune.twin.tensors import FLOAT_TYPES, ONNX_TYPES, to_numpy, to_torch

# (rtol, atol) by expected dtype; other types compare exactly. The references are numpy results; the
# twin uses torch kernels that round differently (vectorized exp/log/erf, other summation orders).
# float32: eps is 1.2e-7, and reductions over 10^2-10^3 elements or libm-vs-SLEEF transcendental
# functions differ by up to ~10^2 ulp, hence rtol 1e-4; atol 1e-5 covers results near 0 that come from
# cancelling O(1) terms (x - mean). float16 / bfloat16: a few ulp of their eps (9.8e-4, 7.8e-3).
# float64: the same reasoning at eps 2.2e-16. float8: a cast's rounding is exact (0, 0).
TOLERANCES = {
    "float64": (1e-9, 1e-12),
    "float32": (1e-4, 1e-5),
    "float16": (4e-3, 1e-3),
    "bfloat16": (3e-2, 1e-2),
    **{name: (0.0, 0.0) for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                                     "float8_e8m0fnu")},
}
# Some generators type their expected values as 4-decimal literals (GridSample's bicubic, RoiAlign):
# such a reference is only known to +-5e-5 plus the float32 error of whatever produced it
# (onnxruntime itself is 8.4e-5 off RoiAlign's), so it is compared with atol 1e-4.
LITERAL_ATOL = 1e-4


def _four_decimal_literal(want: np.ndarray) -> bool:
    """Every value a multiple of 1e-4, and not all integers (float32 / float64 references only)."""
    finite = want[np.isfinite(want)].astype(np.float64)
    if want.dtype.name not in ("float32", "float64") or finite.size == 0 or np.all(finite == np.round(finite)):
        return False
    return np.allclose(finite, np.round(finite, 4), rtol=1e-6, atol=1e-7)  # float32 keeps ~7 digits


# Ops whose outputs are random draws: their references come from numpy's random stream, which no other
# generator reproduces; a failure of theirs is labelled as such.
RANDOM_OPS = {"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
RANDOM_CASES = ("test_training_dropout",)  # Dropout with training_mode: a random mask
EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


@dataclass
class Outcome:
    op: str
    name: str
    attempted: bool
    passed: bool
    reason: str = ""


def load_cases(op: str | None = None) -> list:
    """The backend node cases (generated once per process), optionally only those testing `op`."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        cases = list(collect_testcases(None))
    if op is None:
        return cases
    ops = case_ops(cases)
    return [case for case in cases if ops[case.name] == op]


def case_ops(cases) -> dict[str, str]:
    """case name -> the op type it tests (expanded cases: their base case's)."""
    direct = {case.name: case.model.graph.node[0].op_type for case in cases if not EXPANDED.search(case.name)}
    return {case.name: direct.get(EXPANDED.sub("", case.name), "?") for case in cases}


def to_value(value):
    """A case's input or output as the twin's runtime value (tensor, list of tensors, or None)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [to_value(v) for v in value]
    if isinstance(value, onnx.TensorProto):
        value = numpy_helper.to_array(value)
    return to_torch(np.asarray(value))


def expected_array(value):
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def mismatch(expected, actual, promoted: bool = False) -> str:
    """Why `actual` is not `expected` ('' when it is). `promoted`: the twin ran in float64 mode, where a
    float output is float64 whatever its ONNX type; its values are compared at the expected type's
    tolerance."""
    if expected is None or actual is None:
        return "" if expected is None and actual is None else "optional presence differs"
    if isinstance(expected, list):
        if not isinstance(actual, (list, tuple)) or len(actual) != len(expected):
            return "sequence length differs"
        return next((m for e, a in zip(expected, actual) if (m := mismatch(e, a, promoted))), "")
    if not isinstance(actual, torch.Tensor):
        return f"got {type(actual).__name__}, not a tensor"
    want = expected_array(expected)
    want_type, got_type = helper.np_dtype_to_tensor_dtype(want.dtype), ONNX_TYPES[actual.dtype]
    if got_type != want_type and not (promoted and got_type == TensorProto.DOUBLE and want_type in FLOAT_TYPES):
        return f"type {helper.tensor_dtype_to_string(got_type)}, expected {helper.tensor_dtype_to_string(want_type)}"
    got = to_numpy(actual)
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if want.dtype.name not in TOLERANCES:  # integers, bools: exact
        return "" if np.array_equal(got.astype(want.dtype), want) else "values differ"
    rtol, atol = TOLERANCES[want.dtype.name]
    if _four_decimal_literal(want):
        atol = max(atol, LITERAL_ATOL)
    got, want = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return "NaN positions differ"
    ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if ok.all():
        return ""
    return f"{(~ok).sum()} of {ok.size} values differ (max abs err {np.abs(got - want)[~ok].max():.3g})"


def handled(graph: onnx.GraphProto, opsets: dict[str, int]) -> bool:
    """Whether the twin has a handler for every node of the graph (subgraphs included)."""
    for node in graph.node:
        domain = registry.canonical_domain(node.domain)
        if registry.lookup(node.op_type, domain, opsets.get(domain, 0)) is None:
            return False
        graphs = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
        graphs += [g for a in node.attribute for g in a.graphs]
        if not all(handled(g, opsets) for g in graphs):
            return False
    return True


def untranslatable(case) -> str:
    """The first type among the case's values that torch cannot hold ('' when there is none)."""
    for inputs, outputs in case.data_sets:
        for value in list(inputs) + list(outputs):
            try:
                to_value(value)
            except TypeError as exc:
                return str(exc)
    return ""


def run_case(case, op: str, dtype: torch.dtype = torch.float32) -> Outcome:
    opsets = {registry.canonical_domain(o.domain): o.version for o in case.model.opset_import}
    outcome = Outcome(op, case.name, handled(case.model.graph, opsets), False)
    if outcome.attempted and (why := untranslatable(case)):
        outcome.attempted, outcome.reason = False, why
    if not outcome.attempted:
        outcome.reason = outcome.reason or "unsupported op"
        return outcome
    try:
        outcome.reason = _first_mismatch(case, dtype)
    except OnnxPruneError as exc:
        outcome.reason = str(exc)
    except Exception as exc:  # noqa: BLE001 (a crash is a failed case, reported with its cause)
        outcome.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    outcome.passed = not outcome.reason
    if not outcome.passed and (op in RANDOM_OPS or case.name.startswith(RANDOM_CASES)):
        outcome.reason = f"random draws differ from numpy's: {outcome.reason}"
    return outcome


def _first_mismatch(case, dtype: torch.dtype) -> str:
    twin = Twin(case.model, dtype=dtype)
    names = [v.name for v in case.model.graph.input]
    for inputs, outputs in case.data_sets:
        got = list(twin.run({n: to_value(v) for n, v in zip(names, inputs)}).values())
        for expected, actual in zip(outputs, got):
            if why := mismatch(expected, actual, promoted=dtype == torch.float64):
                return why
    return ""


def run_all(cases, dtype: torch.dtype = torch.float32) -> list[Outcome]:
    ops = case_ops(cases)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [run_case(case, ops[case.name], dtype) for case in cases]


def table(outcomes: list[Outcome]) -> dict[str, tuple[int, int, int]]:
    """op -> (passed, attempted, total)."""
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for o in outcomes:
        row = rows[o.op]
        row[0] += o.passed
        row[1] += o.attempted
        row[2] += 1
    return {op: tuple(row) for op, row in sorted(rows.items())}
