"""Memory benchmark: arena plans against their lower bound, and the runtime's footprint against onnxruntime.

    .venv/bin/python benchmarks/memory.py [--repeat 5] [--suite]

Part 1 plans each model (the examples, the models of tests/unit/test_memplan.py,
and with --suite those of the CPU benchmark suite, benchmarks/run.py)
and prints arena, lower bound, their ratio, the winning planner and whether the
exact search beat every greedy planner; then it counts, over random instances,
how often the exact search improves on the best greedy plan.

Part 2 compiles each example model (and with --suite each model of the CPU
benchmark suite, sgemm included) into an artifact, then starts fresh Python
processes that (a) load it with `einc.load` and run it once, (b) do the same with
onnxruntime; each child reports its start-up time (interpreter start to model
ready, imports included) and its peak resident set (VmHWM of /proc/self/status:
ru_maxrss would carry over the parent's peak across fork and exec). Both children
read the same inputs from an .npz file. Medians of `--repeat` processes each.
The "weights" column counts initializers and Constant nodes of the ONNX file.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

CHILD = {
    "einc": "import einc\nm = einc.load({path!r})\nrun = lambda: m.run(feeds)\n",
    "onnxruntime": (
        "import onnxruntime as ort\n"
        "s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
        "run = lambda: s.run(None, feeds)\n"
    ),
}
PROBE = """
import time
t0 = time.perf_counter()
import numpy as np
with np.load({feeds!r}) as f:
    feeds = {{k: f[k] for k in f.files}}
{body}
ready = time.perf_counter() - t0
run()
import json
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print(json.dumps({{"startup_s": ready + {before}, "peak_rss_kib": hwm}}))
"""


def _interpreter_start() -> float:
    """Seconds a bare `python -c pass` takes: added to each child's own clock."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t


def footprint(models: dict, repeat: int) -> list[dict]:
    """`models`: name -> a ModelProto with one float input `x` (fed ones), or a
    callable(cache dir) -> (onnx path, input shapes or None, feeds or None) as
    `_suite_builds` gives (feeds None: random ones for onnxruntime's inputs)."""
    import numpy as np

    import einc

    base = _interpreter_start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            stem = f"m{len(rows)}"
            try:
                if isinstance(model, onnx.ModelProto):
                    onnx_path = Path(tmp) / f"{stem}.onnx"
                    onnx.save(model, onnx_path)
                    shapes = None
                    feeds = {"x": np.ones(tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim), np.float32)}
                else:
                    onnx_path, shapes, feeds = model(SUITE_CACHE)
                    if feeds is None:
                        import onnxruntime as ort

                        from einc.tools.bench import random_feeds

                        feeds = random_feeds(ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]), shapes)
                art = Path(tmp) / stem
                einc.compile(str(onnx_path), input_shapes=shapes).save(art)
            except Exception as err:  # noqa: BLE001 - a suite model einc cannot compile yet is reported, not fatal
                print(f"{name}: footprint skipped ({type(err).__name__}: {str(err)[:120]})", file=sys.stderr)
                continue
            feeds_path = Path(tmp) / f"{stem}.npz"
            np.savez(feeds_path, **feeds)
            row: dict = {"model": name, "weights_mib": _weights_bytes(onnx_path) / 2**20}
            for runtime, body in CHILD.items():
                path = str(art if runtime == "einc" else onnx_path)
                code = PROBE.format(feeds=str(feeds_path), body=body.format(path=path), before=base)
                samples = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) for _ in range(repeat)]
                row[runtime] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            rows.append(row)
            print(f"{name}: footprint measured", file=sys.stderr, flush=True)
    return rows


def _weights_bytes(path: Path) -> int:
    """Bytes of the model's initializers (external data included) and Constant nodes' tensors,
    those of subgraphs included (Silero VAD keeps all of its weights inside If branches)."""

    def tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
        found = list(graph.initializer)
        for node in graph.node:
            found += [a.t for a in node.attribute if node.op_type == "Constant" and a.name == "value"]
            for a in node.attribute:
                found += [t for g in [*([a.g] if a.HasField("g") else []), *a.graphs] for t in tensors(g)]
        return found

    return sum(numpy_helper.to_array(t).nbytes for t in tensors(onnx.load(str(path)).graph))


SUITE_CACHE = Path(tempfile.gettempdir()) / "einc-bench-models"


def _suite_builds(with_sgemm: bool = False) -> dict:
    """The models of benchmarks/run.py: name -> callable(cache dir) -> (onnx path, input shapes, feeds)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run as suite

    SUITE_CACHE.mkdir(exist_ok=True)

    def normalised(build):
        def built(cache):
            path, info, _ = build(cache)
            if isinstance(info, dict) and "feeds" in info:
                return path, info.get("shapes"), info["feeds"]
            return path, None, info or None

        return built

    return {name: normalised(build) for name, build in suite.SUITE.items() if with_sgemm or not name.startswith("sgemm")}


def _suite_models() -> dict:
    """The models of benchmarks/run.py, each planned from its ONNX file (built on first use)."""
    from einc.tools.explain_memory import plan_model

    def planner(build):
        def planned():
            path, shapes, _ = build(SUITE_CACHE)
            return plan_model(str(path), shapes)

        return planned

    return {name: planner(build) for name, build in _suite_builds().items()}


def arena_table(with_suite: bool = False) -> list[dict]:
    from tests.unit.test_memplan import MODELS, _planned

    planners = {name: (lambda make=make: _planned(make())) for name, make in MODELS.items()}
    if with_suite:
        planners |= _suite_models()
    rows = []
    for name, planned in planners.items():
        start = time.perf_counter()
        try:
            memory = planned()
        except Exception as err:  # noqa: BLE001 - a suite model einc cannot compile yet is reported, not fatal
            print(f"{name}: skipped ({type(err).__name__}: {str(err)[:120]})", file=sys.stderr)
            continue
        elapsed = time.perf_counter() - start
        exact = memory.result.results.get("exact")
        rows.append(
            {
                "model": name,
                "buffers": len(memory.liveness.buffers),
                "in_place": len(memory.liveness.inplace),
                "no_reuse": sum(b.size for b in memory.liveness.buffers),
                "arena": memory.arena,
                "lower_bound": memory.lower_bound,
                "greedy_by_size": memory.result.results["greedy-by-size"].arena,
                "algorithm": memory.result.best.algorithm,
                "schedule": memory.schedule,
                "exact": "not run (met the bound)" if exact is None else ("improved" if exact.algorithm == "exact" else ("proved optimal" if exact.optimal else "no gain within budget")),
                "seconds": elapsed,
            }
        )
    return rows


def exact_statistics(count: int = 500, seed: int = 0) -> dict:
    """Random instances (10-30 buffers, short overlapping lives): how often the searches beat the best greedy plan."""
    from einc.passes.memplan.algorithms import ALIGNMENT, ORDERS, Buffer, plan

    rng = random.Random(seed)
    stats = {"instances": count, "greedy_above_bound": 0, "local_search_improved": 0, "exact_improved": 0, "proved_optimal": 0}
    for _ in range(count):
        n = rng.randrange(10, 31)
        buffers = []
        for i in range(n):
            start = rng.randrange(n)
            buffers.append(Buffer(f"b{i}", ALIGNMENT * rng.randrange(1, 20), start, start + rng.randrange(4)))
        result = plan(buffers)
        greedy_best = min(p.arena for k, p in result.results.items() if k in ORDERS)
        stats["greedy_above_bound"] += greedy_best > result.lower_bound
        stats["local_search_improved"] += result.results.get("local-search", result.best).algorithm == "local-search"
        stats["exact_improved"] += result.results.get("exact", result.best).algorithm == "exact"
        stats["proved_optimal"] += result.best.optimal
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--suite", action="store_true", help="also plan, and measure the footprint of, the models of benchmarks/run.py")
    args = parser.parse_args()
    from make_models import make_attention, make_mlp

    print("| model | buffers (outputs in place) | no reuse | arena | lower bound | arena / bound | greedy-by-size | winner | exact search | planning |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in arena_table(args.suite):
        print(
            f"| {r['model']} | {r['buffers']} ({r['in_place']}) | {r['no_reuse']} | {r['arena']} | {r['lower_bound']} | "
            f"{r['arena'] / max(1, r['lower_bound']):.3f} | {r['greedy_by_size']} | {r['algorithm']}, {r['schedule']} | {r['exact']} | {r['seconds']:.2f} s |"
        )
    print()
    print("exact search on random instances:", json.dumps(exact_statistics()))
    print()
    models: dict = {"mlp": make_mlp(), "attention": make_attention()}
    if args.suite:
        models |= _suite_builds(with_sgemm=True)
    print("| model | weights | einc start-up | onnxruntime start-up | einc peak RSS | onnxruntime peak RSS | einc / onnxruntime RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in footprint(models, args.repeat):
        e, o = r["einc"], r["onnxruntime"]
        print(
            f"| {r['model']} | {r['weights_mib']:.1f} MiB | {e['startup_s'] * 1e3:.0f} ms | {o['startup_s'] * 1e3:.0f} ms | "
            f"{e['peak_rss_kib'] / 1024:.1f} MiB | {o['peak_rss_kib'] / 1024:.1f} MiB | {e['peak_rss_kib'] / o['peak_rss_kib']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
