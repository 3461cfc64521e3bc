"""`einc bench MODEL [--against onnxruntime]`: einc beside onnxruntime, in one run.

For one model: compile time cold (no cache) and cached, then the median
latency of einc and of onnxruntime (CPUExecutionProvider, default threads =
all cores; einc's pool also uses all cores) over many runs after warm-up; the
ratio einc/onnxruntime; GFLOP/s of the contractions; einc's peak resident
memory; and the largest difference of the outputs from onnxruntime's (a
benchmark of wrong code is no benchmark).

Each engine is timed in a process of its own, as a user runs it: onnxruntime's
intra-op workers keep spinning long after a run and take a core from whatever
runs next in their process (a depthwise conv layer on this 2-core host: einc
0.146 ms beside an onnxruntime session, 0.117 ms beside one that does not
spin; switching onnxruntime's spinning off is no fix, it slows onnxruntime
from 0.092 to 0.145 ms). The parent still times the engines in interleaved
rounds, asking each process in turn, so that load from other processes falls
on both alike. `extra` engines (in-process callables such as numpy's matmul)
are timed in the parent, in the same rounds.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, NoReturn, Self

import numpy as np

from einc.diagnostics import EincError

ROUNDS = 10
"""Interleaved rounds; each times every engine `runs // ROUNDS` times."""
SETTLE = 0.2
"""Seconds between engines in a round. In processes of their own the engines still
share the host's cores, and workers that spin on after a run would take a core
from the engine timed next (measured when both ran in one process, without the
pause: einc's MLP 0.56 ms alone, 1.4 ms right after onnxruntime). OpenBLAS's
threads (numpy's matmul) spin for 2^28 cycles, about 0.1 s: after a 0.05 s pause
einc's sgemm 1024 measured 7.02 and 5.78 ms in two benches, after 0.3 s 5.28 and
5.55 ms (2026-12-07)."""
JOIN = 5.0
"""Seconds an engine's process gets to exit after being asked before it is terminated."""
EVICT_BYTES = 128 << 20
"""Bytes read before each timed run with `cold`: four times a 32 MB L3, so the weights come
from DRAM, as in a process whose other work (or another process on the host) took the cache."""


def _evict(buffer: np.ndarray) -> None:
    """Read `buffer` through: the caches then hold it instead of the model's data."""
    float(buffer.sum())


def _timed(fn: Callable[[], Any], cold: bool = False) -> Callable[[int], list[float]]:
    """`n -> n times of fn()`, after one untimed call that wakes the engine's threads;
    with `cold`, the caches are filled with other data before each timed call."""
    buffer = np.ones(EVICT_BYTES // 4, dtype=np.float32) if cold else None

    def times(n: int) -> list[float]:
        fn()
        out = []
        for _ in range(n):
            if buffer is not None:
                _evict(buffer)
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out

    return times


def _first_line(err: BaseException) -> str:
    """The error in one line, its type named unless it is einc's own."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, EincError) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Not ru_maxrss where /proc has VmHWM: a
    spawned child is forked, then exec'd, and Linux carries the parent's peak RSS
    across the exec into ru_maxrss (measured: 312 MiB for a child that held 14)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _serve(conn: Connection, name: str, source: str, feeds: dict[str, np.ndarray], warmup: int, cold: bool = False) -> None:
    """An engine's process: build it, warm it up, send its pid, then answer `n` with
    (n times, peak RSS in MiB) until `None`.

    Every reply is (ok, payload); a failure is sent as one line instead of a traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it shuts us down
    try:
        if name == "einc":
            import einc

            compiled = einc.load(source)
            times = _timed(lambda: compiled.run(feeds), cold)
        else:
            import onnxruntime as ort

            ort.set_default_logger_severity(4)
            session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
            times = _timed(lambda: session.run(None, feeds), cold)
        times(warmup)
        conn.send((True, os.getpid()))
        while (n := conn.recv()) is not None:
            conn.send((True, (times(n), _peak_rss_mib())))
    except EOFError:  # the parent is gone
        pass
    except BaseException as err:  # noqa: BLE001  (whatever it is, the parent reports it in one line)
        with contextlib.suppress(OSError):
            conn.send((False, _first_line(err)))


class _Engine:
    """One engine (einc or onnxruntime) in a spawned process of its own, alive for the whole measurement.

    Spawned, not forked: a forked child inherits the parent's thread pools without
    their threads. Use as a context manager so the process always goes.
    """

    def __init__(self, name: str, source: str, feeds: dict[str, np.ndarray], warmup: int, cold: bool = False):
        self.name = name
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, name, source, feeds, warmup, cold), daemon=True, name=f"einc-bench-{name}")
        self.process.start()
        child.close()  # ours closed: recv() sees EOF when the child dies
        self.peak_rss_mib = 0.0
        try:
            self.pid: int = self._reply()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, n: int) -> list[float]:
        """One untimed call, then the times of n calls."""
        self._send(n)
        times, self.peak_rss_mib = self._reply()
        return times

    def close(self) -> None:
        """Ask the process to exit (it may still be answering a request cut short); terminate it if it does not."""
        try:
            self._conn.send(None)
        except OSError:
            pass
        self.process.join(JOIN)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(JOIN)
        self._conn.close()

    def _send(self, message: int | None) -> None:
        try:
            self._conn.send(message)
        except OSError:
            self._died()

    def _reply(self) -> Any:
        try:
            ok, payload = self._conn.recv()
        except (EOFError, OSError):
            self._died()
        if not ok:
            raise EincError(f"{self.name} failed in its benchmark process: {payload}")
        return payload

    def _died(self) -> NoReturn:
        self.process.join(JOIN)
        raise EincError(f"{self.name}'s benchmark process died (exit code {self.process.exitcode})")


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


def _median_interleaved(engines: dict[str, Callable[[int], list[float]]], runs: int) -> dict[str, float]:
    """Each engine's median over ROUNDS rounds, every engine `runs // ROUNDS` times a round."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    per_round = max(1, runs // ROUNDS)
    for _ in range(ROUNDS):
        for name, timed in engines.items():
            time.sleep(SETTLE)
            times[name] += timed(per_round)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(
    model: Any,
    input_shapes: dict[str, Sequence[int]] | None = None,
    feeds: dict[str, np.ndarray] | None = None,
    against: Sequence[str] = ("onnxruntime",),
    extra: dict[str, Callable[[], Any]] | None = None,
    runs: int = 100,
    warmup: int = 10,
    cold: bool = False,
) -> dict[str, Any]:
    """Measure one model; `extra` adds engines (e.g. numpy) timed in the same rounds, in this process.
    With `cold` every engine reads EVICT_BYTES before each timed run (weights from DRAM)."""
    import onnx
    import onnxruntime as ort

    import einc

    proto = onnx.load(str(model)) if isinstance(model, (str, os.PathLike)) else model
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("EINC_CACHE_DIR")
        os.environ["EINC_CACHE_DIR"] = os.path.join(tmp, "cache")
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
        result["model_bytes"] = compiled._weights.nbytes + compiled.manifest.get("arena_bytes", 0)
        artifact = os.path.join(tmp, "artifact")
        compiled.save(artifact)
        del compiled, session  # their threads stay out of the timing: each engine gets a process below
        if isinstance(model, (str, os.PathLike)):
            source = str(model)
        else:
            source = os.path.join(tmp, "model.onnx")
            onnx.save(proto, source)
        with contextlib.ExitStack() as stack:
            einc_engine = stack.enter_context(_Engine("einc", artifact, feeds, warmup, cold))
            engines: dict[str, Callable[[int], list[float]]] = {"einc": einc_engine}
            if "onnxruntime" in against:
                engines["onnxruntime"] = stack.enter_context(_Engine("onnxruntime", source, feeds, warmup, cold))
            for name, fn in (extra or {}).items():
                engines[name] = _timed(fn, cold)
                engines[name](warmup)
            result["median_s"] = _median_interleaved(engines, runs)
            result["peak_rss_mib"] = einc_engine.peak_rss_mib  # einc's process alone: this one also held onnxruntime
    work = flops(proto, input_shapes)
    result["gflop"] = work / 1e9
    result["gflops"] = {name: work / t / 1e9 for name, t in result["median_s"].items()}
    if "onnxruntime" in result["median_s"]:
        result["ratio"] = result["median_s"]["einc"] / result["median_s"]["onnxruntime"]
    return result


def render(name: str, r: dict[str, Any]) -> str:
    """One human-readable block for `einc bench`."""
    lines = [f"{name}: {r['gflop']:.3f} GFLOP per inference"]
    for engine, t in r["median_s"].items():
        lines.append(f"  {engine:12s} {t * 1e3:9.3f} ms  {r['gflops'][engine]:7.1f} GFLOP/s")
    if "ratio" in r:
        lines.append(f"  einc / onnxruntime = {r['ratio']:.2f}   (max |diff| / max |ref| = {r['max_rel_diff']:.1e})")
    lines.append(f"  compile: {r['compile_cold_s']:.2f} s cold, {r['compile_cached_s']:.3f} s cached")
    lines.append(f"  memory: {r['model_bytes'] / 2**20:.1f} MiB weights+arena, einc process peak RSS {r['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines) + "\n"
