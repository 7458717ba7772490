"""Fuzzing `onnxprune prune` with mutated small models (issue 6); the machinery is tests/fuzzing.py.

Hypothesis draws a base model (a Gemm MLP or a small Conv/BN net), one to three mutations (flipped
bytes, truncation, dropped nodes, changed dims / attributes / types / opsets, removed initializers,
rewired inputs, poisoned weights, swapped activations, inserted pass-through nodes) and a seed, and
every example must keep the contract: exit 0 or 2, no traceback, input byte-identical, nothing left
behind but the output and report on success, a written model that loads, a report that tells the
truth. CI runs a bounded number in-process (CliRunner: no start-up cost) plus a few through the
installed command; `python scripts/fuzz.py --examples 5000` runs the long version.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import BASES, DEEP, MUTATORS, draw, fuzz_case, run_subprocess

mutations = st.one_of(
    st.lists(st.sampled_from(sorted(MUTATORS)), min_size=1, max_size=3),
    st.lists(st.sampled_from(DEEP), min_size=1, max_size=3),  # mostly loadable: reaches the engine
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), names=mutations, seed=st.integers(0, 2**31 - 1))
def test_fuzz_in_process(tmp_path_factory, base, names, seed):
    folder = tmp_path_factory.mktemp("fuzz")
    outcome = fuzz_case(folder, base, names, seed)
    assert not outcome.problems, f"{base} {names} seed={seed}: {outcome.problems}\n{outcome.stderr}"


@pytest.mark.parametrize("example", range(4))
def test_fuzz_subprocess(tmp_path, example):
    """The same contract through the installed command (start-up, real exit codes, real streams)."""
    base, names, seed = draw(random.Random(1000 + example))
    outcome = fuzz_case(tmp_path, base, names, seed, runner=run_subprocess)
    assert not outcome.problems, f"{base} {names} seed={seed}: {outcome.problems}\n{outcome.stderr}"


def test_fuzz_reaches_the_engine(tmp_path_factory):
    """The fuzz must not stop at the loader: a fair share of examples prunes successfully, and many
    are refused (a fuzz where everything passes, or nothing does, tests little)."""
    rng, codes = random.Random(7), []
    for _ in range(40):
        base, names, seed = draw(rng)
        outcome = fuzz_case(tmp_path_factory.mktemp("reach"), base, names, seed)
        assert not outcome.problems, f"{base} {names} seed={seed}: {outcome.problems}\n{outcome.stderr}"
        codes.append(outcome.code)
    assert codes.count(0) >= 5 and codes.count(2) >= 5, codes
