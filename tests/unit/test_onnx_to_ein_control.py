"""onnx-to-ein, control family: If with a condition known at compile time (the
taken branch is inlined) and known only at run time (`ein.if`, an scf.if on
the CPU), against onnxruntime through the interpreter and the CPU backend."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import einc
from einc.diagnostics import EincError
from einc.frontend.onnx import import_model
from einc.ir.ein import IfOp
from einc.passes import Pipeline
from tests.conftest import IR_VERSION
from tests.unit.test_onnx_to_ein_math import check_lowering

F = TensorProto.FLOAT


def _graph(name: str, nodes: list, outputs: list[tuple[str, int, list[int]]], inits: dict | None = None) -> onnx.GraphProto:
    return helper.make_graph(
        nodes,
        name,
        [],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in (inits or {}).items()],
    )


def _model(nodes: list, inputs: dict[str, np.ndarray], outputs: list[str], inits: dict | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _two_output_if(cond: str = "c") -> onnx.NodeProto:
    """then: (relu(x * x), sum of x over axis 1 as int64 count); else: (-x + w, argmax of x)."""
    then_g = _graph(
        "then",
        [
            helper.make_node("Mul", ["x", "x"], ["t0"]),
            helper.make_node("Relu", ["t0"], ["then_a"]),
            helper.make_node("ArgMin", ["x"], ["then_b"], axis=1, keepdims=0),
        ],
        [("then_a", F, [3, 4]), ("then_b", TensorProto.INT64, [3])],
    )
    else_g = _graph(
        "else",
        [
            helper.make_node("Neg", ["x"], ["e0"]),
            helper.make_node("Add", ["e0", "w"], ["else_a"]),
            helper.make_node("ArgMax", ["x"], ["else_b"], axis=1, keepdims=0),
        ],
        [("else_a", F, [3, 4]), ("else_b", TensorProto.INT64, [3])],
        {"w": np.arange(12, dtype=np.float32).reshape(3, 4)},  # a branch-local initializer
    )
    return helper.make_node("If", [cond], ["a", "b"], then_branch=then_g, else_branch=else_g, name="if")


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_known_condition_inlines_the_taken_branch(rng, cond):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    model = _model([_two_output_if()], {"x": x}, ["a", "b"], {"c": np.array(cond)})
    check_lowering(model, {"x": x})
    imported = import_model(model)
    Pipeline("onnx-to-ein").apply(imported.module)
    assert not [op for op in imported.module.walk() if isinstance(op, IfOp)]


def test_if_condition_folded_from_a_computation(rng):
    """The condition is computed by nodes on constants: folded, then inlined."""
    x = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Greater", ["k0", "k1"], ["c"]), _two_output_if()]
    model = _model(nodes, {"x": x}, ["a", "b"], {"k0": np.array([3.0], np.float32), "k1": np.array([2.0], np.float32)})
    check_lowering(model, {"x": x})


@pytest.mark.parametrize("cond", [True, False])
def test_if_at_run_time(rng, cond):
    feeds = {"x": rng.standard_normal((3, 4)).astype(np.float32), "c": np.array(cond)}
    model = _model([_two_output_if()], feeds, ["a", "b"])
    check_lowering(model, feeds)


@pytest.mark.parametrize("x_sum_positive", [True, False])
def test_if_on_a_computed_condition_with_outer_and_view_results(rng, x_sum_positive):
    """cond = sum(x) > 0 at run time; one branch yields an outer value, the other a view
    of a weight-sized branch initializer, and a later node reads the If's result."""
    x = rng.uniform(0.1, 1.0, (8, 10)).astype(np.float32) * (1 if x_sum_positive else -1)
    big = rng.standard_normal((80,)).astype(np.float32)  # > 64 elements: an ein.weight
    then_g = _graph("then", [helper.make_node("Identity", ["x"], ["then_y"])], [("then_y", F, [8, 10])])
    else_g = _graph(
        "else",
        [helper.make_node("Reshape", ["big", "shape"], ["else_y"])],
        [("else_y", F, [8, 10])],
        {"big": big, "shape": np.array([8, 10], np.int64)},
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["r"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Mul", ["r", "x"], ["y"]),
    ]
    model = _model(nodes, {"x": x}, ["y", "r"], {"zero": np.array([0.0], np.float32)})
    check_lowering(model, {"x": x})


@pytest.mark.parametrize("outer,inner", [(True, True), (True, False), (False, True), (False, False)])
def test_nested_ifs_at_run_time(rng, outer, inner):
    inner_if = helper.make_node(
        "If",
        ["c2"],
        ["inner_out"],
        then_branch=_graph("inner_then", [helper.make_node("Exp", ["x"], ["it"])], [("it", F, [2, 3])]),
        else_branch=_graph("inner_else", [helper.make_node("Sin", ["x"], ["ie"])], [("ie", F, [2, 3])],),
    )
    then_g = _graph("then", [inner_if, helper.make_node("Add", ["inner_out", "k"], ["to"])], [("to", F, [2, 3])],
                    {"k": np.full((3,), 10.0, np.float32)})
    else_g = _graph("else", [helper.make_node("Abs", ["x"], ["eo"])], [("eo", F, [2, 3])])
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32), "c1": np.array(outer), "c2": np.array(inner)}
    model = _model([helper.make_node("If", ["c1"], ["y"], then_branch=then_g, else_branch=else_g)], feeds, ["y"])
    check_lowering(model, feeds)


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_branch_of_constants_becomes_a_select(rng, cond):
    """One branch only makes constants (a fill and an initializer): no ein.if, the
    other branch runs straight-line and a select on the condition picks each result."""
    then_g = _graph(
        "then",
        [
            helper.make_node("MatMul", ["x", "w"], ["t0"]),
            helper.make_node("Relu", ["t0"], ["then_a"]),
            helper.make_node("Neg", ["x"], ["then_b"]),
        ],
        [("then_a", F, [3, 5]), ("then_b", F, [3, 4])],
        {"w": rng.standard_normal((4, 5)).astype(np.float32)},
    )
    fill = numpy_helper.from_array(np.array([-1.5], np.float32))
    else_g = _graph(
        "else",
        [helper.make_node("ConstantOfShape", ["shape"], ["else_a"], value=fill)],
        [("else_a", F, [3, 5]), ("k", F, [3, 4])],
        {"shape": np.array([3, 5], np.int64), "k": np.arange(12, dtype=np.float32).reshape(3, 4)},
    )
    feeds = {"x": rng.standard_normal((3, 4)).astype(np.float32), "c": np.array([cond])}
    model = _model([helper.make_node("If", ["c"], ["a", "b"], then_branch=then_g, else_branch=else_g)], feeds, ["a", "b"])
    check_lowering(model, feeds)
    imported = import_model(model)
    Pipeline("onnx-to-ein").apply(imported.module)
    assert not [op for op in imported.module.walk() if isinstance(op, IfOp)]


def test_if_with_branches_of_different_shapes_is_refused(rng):
    then_g = _graph("then", [helper.make_node("Identity", ["x"], ["t"])], [("t", F, [2, 3])])
    else_g = _graph("else", [helper.make_node("Transpose", ["x"], ["e"])], [("e", F, [3, 2])])
    feeds = {"x": np.zeros((2, 3), np.float32), "c": np.array(True)}
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="if")],
        "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()],
        [helper.make_tensor_value_info("y", F, [None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    with pytest.raises(EincError):
        einc.compile(model)


def test_loop_is_reported_unsupported():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", F, [2]),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", F, [2])],
    )
    feeds = {"v": np.zeros(2, np.float32)}
    model = _model(
        [helper.make_node("Loop", ["n", "", "v"], ["y"], body=body, name="loop")],
        feeds,
        ["y"],
        {"n": np.array(3, np.int64)},
    )
    with pytest.raises(EincError, match="'loop' \\(Loop\\)"):
        einc.compile(model)
