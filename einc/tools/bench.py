"""`einc bench MODEL [--against onnxruntime]`: einc beside onnxruntime, in one run.

For one model: compile time cold (no cache) and cached, then the median
latency of einc and of onnxruntime (CPUExecutionProvider, default threads =
all cores; einc's pool also uses all cores) over many runs after warm-up,
timed in interleaved rounds (with a pause between engines, so that one's
spinning workers are asleep when the other runs) so that load from other
processes falls on both alike; the ratio einc/onnxruntime; GFLOP/s of the contractions; the process's
peak resident memory; and the largest difference of the outputs from
onnxruntime's (a benchmark of wrong code is no benchmark).
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from einc.diagnostics import EincError

ROUNDS = 10
"""Interleaved rounds; each times every engine `runs // ROUNDS` times."""
SETTLE = 0.05
"""Seconds between engines in a round. onnxruntime's and einc's workers spin for a
while after a run; without the pause the engine timed next finds the other's
threads on the second core (measured: einc's MLP 0.56 ms alone, 1.4 ms right
after onnxruntime)."""


def flops(model: Any, input_shapes: dict[str, Sequence[int]] | None = None) -> int:
    """Multiply-adds x 2 of the model's contractions (elementwise work not counted)."""
    from einc.frontend.onnx import import_model
    from einc.ir.ein import EinsumOp
    from einc.passes import Pipeline
    from einc.passes.fuse import is_contraction

    module = import_model(model, input_shapes).module
    Pipeline("onnx-to-ein").apply(module)
    total = 0
    for op in module.walk():
        if isinstance(op, EinsumOp) and is_contraction(op):
            total += 2 * math.prod(op.extents().values())
    return total


def random_feeds(session: Any, input_shapes: dict[str, Sequence[int]] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for every graph input of an onnxruntime session: normal floats, small ints."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        shape = (input_shapes or {}).get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
        if "float" in i.type:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif "int64" in i.type:
            feeds[i.name] = rng.integers(0, 2, shape).astype(np.int64)
        else:
            feeds[i.name] = np.zeros(shape, dtype=np.float32)
    return feeds


def _median_interleaved(engines: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, float]:
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in engines}
    per_round = max(1, runs // ROUNDS)
    for _ in range(ROUNDS):
        for name, fn in engines.items():
            time.sleep(SETTLE)
            fn()  # untimed: wakes this engine's threads
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(
    model: Any,
    input_shapes: dict[str, Sequence[int]] | None = None,
    feeds: dict[str, np.ndarray] | None = None,
    against: Sequence[str] = ("onnxruntime",),
    extra: dict[str, Callable[[], Any]] | None = None,
    runs: int = 100,
    warmup: int = 10,
) -> dict[str, Any]:
    """Measure one model; `extra` adds engines (e.g. numpy) timed in the same rounds."""
    import onnx
    import onnxruntime as ort

    import einc

    proto = onnx.load(str(model)) if isinstance(model, (str, os.PathLike)) else model
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("EINC_CACHE_DIR")
        os.environ["EINC_CACHE_DIR"] = cache
        try:
            start = time.perf_counter()
            compiled = einc.compile(proto, input_shapes=input_shapes)
            result["compile_cold_s"] = time.perf_counter() - start
            start = time.perf_counter()
            compiled = einc.compile(proto, input_shapes=input_shapes)
            result["compile_cached_s"] = time.perf_counter() - start
        finally:
            if old is None:
                del os.environ["EINC_CACHE_DIR"]
            else:
                os.environ["EINC_CACHE_DIR"] = old
    ort.set_default_logger_severity(4)  # fatal only: a failure to run is reported below, once
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = random_feeds(session, input_shapes) | (feeds or {})
    engines: dict[str, Callable[[], Any]] = {"einc": lambda: compiled.run(feeds)}
    if "onnxruntime" in against:  # first: it checks the inputs (indices in range, ...)
        try:
            outputs = session.run(None, feeds)
        except Exception as err:  # onnxruntime's errors share no base class
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EincError(
                f"onnxruntime cannot run the model on these inputs ({first}); "
                "give the inputs that matter with --input NAME=FILE.npy"
            ) from None
        theirs = dict(zip([o.name for o in session.get_outputs()], outputs))
        ours = compiled.run(feeds)
        diffs = [
            float(np.max(np.abs(ours[n].astype(np.float64) - theirs[n]))) / max(1.0, float(np.max(np.abs(theirs[n]))))
            for n in ours
            if n in theirs and ours[n].size
        ]
        result["max_rel_diff"] = max(diffs, default=0.0)
        engines["onnxruntime"] = lambda: session.run(None, feeds)
    engines.update(extra or {})
    result["median_s"] = _median_interleaved(engines, runs, warmup)
    work = flops(proto, input_shapes)
    result["gflop"] = work / 1e9
    result["gflops"] = {name: work / t / 1e9 for name, t in result["median_s"].items()}
    if "onnxruntime" in result["median_s"]:
        result["ratio"] = result["median_s"]["einc"] / result["median_s"]["onnxruntime"]
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["model_bytes"] = compiled._weights.nbytes + compiled.manifest.get("arena_bytes", 0)
    return result


def render(name: str, r: dict[str, Any]) -> str:
    """One human-readable block for `einc bench`."""
    lines = [f"{name}: {r['gflop']:.3f} GFLOP per inference"]
    for engine, t in r["median_s"].items():
        lines.append(f"  {engine:12s} {t * 1e3:9.3f} ms  {r['gflops'][engine]:7.1f} GFLOP/s")
    if "ratio" in r:
        lines.append(f"  einc / onnxruntime = {r['ratio']:.2f}   (max |diff| / max |ref| = {r['max_rel_diff']:.1e})")
    lines.append(f"  compile: {r['compile_cold_s']:.2f} s cold, {r['compile_cached_s']:.3f} s cached")
    lines.append(f"  memory: {r['model_bytes'] / 2**20:.1f} MiB weights+arena, process peak RSS {r['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines) + "\n"
