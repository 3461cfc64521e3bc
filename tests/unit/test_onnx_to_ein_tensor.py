"""onnx-to-ein, tensor family: each lowering run by the ein interpreter and compiled
for the CPU, against onnxruntime on the same one-node model.

Tolerance: integer and bool results must be equal; float results within rtol
1e-5, atol 1e-6 (Resize and CumSum, which sum in another order than
onnxruntime: rtol 1e-5, atol 1e-5). Inputs given as `K(...)` are initializers
(compile-time constants), `In(...)` graph inputs. Ops or opsets onnxruntime
1.31 does not run (opset 28) are checked against onnx's reference evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import einc
from einc.diagnostics import EincError
from einc.frontend.onnx import import_model
from einc.ir.ein import EinsumOp, GatherOp
from einc.ir.interpret import run_function
from einc.passes import Pipeline
from einc.passes.onnx_to_ein import tensor
from tests.conftest import IR_VERSION, ort_run

RTOL, ATOL = 1e-5, 1e-6
LOOSE = {"Resize", "CumSum"}
"""Ops whose float results are compared with atol 1e-5."""

ORT_MAX_OPSET = 26
"""Newest opset onnxruntime 1.31 runs; newer models are checked with onnx.reference."""

RNG = np.random.default_rng(7)


@dataclass(frozen=True)
class In:
    """A graph input: a runtime value."""

    value: np.ndarray


@dataclass(frozen=True)
class K:
    """An initializer: a value known at compile time."""

    value: np.ndarray


@dataclass
class Case:
    id: str
    op: str
    inputs: list[In | K | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 17
    outputs: int = 1
    declared: list[int] | None = None
    """The float output's shape, declared where inference cannot know it."""


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*shape: int, low: int = -9, high: int = 10, dtype: type = np.int64) -> np.ndarray:
    return RNG.integers(low, high, shape).astype(dtype)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def grid(*shape: int) -> np.ndarray:
    """0, 1, 2, ... as float32: easy to read in a failing Resize."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def model_of(case: Case) -> onnx.ModelProto:
    names, graph_inputs, inits = [], [], []
    for n, spec in enumerate(case.inputs):
        if spec is None:
            names.append("")
            continue
        name = f"x{n}"
        names.append(name)
        if isinstance(spec, In):
            dtype = helper.np_dtype_to_tensor_dtype(spec.value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, dtype, spec.value.shape))
        else:
            inits.append(numpy_helper.from_array(spec.value, name))
    outs = [f"y{i}" for i in range(case.outputs)]
    node = helper.make_node(case.op, names, outs, name=f"{case.op.lower()}_node", **case.attrs)
    results = [onnx.ValueInfoProto(name=o) for o in outs]
    if case.declared is not None:
        results = [helper.make_tensor_value_info(outs[0], TensorProto.FLOAT, case.declared)]
    graph = helper.make_graph([node], case.id, graph_inputs, results, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)], ir_version=IR_VERSION)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)


def feeds_of(case: Case) -> dict[str, np.ndarray]:
    return {f"x{n}": s.value for n, s in enumerate(case.inputs) if isinstance(s, In)}


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    if opset <= ORT_MAX_OPSET:
        return list(ort_run(model, feeds).values())
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def assert_same(got: np.ndarray, want: np.ndarray, op: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    if want.dtype.kind in "fc":
        atol = 1e-5 if op in LOOSE else ATOL
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=RTOL, atol=atol)
    else:
        np.testing.assert_array_equal(got, want)


def lowered(case: Case) -> tuple[Any, Any]:
    """The imported model after onnx-to-ein, and its `main`."""
    imported = import_model(model_of(case))
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    return imported, next(iter(imported.module.ops))


# -- the cases -----------------------------------------------------------------------------------


def _cast_cases() -> list[Case]:
    mixed = np.array([[-2.7, -1.0, -0.5, 0.0], [0.4, 1.5, 2.9, 100.2]], np.float32)
    positive = np.array([[0.0, 0.5, 1.9, 7.0], [128.0, 200.7, 254.0, 3.3]], np.float32)
    bools = np.array([[True, False, True], [False, False, True]])
    cases = [
        ("f32-f16", In(f32(3, 4)), TensorProto.FLOAT16, 13),
        ("f16-f32", In(f32(3, 4).astype(np.float16)), TensorProto.FLOAT, 13),
        ("f32-f64", In(f32(3, 4)), TensorProto.DOUBLE, 9),
        ("f64-f32", In(f32(3, 4).astype(np.float64)), TensorProto.FLOAT, 19),
        ("f32-i32-truncates", In(mixed), TensorProto.INT32, 13),
        ("f32-i64", In(mixed), TensorProto.INT64, 21),
        ("f32-i8", In(mixed), TensorProto.INT8, 13),
        ("f32-u8", In(positive), TensorProto.UINT8, 13),
        ("f32-bool", In(mixed), TensorProto.BOOL, 13),
        ("f16-i32", In(mixed.astype(np.float16)), TensorProto.INT32, 13),
        ("bool-f32", In(bools), TensorProto.FLOAT, 13),
        ("bool-i32", In(bools), TensorProto.INT32, 6),
        ("i64-i32", In(ints(3, 4)), TensorProto.INT32, 13),
        ("i16-i8-wraps", In(np.array([200, -200, 127, 300], np.int16)), TensorProto.INT8, 13),
        ("i32-f32", In(ints(3, 4, dtype=np.int32)), TensorProto.FLOAT, 13),
        ("i32-f16", In(ints(3, 4, dtype=np.int32)), TensorProto.FLOAT16, 13),
        ("i64-bool", In(ints(3, 4, low=-2, high=3)), TensorProto.BOOL, 13),
        ("u8-f32", In(ints(3, 4, low=0, high=255, dtype=np.uint8)), TensorProto.FLOAT, 13),
        ("u8-i64", In(ints(3, 4, low=0, high=255, dtype=np.uint8)), TensorProto.INT64, 13),
        ("same-type", In(f32(2, 3)), TensorProto.FLOAT, 13),
    ]
    return [Case(f"cast-{name}", "Cast", [x], {"to": to}, opset) for name, x, to, opset in cases] + [
        Case("castlike-f32-f16", "CastLike", [In(f32(2, 5)), In(np.zeros(1, np.float16))], {}, 15),
        Case("castlike-f32-i64", "CastLike", [In(mixed), K(np.zeros(1, np.int64))], {}, 19),
        Case("castlike-bool-f32", "CastLike", [In(bools), In(np.zeros(2, np.float32))], {}, 21),
    ]


CASES: list[Case] = [
    *_cast_cases(),
    # Concat
    Case("concat-axis0", "Concat", [In(f32(2, 3)), In(f32(4, 3))], {"axis": 0}, 4),
    Case("concat-axis-1-three", "Concat", [In(f32(2, 1, 3)), In(f32(2, 1, 2)), In(f32(2, 1, 1))], {"axis": -1}, 13),
    Case("concat-with-constant", "Concat", [In(ints(2, 2)), K(ints(2, 3))], {"axis": 1}, 11),
    Case("concat-empty-piece", "Concat", [In(f32(2, 3)), K(np.zeros((2, 0), np.float32))], {"axis": 1}, 13),
    # Constant and ConstantOfShape
    Case("constant-tensor", "Constant", [], {"value": numpy_helper.from_array(f32(2, 3))}, 13),
    Case("constant-floats", "Constant", [], {"value_floats": [1.5, -2.0]}, 13),
    Case("constant-int", "Constant", [], {"value_int": 7}, 13),
    Case("constantofshape-default", "ConstantOfShape", [K(i64(2, 3))], {}, 9),
    Case("constantofshape-float", "ConstantOfShape", [K(i64(3, 1, 2))],
         {"value": helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])}, 20),
    Case("constantofshape-int", "ConstantOfShape", [K(i64(4))],
         {"value": helper.make_tensor("v", TensorProto.INT32, [1], [-7])}, 9),
    Case("constantofshape-bool", "ConstantOfShape", [K(i64(2, 2))],
         {"value": helper.make_tensor("v", TensorProto.BOOL, [1], [True])}, 21),
    Case("constantofshape-large", "ConstantOfShape", [K(i64(80, 70))],
         {"value": helper.make_tensor("v", TensorProto.INT64, [1], [2**40])}, 20),
    Case("constantofshape-empty", "ConstantOfShape", [K(i64(0))], {}, 20),
    # Expand
    Case("expand-rank-up", "Expand", [In(f32(3, 1)), K(i64(2, 3, 4))], {}, 8),
    Case("expand-smaller-shape", "Expand", [In(ints(2, 3)), K(i64(1))], {}, 13),
    Case("expand-middle", "Expand", [In(f32(2, 1, 4)), K(i64(2, 5, 4))], {}, 13),
    # Gather
    Case("gather-runtime", "Gather", [In(f32(5, 4)), In(ints(3, low=0, high=5))], {"axis": 0}, 13),
    Case("gather-runtime-negative-i32", "Gather", [In(f32(3, 6)), In(ints(2, 2, low=-6, high=6, dtype=np.int32))],
         {"axis": 1}, 11),
    Case("gather-runtime-ints", "Gather", [In(ints(2, 3, 4)), In(ints(5, low=-4, high=4))], {"axis": -1}, 13),
    Case("gather-scalar-constant", "Gather", [In(f32(4, 5)), K(np.array(-2, np.int64))], {"axis": 1}, 13),
    Case("gather-progression", "Gather", [In(f32(7, 3)), K(i64(1, 3, 5))], {"axis": 0}, 1),
    Case("gather-reversed", "Gather", [In(f32(3, 5)), K(i64(4, 3, 2, 1, 0))], {"axis": 1}, 13),
    Case("gather-prefix", "Gather", [In(f32(6, 2)), K(i64(0, 1, 2))], {"axis": 0}, 13),
    Case("gather-repeat", "Gather", [In(f32(3, 2)), K(i64(2, 2, 2, 2))], {"axis": 0}, 13),
    Case("gather-irregular-2d", "Gather", [In(f32(5, 3)), K(np.array([[0, 4], [-1, 2]], np.int64))], {"axis": 0}, 13),
    # GatherElements
    Case("gatherelements-axis0", "GatherElements", [In(f32(3, 4)), In(ints(2, 4, low=-3, high=3))], {"axis": 0}, 11),
    Case("gatherelements-axis1", "GatherElements", [In(ints(3, 4)), In(ints(3, 2, low=0, high=4))], {"axis": 1}, 13),
    Case("gatherelements-3d", "GatherElements", [In(f32(2, 3, 4)), In(ints(2, 2, 4, low=-3, high=3, dtype=np.int32))],
         {"axis": -2}, 13),
    Case("gatherelements-constant", "GatherElements", [In(f32(3, 3)), K(np.array([[1, 2], [0, 0]], np.int64))],
         {"axis": 1}, 13),
    # GatherND
    Case("gathernd-k1", "GatherND", [In(f32(4, 3, 2)), In(np.array([[1], [3], [-1]], np.int64))], {}, 11),
    Case("gathernd-k2", "GatherND", [In(ints(4, 3, 2)), In(np.array([[[1, 2]], [[0, -1]]], np.int64))], {}, 12),
    Case("gathernd-full", "GatherND", [In(f32(3, 4)), In(np.array([[2, 3], [0, 1], [-1, -4]], np.int64))], {}, 13),
    Case("gathernd-batch1", "GatherND", [In(f32(2, 3, 4)), In(np.array([[[1], [2]], [[0], [-1]]], np.int64))],
         {"batch_dims": 1}, 13),
    Case("gathernd-batch2", "GatherND", [In(f32(2, 3, 4, 2)), In(ints(2, 3, 2, 1, low=0, high=4))],
         {"batch_dims": 2}, 13),
    # Pad
    Case("pad-v2-constant", "Pad", [In(f32(2, 3))], {"pads": [1, 0, 2, 1], "value": 1.5}, 2),
    Case("pad-v2-edge", "Pad", [In(f32(2, 3))], {"pads": [1, 2, 1, 0], "mode": "edge"}, 2),
    Case("pad-v2-reflect", "Pad", [In(f32(3, 4))], {"pads": [2, 1, 0, 3], "mode": "reflect"}, 2),
    Case("pad-v11-constant-value", "Pad", [In(f32(2, 3)), K(i64(0, 1, 1, 2)), K(np.array(-3.0, np.float32))], {}, 11),
    Case("pad-v11-runtime-value", "Pad", [In(f32(2, 3)), K(i64(1, -1, 0, 2)), In(np.array(2.5, np.float32))], {}, 11),
    Case("pad-v18-runtime-value-ints", "Pad", [In(ints(2, 3, 2)), K(i64(1, 2)), In(np.array([7], np.int64)), K(i64(1))],
         {}, 18),
    Case("pad-v13-edge-runtime-value", "Pad", [In(f32(2, 3)), K(i64(1, 0, 0, 1)), In(np.array(9.0, np.float32))],
         {"mode": "edge"}, 13),
    Case("pad-v13-crop", "Pad", [In(f32(4, 5)), K(i64(-1, 2, 1, -2))], {}, 13),
    Case("pad-v13-ints-edge", "Pad", [In(ints(3, 3)), K(i64(1, 1, 1, 1))], {"mode": "edge"}, 13),
    Case("pad-v13-ints-constant", "Pad", [In(ints(3, 2, dtype=np.int32)), K(i64(1, 0, 0, 1)),
                                          K(np.array(9, np.int32))], {}, 13),
    Case("pad-v18-axes", "Pad", [In(f32(2, 3, 4)), K(i64(1, 2)), None, K(i64(-1))], {}, 18),
    Case("pad-v18-axes-reflect", "Pad", [In(f32(2, 3, 4)), K(i64(1, 0, 1, 2)), None, K(i64(0, 2))],
         {"mode": "reflect"}, 18),
    Case("pad-v19-wrap", "Pad", [In(f32(3, 4)), K(i64(1, 2, 2, 3))], {"mode": "wrap"}, 19),
    Case("pad-v19-wrap-crop", "Pad", [In(f32(3, 4)), K(i64(-1, 1, 0, -2))], {"mode": "wrap"}, 21),
    # Range
    Case("range-float", "Range", [K(np.array(1.0, np.float32)), K(np.array(5.5, np.float32)),
                                  K(np.array(0.5, np.float32))], {}, 11),
    Case("range-int32-negative", "Range", [K(np.array(10, np.int32)), K(np.array(-3, np.int32)),
                                           K(np.array(-3, np.int32))], {}, 11),
    Case("range-long", "Range", [K(np.array(0, np.int64)), K(np.array(5000, np.int64)),
                                 K(np.array(1, np.int64))], {}, 11),
    # Shape and Size
    Case("shape", "Shape", [In(f32(2, 3, 4))], {}, 1),
    Case("shape-start-end", "Shape", [In(f32(2, 3, 4, 5))], {"start": 1, "end": -1}, 15),
    Case("shape-clamped", "Shape", [In(f32(2, 3))], {"start": -10, "end": 10}, 19),
    Case("shape-empty", "Shape", [In(f32(2, 3))], {"start": 2, "end": 1}, 21),
    Case("size", "Size", [In(f32(2, 3, 4))], {}, 13),
    # Slice
    Case("slice-v1", "Slice", [In(f32(4, 6))], {"starts": [1, 2], "ends": [3, 100], "axes": [0, 1]}, 1),
    Case("slice-v1-default-axes", "Slice", [In(f32(4, 6))], {"starts": [0, -3], "ends": [2, -1]}, 1),
    Case("slice-v10-steps", "Slice", [In(f32(5, 7)), K(i64(0, 1)), K(i64(5, 7)), K(i64(0, 1)), K(i64(2, 3))], {}, 10),
    Case("slice-v13-reverse", "Slice", [In(f32(4, 5)), K(i64(-1)), K(i64(-(2**63))), K(i64(1)), K(i64(-1))], {}, 13),
    Case("slice-v13-reverse-step2", "Slice", [In(ints(6, 3)), K(i64(10)), K(i64(0)), K(i64(0)), K(i64(-2))], {}, 13),
    Case("slice-v13-clamp", "Slice", [In(f32(3, 4)), K(i64(-100, 2)), K(i64(2**62, 1000))], {}, 13),
    Case("slice-v13-negative-axes", "Slice", [In(f32(2, 3, 4)), K(i64(1)), K(i64(3)), K(i64(-1))], {}, 13),
    Case("slice-v13-prefix", "Slice", [In(f32(5, 2)), K(i64(0)), K(i64(3)), K(i64(0))], {}, 13),
    Case("slice-v13-empty", "Slice", [In(f32(3, 4)), K(i64(2)), K(i64(1)), K(i64(1))], {}, 13),
    # Split
    Case("split-v2-attr", "Split", [In(f32(6, 2))], {"axis": 0, "split": [1, 2, 3]}, 2, 3),
    Case("split-v11-equal", "Split", [In(f32(2, 6))], {"axis": -1}, 11, 3),
    Case("split-v13-input", "Split", [In(ints(5, 3)), K(i64(2, 3))], {"axis": 0}, 13, 2),
    Case("split-v13-zero-part", "Split", [In(f32(4, 3)), K(i64(0, 4))], {"axis": 0}, 13, 2),
    Case("split-v18-num-outputs", "Split", [In(f32(7, 2))], {"axis": 0, "num_outputs": 3}, 18, 3),
    # Squeeze, Unsqueeze, Flatten, Reshape, Transpose, Identity
    Case("squeeze-v11", "Squeeze", [In(f32(1, 3, 1, 2))], {"axes": [0, -2]}, 11),
    Case("squeeze-v13", "Squeeze", [In(f32(1, 3, 1, 2)), K(i64(2))], {}, 13),
    Case("squeeze-all", "Squeeze", [In(f32(1, 3, 1))], {}, 13),
    Case("unsqueeze-v11", "Unsqueeze", [In(f32(3, 2))], {"axes": [0, 3]}, 11),
    Case("unsqueeze-v13", "Unsqueeze", [In(ints(3, 2)), K(i64(-1, 1))], {}, 13),
    Case("flatten-axis0", "Flatten", [In(f32(2, 3, 4))], {"axis": 0}, 13),
    Case("flatten-negative", "Flatten", [In(f32(2, 3, 4))], {"axis": -1}, 11),
    Case("reshape-zero-copies", "Reshape", [In(f32(2, 3, 4)), K(i64(0, -1))], {}, 14),
    Case("reshape-allowzero", "Reshape", [In(np.zeros((0, 3), np.float32)), K(i64(3, 0))], {"allowzero": 1}, 14),
    Case("reshape-v5", "Reshape", [In(f32(4, 6)), K(i64(2, 2, -1))], {}, 5),
    Case("transpose-ints", "Transpose", [In(ints(2, 3, 4))], {"perm": [1, 2, 0]}, 13),
    Case("identity-ints", "Identity", [In(ints(2, 3))], {}, 16),
    Case("dropout-inference", "Dropout", [In(f32(2, 3))], {}, 13, 2),
    Case("dropout-runtime-mode-zero-ratio", "Dropout", [In(f32(2, 3)), K(np.array(0.0, np.float32)), In(np.array(True))],
         {}, 13, 2),
    Case("dropout-training-zero-ratio", "Dropout", [In(f32(2, 3)), K(np.array(0.0, np.float32)),
                                                    K(np.array(True))], {}, 13, 2),
    # Where
    Case("where-broadcast", "Where", [In(RNG.random((3, 1)) > 0.5), In(f32(1, 4)), In(f32(3, 4))], {}, 16),
    Case("where-ints", "Where", [In(RNG.random((2, 3)) > 0.5), In(ints(2, 3)), K(np.array(-1, np.int64))], {}, 9),
    # Tile
    Case("tile", "Tile", [In(f32(2, 3)), K(i64(2, 3))], {}, 6),
    Case("tile-ones", "Tile", [In(ints(2, 1, 3)), K(i64(1, 4, 1))], {}, 13),
    # Trilu
    Case("triu", "Trilu", [In(f32(4, 5))], {}, 14),
    Case("triu-k", "Trilu", [In(f32(2, 4, 5)), K(np.array(2, np.int64))], {}, 14),
    Case("tril-negative-k", "Trilu", [In(ints(5, 3)), K(np.array(-1, np.int64))], {"upper": 0}, 14),
    Case("tril-runtime-k", "Trilu", [In(f32(3, 4, 4)), In(np.array(1, np.int64))], {"upper": 0}, 14),
    Case("triu-runtime-k", "Trilu", [In(f32(4, 6)), In(np.array(-2, np.int64))], {}, 14),
    # OneHot
    Case("onehot-last", "OneHot", [In(np.array([[1, 9], [-1, 12]], np.int64)), K(np.array(10, np.int64)),
                                   In(np.array([0.0, 1.0], np.float32))], {}, 11),
    Case("onehot-axis0-int-values", "OneHot", [In(ints(2, 3, low=-5, high=5)), K(np.array(4, np.int64)),
                                               K(np.array([-1, 5], np.int64))], {"axis": 0}, 11),
    Case("onehot-axis1-float-indices", "OneHot", [In(np.array([[0.0, 2.7, -1.0, 1.0, -3.0]], np.float32)),
                                                  K(np.array(3.0, np.float32)), K(np.array([2.0, 3.0], np.float32))],
         {"axis": 1}, 9),
    # EyeLike
    Case("eyelike", "EyeLike", [In(f32(4, 4))], {}, 9),
    Case("eyelike-k-dtype", "EyeLike", [In(f32(3, 5))], {"k": 2, "dtype": TensorProto.INT32}, 22),
    Case("eyelike-negative-k", "EyeLike", [In(ints(5, 3))], {"k": -2}, 22),
    Case("eyelike-large", "EyeLike", [In(np.zeros((90, 70), np.float32))], {"k": 1}, 9),
    # CumSum
    *[
        Case(f"cumsum-{n}-ex{e}-rev{r}", "CumSum", [In(f32(3, n)), K(np.array(-1, np.int64))],
             {"exclusive": e, "reverse": r}, 14)
        for n in (5, 40) for e in (0, 1) for r in (0, 1)
    ],
    Case("cumsum-axis0-int32", "CumSum", [In(ints(4, 3, dtype=np.int32)), K(np.array(0, np.int32))], {}, 11),
    Case("cumsum-long-ints", "CumSum", [In(ints(70, 2)), K(np.array(0, np.int64))], {"exclusive": 1}, 14),
    # ReverseSequence
    Case("reversesequence-time0", "ReverseSequence", [In(f32(4, 3, 2)), In(i64(4, 1, 3))], {}, 10),
    Case("reversesequence-time1", "ReverseSequence", [In(ints(3, 5)), In(i64(2, 5, 0))],
         {"time_axis": 1, "batch_axis": 0}, 10),
    # DepthToSpace, SpaceToDepth
    Case("depthtospace-dcr", "DepthToSpace", [In(f32(1, 8, 2, 3))], {"blocksize": 2}, 13),
    Case("depthtospace-crd", "DepthToSpace", [In(f32(2, 8, 2, 2))], {"blocksize": 2, "mode": "CRD"}, 11),
    Case("spacetodepth", "SpaceToDepth", [In(f32(2, 2, 4, 6))], {"blocksize": 2}, 13),
    Case("spacetodepth-crd", "SpaceToDepth", [In(f32(1, 2, 4, 4))], {"blocksize": 2, "mode": "CRD"}, 28),
]


def _resize(id: str, x: np.ndarray, attrs: dict[str, Any], opset: int = 19, scales: list[float] | None = None,
            sizes: list[int] | None = None, roi: list[float] | None = None) -> Case:
    inputs: list[In | K | None] = [In(x)]
    empty = K(np.zeros(0, np.float32)) if opset == 11 else None  # opset 11 needs roi and scales
    if opset < 11:
        inputs.append(K(np.array(scales, np.float32)))
    else:
        inputs += [K(np.array(roi, np.float32)) if roi is not None else empty,
                   K(np.array(scales, np.float32)) if scales is not None else empty,
                   K(np.array(sizes, np.int64)) if sizes is not None else None]
    while inputs[-1] is None:
        inputs.pop()
    return Case(f"resize-{id}", "Resize", inputs, attrs, opset)


RESIZE_CASES = [
    _resize("v10-nearest-up", grid(1, 1, 2, 3), {}, 10, scales=[1, 1, 2, 1.5]),
    _resize("v10-nearest-down", grid(1, 1, 4, 5), {}, 10, scales=[1, 1, 0.5, 0.6]),
    _resize("v10-linear-up", f32(1, 1, 3, 4), {"mode": "linear"}, 10, scales=[1, 1, 2, 1.5]),
    *[
        _resize(f"nearest-{ctm}-{nm}", grid(1, 2, 3, 5),
                {"coordinate_transformation_mode": ctm, "nearest_mode": nm}, 13, scales=[1, 1, 1.7, 0.6])
        for ctm in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel")
        for nm in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
    ],
    _resize("nearest-sizes-uint8", ints(1, 2, 4, 4, low=0, high=255, dtype=np.uint8), {}, 13, sizes=[1, 2, 7, 3]),
    _resize("nearest-int32-2d", ints(3, 4, dtype=np.int32), {"nearest_mode": "floor"}, 11, scales=[2.0, 0.5]),
    *[
        _resize(f"linear-{ctm}-{kind}", f32(2, 3, 4, 5), {"mode": "linear", "coordinate_transformation_mode": ctm},
                13, scales=scales)
        for ctm in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel")
        for kind, scales in (("up", [1, 1, 2.0, 1.5]), ("down", [1, 1, 0.5, 0.6]))
    ],
    _resize("linear-sizes-1", f32(1, 1, 4, 5), {"mode": "linear", "coordinate_transformation_mode":
                                                "pytorch_half_pixel"}, 13, sizes=[1, 1, 1, 3]),
    _resize("linear-3d-input", f32(2, 5, 6), {"mode": "linear"}, 13, scales=[1, 1.5, 0.5]),
    *[
        _resize(f"cubic-{ctm}-{kind}", f32(1, 2, 5, 6), {"mode": "cubic", "coordinate_transformation_mode": ctm},
                13, scales=scales)
        for ctm in ("half_pixel", "align_corners", "asymmetric")
        for kind, scales in (("up", [1, 1, 2.0, 1.5]), ("down", [1, 1, 0.6, 0.5]))
    ],
    _resize("cubic-a-exclude-outside", f32(1, 1, 5, 6),
            {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}, 13, scales=[1, 1, 1.6, 0.7]),
    _resize("tf-crop-linear", f32(1, 1, 5, 5), {"mode": "linear", "coordinate_transformation_mode":
                                                "tf_crop_and_resize", "extrapolation_value": 10.0},
            11, sizes=[1, 1, 4, 3], roi=[0, 0, -0.2, 0.4, 1, 1, 0.9, 1.3]),
    _resize("tf-crop-nearest", f32(1, 1, 4, 6), {"coordinate_transformation_mode": "tf_crop_and_resize"},
            13, sizes=[1, 1, 3, 4], roi=[0, 0, 0.25, -0.1, 1, 1, 0.75, 1.2]),
    _resize("antialias-linear", f32(1, 2, 8, 9), {"mode": "linear", "antialias": 1}, 18, scales=[1, 1, 0.5, 0.4]),
    _resize("antialias-linear-sizes", f32(1, 1, 7, 9), {"mode": "linear", "antialias": 1}, 18, sizes=[1, 1, 3, 4]),
    _resize("antialias-cubic", f32(1, 1, 9, 8), {"mode": "cubic", "antialias": 1}, 18, scales=[1, 1, 0.6, 0.4]),
    _resize("antialias-cubic-exclude", f32(1, 1, 8, 8), {"mode": "cubic", "antialias": 1, "exclude_outside": 1,
                                                         "cubic_coeff_a": -0.5}, 18, scales=[1, 1, 0.5, 0.75]),
    _resize("axes-scales", grid(1, 1, 3, 4), {"axes": [3, 2]}, 18, scales=[2.0, 1.5]),
    _resize("axes-sizes-linear", f32(1, 1, 3, 4), {"axes": [-1], "mode": "linear"}, 18, sizes=[7]),
    _resize("not-larger", grid(1, 1, 4, 4), {"keep_aspect_ratio_policy": "not_larger", "axes": [2, 3]},
            18, sizes=[6, 9]),
    _resize("not-smaller-linear", f32(1, 1, 4, 6), {"keep_aspect_ratio_policy": "not_smaller", "axes": [2, 3],
                                                    "mode": "linear"}, 18, sizes=[2, 2]),
    _resize("half-pixel-symmetric", f32(1, 1, 4, 5), {"mode": "linear", "coordinate_transformation_mode":
                                                      "half_pixel_symmetric"}, 19, scales=[1, 1, 2.5, 0.7]),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES + RESIZE_CASES])
def test_lowering_matches_onnxruntime(case: Case):
    model = model_of(case)
    feeds = feeds_of(case)
    expected = reference(model, feeds, case.opset)

    imported, main = lowered(case)
    assert not [op for op in imported.module.walk() if op.name.startswith("onnx.")]
    interpreted = run_function(main, list(feeds.values()), imported.weights)
    for got, want in zip(interpreted, expected):
        assert_same(got, want, case.op)

    compiled = einc.compile(model).run(feeds)
    for got, want in zip(compiled.values(), expected):
        assert_same(got, want, case.op)


# -- what the cascades look like -----------------------------------------------------------------


def _ops(case: Case) -> list[Any]:
    _, main = lowered(case)
    return [op for op in main.body.block.ops if op.name != "func.return"]


def test_reversed_slice_is_an_einsum_with_a_negative_coefficient():
    case = Case("rev", "Slice", [In(f32(6, 3)), K(i64(-1)), K(i64(-(2**63))), K(i64(0)), K(i64(-2))], {}, 13)
    (op,) = [op for op in _ops(case) if isinstance(op, EinsumOp)]
    assert [str(e) for e in op.input_exprs[0]] == ["5 - i0 * 2", "i1"]


def test_gather_by_runtime_indices_is_ein_gather_and_by_a_progression_an_einsum():
    runtime = Case("g", "Gather", [In(f32(5, 3)), In(i64(1, 0))], {"axis": 0}, 13)
    assert any(isinstance(op, GatherOp) for op in _ops(runtime))
    progression = Case("g", "Gather", [In(f32(5, 3)), K(i64(4, 2, 0))], {"axis": 0}, 13)
    ops = _ops(progression)
    assert not any(isinstance(op, GatherOp) for op in ops)
    assert [str(e) for e in next(op for op in ops if isinstance(op, EinsumOp)).input_exprs[0]] == ["4 - i0 * 2", "i1"]


def test_nearest_upsampling_by_an_integer_is_an_einsum_into_a_view():
    case = Case("r", "Resize", [In(f32(1, 2, 3, 4)), None, K(np.array([1, 1, 2, 3], np.float32))],
                {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, 19)
    names = [op.name for op in _ops(case)]
    assert "ein.gather" not in names and names.count("ein.einsum") == 2


def test_shape_range_and_small_constant_of_shape_fold_to_constants():
    for case in [
        Case("s", "Shape", [In(f32(2, 3))], {}, 15),
        Case("r", "Range", [K(np.array(0, np.int64)), K(np.array(9, np.int64)), K(np.array(2, np.int64))], {}, 11),
        Case("c", "ConstantOfShape", [K(i64(3, 4))], {}, 20),
    ]:
        assert {op.name for op in _ops(case)} == {"ein.constant"}


def test_short_cumsum_is_one_triangular_contraction_and_a_long_one_a_log_step_scan():
    short = _ops(Case("c", "CumSum", [In(f32(2, tensor.SCAN_LIMIT)), K(np.array(1, np.int64))], {}, 14))
    (sum_op,) = [op for op in short if isinstance(op, EinsumOp)]
    assert sum_op.reduce_op == "add" and sum_op.map.data == "select(le($1, $2), $0, 0)"
    long = _ops(Case("c", "CumSum", [In(f32(2, 100)), K(np.array(1, np.int64))], {}, 14))
    assert sum(op.name == "ein.pad" for op in long) == 7  # shifts by 1, 2, 4, ..., 64


def test_resize_taps_are_onnxruntime_linear_weights():
    indices, weights, outside = tensor.resize_taps("linear", 4, 8, 2.0)
    assert indices[0].tolist() == [0, 0] and indices[3].tolist() == [1, 2]  # x(3) = 3.5 / 2 - 0.5
    np.testing.assert_allclose(weights[3], [0.75, 0.25])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert not outside.any()


def test_an_onnx_constant_op_in_ir_becomes_an_ein_constant():
    """The importer turns Constant nodes into data; `einc opt` input may still hold them."""
    from xdsl.parser import Parser

    from einc.ir.interpret import run_function as run
    from einc.passes.pipeline import make_context

    text = """
    func.func @main() -> (tensor<2xf32>, tensor<3xi64>) {
      %a = onnx.Constant() {value_floats = array<f32: 1.5, -2.0>} : () -> tensor<2xf32>
      %b = onnx.Constant() {value = dense<[4, 5, 6]> : tensor<3xi64>} : () -> tensor<3xi64>
      func.return %a, %b : tensor<2xf32>, tensor<3xi64>
    }
    """
    module = Parser(make_context(), text).parse_module()
    Pipeline("onnx-to-ein", verify_each=True).apply(module)
    a, b = run(next(iter(module.ops)), [], {})
    assert a.tolist() == [1.5, -2.0] and b.tolist() == [4, 5, 6]


# -- what is refused, and why --------------------------------------------------------------------

REFUSED = [
    (Case("slice-runtime-starts", "Slice", [In(f32(4, 5)), In(i64(1)), K(i64(3))], {}, 13, declared=[2, 5]),
     "'starts' (input 1) must be a constant"),
    (Case("pad-runtime-pads", "Pad", [In(f32(2, 2)), In(i64(1, 1, 1, 1))], {}, 13, declared=[4, 4]),
     "'pads' (input 1) must be a constant"),
    (Case("slice-unknown-shape", "Slice", [In(f32(4, 5)), In(i64(1)), K(i64(3))], {}, 13),
     "shape inference could not determine the shape"),
    (Case("resize-linear-ints", "Resize", [In(ints(1, 1, 2, 2)), None, K(np.array([1, 1, 2, 2], np.float32))],
          {"mode": "linear"}, 13), "linear resize of integers"),
    (Case("dropout-training", "Dropout", [In(f32(2, 3)), K(np.array(0.5, np.float32)), K(np.array(True))], {}, 13),
     "training-mode Dropout"),
    (Case("dropout-runtime-mode", "Dropout", [In(f32(2, 3)), None, In(np.array(False))], {}, 13),
     "Dropout with a runtime training_mode and ratio 0.5 may draw a random mask"),
    (Case("cumsum-runtime-axis", "CumSum", [In(f32(2, 3)), In(np.array(1, np.int64))], {}, 14),
     "'axis' (input 1) must be a constant"),
]


@pytest.mark.parametrize("case,reason", [pytest.param(c, r, id=c.id) for c, r in REFUSED])
def test_unrepresentable_cases_are_refused_with_a_reason(case: Case, reason: str):
    with pytest.raises(EincError) as err:
        lowered(case)
    assert reason in str(err.value) and case.op in str(err.value)


# -- CumProd, CenterCropPad, Compress, Col2Im, Upsample ----------------------------------------------

LOOSE.update({"CumProd", "Upsample"})

MORE_CASES = [
    *[
        Case(f"cumprod-{n}-ex{e}-rev{r}", "CumProd", [In(RNG.uniform(0.5, 1.5, (3, n)).astype(np.float32)),
                                                      K(np.array(-1, np.int64))], {"exclusive": e, "reverse": r}, 26)
        for n in (5, 40) for e in (0, 1) for r in (0, 1)
    ],
    Case("cumprod-axis0-int32", "CumProd", [In(ints(4, 3, low=-3, high=4, dtype=np.int32)), K(np.array(0, np.int32))],
         {}, 26),
    Case("cumprod-long-ints", "CumProd", [In(ints(40, 2, low=-1, high=2)), K(np.array(0, np.int64))],
         {"exclusive": 1, "reverse": 1}, 26),
    # CenterCropPad: crop, pad, both, on chosen axes
    Case("centercroppad-crop", "CenterCropPad", [In(f32(20, 10, 3)), K(i64(10, 7, 3))], {}, 18),
    Case("centercroppad-pad", "CenterCropPad", [In(f32(3, 4, 2)), K(i64(6, 7, 2))], {}, 18),
    Case("centercroppad-crop-and-pad-ints", "CenterCropPad", [In(ints(5, 4, 2)), K(i64(2, 7))], {"axes": [0, 1]}, 18),
    Case("centercroppad-negative-axes", "CenterCropPad", [In(f32(3, 20, 8)), K(i64(9, 11))], {"axes": [-2, -1]}, 18),
    # Compress with a constant condition (onnx infers no shape for it: the model declares one)
    Case("compress-axis0", "Compress", [In(f32(3, 2)), K(np.array([False, True, True]))], {"axis": 0}, 11,
         declared=[2, 2]),
    Case("compress-axis1-short", "Compress", [In(f32(3, 4)), K(np.array([True, False, True]))], {"axis": 1}, 11,
         declared=[3, 2]),
    Case("compress-flat", "Compress", [In(f32(3, 2)), K(np.array([False, True, False, False, True]))], {}, 11,
         declared=[2]),
    Case("compress-negative-axis", "Compress", [In(f32(2, 3, 4)), K(np.array([True, False, True, True]))],
         {"axis": -1}, 11, declared=[2, 3, 3]),
    Case("compress-none", "Compress", [In(f32(2, 3)), K(np.array([False, False]))], {"axis": 0}, 11,
         declared=[0, 3]),
    # Col2Im
    Case("col2im", "Col2Im", [In(f32(1, 5, 5)), K(i64(5, 5)), K(i64(1, 5))], {}, 18),
    Case("col2im-overlap-channels", "Col2Im", [In(f32(2, 2 * 4, 9)), K(i64(4, 4)), K(i64(2, 2))], {}, 18),
    Case("col2im-strides-pads-dilations", "Col2Im", [In(f32(1, 3 * 4, 12)), K(i64(6, 5)), K(i64(2, 2))],
         {"strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2]}, 18),
    Case("col2im-3d", "Col2Im", [In(f32(1, 8, 8)), K(i64(3, 3, 3)), K(i64(2, 2, 2))], {}, 18),
    # Upsample (Resize before opset 10)
    Case("upsample-nearest", "Upsample", [In(f32(1, 1, 2, 2)), K(np.array([1, 1, 2, 3], np.float32))], {}, 9),
    Case("upsample-linear", "Upsample", [In(f32(1, 2, 3, 2)), K(np.array([1, 1, 2, 2.5], np.float32))],
         {"mode": "linear"}, 9),
    Case("upsample-opset7-attribute", "Upsample", [In(f32(1, 2, 2, 3))], {"scales": [1.0, 1.0, 3.0, 2.0]}, 7),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MORE_CASES])
def test_more_lowerings_match_onnxruntime(case: Case):
    test_lowering_matches_onnxruntime(case)


def test_compress_by_a_runtime_condition_is_refused():
    case = Case("compress-runtime", "Compress", [In(f32(3, 2)), In(np.array([True, False, True]))], {"axis": 0}, 11,
                declared=[2, 2])
    with pytest.raises(EincError, match="runtime 'condition'.*shape would depend on its values"):
        lowered(case)


# -- Scatter, ScatterElements, ScatterND, TensorScatter, TopK -------------------------------------

SCATTER_CASES = [
    Case("scatterelements-axis1-negative", "ScatterElements",
         [In(f32(3, 4)), In(i64(1, -1, 0, 2, 2, 0).reshape(3, 2)), In(f32(3, 2))], {"axis": 1}, 16),
    Case("scatterelements-add-duplicates", "ScatterElements",
         [In(f32(4, 3)), In(i64(1, 1, 0, 1, -4, 2).reshape(2, 3)), In(f32(2, 3))], {"reduction": "add"}, 16),
    Case("scatterelements-mul-constant-indices", "ScatterElements",
         [In(f32(4, 3)), K(i64(3, 0, 0, 3, 2, 0).reshape(2, 3)), In(f32(2, 3))], {"reduction": "mul"}, 18),
    Case("scatterelements-max-ints", "ScatterElements",
         [In(ints(2, 5)), In(i64(4, 4, 0, 1, 1, 1).reshape(2, 3)), In(ints(2, 3))], {"axis": -1, "reduction": "max"}, 18),
    Case("scatterelements-min-3d", "ScatterElements",
         [In(f32(2, 3, 4)), In(ints(2, 2, 4, low=0, high=3)), In(f32(2, 2, 4))], {"axis": 1, "reduction": "min"}, 18),
    Case("scatter-opset9", "Scatter", [In(f32(3, 3)), In(i64(1, 0, 2, 0, 2, 1).reshape(2, 3)), In(f32(2, 3))], {}, 9),
    Case("scatternd-rows", "ScatterND", [In(f32(4, 3, 2)), K(i64(1, 3).reshape(2, 1)), In(f32(2, 3, 2))], {}, 16),
    Case("scatternd-elements-negative", "ScatterND",
         [In(f32(4, 3)), In(i64(1, 2, -1, -3, 0, 0).reshape(3, 2)), In(f32(3))], {}, 16),
    Case("scatternd-add-duplicates", "ScatterND",
         [In(f32(4, 3, 2)), In(i64(1, 2, 1, 2, 0, 1).reshape(3, 2)), In(f32(3, 2))], {"reduction": "add"}, 16),
    Case("scatternd-mul", "ScatterND", [In(f32(3, 4)), In(i64(2, 2).reshape(2, 1)), In(f32(2, 4))], {"reduction": "mul"}, 16),
    Case("scatternd-max-ints", "ScatterND", [In(ints(3, 4)), In(i64(0, 2, 0).reshape(3, 1)), In(ints(3, 4))],
         {"reduction": "max"}, 18),
    Case("scatternd-min-batch-of-index-tuples", "ScatterND",
         [In(f32(4, 3)), In(ints(2, 2, 2, low=0, high=3)), In(f32(2, 2))], {"reduction": "min"}, 18),
    Case("tensorscatter-linear", "TensorScatter", [In(f32(2, 3, 6, 4)), In(f32(2, 3, 2, 4)), In(i64(1, 4))], {}, 24),
    Case("tensorscatter-circular", "TensorScatter", [In(f32(2, 3, 6, 4)), In(f32(2, 3, 3, 4)), In(i64(1, 4))],
         {"mode": "circular"}, 24),
    Case("tensorscatter-no-write-indices-axis1", "TensorScatter", [In(f32(2, 5, 3)), In(f32(2, 2, 3))], {"axis": 1}, 24),
    Case("tensorscatter-last-axis", "TensorScatter", [In(f32(2, 2, 5)), In(f32(2, 2, 2)), In(i64(3, 0))], {"axis": -1}, 24),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in SCATTER_CASES])
def test_scatter_lowering_matches_onnxruntime(case: Case):
    test_lowering_matches_onnxruntime(case)


def test_scatternd_is_one_ein_scatter_of_rows():
    from einc.ir.ein import ScatterOp

    ops = _ops(Case("s", "ScatterND", [In(f32(4, 3, 2)), In(i64(1, 3).reshape(2, 1)), In(f32(2, 3, 2))],
                    {"reduction": "add"}, 16))
    (scatter,) = [op for op in ops if isinstance(op, ScatterOp)]
    assert scatter.reduction.data == "add" and list(scatter.data.type.get_shape()) == [4, 6]



TIES = np.array([[1, 2, 2, 1, 3, 3], [0, 0, 0, 0, 0, 0], [-0.0, 0.0, np.inf, -np.inf, 5, 0.0]], np.float32)

TOPK_CASES = [
    Case("topk-last-axis", "TopK", [In(f32(3, 7)), K(i64(3))], {}, 11, outputs=2),
    Case("topk-smallest-axis0", "TopK", [In(f32(6, 4)), K(i64(2))], {"axis": 0, "largest": 0}, 11, outputs=2),
    Case("topk-ties-keep-index-order", "TopK", [In(TIES), K(i64(4))], {}, 11, outputs=2),
    Case("topk-ties-smallest", "TopK", [In(TIES), K(i64(5))], {"largest": 0}, 11, outputs=2),
    Case("topk-ints-middle-axis", "TopK", [In(ints(2, 3, 5, low=-3, high=3, dtype=np.int32)), K(i64(2))],
         {"axis": 1}, 11, outputs=2),
    Case("topk-all-of-the-axis", "TopK", [In(f32(2, 5)), K(i64(5))], {"axis": -1}, 11, outputs=2),
    Case("topk-opset1-attribute", "TopK", [In(f32(2, 5))], {"k": 2}, 1, outputs=2),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in TOPK_CASES])
def test_topk_lowering_matches_onnxruntime(case: Case):
    test_lowering_matches_onnxruntime(case)


def test_topk_is_a_rank_count_and_two_selections():
    ops = [op for op in _ops(Case("t", "TopK", [In(f32(3, 7)), K(i64(3))], {}, 11, outputs=2)) if isinstance(op, EinsumOp)]
    assert [(op.reduce_op, op.map.data) for op in ops] == [
        ("add", "select(or(gt($1, $0), and(eq($1, $0), lt($3, $2))), 1, 0)"),
        ("max", "select(eq($1, $2), $0, -inf)"),
        ("add", "select(eq($1, $2), $0, 0)"),
    ]


SEEDED_DROPOUT = [
    ("runtime-mode-and-ratio-on", [In(f32(3, 4, 5)), In(np.array(0.75, np.float32)), In(np.array(True))], 2),
    ("runtime-mode-off", [In(f32(3, 4, 5)), In(np.array(0.75, np.float32)), In(np.array(False))], 2),
    ("runtime-ratio-zero", [In(f32(3, 4, 5)), In(np.array(0.0, np.float32)), In(np.array(True))], 2),
    ("default-ratio", [In(f32(2, 7)), None, In(np.array(True))], 1),
    ("constant-training", [In(f32(4, 6)), K(np.array(0.3, np.float32)), K(np.array(True))], 2),
]


@pytest.mark.parametrize("inputs,outputs", [pytest.param(i, o, id=n) for n, i, o in SEEDED_DROPOUT])
def test_seeded_training_dropout_draws_onnx_reference_mask(inputs, outputs):
    """A seeded training-mode Dropout draws numpy's MT19937 stream of the seed, as onnx's
    reference does (onnxruntime has a generator of its own, so it is not the judge)."""
    from onnx.reference import ReferenceEvaluator

    case = Case("dropout", "Dropout", inputs, {"seed": 3}, 22, outputs=outputs)
    model, feeds = model_of(case), feeds_of(case)
    judged = Case("dropout", "Dropout", [inputs[0], inputs[1] or K(np.array(0.5, np.float32)), *inputs[2:]],
                  {"seed": 3}, 22, outputs=outputs)  # the reference needs the ratio given
    expected = [np.asarray(v) for v in ReferenceEvaluator(model_of(judged)).run(None, feeds)]
    imported, main = lowered(case)
    compiled = einc.compile(model).run(feeds)
    for got_i, got_c, want in zip(run_function(main, list(feeds.values()), imported.weights), compiled.values(), expected):
        assert_same(got_i, want, "Dropout")
        assert_same(got_c, want, "Dropout")


LONG = tensor.TOPK_RANK_LIMIT + 44
"""An axis past the rank-counting limit: TopK becomes `ein.topk` and a gather."""

TOPK_LONG_CASES = [
    Case("topk-long-axis", "TopK", [In(f32(2, LONG)), K(i64(7))], {}, 11, outputs=2),
    Case("topk-long-axis0-smallest", "TopK", [In(f32(LONG, 3)), K(i64(5))], {"axis": 0, "largest": 0}, 11, outputs=2),
    Case("topk-long-ties-ints", "TopK", [In(ints(2, LONG, 2, low=-3, high=3, dtype=np.int32)), K(i64(40))],
         {"axis": 1}, 11, outputs=2),
    Case("topk-long-all-equal-smallest", "TopK", [In(np.zeros((1, LONG), np.float32)), K(i64(9))], {"largest": 0}, 11,
         outputs=2),
    Case("topk-long-with-infinities", "TopK", [In(np.concatenate([f32(1, LONG - 2), np.array([[np.inf, -np.inf]], np.float32)], 1)),
                                               K(i64(LONG))], {}, 11, outputs=2),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in TOPK_LONG_CASES])
def test_topk_long_axis_lowering_matches_onnxruntime(case: Case):
    test_lowering_matches_onnxruntime(case)


def test_topk_on_a_long_axis_is_ein_topk_and_a_gather_of_the_values():
    from einc.ir.ein import TopKOp

    ops = _ops(Case("t", "TopK", [In(f32(2, LONG)), K(i64(7))], {"largest": 0}, 11, outputs=2))
    (select,) = [op for op in ops if isinstance(op, TopKOp)]
    assert select.k == 7 and not select.largest.value.data
    assert [op.name for op in ops].count("ein.gather") == 1
