"""Writes docs/onnx-coverage.md: which ONNX ops einc lowers, and how many of ONNX's
backend node tests pass, per op.

    python -m einc.tools.coverage > docs/onnx-coverage.md

The lowered ops come from the code; the conformance table from
`tests/conformance/results.json`, which `make conformance` writes. Reading a
checked-in file keeps this fast and deterministic (the doc test runs it).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import onnx

from einc.passes.onnx_to_ein import FAMILIES

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "tests" / "conformance" / "results.json"
NOT_LOWERED = "not lowered"
TOP_REASONS = 15


def load_results(path: Path = RESULTS) -> dict[str, Any] | None:
    """The last conformance run's record, or None where there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def op_families() -> dict[str, str]:
    """Op type -> the einc family that lowers it."""
    return {op: family for family, table in FAMILIES.items() for op in table}


def tally(cases: dict[str, dict[str, Any]], key: str, families: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(passed, cases) per op (`key="op"`) or per family (`key="family"`), sorted."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case in cases.values():
        group = case["op"] if key == "op" else families.get(case["op"], NOT_LOWERED)
        counts[group][0] += case["passed"]
        counts[group][1] += 1
    return {g: (p, n) for g, (p, n) in sorted(counts.items())}


def top_reasons(cases: dict[str, dict[str, Any]], limit: int = TOP_REASONS) -> list[tuple[str, int]]:
    """The most common failure reasons, with how many cases each fails."""
    return Counter(c["reason"] for c in cases.values() if not c["passed"]).most_common(limit)


def _rate(passed: int, total: int) -> str:
    return f"{100 * passed / total:.1f}%" if total else "-"


def _cell(text: str, limit: int = 110) -> str:
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def _timing(results: dict[str, Any]) -> list[str]:
    timing = results.get("timing", {})
    lines = []
    if "full" in timing:
        t = timing["full"]
        lines.append(
            f"The full run (`make conformance`, {t['cases']} cases, {t['models']} distinct models "
            f"compiled) took {t['seconds']:.0f} s with {t['workers']} workers on {t['cpus']} CPUs."
        )
    if "subset" in timing:
        t = timing["subset"]
        lines.append(
            f"`make test` runs a fixed subset (`tests/conformance/test_node_subset.py`: "
            f"{t['rule']}; {t['cases']} cases), which took {t['seconds']:.0f} s with {t['workers']} workers on {t['cpus']} CPUs."
        )
    return lines


def conformance(results: dict[str, Any]) -> list[str]:
    """The conformance section: totals, per family, per op, top failure reasons."""
    cases = results["cases"]
    families = results.get("families", {})
    passed = sum(c["passed"] for c in cases.values())
    constant = sum(1 for c in cases.values() if c.get("constant_inputs"))
    lines = [
        "## Conformance: ONNX backend node tests",
        "",
        f"`make conformance` runs the {len(cases)} node tests of onnx {results['onnx']} "
        "through the CPU target and compares every output with the expected one as ONNX's "
        "backend runner does (same shape and dtype, then rtol 1e-3, atol 1e-7). Failures are "
        "listed with their reasons in `tests/conformance/expected_failures.txt`; CI fails on a "
        "regression and on an unexpected pass. Results: `tests/conformance/results.json`.",
        "",
        f"**{passed} of {len(cases)} cases pass ({_rate(passed, len(cases))}).**",
        "",
        *_timing(results),
        "",
        "einc specialises shapes at compile time, so inputs that set a result's shape or the "
        "axes an op works on (Reshape's `shape`, Slice's `starts`/`ends`/`axes`/`steps`, the "
        "`axes` of Squeeze, Unsqueeze and the reductions, Pad's `pads`, ...: `SHAPE_INPUTS` in "
        f"`tests/conformance/harness.py`) are compiled as constants ({constant} cases); every "
        "other input is a runtime input.",
        "",
        "| family | passed | cases | rate |",
        "| --- | --- | --- | --- |",
    ]
    for family, (p, n) in tally(cases, "family", families).items():
        lines.append(f"| {family} | {p} | {n} | {_rate(p, n)} |")
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for c in cases.values():
        if not c["passed"]:
            reasons[c["op"]][c["reason"]] += 1
    lines += ["", "| op | family | passed | cases | most common failure |", "| --- | --- | --- | --- | --- |"]
    for op, (p, n) in tally(cases, "op", families).items():
        common = _cell(reasons[op].most_common(1)[0][0]) if reasons[op] else ""
        lines.append(f"| {op} | {families.get(op, '')} | {p} | {n} | {common} |")
    lines += ["", "The most common failure reasons:", "", "| cases | reason |", "| --- | --- |"]
    lines += [f"| {count} | {_cell(reason, 200)} |" for reason, count in top_reasons(cases)]
    return lines + [""]


def render(results: dict[str, Any] | None = None) -> str:
    lowered = {op for table in FAMILIES.values() for op in table}
    default_domain = sorted(
        {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == "" and not s.deprecated}
    )
    lines = [
        "# ONNX coverage",
        "",
        "Generated by `python -m einc.tools.coverage > docs/onnx-coverage.md`; do not edit.",
        "",
        f"einc lowers {len(lowered)} of the {len(default_domain)} op types of the default domain "
        f"known to onnx {onnx.__version__}. Each lowering is tested against onnxruntime in "
        "`tests/unit/test_onnx_to_ein.py`.",
        "",
        "| family | op types |",
        "| --- | --- |",
    ]
    for family, table in FAMILIES.items():
        if table:
            lines.append(f"| {family} (`einc/passes/onnx_to_ein/{family}.py`) | {', '.join(sorted(table))} |")
    missing = [op for op in default_domain if op not in lowered]
    lines += ["", f"Not lowered yet ({len(missing)}): {', '.join(missing)}.", ""]
    results = results if results is not None else load_results()
    if results is not None:
        lines += conformance(results)
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
