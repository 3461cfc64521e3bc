"""The direct depthwise kernel: depthwise convolutions compiled through it, against onnxruntime.

Each case checks that the contraction went to the "depthwise" kernel (not the GEMM)
and that its output equals onnxruntime's, across the kernel's paths: stride 1
(contiguous loads), stride 2 (two loads and an even-lane shuffle), stride 3
(a gather), rows shorter than a vector and with a tail, 5x5 taps, dilation,
a batch of images, several rows per channel split into units, and a fused
bias + activation epilogue.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import einc
from einc.backends.llvm.ukernels import plan
from einc.backends.llvm.ukernels.depthwise import fits
from einc.frontend.onnx import import_model
from einc.passes import Pipeline
from einc.passes.pipeline import CPU_LOOPS
from tests.conftest import IR_VERSION, ort_run

RTOL, ATOL = 1e-5, 1e-5


def _model(x_shape, k: int, stride: int, pad: int, dilation: int = 1, activation: str | None = "Relu", mult: int = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    c = x_shape[1]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[stride] * 2,
                              pads=[pad] * 4, dilations=[dilation] * 2, group=c)]
    out = "y"
    if activation:
        nodes.append(helper.make_node(activation, ["y"], ["z"]))
        out = "z"
    inits = [numpy_helper.from_array(rng.standard_normal((c * mult, 1, k, k)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(c * mult).astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def _kinds(model: onnx.ModelProto) -> list[str]:
    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    return [json.loads(op.attributes["einc.ukernel"].data)["kind"] for op in module.ops if "einc.ukernel" in op.attributes]


def _plan(model: onnx.ModelProto):
    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    (spec,) = [op.attributes["einc.ukernel"].data for op in module.ops if '"depthwise"' in getattr(op.attributes.get("einc.ukernel"), "data", "")]
    return plan(spec)


# (id, input shape, kernel, stride, pad, dilation, activation)
CASES = [
    ("3x3-s1-wide", (1, 24, 40, 70), 3, 1, 1, 1, "Relu"),
    ("3x3-s1-short-rows", (1, 16, 8, 5), 3, 1, 1, 1, "Relu"),
    ("3x3-s2", (1, 16, 33, 47), 3, 2, 1, 1, "HardSwish"),
    ("3x3-s3-gather", (1, 8, 20, 52), 3, 3, 1, 1, None),
    ("5x5-s1", (1, 12, 16, 33), 5, 1, 2, 1, "Relu"),
    ("5x5-s2", (1, 12, 17, 64), 5, 2, 2, 1, "Sigmoid"),
    ("3x3-dilated", (1, 8, 19, 37), 3, 1, 2, 2, None),
    ("batch-2", (2, 6, 21, 18), 3, 1, 1, 1, "Relu"),
    ("few-channels-many-rows", (1, 2, 120, 100), 3, 1, 1, 1, "Relu"),
    # above the serial threshold: units on the pool's threads (channels; rows of 2 channels)
    ("threads-channels", (1, 32, 96, 100), 3, 1, 1, 1, "Relu"),
    ("threads-rows-of-few-channels", (1, 2, 480, 300), 3, 1, 1, 1, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_depthwise_against_onnxruntime(case, monkeypatch):
    _, shape, k, stride, pad, dilation, activation = case
    if case[0].startswith("threads"):
        monkeypatch.setenv("EINC_NUM_THREADS", "2")
    model = _model(shape, k, stride, pad, dilation, activation)
    kinds = _kinds(model)
    assert "depthwise" in kinds and "gemm" not in kinds
    if case[0].startswith("threads"):
        assert (plan := _plan(model)).units > 1 and not plan.serial
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    ours = einc.compile(model, cache=False).run({"x": x})
    for name, value in ort_run(model, {"x": x}).items():
        np.testing.assert_allclose(ours[name], value, rtol=RTOL, atol=ATOL)


def test_channel_multiplier_dense_convs_and_vector_products_stay_gemm():
    """Two outputs per group (M = 2), a dense convolution and a vector-matrix product are GEMMs."""
    assert "depthwise" not in _kinds(_model((1, 4, 10, 12), 3, 1, 1, mult=2))
    spec = {"vars": {"co": 8, "p": 4, "q": 4, "ci": 3, "r": 3, "s": 3}, "m": ["co"], "n": ["p", "q"], "k": ["ci", "r", "s"],
            "a": {"coef": {}}, "b": {"coef": {"p": 6, "q": 1}}}
    assert not fits(spec)
    gemv = {"vars": {"n": 96, "k": 24}, "batch": [], "m": [], "n": ["n"], "k": ["k"], "a": {"coef": {"k": 1}}, "b": {"coef": {"n": 24, "k": 1}}}
    assert not fits(gemv)
    assert fits({**gemv, "vars": {"g": 4, "n": 96, "k": 24}, "batch": ["g"], "b": {"coef": {"g": 9, "n": 2, "k": 1}}})


def _pool_model(op: str, x_shape, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


# (id, input shape, kernel, stride, pads)
POOL_CASES = [
    ("resnet-stem-3x3-s2", (1, 64, 112, 112), 3, 2, 1),
    ("3x3-s1-batch", (2, 5, 17, 23), 3, 1, 1),
    ("2x2-s2-no-pad", (1, 3, 30, 41), 2, 2, 0),
    ("5x5-s3-gather", (1, 4, 20, 20), 5, 3, 2),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_max_pool_window_group_against_onnxruntime(case, monkeypatch):
    """MaxPool is a "window" group (max over taps of image + 0, the padding -inf) run by this
    kernel with max and add in place of add and multiply; -inf padding and negative inputs
    check that the reduction starts from -inf, not 0."""
    monkeypatch.setenv("EINC_NUM_THREADS", "2")
    _, shape, k, stride, pad = case
    model = _pool_model("MaxPool", shape, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)
    assert _kinds(model) == ["depthwise"]
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32) - 3.0
    ours = einc.compile(model, cache=False).run({"x": x})
    for name, value in ort_run(model, {"x": x}).items():
        np.testing.assert_array_equal(ours[name], value)


def test_bias_and_activation_are_the_kernels_epilogue():
    """A depthwise convolution's output is [n, channel, p, q] itself (no reshape from
    [n, group, 1, p, q] after it), so its bias and ReLU join its group: one kernel."""
    model = _model((1, 16, 20, 24), 5, 1, 2, activation="Relu")
    assert _kinds(model) == ["depthwise"]
    x = np.random.default_rng(5).standard_normal((1, 16, 20, 24)).astype(np.float32)
    ours = einc.compile(model, cache=False).run({"x": x})
    for name, value in ort_run(model, {"x": x}).items():
        np.testing.assert_allclose(ours[name], value, rtol=RTOL, atol=ATOL)
