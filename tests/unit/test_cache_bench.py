"""The compile cache, `einc bench`, and the thread pool's life cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest

import einc
from einc.cache import cache_key
from einc.diagnostics import EincError
from einc.tools.bench import _Engine, bench
from tests.conftest import single_node_model


def _matmul(rng: np.random.Generator, m: int = 300, k: int = 64, n: int = 500) -> tuple[onnx.ModelProto, dict]:
    feeds = {"a": rng.standard_normal((m, k)).astype(np.float32)}
    return single_node_model("MatMul", feeds, initializers={"w": rng.standard_normal((k, n)).astype(np.float32)}), feeds


def test_second_compile_comes_from_the_cache(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("EINC_CACHE_DIR", str(tmp_path))
    model, feeds = _matmul(rng)
    first = einc.compile(model)
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "manifest.json").exists()
    second = einc.compile(model)
    assert second.manifest == first.manifest
    np.testing.assert_array_equal(second.run(feeds)["y0"], first.run(feeds)["y0"])


def test_cache_key_follows_model_shapes_and_target(rng):
    model, _ = _matmul(rng)
    data = model.SerializeToString()
    assert cache_key(data, "cpu", None) == cache_key(data, "cpu", None)
    assert cache_key(data, "cpu", None) != cache_key(data, "cpu", {"a": (1, 64)})
    assert cache_key(data, "cpu", None) != cache_key(data, "triton", None)
    assert cache_key(data, "cpu", None) != cache_key(_matmul(rng)[0].SerializeToString(), "cpu", None)


def test_cache_off(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("EINC_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("EINC_CACHE", "0")
    einc.compile(_matmul(rng)[0])
    assert not (tmp_path / "c").exists()


def test_pool_threads_are_joined_when_the_model_goes(rng):
    model, feeds = _matmul(rng)
    before = threading.active_count(), len(os.listdir("/proc/self/task"))
    compiled = einc.compile(model, cache=False)
    for _ in range(3):
        compiled.run(feeds)
    del compiled
    assert len(os.listdir("/proc/self/task")) <= before[1]


def test_bench_command(tmp_path, rng):
    model, _ = _matmul(rng, 40, 32, 48)
    onnx.save(model, tmp_path / "m.onnx")
    result = subprocess.run(
        [sys.executable, "-m", "einc.cli", "bench", "m.onnx", "--runs", "10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "EINC_CACHE_DIR": str(tmp_path / "c")},
    )
    assert result.returncode == 0, result.stderr
    assert "einc / onnxruntime = " in result.stdout and "GFLOP/s" in result.stdout and "cached" in result.stdout


def test_bench_takes_input_values_and_explains_failing_random_ones(tmp_path):
    """Random indices fall outside a one-row table: onnxruntime refuses, `--input` gives good ones."""
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    model = single_node_model("Gather", {"idx": np.zeros(16, dtype=np.int64)}, initializers={"data": data}, input_names=["data", "idx"])
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "idx.npy", np.zeros(16, dtype=np.int64))
    env = {**os.environ, "EINC_CACHE_DIR": str(tmp_path / "c")}
    command = [sys.executable, "-m", "einc.cli", "bench", "m.onnx", "--runs", "10"]
    bad = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("einc: error: onnxruntime cannot run the model on these inputs") and "--input" in bad.stderr
    good = subprocess.run([*command, "--input", "idx=idx.npy"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert good.returncode == 0, good.stderr
    assert "einc / onnxruntime = " in good.stdout


def test_bench_times_each_engine_in_a_process_of_its_own(tmp_path, rng):
    """einc and onnxruntime run in spawned processes (sane medians, a ratio); `extra` engines stay here."""
    model, feeds = _matmul(rng, 40, 32, 48)
    calls = []
    result = bench(model, feeds=feeds, extra={"here": lambda: calls.append(os.getpid())}, runs=10, warmup=2)
    assert set(result["median_s"]) == {"einc", "onnxruntime", "here"} and all(t > 0 for t in result["median_s"].values())
    assert 0 < result["ratio"] < 100 and result["max_rel_diff"] < 1e-5 and 0 < result["peak_rss_mib"] < 1024
    assert calls and set(calls) == {os.getpid()}
    einc.compile(model, cache=False).save(tmp_path / "a")
    with _Engine("einc", str(tmp_path / "a"), feeds, warmup=1) as engine:
        assert engine.pid != os.getpid() and len(engine(3)) == 3
        os.kill(engine.pid, signal.SIGKILL)
        with pytest.raises(EincError, match="einc's benchmark process died"):
            engine(3)


def test_a_broken_engine_is_one_clear_error(tmp_path):
    """What fails in an engine's process comes back as one line, not the child's traceback."""
    with pytest.raises(EincError, match="^einc failed in its benchmark process: .*missing: not an einc artifact"):
        _Engine("einc", str(tmp_path / "missing"), {}, warmup=1)


def test_cold_runs_fill_the_caches_before_each_timed_call(monkeypatch, rng):
    """With `cold`, every timed call follows a read of EVICT_BYTES (here 1 MiB); the untimed first
    call does not; without it nothing is read. `bench(cold=True)` passes it to both engines."""
    from einc.tools import bench as bench_module

    order: list[str] = []
    monkeypatch.setattr(bench_module, "EVICT_BYTES", 1 << 20)
    monkeypatch.setattr(bench_module, "_evict", lambda buffer: order.append(f"evict {buffer.nbytes}"))
    assert len(bench_module._timed(lambda: order.append("run"), cold=True)(3)) == 3
    assert order == ["run"] + [f"evict {1 << 20}", "run"] * 3
    order.clear()
    bench_module._timed(lambda: order.append("run"))(2)
    assert order == ["run"] * 3
    model, feeds = _matmul(rng, 40, 32, 48)
    result = bench(model, feeds=feeds, extra={"here": lambda: None}, runs=10, warmup=2, cold=True)
    assert set(result["median_s"]) == {"einc", "onnxruntime", "here"} and result["max_rel_diff"] < 1e-5
    assert any(o.startswith("evict") for o in order)  # the in-process engine evicted here too
