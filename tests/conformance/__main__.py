"""`python -m tests.conformance`: run the ONNX node tests through einc and report.

    python -m tests.conformance                  # all cases: results.json, docs, check
    python -m tests.conformance --subset         # the cases `make test` runs
    python -m tests.conformance --update         # also rewrite expected_failures.txt
    python -m tests.conformance --cases test_abs test_add   # a few, nothing written

Exits 1 when a case fails that expected_failures.txt does not list, or passes
while listed (unless --update).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

from tests.conformance import harness


def _report(run: harness.Run, families: dict[str, str]) -> None:
    from einc.tools.coverage import NOT_LOWERED, tally, top_reasons

    cases = {
        c.name: {"op": c.op, "passed": run.failures[c.name] is None, "reason": run.failures[c.name]}
        for c in run.cases
    }
    passed = sum(c["passed"] for c in cases.values())
    print(f"\n{passed} of {len(cases)} cases pass ({100 * passed / max(1, len(cases)):.1f}%), "
          f"{run.models} models compiled, {run.seconds:.0f} s")
    for family, (p, n) in tally(cases, "family", families).items():
        print(f"  {family:<12} {p:5} / {n:<5} {100 * p / n:5.1f}%")
    ops = tally(cases, "op", families)
    lowered = {op: pn for op, pn in ops.items() if families.get(op, NOT_LOWERED) != NOT_LOWERED}
    print(f"  lowered ops: {sum(p for p, _ in lowered.values())} / {sum(n for _, n in lowered.values())}")
    print("\nmost common failure reasons:")
    for reason, count in top_reasons(cases, 25):
        print(f"  {count:5}  {reason}")
    slow = sorted(run.case_seconds.items(), key=lambda kv: -kv[1])[:8]
    print("\nslowest cases: " + ", ".join(f"{n} {s:.1f} s" for n, s in slow))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(f"largest worker's peak memory: {peak} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--subset", action="store_true", help="only the subset `make test` runs")
    which.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases (names or shell patterns); writes nothing")
    parser.add_argument("--update", action="store_true", help="rewrite expected_failures.txt for the cases run")
    parser.add_argument("--strict", action="store_true",
                        help="keep shape-setting inputs runtime inputs too; writes nothing")
    parser.add_argument("--workers", type=int, default=harness.WORKERS)
    parser.add_argument("--timeout", type=float, default=harness.TIMEOUT_S, help="seconds per compile or run")
    args = parser.parse_args(argv)
    if args.strict and args.update:
        parser.error("--strict runs are for measuring: they update nothing")

    from einc.passes.onnx_to_ein import FAMILIES

    families = {op: family for family, table in FAMILIES.items() for op in table}
    cases = harness.load_cases(args.cases, strict=args.strict)
    if args.subset:
        cases = harness.subset(cases)
    width = len(str(len(cases)))

    def progress(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            print(f"[{done:{width}}/{total}]", file=sys.stderr, flush=True)

    run = harness.run_cases(cases, workers=args.workers, timeout=args.timeout, progress=progress)
    _report(run, families)

    expected = harness.read_expected_failures()
    regressions, passes = harness.mismatches(run, expected)
    if not args.cases and not args.strict:
        mode = "subset" if args.subset else "full"
        timing = {"cases": len(cases), "models": run.models, "seconds": round(run.seconds),
                  "workers": args.workers, "cpus": os.cpu_count()}
        if args.subset:
            timing["rule"] = harness.SUBSET_RULE
        record = {} if args.subset else {**harness.results_record(run), "families": families}
        harness.write_results(record, (mode, timing))
        from einc.tools.coverage import ROOT, render

        (ROOT / "docs" / "onnx-coverage.md").write_text(render())
        print(f"\nwrote {harness.RESULTS.relative_to(ROOT)} and docs/onnx-coverage.md")
    if args.update and not args.strict:
        harness.write_expected_failures(harness.updated_expected_failures(run, expected))
        print(f"rewrote {harness.EXPECTED_FAILURES.name}: {len(regressions)} added, {len(passes)} removed")
        return 0
    for title, names in (("regressions (fail, not in expected_failures.txt)", regressions),
                         ("unexpected passes (listed in expected_failures.txt)", passes)):
        if names:
            print(f"\n{len(names)} {title}:")
            for name in names:
                print(f"  {name}  # {run.failures[name] or 'passes'}")
    if regressions or passes:
        print("\nrun `.venv/bin/python -m tests.conformance --update` to accept them")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
