"""Runs ONNX's backend node tests through einc's CPU target and judges the outputs.

The pieces, in the order a run uses them: load the cases that come with the
installed onnx (in memory for onnx >= 1.23, from files for older wheels); give
each case its op type and, for inputs that set a result's shape, a constant
(einc specialises shapes at compile time); group cases whose models are equal so
each model compiles once; run the groups in worker processes, each job under a
timeout, so a hang or crash costs one case, not the run; compare outputs with
the backend tests' own rule (shape, dtype, then `assert_allclose` with the
case's rtol/atol). The verdicts are checked against `expected_failures.txt` and
written to `results.json`, which `einc.tools.coverage` renders into the docs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).parent
EXPECTED_FAILURES = HERE / "expected_failures.txt"
RESULTS = HERE / "results.json"

WORKERS = 2
"""Worker processes: CI has 2 cores."""

TIMEOUT_S = 120.0
"""How long one compile, or one run of a compiled case, may take."""

SUBSET_BASE, SUBSET_EXPANDED = 2, 1
"""The subset `make test` runs: per op type, this many plain cases and function-body
(`_expanded`) variants, chosen by a fixed rule (see `subset`)."""

SUBSET_RULE = (
    f"per op type the first {SUBSET_BASE} plain cases and the first {SUBSET_EXPANDED} "
    "`_expanded` function-body variant(s), by name"
)

_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")

SHAPE_INPUTS: dict[str, tuple[str, ...]] = {
    **{op: ("axes",) for op in ("Squeeze", "Unsqueeze", "ReduceL1", "ReduceL2", "ReduceLogSum",
                               "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                               "ReduceProd", "ReduceSum", "ReduceSumSquare")},
    **{op: ("size",) for op in ("AffineGrid", "BlackmanWindow", "HammingWindow", "HannWindow")},
    "CenterCropPad": ("shape",),
    "Col2Im": ("image_shape", "block_shape"),
    "Compress": ("condition",),
    "ConstantOfShape": ("input",),
    "CumProd": ("axis",),
    "CumSum": ("axis",),
    "DFT": ("dft_length", "axis"),
    "Expand": ("shape",),
    "MaxUnpool": ("output_shape",),
    "MelWeightMatrix": ("num_mel_bins", "dft_length"),
    "OneHot": ("depth",),
    "Pad": ("pads", "axes"),
    "Range": ("start", "limit", "delta"),
    "Reshape": ("shape",),
    "Resize": ("scales", "sizes"),
    "Slice": ("starts", "ends", "axes", "steps"),
    "Split": ("split",),
    "STFT": ("frame_step", "frame_length"),
    "Tile": ("repeats",),
    "TopK": ("K",),
    "Upsample": ("scales",),
}
"""Inputs (by their schema names) that set a result's shape or the axes an op works on.

einc compiles for static shapes, so these are compiled as constants with the
case's values, as onnx-mlir's backend tests do with CONSTANT_INPUT; every other
input (data, indices, clip bounds, pad values, ...) stays a runtime input."""


# -- cases -------------------------------------------------------------------------------


@dataclass
class Case:
    """One node test: its model as einc compiles it, its feeds and expected outputs."""

    name: str
    op: str
    """The op type under test (`domain.Op` outside the default domain)."""
    model: onnx.ModelProto
    feeds: list[dict[str, Any]]
    """Runtime inputs of each data set, by graph input name."""
    expected: list[list[Any]]
    """Expected outputs of each data set, in graph output order."""
    output_names: list[str]
    constant_inputs: list[str] = field(default_factory=list)
    """Graph inputs compiled as constants (see SHAPE_INPUTS)."""
    rtol: float = 1e-3
    atol: float = 1e-7

    @property
    def expanded(self) -> bool:
        return bool(_EXPANDED.search(self.name))


def base_name(name: str) -> str:
    """`test_softmax_axis_0_expanded_ver18` -> `test_softmax_axis_0`."""
    return _EXPANDED.sub("", name)


def _read_proto(path: Path) -> Any:
    """A `.pb` of a data set as numpy: tensors only (sequences/optionals stay protos)."""
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def _as_array(value: Any) -> Any:
    """Data sets mix numpy arrays and TensorProtos; ONNX's runner reads both as numpy."""
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _data_sets(case: Any) -> tuple[onnx.ModelProto, list[tuple[list[Any], list[Any]]]]:
    """The model and data sets of a loader case: in memory (onnx >= 1.23) or files."""
    if case.model is not None:
        return case.model, [([_as_array(a) for a in i], [_as_array(a) for a in o]) for i, o in case.data_sets]
    root = Path(case.model_dir)
    sets = []
    for folder in sorted(root.glob("test_data_set_*")):
        ins = [_read_proto(p) for p in sorted(folder.glob("input_*.pb"), key=lambda p: int(p.stem[6:]))]
        outs = [_read_proto(p) for p in sorted(folder.glob("output_*.pb"), key=lambda p: int(p.stem[7:]))]
        sets.append((ins, outs))
    return onnx.load(str(root / "model.onnx")), sets


def _op_label(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _schema_input_names(node: onnx.NodeProto, model: onnx.ModelProto) -> list[str]:
    """The schema name of each of a node's inputs (the last formal input repeats)."""
    version = max((o.version for o in model.opset_import if o.domain == node.domain), default=1)
    try:
        formal = [i.name for i in onnx.defs.get_schema(node.op_type, version, node.domain).inputs]
    except onnx.defs.SchemaError:
        return []
    return [formal[min(n, len(formal) - 1)] for n in range(len(node.input))] if formal else []


def _freeze(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs in `values` are initializers."""
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    kept = [i for i in frozen.graph.input if i.name not in values]
    del frozen.graph.input[:]
    frozen.graph.input.extend(kept)
    frozen.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), n) for n, v in values.items())
    return frozen


def load_cases(names: Iterable[str] | None = None, strict: bool = False) -> list[Case]:
    """The node tests of the installed onnx, in name order (all, or those named).

    `strict` keeps every graph input a runtime input (no SHAPE_INPUTS constants).
    """
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow on purpose
        loaded = {c.name: c for c in load_model_tests(kind="node")}
    wanted = set(loaded)
    if names is not None:  # names or shell patterns (`test_attention_*`)
        patterns = list(names)
        unknown = [p for p in patterns if not fnmatch.filter(loaded, p)]
        if unknown:
            raise KeyError(f"no such node test: {', '.join(sorted(unknown))}")
        wanted = {n for p in patterns for n in fnmatch.filter(loaded, p)}
    base_nodes: dict[str, tuple[onnx.NodeProto, onnx.ModelProto]] = {}
    cases = []
    for name in sorted(wanted):
        model, sets = _data_sets(loaded[name])
        base = base_name(name)
        if base not in base_nodes:
            base_model = _data_sets(loaded[base])[0] if base != name else model
            base_nodes[base] = (base_model.graph.node[0], base_model)
        node, base_model = base_nodes[base]
        op = _op_label(node)
        initializers = {t.name for t in model.graph.initializer}
        graph_inputs = [i.name for i in model.graph.input if i.name not in initializers]
        shape_inputs = set() if strict else set(SHAPE_INPUTS.get(op, ()))
        freeze = [
            n for n, formal in zip(node.input, _schema_input_names(node, base_model))
            if formal in shape_inputs and n in graph_inputs
        ]
        feeds = [dict(zip(graph_inputs, ins)) for ins, _ in sets]
        if freeze and len(sets) == 1:
            model = _freeze(model, {n: feeds[0].pop(n) for n in freeze})
        else:
            freeze = []
        cases.append(
            Case(
                name=name,
                op=op,
                model=model,
                feeds=feeds,
                expected=[outs for _, outs in sets],
                output_names=[o.name for o in model.graph.output],
                constant_inputs=freeze,
                rtol=loaded[name].rtol,
                atol=loaded[name].atol,
            )
        )
    return cases


def subset(cases: Sequence[Case]) -> list[Case]:
    """The cases `make test` runs: per op type, the first SUBSET_BASE plain cases and
    SUBSET_EXPANDED function-body variants in name order. Fixed for an onnx version,
    and every op type of the suite (so every op einc lowers) is in it."""
    taken: dict[tuple[str, bool], int] = defaultdict(int)
    chosen = []
    for case in cases:
        key = (case.op, case.expanded)
        if taken[key] < (SUBSET_EXPANDED if case.expanded else SUBSET_BASE):
            taken[key] += 1
            chosen.append(case)
    return chosen


def model_key(model: onnx.ModelProto) -> str:
    """Equal for models that compile the same: names and doc strings are left out."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.name = copy.producer_name = copy.producer_version = copy.doc_string = ""
    for node in copy.graph.node:
        node.name = node.doc_string = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


# -- compiling and running (in the workers) ------------------------------------------------

Job = tuple[bytes, list[tuple[str, list[dict[str, Any]]]]]
"""A model (serialised) and the cases that share it: (name, feeds of each data set)."""

Outcome = tuple[str, Any]
"""("outputs", [outputs of each data set]) or ("error", reason)."""


def _first_line(text: str, limit: int = 240) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


_NODE_LISTS = (
    (re.compile(r"^(\d+ unsupported nodes? \(ops? .*? not supported by einc\)): .*"), r"\1"),
    (re.compile(r"^(1 unsupported node): '.*?' \((\S+)\)$"), r"\1 (\2)"),
)
"""einc's messages that list unsupported nodes, and the same without the node names,
which say nothing in a one-node test and would keep equal reasons apart."""


def error_reason(err: BaseException) -> str:
    """One line for a failure: an EincError's message (op and reason, without the
    file and node name, which say nothing here), else `Type: first line`."""
    from einc.diagnostics import EincError

    if isinstance(err, EincError):
        reason = _first_line(err.reason)
        for pattern, short in _NODE_LISTS:
            reason = pattern.sub(short, reason)
        return f"{err.op}: {reason}" if err.op else reason
    text = _first_line(str(err))
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def compile_and_run(job: Job) -> Iterator[tuple[str, Outcome]]:
    """Compile a job's model once, then run every case's data sets on it."""
    import einc

    model_bytes, runs = job
    try:
        compiled = einc.compile(onnx.load_from_string(model_bytes))
    except Exception as err:  # every compile failure is a verdict, never a crash
        reason = error_reason(err)
        for name, _ in runs:
            yield name, ("error", reason)
        return
    for name, feeds in runs:
        try:
            yield name, ("outputs", [compiled.run(f) for f in feeds])
        except Exception as err:
            yield name, ("error", "at run: " + error_reason(err))


def _serve(conn: Connection, work: Callable[[Any], Iterator[tuple[str, Outcome]]]) -> None:
    """A worker: one job at a time, one (case, outcome, seconds) message per case, then
    None. A case's seconds count from the previous message, so the first of a job's
    cases carries the compile."""
    warnings.simplefilter("ignore")
    while (job := conn.recv()) is not None:
        start = time.monotonic()
        for name, outcome in work(job):
            now = time.monotonic()
            conn.send((name, outcome, now - start))
            start = now
        conn.send(None)


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    busy: bool = False
    """A job was sent and its closing None has not come back yet."""
    waiting: list[str] = field(default_factory=list)
    """Cases of the current job without a result yet."""
    deadline: float = 0.0
    started: float = 0.0
    """When the worker's last message came (or its job was sent)."""


def run_jobs(
    jobs: Sequence[tuple[Any, list[str]]],
    work: Callable[[Any], Iterator[tuple[str, Outcome]]] = compile_and_run,
    workers: int = WORKERS,
    timeout: float = TIMEOUT_S,
) -> Iterator[tuple[str, Outcome, float]]:
    """Run (job, case names) pairs on `workers` processes; yield (case, outcome, seconds).

    Each message from a worker restarts its clock, so `timeout` bounds one compile
    or one run, not a whole job. A worker that times out is killed, one that dies
    is noted; either way its unfinished cases fail and a fresh worker goes on.
    """
    ctx = multiprocessing.get_context("spawn")
    pending = list(reversed(jobs))
    pool: list[_Worker] = []

    def start() -> _Worker:
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(theirs, work), daemon=True)
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def replace(worker: _Worker, reason: str) -> Iterator[tuple[str, Outcome, float]]:
        for name in worker.waiting:
            yield name, ("error", reason), time.monotonic() - worker.started
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.conn.close()
        pool[pool.index(worker)] = start()

    try:
        pool.extend(start() for _ in range(min(workers, len(jobs))))
        while pending or any(w.busy for w in pool):
            for worker in list(pool):
                if not worker.busy and pending:
                    job, names = pending.pop()
                    worker.busy, worker.waiting, worker.started = True, list(names), time.monotonic()
                    worker.deadline = worker.started + timeout
                    try:
                        worker.conn.send(job)
                    except OSError:
                        worker.process.join()
                        yield from replace(worker, f"worker crashed (exit code {worker.process.exitcode})")
            busy = [w for w in pool if w.busy]
            if not busy:
                continue
            ready = wait([w.conn for w in busy], max(0.0, min(w.deadline for w in busy) - time.monotonic()))
            for worker in busy:
                if worker.conn in ready:
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        worker.process.join()
                        yield from replace(worker, f"worker crashed (exit code {worker.process.exitcode})")
                        continue
                    if message is None:
                        worker.busy, worker.waiting = False, []  # a case the job skipped: "no result"
                        continue
                    name, outcome, seconds = message
                    if name in worker.waiting:
                        worker.waiting.remove(name)
                        yield name, outcome, seconds
                    worker.started = time.monotonic()
                    worker.deadline = worker.started + timeout
                elif time.monotonic() >= worker.deadline:
                    yield from replace(worker, f"timeout: no result within {timeout:.0f} s")
    finally:
        for worker in pool:
            if worker.process.is_alive():
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
                worker.process.join(1)
                if worker.process.is_alive():
                    worker.process.kill()
            worker.conn.close()


# -- judging -------------------------------------------------------------------------------


def compare(
    expected: Sequence[Any], got: dict[str, np.ndarray], names: Sequence[str], rtol: float, atol: float
) -> str | None:
    """None when the outputs match as ONNX's backend runner requires, else why not."""
    for name, want in zip(names, expected):
        if isinstance(want, np.generic):  # a scalar (a loss): compared as a 0-d tensor
            want = np.asarray(want)
        if not isinstance(want, np.ndarray):
            return f"output '{name}' is a {type(want).__name__}: only tensors are compared"
        if name not in got:
            return f"output '{name}' is missing"
        have = got[name]
        if have.shape != want.shape:
            return f"output '{name}' has shape {list(have.shape)}, expected {list(want.shape)}"
        if have.dtype != want.dtype:
            return f"output '{name}' has dtype {have.dtype}, expected {want.dtype}"
        if want.dtype == object:
            bad = np.asarray(have != want)
        else:
            tol = rtol
            if want.dtype.name == "bfloat16":
                tol, have, want = max(rtol, 2**-6), have.astype(np.float32), want.astype(np.float32)
            bad = ~np.isclose(have, want, rtol=tol, atol=atol, equal_nan=True)
        if bad.any():
            worst = ""
            if want.dtype.kind in "fc" or want.dtype.name == "bfloat16":
                with np.errstate(all="ignore"):
                    diff = np.abs(have.astype(np.float64) - want.astype(np.float64))[bad]
                nan = np.isnan(diff).all()
                worst = ", NaN mismatch" if nan else f", max abs error {np.nanmax(diff):.3g}"
            return f"output '{name}': {int(bad.sum())} of {bad.size} values differ{worst}"
    if len(got) != len(names):
        return f"{len(got)} outputs, expected {len(names)}"
    return None


def judge(case: Case, outcome: Outcome) -> str | None:
    """None when a case passes, else the one-line reason it fails."""
    kind, value = outcome
    if kind == "error":
        return value
    for n, (want, got) in enumerate(zip(case.expected, value)):
        try:
            reason = compare(want, got, case.output_names, case.rtol, case.atol)
        except Exception as err:  # outputs numpy cannot compare (exotic dtypes)
            reason = "comparing outputs: " + error_reason(err)
        if reason:
            return reason if len(case.expected) == 1 else f"data set {n}: {reason}"
    return None


@dataclass
class Run:
    """The verdicts of one run: case -> failure reason (None = pass), and its time."""

    cases: list[Case]
    failures: dict[str, str | None]
    seconds: float
    case_seconds: dict[str, float]
    """Per case: its run, and for the first case of a model its compile."""
    models: int
    """Distinct models compiled (cases with equal models share one compile)."""

    def __repr__(self) -> str:
        failed = sum(r is not None for r in self.failures.values())
        return f"Run({len(self.cases)} cases, {failed} failed, {self.models} models, {self.seconds:.0f} s)"


def run_cases(
    cases: Sequence[Case],
    workers: int = WORKERS,
    timeout: float = TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
) -> Run:
    """Compile each distinct model once (in workers) and judge every case."""
    start = time.monotonic()
    groups: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        groups[model_key(case.model)].append(case)
    jobs = [
        (
            (group[0].model.SerializeToString(), [(c.name, c.feeds) for c in group]),
            [c.name for c in group],
        )
        for group in groups.values()
    ]
    by_name = {c.name: c for c in cases}
    verdicts: dict[str, str | None] = {}
    seconds: dict[str, float] = {}
    for name, outcome, took in run_jobs(jobs, workers=workers, timeout=timeout):
        verdicts[name] = judge(by_name[name], outcome)
        seconds[name] = took
        if progress:
            progress(len(verdicts), len(cases))
    for case in cases:
        verdicts.setdefault(case.name, "no result")
    failures = {c.name: verdicts[c.name] for c in cases}
    return Run(list(cases), failures, time.monotonic() - start, seconds, len(jobs))


# -- the expected-failures list and the results file ----------------------------------------


def read_expected_failures(path: Path = EXPECTED_FAILURES) -> dict[str, str]:
    """`case_name  # reason` per line; blank lines and lines starting with # skipped."""
    entries = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition("#")
            entries[name.strip()] = reason.strip()
    return entries


HEADER = """\
# ONNX backend node tests that einc is expected to fail, one `case  # reason` a line.
# A case that fails and is not listed is a regression; a listed case that passes
# must come off the list. Regenerate after a change with
#   .venv/bin/python -m tests.conformance --update          (all cases)
#   .venv/bin/python -m tests.conformance --subset --update (the subset `make test` runs)
"""


def write_expected_failures(entries: dict[str, str], path: Path = EXPECTED_FAILURES) -> None:
    lines = [f"{name}  # {reason}" for name, reason in sorted(entries.items())]
    path.write_text(HEADER + "\n".join(lines) + "\n")


def mismatches(run: Run, expected: dict[str, str]) -> tuple[list[str], list[str]]:
    """(regressions: failing but not listed, unexpected passes: listed but passing)."""
    regressions = [n for n, why in run.failures.items() if why is not None and n not in expected]
    passes = [n for n, why in run.failures.items() if why is None and n in expected]
    return regressions, passes


def updated_expected_failures(run: Run, expected: dict[str, str]) -> dict[str, str]:
    """The list with every case of `run` set to its verdict; other entries kept."""
    entries = {n: r for n, r in expected.items() if n not in run.failures}
    entries.update({n: r for n, r in run.failures.items() if r is not None})
    return entries


def results_record(run: Run) -> dict[str, Any]:
    """What `results.json` keeps of a full run: the verdict of every case."""
    return {
        "onnx": onnx.__version__,
        "cases": {
            c.name: {
                "op": c.op,
                "passed": run.failures[c.name] is None,
                **({"reason": run.failures[c.name]} if run.failures[c.name] is not None else {}),
                **({"constant_inputs": c.constant_inputs} if c.constant_inputs else {}),
            }
            for c in run.cases
        },
    }


def write_results(record: dict[str, Any], timing: tuple[str, dict[str, Any]], path: Path = RESULTS) -> None:
    """Write `record` (if any) and the timing of this run, keeping the other run's
    timing; one line per case, so a diff shows which cases changed."""
    old = json.loads(path.read_text()) if path.exists() else {}
    new = {**old, **record, "timing": {**old.get("timing", {}), timing[0]: timing[1]}}
    cases = new.pop("cases", {})
    lines = [f"  {json.dumps(n)}: {json.dumps(c, sort_keys=True)}" for n, c in sorted(cases.items())]
    text = json.dumps({**new, "cases": "@CASES@"}, indent=1, sort_keys=True)
    path.write_text(text.replace('"@CASES@"', "{\n" + ",\n".join(lines) + "\n }") + "\n")

