"""onnx-to-ein, reduce family: ReduceX over attribute and input axes, keepdims,
noop_with_empty_axes, and ArgMax/ArgMin, against onnxruntime (floats at
RTOL/ATOL, integers exactly) through the interpreter and the CPU backend."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_onnx_to_ein_math import check_lowering, node_model

RTOL, ATOL = 1e-5, 1e-5

FLOAT_REDUCES = [
    "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean", "ReduceL1",
    "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp",
]
AXES = [([1], 1), ([0, 2], 0), ([-1], 1), ([], 1), ([1, 0, 2], 0)]


def _x(rng: np.random.Generator, positive: bool = False) -> np.ndarray:
    x = rng.uniform(0.5, 1.5, (3, 4, 5)) if positive else rng.uniform(-1.5, 1.5, (3, 4, 5))
    return x.astype(np.float32)


def _axes_input_opset(op: str) -> int:
    return 13 if op == "ReduceSum" else 18


@pytest.mark.parametrize("axes,keepdims", AXES)
@pytest.mark.parametrize("op", [*FLOAT_REDUCES, "ReduceLogSum"])
def test_reduce_axes_attribute(rng, op, axes, keepdims):
    x = {"x": _x(rng, positive=op == "ReduceLogSum")}
    attrs = {"keepdims": keepdims, **({"axes": axes} if axes else {})}
    check_lowering(node_model(op, x, opset=11, **attrs), x, RTOL, ATOL)


@pytest.mark.parametrize("axes,keepdims", AXES)
@pytest.mark.parametrize("op", [*FLOAT_REDUCES, "ReduceLogSum"])
def test_reduce_axes_input(rng, op, axes, keepdims):
    x = {"x": _x(rng, positive=op == "ReduceLogSum")}
    inits = {"axes": np.array(axes, dtype=np.int64)}
    model = node_model(op, x, inits, opset=_axes_input_opset(op), keepdims=keepdims)
    check_lowering(model, x, RTOL, ATOL)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax"])
def test_noop_with_empty_axes(rng, op):
    x = {"x": _x(rng)}
    model = node_model(op, x, opset=_axes_input_opset(op), noop_with_empty_axes=1)
    check_lowering(model, x)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceMean"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_reduce(rng, op, dtype):
    x = {"x": rng.integers(-9, 9, (3, 4, 5)).astype(dtype)}
    check_lowering(node_model(op, x, opset=11, axes=[1]), x)


def test_log_sum_exp_is_stable(rng):
    x = {"x": np.array([[1000.0, 999.0, -1000.0], [-1e4, -1e4 + 1, -1e4 + 2]], dtype=np.float32)}
    check_lowering(node_model("ReduceLogSumExp", x, opset=11, axes=[1]), x)


ARG_CASES = [
    ({}, "ties"),
    ({"axis": 1, "keepdims": 0}, "ties"),
    ({"axis": -1, "select_last_index": 1}, "ties"),
    ({"axis": 2, "keepdims": 0, "select_last_index": 1}, "random"),
    ({"axis": 0}, "random"),
]


@pytest.mark.parametrize("attrs,data", ARG_CASES)
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_arg_reductions(rng, op, attrs, data, dtype):
    if data == "ties":
        x = rng.integers(0, 3, (3, 4, 5)).astype(dtype)  # many equal extremes
    else:
        x = (rng.standard_normal((3, 4, 5)) * 10).astype(dtype)
    feeds = {"x": x}
    check_lowering(node_model(op, feeds, opset=13, **attrs), feeds)
