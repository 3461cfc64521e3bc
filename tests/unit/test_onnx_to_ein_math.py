"""onnx-to-ein, math family: comparisons, logic, trigonometry, Clip, Mod, Einsum,
integer arithmetic. Each case runs through the ein interpreter and the CPU
backend and is compared with onnxruntime (floats at RTOL/ATOL, everything else
exactly). `node_model` and `check_lowering` are shared by the other family tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import einc
from einc.frontend.onnx import import_model
from einc.ir.interpret import run_function
from einc.passes import Pipeline
from tests.conftest import IR_VERSION, ort_run

RTOL, ATOL = 1e-5, 1e-6


def node_model(
    op_type: str,
    inputs: dict[str, np.ndarray],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    input_names: Sequence[str] | None = None,
    n_outputs: int = 1,
    **attrs: object,
) -> onnx.ModelProto:
    """A one-node model whose output types come from onnx shape inference."""
    initializers = initializers or {}
    names = list(input_names) if input_names is not None else [*inputs, *initializers]
    outs = [f"y{i}" for i in range(n_outputs)]
    graph = helper.make_graph(
        [helper.make_node(op_type, names, outs, name=f"{op_type.lower()}_node", **attrs)],
        f"{op_type}_test",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _compare(got: np.ndarray, want: np.ndarray, rtol: float, atol: float, what: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}"
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def onnx_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnx's reference evaluator: the reference where onnxruntime lacks the opset."""
    from onnx.reference import ReferenceEvaluator

    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))


def check_lowering(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    rtol: float = RTOL,
    atol: float = ATOL,
    reference: Callable[[onnx.ModelProto, dict[str, np.ndarray]], dict[str, np.ndarray]] = ort_run,
) -> dict[str, np.ndarray]:
    """onnx-to-ein + interpreter, and the compiled CPU model, against onnxruntime
    (or another `reference`)."""
    expected = reference(model, feeds)
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    assert not [op for op in imported.module.walk() if op.name.startswith("onnx.")]
    main = next(iter(imported.module.ops))
    interpreted = run_function(main, list(feeds.values()), imported.weights)  # type: ignore[arg-type]
    compiled = einc.compile(model).run(feeds)
    for (name, want), got in zip(expected.items(), interpreted):
        _compare(np.asarray(got), want, rtol, atol, f"interpreter, {name}")
        _compare(compiled[name], want, rtol, atol, f"compiled, {name}")
    return expected


def _f(r: np.random.Generator, *shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return r.uniform(low, high, shape).astype(np.float32)


def _i(r: np.random.Generator, *shape: int, dtype: type = np.int64, low: int = -20, high: int = 20) -> np.ndarray:
    return r.integers(low, high, shape).astype(dtype)


def _special(r: np.random.Generator) -> np.ndarray:
    return np.array([[1.5, -np.inf, np.nan, 0.0], [np.inf, -2.5, 3.0, -0.0]], dtype=np.float32)


# (case id, op type, inputs(rng), attributes, opset)
CASES = [
    *[
        (op.lower(), op, lambda r: {"x": _f(r, 3, 5, low=-0.9, high=0.9)}, {}, 17)
        for op in ["Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Atanh", "Sign"]
    ],
    ("acosh", "Acosh", lambda r: {"x": _f(r, 3, 5, low=1.0, high=4.0)}, {}, 17),
    ("round-halves", "Round", lambda r: {"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6], np.float32)}, {}, 17),
    ("round", "Round", lambda r: {"x": _f(r, 4, 5, low=-9, high=9)}, {}, 17),
    ("sign-int", "Sign", lambda r: {"x": _i(r, 4, 5, dtype=np.int32)}, {}, 17),
    *[
        (f"{op.lower()}-{t.__name__}", op, lambda r, t=t: {"a": _i(r, 3, 4, dtype=t, low=0, high=4), "b": _i(r, 4, dtype=t, low=0, high=4)}, {}, 17)
        for op in ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"]
        for t in [np.int64, np.int32]
    ],
    *[
        (op.lower(), op, lambda r: {"a": np.round(_f(r, 3, 4)), "b": np.round(_f(r, 3, 1))}, {}, 17)
        for op in ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"]
    ],
    ("not", "Not", lambda r: {"x": r.integers(0, 2, (3, 4)).astype(bool)}, {}, 17),
    *[
        (op.lower(), op, lambda r: {"a": r.integers(0, 2, (3, 4)).astype(bool), "b": r.integers(0, 2, (4,)).astype(bool)}, {}, 17)
        for op in ["And", "Or", "Xor"]
    ],
    ("isnan", "IsNaN", lambda r: {"x": _special(r)}, {}, 17),
    ("isinf", "IsInf", lambda r: {"x": _special(r)}, {}, 17),
    ("isinf-positive", "IsInf", lambda r: {"x": _special(r)}, {"detect_negative": 0}, 17),
    ("isinf-negative", "IsInf", lambda r: {"x": _special(r)}, {"detect_positive": 0}, 17),
    ("clip-opset6", "Clip", lambda r: {"x": _f(r, 3, 4)}, {"min": -0.5, "max": 0.75}, 6),
    ("clip-opset6-min-only", "Clip", lambda r: {"x": _f(r, 3, 4)}, {"min": -0.5}, 6),
    ("clip-inputs", "Clip", lambda r: {"x": _f(r, 3, 4), "lo": np.float32(-0.5), "hi": np.float32(0.25)}, {}, 13),
    ("clip-int", "Clip", lambda r: {"x": _i(r, 3, 4, dtype=np.int32), "lo": np.int32(-5), "hi": np.int32(7)}, {}, 13),
    ("clip-none", "Clip", lambda r: {"x": _f(r, 3, 4)}, {}, 13),
    ("mod-int", "Mod", lambda r: {"a": _i(r, 3, 4), "b": np.array([3, -3, 5, -7], np.int64)}, {}, 17),
    ("mod-int32", "Mod", lambda r: {"a": _i(r, 3, 4, dtype=np.int32), "b": np.array([3, -3, 5, -7], np.int32)}, {}, 17),
    ("fmod-int", "Mod", lambda r: {"a": _i(r, 3, 4), "b": np.array([3, -3, 5, -7], np.int64)}, {"fmod": 1}, 17),
    ("fmod-float", "Mod", lambda r: {"a": _f(r, 3, 4, low=-9, high=9), "b": np.array([1.5, -2.0, 3.25, -0.75], np.float32)}, {"fmod": 1}, 17),
    ("mean", "Mean", lambda r: {"a": _f(r, 2, 3), "b": _f(r, 3), "c": _f(r, 2, 1)}, {}, 17),
    ("mean-one", "Mean", lambda r: {"a": _f(r, 2, 3)}, {}, 17),
    *[
        (f"bitshift-{d.lower()}-{t.__name__}", "BitShift", lambda r, t=t: {"a": _i(r, 3, 4, dtype=t, low=0, high=200), "b": _i(r, 4, dtype=t, low=0, high=7)}, {"direction": d}, 17)
        for d in ["LEFT", "RIGHT"]
        for t in [np.uint8, np.uint32, np.uint64]
    ],
    *[
        (f"{op.lower()}-{t.__name__}", op, lambda r, t=t: {"a": _i(r, 3, 4, dtype=t, low=-50, high=50), "b": np.array([3, -3, 7, -2], t)}, {}, 17)
        for op in ["Add", "Sub", "Mul", "Div"]
        for t in [np.int32, np.int64]
    ],
    ("div-int-large", "Div", lambda r: {"a": np.array([2**62 + 1, -(2**61) - 3, 9007199254740993], np.int64), "b": np.array([3, 7, -1], np.int64)}, {}, 17),
    ("pow-int-exponent", "Pow", lambda r: {"a": _f(r, 3, 4, low=0.5, high=2.0), "b": _i(r, 4, low=-3, high=4)}, {}, 17),
    ("pow-int", "Pow", lambda r: {"a": _i(r, 3, 4, low=-5, high=6), "b": _i(r, 4, low=0, high=5)}, {}, 17),
    ("pow-int32-float", "Pow", lambda r: {"a": _i(r, 3, 4, dtype=np.int32, low=1, high=6), "b": np.array([0.5, 2.0, 1.5, 3.0], np.float32)}, {}, 17),
    ("neg-abs-int", "Abs", lambda r: {"x": _i(r, 3, 4, dtype=np.int32)}, {}, 17),
]

EINSUMS = [
    ("matmul", "ij,jk->ik", [(3, 4), (4, 5)]),
    ("implicit", "ij,jk", [(3, 4), (4, 5)]),
    ("transpose", "ij->ji", [(3, 4)]),
    ("trace", "ii", [(4, 4)]),
    ("diagonal", "ii->i", [(4, 4)]),
    ("sum-all", "ij->", [(3, 4)]),
    ("outer", "i,j->ij", [(3,), (4,)]),
    ("batched", "bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("three-inputs", "ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ellipsis", "...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("ellipsis-broadcast", "...ij,...jk->...ik", [(2, 1, 3, 4), (1, 3, 4, 5)]),
    ("ellipsis-implicit", "...ij", [(2, 3, 4)]),
    ("attention-scores", "bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("upper-case", "Ab,bC->AC", [(3, 4), (4, 2)]),
]


@pytest.mark.parametrize("op_type,make_inputs,attrs,opset", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_math_lowering_matches_onnxruntime(rng, op_type, make_inputs, attrs, opset):
    inputs = make_inputs(rng)
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    check_lowering(node_model(op_type, inputs, opset=opset, **attrs), inputs)


@pytest.mark.parametrize("equation,shapes", [pytest.param(*c[1:], id=c[0]) for c in EINSUMS])
def test_einsum_matches_onnxruntime(rng, equation, shapes):
    inputs = {f"x{n}": _f(rng, *s) for n, s in enumerate(shapes)}
    check_lowering(node_model("Einsum", inputs, opset=12, equation=equation), inputs)


def test_einsum_is_one_einsum(rng):
    from einc.ir.ein import EinsumOp

    inputs = {"a": _f(rng, 3, 4), "b": _f(rng, 4, 5)}
    imported = import_model(node_model("Einsum", inputs, opset=12, equation="ij,jk->ik"))
    Pipeline("onnx-to-ein").apply(imported.module)
    (op,) = [op for op in imported.module.walk() if isinstance(op, EinsumOp)]
    assert (op.map.data, op.reduce_op, op.output_vars) == ("$0 * $1", "add", ["i", "k"])


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 3, 3), (2, 1, 4, 4)])
def test_det_matches_onnxruntime(rng, shape):
    feeds = {"x": _f(rng, *shape)}
    check_lowering(node_model("Det", feeds, opset=11), feeds, rtol=1e-4, atol=1e-5)


def test_det_of_large_matrices_is_refused(rng):
    with pytest.raises(einc.diagnostics.EincError, match="Leibniz"):
        einc.compile(node_model("Det", {"x": _f(rng, 5, 5)}, opset=11))


SPECIAL_MOD = {
    "a": np.array([0.0, -0.0, -3.0, 3.0, -1.0, 1.0, np.inf, 1.0, np.nan, 1.0, 7.5, -7.5, 1e10], np.float32),
    "b": np.array([-2.0, 2.0, np.inf, np.inf, -np.inf, -np.inf, 2.0, 0.0, 2.0, np.nan, -2.0, 2.0, 3.3], np.float32),
}


@pytest.mark.parametrize("fmod", [0, 1])
def test_float_mod_edge_cases(fmod):
    """Opset 28: fmod=0 on floats takes the divisor's sign; infinities and NaN as C's
    fmod and Python's %. onnxruntime refuses fmod=0 on floats: onnx's reference decides."""
    model = node_model("Mod", SPECIAL_MOD, opset=28, fmod=fmod)
    check_lowering(model, SPECIAL_MOD, reference=onnx_reference)


SHIFT_AMOUNTS = [-1, 0, 1, 3, 7, 8, 31, 32, 63, 64]


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_bitshift_opset28(direction, dtype):
    """Signed types shift arithmetically; amounts out of [0, width) give the sign fill.
    uint64 values from 2^63 compute as negative i64 and must still shift logically."""
    info = np.iinfo(dtype)
    values = np.array([info.min, info.max, 1, 5, info.max // 3, info.min // 3 + 1], dtype=dtype)
    amounts = np.array([k for k in SHIFT_AMOUNTS if k >= 0 or info.min < 0], dtype=dtype)
    a, s = np.meshgrid(values, amounts)
    feeds = {"a": a.ravel(), "b": s.ravel()}
    model = node_model("BitShift", feeds, opset=28, direction=direction)
    check_lowering(model, feeds, reference=onnx_reference)


BITWISE_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("op_type", ["BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"])
@pytest.mark.parametrize("dtype", BITWISE_TYPES)
def test_bitwise_matches_onnxruntime(op_type, dtype):
    """Every bit, at the extremes of each type too: unsigned values compute
    zero-extended in a wider type, so bitnot must leave the stored bits right."""
    info = np.iinfo(dtype)
    values = np.array([info.min, info.max, 0, 1, 5, info.max // 3, info.min // 3 + 1, 0x5A], dtype=dtype)
    feeds = {"a": np.tile(values, (3, 1)), "b": np.array([info.max, 0x0F, 0, 1, info.min, 7, 0x33, 0x5A], dtype=dtype)}
    if op_type == "BitwiseNot":
        feeds = {"a": feeds["a"]}
    check_lowering(node_model(op_type, feeds, opset=18), feeds)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_swish_matches_onnxruntime(rng, alpha):
    feeds = {"x": _f(rng, 2, 3, 5, low=-6.0, high=6.0)}
    check_lowering(node_model("Swish", feeds, opset=24, alpha=alpha), feeds)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swiglu_matches_onnx_reference(rng, alpha, dtype):
    """onnxruntime 1.31 has no opset 28: onnx's reference decides."""
    feeds = {"a": _f(rng, 2, 3, 4, low=-5.0, high=5.0).astype(dtype), "b": _f(rng, 2, 3, 4).astype(dtype)}
    tol = 1e-5 if dtype == np.float32 else 2e-3
    check_lowering(node_model("SwiGLU", feeds, opset=28, alpha=alpha), feeds, rtol=tol, atol=tol, reference=onnx_reference)


@pytest.mark.parametrize("op_type", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size,datatype", [(10, onnx.TensorProto.FLOAT), (1, onnx.TensorProto.FLOAT), (5000, onnx.TensorProto.DOUBLE)])
def test_windows_match_onnxruntime(op_type, periodic, size, datatype):
    """The size is a constant (it sets the shape); 5000 is past the folding limit, so
    the window is computed by the model, not folded to a constant."""
    model = node_model(op_type, {}, initializers={"size": np.array(size, np.int64)}, opset=17,
                       periodic=periodic, output_datatype=datatype)
    check_lowering(model, {}, rtol=1e-5, atol=1e-6)
