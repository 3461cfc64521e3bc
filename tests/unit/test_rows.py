"""Rows groups on the CPU (ukernels/rows.py): softmax, LayerNorm and transformer graphs against onnxruntime.

Tolerances: softmax and LayerNorm rows are summed in 16-lane trees instead of
onnxruntime's order and exp is a polynomial of ~2 ulp: rtol 1e-5, atol 1e-6
(relative to values of order 1). Whole layers (five GEMMs, two LayerNorms, outputs of
unit scale) carry float32 noise of a few 1e-6 in either engine: rtol 1e-4, atol 1e-5.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import einc
from einc.frontend.onnx import import_model
from einc.passes import Pipeline
from einc.passes.pipeline import CPU_LOOPS
from tests.conftest import IR_VERSION, ort_run, single_node_model

RTOL, ATOL = 1e-5, 1e-6


def _kernels(model: onnx.ModelProto) -> list[str]:
    """The rows kernels the CPU lowering declares for a model."""
    from xdsl.dialects import func

    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    return [op.sym_name.data for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data.startswith("einc_rows")]


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = RTOL, atol: float = ATOL) -> None:
    expected = ort_run(model, feeds)
    got = einc.compile(model).run(feeds)
    got = got if isinstance(got, dict) else dict(zip(expected, got if isinstance(got, (list, tuple)) else [got]))
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=name)


# rows of 1, under one vector, one vector, a tail, many rows, long rows (unrolled loop), threaded (> 128K elements)
SHAPES = [(7, 1), (3, 5), (4, 16), (2, 33), (4, 128, 128), (6, 1000), (260, 520)]


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_rows(shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    model = single_node_model("Softmax", {"x": x}, axis=-1)
    assert len(_kernels(model)) == 1
    _check(model, {"x": x})


@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm_rows(shape, rng):
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    d = shape[-1]
    inits = {"g": rng.standard_normal(d).astype(np.float32), "b": rng.standard_normal(d).astype(np.float32)}
    model = single_node_model("LayerNormalization", {"x": x}, initializers=inits, axis=-1, epsilon=1e-5)
    assert len(_kernels(model)) == 1
    _check(model, {"x": x})


@pytest.mark.parametrize(("op", "inits"), [("ReduceMax", {}), ("ReduceSum", {"axes": np.array([-1], np.int64)}), ("ReduceMean", {})])
def test_single_reductions(op, inits, rng):
    x = rng.standard_normal((5, 40)).astype(np.float32)
    attrs = {"axes": [-1]} if op != "ReduceSum" else {}
    model = single_node_model(op, {"x": x}, initializers=inits, keepdims=1, **attrs)
    assert _kernels(model)
    _check(model, {"x": x})


def test_softmax_over_a_middle_axis_is_lowered_as_loops(rng):
    """The reduced axis is strided: the kernel declines and the einsums run as loop nests."""
    x = rng.standard_normal((3, 8, 5)).astype(np.float32)
    model = single_node_model("Softmax", {"x": x}, axis=1)
    assert _kernels(model) == []
    _check(model, {"x": x})


def _attention_model(rng: np.random.Generator, seq: int, d: int, heads: int, masked: bool) -> tuple[onnx.ModelProto, dict]:
    """An encoder layer as BERT/MiniLM export it: projections, scaled scores (+ mask), softmax,
    values, output projection, residual, LayerNorm, GELU feed-forward, residual, LayerNorm."""
    f = onnx.TensorProto.FLOAT
    hd = d // heads
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)
    inits = {
        "wq": w(d, d), "wk": w(d, d), "wv": w(d, d), "wo": w(d, d), "w1": w(d, 4 * d), "w2": w(4 * d, d),
        "b1": w(4 * d), "g1": np.ones(d, np.float32) + w(d), "be1": w(d), "g2": np.ones(d, np.float32) + w(d), "be2": w(d),
        "heads": np.array([1, seq, heads, hd], np.int64), "flat": np.array([1, seq, d], np.int64),
        "scale": np.array(np.sqrt(hd), np.float32), "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
        "rsqrt2": np.array(1 / np.sqrt(2), np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q0"]), helper.make_node("MatMul", ["x", "wk"], ["k0"]),
        helper.make_node("MatMul", ["x", "wv"], ["v0"]),
        *[helper.make_node("Reshape", [f"{t}0", "heads"], [f"{t}1"]) for t in "qkv"],
        helper.make_node("Transpose", ["q1"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k1"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v1"], ["v"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Div", ["s0", "scale"], ["s1"]),
    ]
    scores = "s1"
    if masked:
        inits["neg"] = np.array(-10000.0, np.float32)
        nodes += [
            helper.make_node("Sub", ["one", "mask"], ["m0"]), helper.make_node("Mul", ["m0", "neg"], ["m1"]),
            helper.make_node("Add", ["s1", "m1"], ["s2"]),
        ]
        scores = "s2"
    nodes += [
        helper.make_node("Softmax", [scores], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["a0"]),
        helper.make_node("Transpose", ["a0"], ["a1"], perm=[0, 2, 1, 3]), helper.make_node("Reshape", ["a1", "flat"], ["a2"]),
        helper.make_node("MatMul", ["a2", "wo"], ["o"]), helper.make_node("Add", ["x", "o"], ["r1"]),
        helper.make_node("LayerNormalization", ["r1", "g1", "be1"], ["n1"], axis=-1, epsilon=1e-12),
        helper.make_node("MatMul", ["n1", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Mul", ["h1", "rsqrt2"], ["h2"]), helper.make_node("Erf", ["h2"], ["h3"]),
        helper.make_node("Add", ["h3", "one"], ["h4"]), helper.make_node("Mul", ["h1", "h4"], ["h5"]),
        helper.make_node("Mul", ["h5", "half"], ["h6"]), helper.make_node("MatMul", ["h6", "w2"], ["h7"]),
        helper.make_node("Add", ["n1", "h7"], ["r2"]),
        helper.make_node("LayerNormalization", ["r2", "g2", "be2"], ["y"], axis=-1, epsilon=1e-12),
    ]
    inputs = [helper.make_tensor_value_info("x", f, [1, seq, d])]
    feeds = {"x": rng.standard_normal((1, seq, d)).astype(np.float32)}
    if masked:
        inputs.append(helper.make_tensor_value_info("mask", f, [1, 1, 1, seq]))
        mask = np.ones((1, 1, 1, seq), np.float32)
        mask[..., seq - 3 :] = 0  # padding tokens
        feeds["mask"] = mask
    graph = helper.make_graph(
        nodes, "encoder_layer", inputs, [helper.make_tensor_value_info("y", f, None)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    return model, feeds


@pytest.mark.parametrize(
    ("seq", "d", "heads", "masked"),
    [(128, 256, 4, False), (15, 384, 12, True)],  # the encoder block's shape; MiniLM's (15 tokens, 12 heads of 32)
    ids=["encoder-block", "minilm-like"],
)
def test_transformer_layers(seq, d, heads, masked, rng):
    model, feeds = _attention_model(rng, seq, d, heads, masked)
    assert len(_kernels(model)) >= 1  # the LayerNorms' (identical ones share a kernel); the softmax is in the attention kernel
    _check(model, feeds, rtol=1e-4, atol=1e-5)


def _graph(nodes, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, f, a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info("y", f, None)], [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def test_gelu_tanh_chain_is_one_kernel_with_pow_as_multiplications(rng):
    """GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), eight einsums, one rows
    kernel (no reduction); the exponent constant is folded so x^3 is two multiplications."""
    import json

    from xdsl.dialects import func

    x = (rng.standard_normal((3, 16, 100)) * 2).astype(np.float32)
    c = lambda v: np.array(v, np.float32)
    inits = {"half": c(0.5), "three": c(3.0), "k": c(0.044715), "s": c(np.sqrt(2 / np.pi)), "one": c(1.0)}
    nodes = [
        helper.make_node("Mul", ["x", "half"], ["a"]), helper.make_node("Pow", ["x", "three"], ["b"]),
        helper.make_node("Mul", ["b", "k"], ["c"]), helper.make_node("Add", ["x", "c"], ["d"]),
        helper.make_node("Mul", ["d", "s"], ["e"]), helper.make_node("Tanh", ["e"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["g"]), helper.make_node("Mul", ["a", "g"], ["y"]),
    ]
    model = _graph(nodes, {"x": x}, inits)
    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    (kernel,) = [op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data.startswith("einc_rows")]
    maps = " ".join(step["map"] for step in json.loads(kernel.attributes["einc.ukernel"].data)["steps"])
    assert "pow($0, 3.0)" in maps and "$1" not in maps.split("pow")[1][:8]
    _check(model, {"x": x})


def test_residual_add_and_layer_norm_share_one_kernel(rng):
    """An elementwise einsum starts a group (rows: all dims but the last) that the LayerNorm joins:
    the sum is a result too, read by the next residual add."""
    x, h = (rng.standard_normal((2, 7, 48)).astype(np.float32) for _ in range(2))
    inits = {"g": rng.standard_normal(48).astype(np.float32), "b": rng.standard_normal(48).astype(np.float32)}
    nodes = [
        helper.make_node("Add", ["x", "h"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "g", "b"], ["n"], axis=-1, epsilon=1e-5),
        helper.make_node("Add", ["r", "n"], ["y"]),
    ]
    model = _graph(nodes, {"x": x, "h": h}, inits)
    assert len(_kernels(model)) == 1
    _check(model, {"x": x, "h": h})


def test_maps_over_small_feature_maps_take_rows_of_several_trailing_dims(rng):
    """A map chain over [1, 24, 4, 8] takes rows of h x w = 32 (not w = 8, shorter than a vector);
    the per-channel scale is the same element for the whole row."""
    x = rng.standard_normal((1, 24, 4, 8)).astype(np.float32)
    inits = {"s": rng.standard_normal((1, 24, 1, 1)).astype(np.float32), "t": np.array(0.5, np.float32)}
    nodes = [helper.make_node("Mul", ["x", "s"], ["a"]), helper.make_node("Add", ["a", "t"], ["b"]), helper.make_node("Relu", ["b"], ["y"])]
    model = _graph(nodes, {"x": x}, inits)
    assert len(_kernels(model)) == 1
    _check(model, {"x": x})


def test_groups_inside_if_branches_run_as_kernels(rng):
    """`fuse` enters the branches of an If (Silero VAD computes inside them): a MatMul + Relu
    becomes a GEMM call and a Softmax a rows kernel in the branch taken."""
    from xdsl.dialects import func

    f = onnx.TensorProto.FLOAT
    x = rng.standard_normal((4, 32)).astype(np.float32)
    w = rng.standard_normal((32, 32)).astype(np.float32)
    out = lambda name: helper.make_tensor_value_info(name, f, [4, 32])
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["t"])], "then", [], [out("t")]
    )
    orelse = helper.make_graph([helper.make_node("Softmax", ["x"], ["e"], axis=-1)], "else", [], [out("e")])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=orelse)], "g",
        [helper.make_tensor_value_info("x", f, [4, 32]), helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", f, [4, 32])], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    kernels = sorted(op.sym_name.data.rsplit("_", 1)[0] for op in module.ops if isinstance(op, func.FuncOp) and op.is_declaration)
    assert kernels == ["einc_gemm", "einc_rows"]
    for c in (True, False):
        _check(model, {"x": x, "c": np.array(c)})
