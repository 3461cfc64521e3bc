"""onnx-to-ein: each lowering, run by the ein interpreter and compiled for the CPU,
against onnxruntime on the same single-node model."""

from __future__ import annotations

import numpy as np
import pytest

import einc
from einc.diagnostics import EincError
from einc.frontend.onnx import import_model
from einc.ir.ein import EinsumOp
from einc.ir.interpret import run_function
from einc.passes import Pipeline
from tests.conftest import ort_run, single_node_model

RTOL, ATOL = 1e-5, 1e-6


def _f(rng: np.random.Generator, *shape: int, low: float | None = None) -> np.ndarray:
    if low is not None:
        return rng.uniform(low, 2.0, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


# (case id, op type, inputs(rng) -> dict, initializers(rng) -> dict, attributes, opset)
CASES = [
    ("add-broadcast", "Add", lambda r: {"a": _f(r, 3, 4), "b": _f(r, 4)}, None, {}, 17),
    ("sub-broadcast", "Sub", lambda r: {"a": _f(r, 2, 3, 4), "b": _f(r, 3, 1)}, None, {}, 17),
    ("mul", "Mul", lambda r: {"a": _f(r, 5, 1), "b": _f(r, 1, 6)}, None, {}, 17),
    ("div", "Div", lambda r: {"a": _f(r, 4, 5), "b": _f(r, 4, 5, low=0.5)}, None, {}, 17),
    ("pow", "Pow", lambda r: {"a": _f(r, 4, 5, low=0.5), "b": _f(r, 5)}, None, {}, 17),
    *[
        (op.lower(), op, lambda r: {"x": _f(r, 3, 7)}, None, {}, 17)
        for op in ["Neg", "Abs", "Relu", "Sigmoid", "Tanh", "Exp", "Erf", "Floor", "Ceil", "Sin", "Cos", "Identity"]
    ],
    *[
        (op.lower(), op, lambda r: {"x": _f(r, 3, 7, low=0.1)}, None, {}, 17)
        for op in ["Log", "Sqrt", "Reciprocal"]
    ],
    ("sum3", "Sum", lambda r: {"a": _f(r, 2, 3), "b": _f(r, 3), "c": _f(r, 2, 1)}, None, {}, 17),
    ("max", "Max", lambda r: {"a": _f(r, 2, 3), "b": _f(r, 3)}, None, {}, 17),
    ("min", "Min", lambda r: {"a": _f(r, 2, 3), "b": _f(r, 2, 3)}, None, {}, 17),
    ("matmul", "MatMul", lambda r: {"a": _f(r, 5, 7), "b": _f(r, 7, 3)}, None, {}, 17),
    ("matmul-batched", "MatMul", lambda r: {"a": _f(r, 2, 5, 7), "b": _f(r, 7, 3)}, None, {}, 17),
    ("matmul-broadcast", "MatMul", lambda r: {"a": _f(r, 2, 1, 3, 4), "b": _f(r, 3, 4, 5)}, None, {}, 17),
    ("matmul-vec-mat", "MatMul", lambda r: {"a": _f(r, 7), "b": _f(r, 7, 3)}, None, {}, 17),
    ("matmul-mat-vec", "MatMul", lambda r: {"a": _f(r, 2, 5, 7), "b": _f(r, 7)}, None, {}, 17),
    ("gemm", "Gemm", lambda r: {"a": _f(r, 4, 6)}, lambda r: {"w": _f(r, 5, 6), "c": _f(r, 5)}, {"transB": 1}, 17),
    (
        "gemm-scaled",
        "Gemm",
        lambda r: {"a": _f(r, 6, 4), "w": _f(r, 6, 5), "c": _f(r, 4, 5)},
        None,
        {"transA": 1, "alpha": 0.5, "beta": 2.0},
        17,
    ),
    ("gemm-no-bias", "Gemm", lambda r: {"a": _f(r, 4, 6), "w": _f(r, 6, 5)}, None, {}, 17),
    ("softmax-last", "Softmax", lambda r: {"x": _f(r, 3, 4, 9)}, None, {}, 17),
    ("softmax-axis0", "Softmax", lambda r: {"x": _f(r, 6, 4)}, None, {"axis": 0}, 17),
    ("softmax-opset11", "Softmax", lambda r: {"x": _f(r, 2, 3, 4)}, None, {"axis": 1}, 11),
    ("transpose", "Transpose", lambda r: {"x": _f(r, 2, 3, 4)}, None, {"perm": [2, 0, 1]}, 17),
    ("transpose-default", "Transpose", lambda r: {"x": _f(r, 2, 3, 4)}, None, {}, 17),
    ("flatten", "Flatten", lambda r: {"x": _f(r, 2, 3, 4)}, None, {"axis": 2}, 17),
    (
        "reshape",
        "Reshape",
        lambda r: {"x": _f(r, 2, 3, 4)},
        lambda r: {"shape": np.array([4, -1], dtype=np.int64)},
        {},
        17,
    ),
]


@pytest.mark.parametrize(
    "op_type,make_inputs,make_inits,attrs,opset",
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_lowering_matches_onnxruntime(rng, op_type, make_inputs, make_inits, attrs, opset):
    inputs = make_inputs(rng)
    inits = make_inits(rng) if make_inits else {}
    model = single_node_model(op_type, inputs, initializers=inits, opset=opset, **attrs)
    expected = ort_run(model, inputs)["y0"]

    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    main = next(iter(imported.module.ops))
    assert not [op for op in imported.module.walk() if op.name.startswith("onnx.")]
    interpreted = run_function(main, list(inputs.values()), imported.weights)[0]
    np.testing.assert_allclose(interpreted, expected, rtol=RTOL, atol=ATOL)

    compiled = einc.compile(model).run(inputs)["y0"]
    np.testing.assert_allclose(compiled, expected, rtol=RTOL, atol=ATOL)


def test_softmax_is_a_four_einsum_cascade(rng):
    model = single_node_model("Softmax", {"x": _f(rng, 4, 8)})
    imported = import_model(model)
    Pipeline("onnx-to-ein").apply(imported.module)
    einsums = [op for op in imported.module.walk() if isinstance(op, EinsumOp)]
    assert [(op.reduce_op, op.map.data) for op in einsums] == [
        ("max", "$0"),
        (None, "exp($0 - $1)"),
        ("add", "$0"),
        (None, "$0 / $1"),
    ]


def test_all_unsupported_nodes_listed_at_once(rng):
    from onnx import helper

    x = helper.make_tensor_value_info("x", 1, [2, 3])
    y = helper.make_tensor_value_info("y", 1, None)
    graph = helper.make_graph(
        [
            helper.make_node("Bernoulli", ["x"], ["a"], name="bern"),
            helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("RandomUniformLike", ["b"], ["y"], name="rand"),
        ],
        "g",
        [x],
        [y],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(EincError) as err:
        einc.compile(model)
    message = str(err.value)
    assert "2 unsupported nodes" in message
    assert "'bern' (Bernoulli)" in message and "'rand' (RandomUniformLike)" in message


def test_unsupported_attribute_names_node_and_opset(rng):
    model = single_node_model("Transpose", {"x": _f(rng, 2, 3)}, perm=[0, 0])
    with pytest.raises(EincError) as err:
        imported = import_model(model)
        Pipeline("onnx-to-ein").apply(imported.module)
    assert "transpose_node" in str(err.value) and "Transpose" in str(err.value)
