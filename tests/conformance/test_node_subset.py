"""ONNX backend node tests in `make test`: a fixed subset (every op type of the suite,
so every op einc lowers) must match expected_failures.txt. `make conformance` runs
all of them the same way (python -m tests.conformance)."""

from __future__ import annotations

import pytest

from einc.passes.onnx_to_ein import LOWERINGS
from tests.conformance import harness

UPDATE = ".venv/bin/python -m tests.conformance --subset --update"


@pytest.fixture(scope="module")
def cases() -> list[harness.Case]:
    return harness.load_cases()


@pytest.fixture(scope="module")
def subset_run(cases: list[harness.Case]) -> harness.Run:
    return harness.run_cases(harness.subset(cases))


def test_node_subset_matches_expected_failures(subset_run: harness.Run):
    regressions, passes = harness.mismatches(subset_run, harness.read_expected_failures())
    lines = [f"  {n}  # {subset_run.failures[n]}" for n in regressions]
    lines += [f"  {n}  # passes now: remove it from the list" for n in passes]
    if lines:
        pytest.fail(
            f"{len(regressions)} node tests fail that {harness.EXPECTED_FAILURES.name} does not list "
            f"(regressions) and {len(passes)} listed ones pass:\n" + "\n".join(lines) +
            f"\nFix the regressions; accept the rest with `{UPDATE}` (or `--update` for all "
            "cases), then `make conformance` refreshes results.json and docs/onnx-coverage.md.",
            pytrace=False,
        )


def test_subset_covers_every_lowered_op(cases: list[harness.Case]):
    in_suite = {c.op for c in cases}
    in_subset = {c.op for c in harness.subset(cases)}
    assert in_subset == in_suite
    assert in_suite & set(LOWERINGS) <= in_subset


def test_expected_failures_list_known_cases_in_order(cases: list[harness.Case]):
    listed = harness.read_expected_failures()
    names = [line.split("#")[0].strip() for line in harness.EXPECTED_FAILURES.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert names == sorted(set(names)), "expected_failures.txt: sorted, each case once"
    unknown = set(listed) - {c.name for c in cases}
    assert not unknown, f"expected_failures.txt lists cases onnx does not have: {sorted(unknown)}"
    assert all(listed.values()), "every expected failure needs its reason"


def test_shape_inputs_are_compiled_as_constants(cases: list[harness.Case]):
    by_name = {c.name: c for c in cases}
    reshape = by_name["test_reshape_extended_dims"]
    assert reshape.constant_inputs == ["shape"]
    assert "shape" not in reshape.feeds[0]
    assert [t.name for t in reshape.model.graph.initializer] == ["shape"]
    clip = by_name["test_clip"]  # bounds are data: they stay runtime inputs
    assert clip.constant_inputs == [] and set(clip.feeds[0]) == {"x", "min", "max"}
