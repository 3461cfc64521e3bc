"""parallel-nests: large plain loop nests with a parallel outer loop run on the pool, against onnxruntime.

Every case compiles with two threads (EINC_NUM_THREADS=2) and compares einc's
result with onnxruntime's exactly (copies, max, add: no rounding differs); the
LLVM IR shows whether the nest's call went through `einc_parallel`.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import einc
from einc.backends.llvm.translate import to_llvmlite
from einc.frontend.onnx import import_model
from einc.passes import Pipeline
from einc.passes.pipeline import CPU_PIPELINE
from tests.conftest import ort_run, single_node_model


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    monkeypatch.setenv("EINC_NUM_THREADS", "2")


def _llvm(model: onnx.ModelProto) -> str:
    module = import_model(model).module
    Pipeline(CPU_PIPELINE).apply(module)
    return str(to_llvmlite(module))


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], parallel: bool) -> None:
    text = _llvm(model)
    assert ("@\"einc_par_" in text and "call void @\"einc_parallel\"" in text) == parallel
    got, want = einc.compile(model).run(feeds), ort_run(model, feeds)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_large_pad(mode, rng):
    x = _rand(rng, 1, 64, 56, 56)
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    model = single_node_model("Pad", {"x": x}, initializers={"pads": pads}, input_names=["x", "pads"], mode=mode)
    _check(model, {"x": x}, parallel=True)


def test_large_elementwise(rng):
    a, b = _rand(rng, 2, 32, 40, 40), _rand(rng, 32, 1, 40)
    _check(single_node_model("Add", {"a": a, "b": b}), {"a": a, "b": b}, parallel=True)


def test_max_pool(rng):
    x = _rand(rng, 1, 64, 112, 112)
    model = single_node_model("MaxPool", {"x": x}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    _check(model, {"x": x}, parallel=True)


def test_small_nest_stays_serial(rng):
    x = _rand(rng, 1, 8, 20, 20)
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    model = single_node_model("Pad", {"x": x}, initializers={"pads": pads}, input_names=["x", "pads"])
    _check(model, {"x": x}, parallel=False)


def test_reduction_outer_loop_stays_serial(rng):
    """ReduceSum over the rows of a 4096 x 64 matrix: its loop over rows carries the sums."""
    x = _rand(rng, 4096, 64)
    model = single_node_model("ReduceSum", {"x": x}, initializers={"axes": np.array([0], np.int64)},
                              input_names=["x", "axes"], keepdims=0)
    text = _llvm(model)
    assert "einc_par_" not in text
    got, want = einc.compile(model).run({"x": x}), ort_run(model, {"x": x})
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-3)
