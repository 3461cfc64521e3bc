"""onnx-to-ein, quant family: (de)quantisation per tensor and per axis, dynamic
quantisation, integer matmul and convolution, and their QLinear forms, against
onnxruntime through the interpreter and the CPU backend. Integer outputs must
match exactly; floats at RTOL/ATOL."""

from __future__ import annotations

import numpy as np
import pytest

import einc
from tests.unit.test_onnx_to_ein_math import check_lowering, node_model

RTOL, ATOL = 1e-6, 1e-6


def _f(r: np.random.Generator, *shape: int, scale: float = 3.0) -> np.ndarray:
    return (r.standard_normal(shape) * scale).astype(np.float32)


def _q(r: np.random.Generator, dtype: type, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return r.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def _halves() -> np.ndarray:
    """Values that land exactly on .5 after division by 0.5: rounding must be half to even."""
    return np.array([[-1.25, -0.75, -0.25, 0.25], [0.75, 1.25, 200.0, -200.0]], dtype=np.float32)


QUANTIZE = [
    ("u8-tensor", lambda r: {"x": _f(r, 3, 4)}, lambda r: {"s": np.float32(0.05), "z": np.uint8(128)}, {}, 13),
    ("i8-tensor", lambda r: {"x": _f(r, 3, 4)}, lambda r: {"s": np.float32(0.04), "z": np.int8(-3)}, {}, 13),
    ("halves", lambda r: {"x": _halves()}, lambda r: {"s": np.float32(0.5), "z": np.uint8(10)}, {}, 13),
    ("halves-i8", lambda r: {"x": _halves()}, lambda r: {"s": np.float32(0.5), "z": np.int8(0)}, {}, 13),
    ("no-zero-point", lambda r: {"x": _f(r, 3, 4)}, lambda r: {"s": np.float32(0.05)}, {}, 13),
    ("opset10", lambda r: {"x": _f(r, 3, 4)}, lambda r: {"s": np.float32(0.05), "z": np.uint8(100)}, {}, 10),
    (
        "u8-axis1",
        lambda r: {"x": _f(r, 2, 3, 4)},
        lambda r: {"s": np.array([0.02, 0.05, 0.1], np.float32), "z": np.array([0, 128, 255], np.uint8)},
        {},
        13,
    ),
    (
        "i8-axis-last",
        lambda r: {"x": _f(r, 3, 4)},
        lambda r: {"s": np.array([0.02, 0.05, 0.1, 0.03], np.float32), "z": np.array([0, -5, 5, 127], np.int8)},
        {"axis": -1},
        13,
    ),
    ("i16", lambda r: {"x": _f(r, 3, 4, scale=300.0)}, lambda r: {"s": np.float32(0.01), "z": np.int16(7)}, {}, 21),
]


@pytest.mark.parametrize("make_x,make_params,attrs,opset", [pytest.param(*c[1:], id=c[0]) for c in QUANTIZE])
def test_quantize_linear(rng, make_x, make_params, attrs, opset):
    x, params = make_x(rng), {k: np.asarray(v) for k, v in make_params(rng).items()}
    check_lowering(node_model("QuantizeLinear", x, params, opset=opset, **attrs), x)


@pytest.mark.parametrize(
    "dtype,zp,scale,attrs",
    [
        (np.uint8, np.uint8(128), np.float32(0.05), {}),
        (np.int8, np.int8(-7), np.float32(0.05), {}),
        (np.int8, None, np.float32(0.5), {}),
        (np.int32, None, np.float32(0.25), {}),
        (np.uint8, np.array([0, 128, 255], np.uint8), np.array([0.02, 0.05, 0.1], np.float32), {}),
        (np.int8, np.array([-128, 0, 127, 5], np.int8), np.array([0.02, 0.05, 0.1, 1.0], np.float32), {"axis": 2}),
    ],
)
def test_dequantize_linear(rng, dtype, zp, scale, attrs):
    x = {"x": _q(rng, dtype, 2, 3, 4)}
    params = {"s": np.asarray(scale)} | ({"z": np.asarray(zp)} if zp is not None else {})
    check_lowering(node_model("DequantizeLinear", x, params, opset=13, **attrs), x)


def test_dequantize_inputs_at_run_time(rng):
    feeds = {"x": _q(rng, np.int8, 3, 4), "s": np.array(0.1, np.float32), "z": np.array(-128, np.int8)}
    check_lowering(node_model("DequantizeLinear", feeds, opset=13), feeds)


@pytest.mark.parametrize(
    "x",
    [
        np.array([[-1.0, 0.5, 2.0, 3.5], [0.0, -0.25, 1.0, 7.0]], np.float32),
        np.array([0.5, 1.0, 2.5], np.float32),  # all positive: min clamps to 0
        np.array([-0.5, -1.0, -2.5], np.float32),  # all negative: max clamps to 0
        np.zeros((2, 2), np.float32),  # empty range: scale 1 / 255
    ],
)
def test_dynamic_quantize_linear(x):
    feeds = {"x": x}
    check_lowering(node_model("DynamicQuantizeLinear", feeds, opset=11, n_outputs=3), feeds)


def test_dynamic_quantize_linear_random(rng):
    feeds = {"x": _f(rng, 4, 5)}
    check_lowering(node_model("DynamicQuantizeLinear", feeds, opset=11, n_outputs=3), feeds)


@pytest.mark.parametrize(
    "a_type,b_type,a_zp,b_zp,shapes",
    [
        (np.uint8, np.uint8, np.uint8(12), np.uint8(250), ((3, 5), (5, 4))),
        (np.uint8, np.int8, np.uint8(200), np.int8(-3), ((3, 5), (5, 4))),
        (np.int8, np.int8, np.int8(-128), np.int8(127), ((2, 3, 5), (5, 4))),
        (np.uint8, np.uint8, None, None, ((3, 5), (5, 4))),
    ],
)
def test_matmul_integer(rng, a_type, b_type, a_zp, b_zp, shapes):
    feeds = {"a": _q(rng, a_type, *shapes[0]), "b": _q(rng, b_type, *shapes[1])}
    inits = {k: np.asarray(v) for k, v in (("az", a_zp), ("bz", b_zp)) if v is not None}
    names = ["a", "b", *inits]
    check_lowering(node_model("MatMulInteger", feeds, inits, opset=10, input_names=names), feeds)


def test_matmul_integer_per_row_and_column_zero_points(rng):
    """ONNX allows a zero point per row of A and per column of B; onnxruntime
    refuses them, so numpy is the reference."""
    a, b = _q(rng, np.uint8, 3, 5), _q(rng, np.int8, 5, 4)
    az, bz = np.array([1, 2, 250], np.uint8), np.array([-1, 0, 5, 127], np.int8)
    model = node_model("MatMulInteger", {"a": a}, {"b": b, "az": az, "bz": bz}, opset=10)
    want = (a.astype(np.int32) - az[:, None]) @ (b.astype(np.int32) - bz[None, :])
    np.testing.assert_array_equal(einc.compile(model).run({"a": a})["y0"], want)


def test_matmul_integer_zero_points_at_run_time(rng):
    feeds = {"a": _q(rng, np.uint8, 3, 5), "b": _q(rng, np.uint8, 5, 4), "az": np.array(7, np.uint8), "bz": np.array(200, np.uint8)}
    check_lowering(node_model("MatMulInteger", feeds, opset=10), feeds)


CONVS = [
    ("plain", (1, 3, 6, 6), (4, 3, 3, 3), {}),
    ("pads-strides", (2, 3, 7, 7), (4, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ("dilations", (1, 2, 8, 8), (3, 2, 3, 3), {"dilations": [2, 2], "pads": [2, 1, 0, 2]}),
    ("groups", (1, 4, 5, 5), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ("depthwise", (1, 3, 5, 5), (3, 1, 3, 3), {"group": 3, "auto_pad": "SAME_UPPER"}),
    ("same-lower", (1, 2, 6, 6), (2, 2, 2, 2), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("conv1d", (2, 3, 9), (4, 3, 3), {"pads": [1, 2]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", [pytest.param(*c[1:], id=c[0]) for c in CONVS])
def test_conv_integer(rng, x_shape, w_shape, attrs):
    feeds = {"x": _q(rng, np.uint8, *x_shape)}
    inits = {"w": _q(rng, np.uint8, *w_shape), "xz": np.array(100, np.uint8), "wz": np.array(130, np.uint8)}
    check_lowering(node_model("ConvInteger", feeds, inits, opset=10, **attrs), feeds)


def test_conv_integer_without_zero_points(rng):
    feeds = {"x": _q(rng, np.uint8, 1, 2, 5, 5)}
    inits = {"w": _q(rng, np.uint8, 3, 2, 3, 3)}
    check_lowering(node_model("ConvInteger", feeds, inits, opset=10), feeds)


@pytest.mark.parametrize("a_type,b_type", [(np.uint8, np.uint8), (np.int8, np.int8), (np.uint8, np.int8)])
def test_qlinear_matmul(rng, a_type, b_type):
    feeds = {"a": _q(rng, a_type, 2, 3, 8)}
    b = _q(rng, b_type, 8, 5)
    zp = {np.uint8: np.uint8(128), np.int8: np.int8(-2)}
    inits = {
        "as": np.float32(0.02), "az": np.asarray(zp[a_type]), "b": b, "bs": np.float32(0.03),
        "bz": np.asarray(zp[b_type]), "ys": np.float32(0.25), "yz": np.asarray(zp[a_type]),
    }
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    check_lowering(node_model("QLinearMatMul", feeds, inits, opset=10, input_names=names), feeds)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_qlinear_conv(rng, per_channel, with_bias):
    feeds = {"x": _q(rng, np.uint8, 1, 3, 6, 6)}
    m = 4
    inits = {
        "xs": np.float32(0.05), "xz": np.uint8(120), "w": _q(rng, np.int8, m, 3, 3, 3),
        "ws": np.array([0.01, 0.02, 0.015, 0.03], np.float32) if per_channel else np.float32(0.02),
        "wz": np.zeros(m, np.int8) if per_channel else np.int8(0),
        "ys": np.float32(0.4), "yz": np.uint8(128),
    }
    if with_bias:
        inits["bias"] = rng.integers(-2000, 2000, (m,)).astype(np.int32)
    inits = {k: np.asarray(v) for k, v in inits.items()}
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", *(["bias"] if with_bias else [])]
    check_lowering(node_model("QLinearConv", feeds, inits, opset=10, input_names=names, pads=[1, 1, 1, 1]), feeds)


def test_quantize_dequantize_round_trip(rng):
    """A QDQ pair as quantisation tools emit it: two maps, no special ops."""
    import onnx
    from onnx import helper, numpy_helper

    from tests.conftest import IR_VERSION

    x = _f(rng, 4, 6)
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", 1, x.shape)],
        [onnx.ValueInfoProto(name="y")],
        [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(3, np.int8), "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)
    check_lowering(onnx.shape_inference.infer_shapes(model), {"x": x})
