"""Bit formats (bf16, float8, float4, 4- and 2-bit integers): import, the compiled
load/store conversions bit for bit against ml_dtypes, and the ops that use them
(Cast, CastLike, QuantizeLinear, DequantizeLinear, data movement) against
onnxruntime where it runs them and the onnx reference evaluator where it does not."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import einc
from einc.frontend.onnx import import_model
from einc.ir.dtypes import BIT_FORMATS, ELEMENT_TYPES, dtype_name, to_dtype
from einc.ir.interpret import run_function
from einc.passes import Pipeline
from tests.conftest import IR_VERSION, ort_run

FLOAT_FORMATS = {
    T.BFLOAT16: ml_dtypes.bfloat16,
    T.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn,
    T.FLOAT8E4M3FNUZ: ml_dtypes.float8_e4m3fnuz,
    T.FLOAT8E5M2: ml_dtypes.float8_e5m2,
    T.FLOAT8E5M2FNUZ: ml_dtypes.float8_e5m2fnuz,
    T.FLOAT8E8M0: ml_dtypes.float8_e8m0fnu,
    T.FLOAT4E2M1: ml_dtypes.float4_e2m1fn,
}
INT_FORMATS = {T.INT4: ml_dtypes.int4, T.UINT4: ml_dtypes.uint4, T.INT2: ml_dtypes.int2, T.UINT2: ml_dtypes.uint2}
NAMES = {v: k for k, v in T.DataType.items()}
OPSET = 25  # the first with every type here (INT2, UINT2)


def _model(nodes, inputs, outputs, opset=OPSET, initializers=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs], list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def _cast(src: int, dst: int, shape, **attrs):
    return _model([helper.make_node("Cast", ["x"], ["y"], to=dst, **attrs)], [("x", src, shape)], [("y", dst)])


def _both(model, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The first output as the ein interpreter computes it and as compiled code does."""
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    main = next(iter(imported.module.ops))
    interpreted = run_function(main, list(feeds.values()), imported.weights)[0]
    return interpreted, einc.compile(model).run(feeds)["y"]


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.itemsize])


def _same(have: np.ndarray, want: np.ndarray) -> None:
    """Equal bits, except that any NaN matches any NaN (payloads are not ONNX's business)."""
    assert have.dtype == want.dtype and have.shape == want.shape
    have, want = have.reshape(-1), want.reshape(-1)
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(have.astype(np.float32)), nan)
    np.testing.assert_array_equal(_bits(have)[~nan], _bits(want)[~nan])


def test_every_row_round_trips_its_names():
    for row in ELEMENT_TYPES:
        assert np.dtype(dtype_name(row.numpy)) == row.numpy
    assert set(BIT_FORMATS) == {r.ir for r in ELEMENT_TYPES if r.onnx in FLOAT_FORMATS or r.onnx in INT_FORMATS}


@pytest.mark.parametrize("onnx_type", list(FLOAT_FORMATS), ids=lambda t: NAMES[t])
def test_float_decode_every_code(onnx_type):
    """Every bit pattern loads as the f32 ml_dtypes gives it (NaN for NaN)."""
    dtype = np.dtype(FLOAT_FORMATS[onnx_type])
    n = 1 << (8 * dtype.itemsize)
    codes = np.arange(n, dtype=np.uint16 if dtype.itemsize == 2 else np.uint8)
    if onnx_type == T.FLOAT4E2M1:
        codes = codes[:16]
    x = codes.view(dtype)
    want = x.astype(np.float32)
    for got in _both(_cast(onnx_type, T.FLOAT, [len(x)]), {"x": x}):
        _same(got, want)


def _probe_values(dtype: np.dtype) -> np.ndarray:
    """Every finite value of a format, the midpoints between neighbours and a hair
    either side of them, values past the largest, specials and random floats."""
    if dtype.itemsize == 1:
        codes = np.arange(256, dtype=np.uint8)
    else:
        codes = (np.arange(256, dtype=np.uint16) << 8) | 0x5A  # a spread of bf16 values
    values = np.unique(codes.view(dtype).astype(np.float32))
    values = values[np.isfinite(values)].astype(np.float64)
    mids = (values[:-1] + values[1:]) / 2
    both = np.concatenate([values, -values, mids, -mids])
    with np.errstate(over="ignore"):
        both = both.astype(np.float32)
    hair = np.concatenate([np.nextafter(both, np.float32(np.inf)), np.nextafter(both, np.float32(-np.inf))])
    big = float(values.max())
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, big * 1.02, big * 1.1, big * 4, 3e38, 1e-30, -1e-45])
    random = np.random.default_rng(7).standard_normal(2000) * max(1.0, big / 8)
    with np.errstate(over="ignore"):  # bf16's largest values overflow f32 past it: inf is a fine probe
        return np.concatenate([both, hair, specials, random]).astype(np.float32)


@pytest.mark.parametrize("onnx_type", list(FLOAT_FORMATS), ids=lambda t: NAMES[t])
def test_float_encode_rounds_as_ml_dtypes(onnx_type):
    """Stores round to nearest even without saturating, bit for bit as ml_dtypes
    (E8M0: up and saturating, ONNX Cast's defaults); compiled code and interpreter."""
    dtype = np.dtype(FLOAT_FORMATS[onnx_type])
    x = _probe_values(dtype)
    if onnx_type == T.FLOAT8E8M0:
        x = np.abs(x)
    want = to_dtype(x, dtype)
    attrs = {} if onnx_type in (T.BFLOAT16, T.FLOAT8E8M0, T.FLOAT4E2M1) else {"saturate": 0}
    interpreted, compiled = _both(_cast(T.FLOAT, onnx_type, [len(x)], **attrs), {"x": x})
    _same(compiled, want)
    _same(interpreted, want)


@pytest.mark.parametrize("onnx_type", list(INT_FORMATS), ids=lambda t: NAMES[t])
def test_int_formats_load_sign_extended_and_store_wrapped(onnx_type):
    dtype = np.dtype(INT_FORMATS[onnx_type])
    info = ml_dtypes.iinfo(dtype)
    x = np.arange(info.min, info.max + 1).astype(dtype)
    for got in _both(_cast(onnx_type, T.INT32, [len(x)]), {"x": x}):
        np.testing.assert_array_equal(got, np.arange(info.min, info.max + 1, dtype=np.int32))
    wide = np.arange(-40, 40, dtype=np.int32)
    for got in _both(_cast(T.INT32, onnx_type, [len(wide)]), {"x": wide}):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, wide.astype(dtype))  # the low bits, as an int8 store keeps


def _reference(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ReferenceEvaluator(model).run(None, feeds)[0]


def _close(have: np.ndarray, want: np.ndarray, rtol: float = 0.0) -> None:
    assert have.dtype == want.dtype and have.shape == want.shape
    np.testing.assert_allclose(have.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=0)


@pytest.mark.parametrize("onnx_type", [T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ], ids=lambda t: NAMES[t])
@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_to_float8_saturates_as_asked(onnx_type, saturate):
    """Cast's `saturate`: clamp to the largest finite (inf included) or overflow to
    inf/NaN; exact against the onnx reference evaluator (onnxruntime agrees where it runs)."""
    big = float(ml_dtypes.finfo(FLOAT_FORMATS[onnx_type]).max)
    x = np.array([0.3, -1.7, big, big * 1.05, -big * 3, np.inf, -np.inf, np.nan, 1e-9, -0.0], np.float32)
    model = _cast(T.FLOAT, onnx_type, [len(x)], saturate=saturate)
    want = _reference(model, {"x": x})
    for got in _both(model, {"x": x}):
        _same(got, want)


def test_cast_folds_bit_format_constants():
    """A constant cast to bf16 at compile time keeps -inf (it once went through int64)."""
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([-np.inf, 1.5, 3e38], np.float32))),
        helper.make_node("CastLike", ["c", "x"], ["y"]),
    ]
    model = _model(nodes, [("x", T.BFLOAT16, [2])], [("y", T.BFLOAT16)], opset=21)
    got = einc.compile(model).run({"x": np.zeros(2, ml_dtypes.bfloat16)})["y"]
    _same(got, np.array([-np.inf, 1.5, 3e38], np.float32).astype(ml_dtypes.bfloat16))


QUANT_TYPES = [T.INT4, T.UINT4, T.INT2, T.UINT2, T.FLOAT8E4M3FN, T.FLOAT8E5M2, T.FLOAT4E2M1]


@pytest.mark.parametrize("onnx_type", QUANT_TYPES, ids=lambda t: NAMES[t])
def test_quantize_dequantize_linear(onnx_type):
    """QuantizeLinear into the format (round, clamp; floats clamp and round on store)
    and DequantizeLinear back, per axis; exact against the onnx reference evaluator."""
    dtype = np.dtype({**FLOAT_FORMATS, **INT_FORMATS}[onnx_type])
    x = (np.random.default_rng(3).standard_normal((3, 8)) * 6).astype(np.float32)
    x[0, :3] = [1e6, -1e6, 2.5]
    scale = np.array([0.5, 1.0, 2.0], np.float32)
    zp = np.array([1, 0, 1] if onnx_type in INT_FORMATS else [0, 0, 0]).astype(dtype)
    params = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")]
    quantize = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=0)],
                      [("x", T.FLOAT, [3, 8])], [("y", onnx_type)], initializers=params)
    q = _reference(quantize, {"x": x})
    for got in _both(quantize, {"x": x}):
        _same(got, q)
    dequantize = _model([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=0)],
                        [("x", onnx_type, [3, 8])], [("y", T.FLOAT)], initializers=params)
    want = _reference(dequantize, {"x": q})
    for got in _both(dequantize, {"x": q}):
        _close(got, want)


def test_int4_round_trip_matches_onnxruntime():
    """QuantizeLinear to int4 and back inside one model (onnxruntime hands no int4
    arrays to numpy): its float result, exactly."""
    x = (np.random.default_rng(4).standard_normal((4, 5)) * 9).astype(np.float32)
    params = [numpy_helper.from_array(np.array(0.75, np.float32), "s"), numpy_helper.from_array(np.array(-2, ml_dtypes.int4), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [4, 5])], [("y", T.FLOAT)], opset=21, initializers=params)
    want = ort_run(model, {"x": x})["y"]
    for got in _both(model, {"x": x}):
        _close(got, want)


@pytest.mark.parametrize("onnx_type", [T.BFLOAT16, T.FLOAT8E4M3FN, T.FLOAT8E5M2FNUZ, T.INT4, T.UINT2], ids=lambda t: NAMES[t])
def test_data_movement_keeps_bits(onnx_type):
    """Transpose, Concat, Gather and Pad move elements of bit formats unchanged."""
    dtype = np.dtype({**FLOAT_FORMATS, **INT_FORMATS}[onnx_type])
    rng = np.random.default_rng(5)
    x = rng.integers(0, 1 << (8 * dtype.itemsize), (3, 4)).astype(np.uint16 if dtype.itemsize == 2 else np.uint8)
    if onnx_type in INT_FORMATS:
        x &= (1 << ml_dtypes.iinfo(dtype).bits) - 1
    x = x.view(dtype)
    x[np.isnan(x.astype(np.float32))] = 0  # NaN payloads need not survive: keep the check exact
    pads = numpy_helper.from_array(np.array([1, 0, 0, 2], np.int64), "p")
    idx = numpy_helper.from_array(np.array([2, 0], np.int64), "i")
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        helper.make_node("Gather", ["t", "i"], ["g"], axis=1),
        helper.make_node("Pad", ["x", "p"], ["q"]),
        helper.make_node("Flatten", ["q"], ["f"], axis=0),
        helper.make_node("Flatten", ["g"], ["h"], axis=0),
        helper.make_node("Concat", ["f", "h"], ["y"], axis=1),
    ]
    model = _model(nodes, [("x", onnx_type, [3, 4])], [("y", onnx_type)], initializers=[pads, idx])
    want = _reference(model, {"x": x})
    for got in _both(model, {"x": x}):
        _same(got, want)


def test_bf16_arithmetic_computes_in_f32():
    """bf16 maps and reductions compute in f32 and round once (a reduction carries
    its sum in a register, not in its bf16 output); exact against that."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((4, 300)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((300, 3)).astype(ml_dtypes.bfloat16)
    c = rng.standard_normal((4, 3)).astype(ml_dtypes.bfloat16)
    nodes = [helper.make_node("Mul", ["c", "c"], ["y"]), helper.make_node("MatMul", ["a", "b"], ["m"]),
             helper.make_node("ReduceMax", ["a"], ["r"], keepdims=0)]
    model = _model(nodes, [("a", T.BFLOAT16, [4, 300]), ("b", T.BFLOAT16, [300, 3]), ("c", T.BFLOAT16, [4, 3])],
                   [("y", T.BFLOAT16), ("m", T.BFLOAT16), ("r", T.BFLOAT16)], opset=21)
    feeds = {"a": a, "b": b, "c": c}
    compiled = einc.compile(model).run(feeds)
    f32 = {k: v.astype(np.float32) for k, v in feeds.items()}
    _same(compiled["y"], (f32["c"] * f32["c"]).astype(ml_dtypes.bfloat16))
    _close(compiled["m"], (f32["a"] @ f32["b"]).astype(ml_dtypes.bfloat16), rtol=2**-8)  # f32 sums in another order
    _same(compiled["r"], np.asarray(a.max()))


F16_REDUCTIONS = {
    "reducesum-0d": (helper.make_node("ReduceSum", ["a"], ["y"], keepdims=0), [("a", [4, 300])]),
    "reducesum-rows": (helper.make_node("ReduceSum", ["a", "axes"], ["y"]), [("a", [4, 300])]),
    "matmul": (helper.make_node("MatMul", ["a", "b"], ["y"]), [("a", [4, 300]), ("b", [300, 3])]),
    "conv": (helper.make_node("Conv", ["a", "b"], ["y"]), [("a", [1, 40, 6, 6]), ("b", [2, 40, 3, 3])]),
}


@pytest.mark.parametrize("case", list(F16_REDUCTIONS))
def test_f16_reductions_accumulate_in_f32(case):
    """f16 contractions and reductions sum in f32 and round once, as onnxruntime does:
    sums past 1024 (f16's ulp there is 1) of values near 1 lose every fraction when
    each step rounds to f16. Interpreter and compiled code within one f16 ulp of
    onnxruntime's f32 result (f32 sums in another order)."""
    node, shapes = F16_REDUCTIONS[case]
    axes = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
    rng = np.random.default_rng(9)
    feeds = {n: (1 + rng.random(s) / 4).astype(np.float16) for n, s in shapes}
    model = _model([node], [(n, T.FLOAT16, s) for n, s in shapes], [("y", T.FLOAT16)], initializers=axes)
    f32 = _model([node], [(n, T.FLOAT, s) for n, s in shapes], [("y", T.FLOAT)], initializers=axes)
    want = ort_run(f32, {n: v.astype(np.float32) for n, v in feeds.items()})["y"].astype(np.float16)
    for got in _both(model, feeds):
        _close(got, want, rtol=2**-10)


def test_triton_refuses_formats_it_has_no_type_for():
    from einc.diagnostics import EincError

    model = _cast(T.FLOAT, T.FLOAT8E4M3FN, [4])
    with pytest.raises(EincError, match="element type float8_e4m3fn has no Triton type"):
        einc.compile(model, target="triton", cache=False)


@pytest.mark.parametrize("onnx_type", [T.FLOAT8E4M3FN, T.INT4, T.UINT2], ids=lambda t: NAMES[t])
def test_weights_in_bit_formats(onnx_type):
    """Weights (over 64 elements: out of line) of bit formats, dequantised per row and
    multiplied in: the packed weight blob holds their bytes as ml_dtypes does."""
    dtype = np.dtype({**FLOAT_FORMATS, **INT_FORMATS}[onnx_type])
    rng = np.random.default_rng(8)
    w = (rng.standard_normal((8, 16)) * 2).astype(np.float32).astype(dtype)
    scale = np.linspace(0.5, 2.0, 8).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "s")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["d"], axis=0), helper.make_node("MatMul", ["x", "d"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [3, 8])], [("y", T.FLOAT)], initializers=inits)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    want = _reference(model, {"x": x})
    for got in _both(model, {"x": x}):
        _close(got, want, rtol=1e-5)


def test_saved_artifact_keeps_bit_format_dtypes(tmp_path):
    """The manifest names ml_dtypes dtypes ('bfloat16', not numpy's anonymous '<V2'),
    so a loaded artifact takes and gives arrays of them."""
    x = np.array([1.5, -2.25, 3e38, np.inf], ml_dtypes.bfloat16)
    model = _cast(T.BFLOAT16, T.FLOAT8E5M2, [4], saturate=0)
    einc.compile(model).save(tmp_path / "art")
    got = einc.load(tmp_path / "art").run({"x": x})["y"]
    _same(got, x.astype(np.float32).astype(ml_dtypes.float8_e5m2))


def test_quantize_to_float8_without_saturation_overflows():
    x = np.array([1.0, 1e6, -1e6, np.nan], np.float32)
    params = [numpy_helper.from_array(np.array(2.0, np.float32), "s"), numpy_helper.from_array(np.array(0, ml_dtypes.float8_e5m2), "z")]
    model = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], saturate=0)], [("x", T.FLOAT, [4])],
                   [("y", T.FLOAT8E5M2)], initializers=params)
    want = _reference(model, {"x": x})
    for got in _both(model, {"x": x}):
        _same(got, want)
    assert np.isinf(want.astype(np.float32)[1:3]).all()


@pytest.mark.parametrize("onnx_type", [T.BFLOAT16, T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ], ids=lambda t: NAMES[t])
def test_cast_round_trip_matches_onnxruntime(onnx_type):
    """f32 -> format -> f32 in one model (onnxruntime hands most of these formats to
    numpy not at all): equal to its result, saturating, NaN for NaN."""
    x = np.concatenate([np.random.default_rng(9).standard_normal(64) * 40, [1e6, -1e6, np.inf, np.nan, 1e-9]]).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=onnx_type), helper.make_node("Cast", ["c"], ["y"], to=T.FLOAT)]
    model = _model(nodes, [("x", T.FLOAT, [len(x)])], [("y", T.FLOAT)], opset=21)
    want = ort_run(model, {"x": x})["y"]
    for got in _both(model, {"x": x}):
        _same(got, want)


def test_e8m0_casts_other_than_round_up_are_refused():
    from einc.diagnostics import EincError

    model = _cast(T.FLOAT, T.FLOAT8E8M0, [4], round_mode="nearest")
    with pytest.raises(EincError, match="casting to FLOAT8E8M0 other than rounding up with saturation"):
        einc.compile(model, cache=False)
