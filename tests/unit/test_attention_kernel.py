"""Attention groups on the CPU (ukernels/attention.py) against onnxruntime.

MatMul + Softmax graphs (no mask, additive masks per key and per query and key, a
boolean mask through Where, a causal constant) and the ONNX Attention op
(grouped-query attention, is_causal), at head dims 32/64/80, sequence lengths
that are no multiple of the key block (64) or of the query block, and one query
row (decode). Every case checks that the model ran through an attention kernel.

Tolerance: rtol 1e-4, atol 1e-5 (outputs of order 1). The kernel sums QK^T in
another order than onnxruntime's GEMM, exp is a polynomial of ~2 ulp, and the
running max rescales partial sums: differences of a few 1e-7 relative.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func

import einc
from einc.frontend.onnx import import_model
from einc.passes import Pipeline
from einc.passes.pipeline import CPU_LOOPS
from tests.conftest import IR_VERSION, ort_run

RTOL, ATOL = 1e-4, 1e-5


def _kernels(model: onnx.ModelProto) -> list[str]:
    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    return [op.sym_name.data for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data.startswith("einc_attention")]


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    assert _kernels(model), "no attention kernel"
    expected = ort_run(model, feeds)
    got = einc.compile(model).run(feeds)
    got = got if isinstance(got, dict) else dict(zip(expected, got if isinstance(got, (list, tuple)) else [got]))
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def softmax_attention(b: int, h: int, m: int, n: int, d: int, dv: int, mask: str, rng: np.random.Generator):
    """Q K^T * scale (+ mask) -> Softmax -> @ V, as PyTorch exports it; the mask's feed or initializer."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["scaled"]),
    ]
    inits = [numpy_helper.from_array(np.array(d**-0.5, np.float32), "scale")]
    inputs = [helper.make_tensor_value_info(x, f, s) for x, s in (("q", [b, h, m, d]), ("k", [b, h, n, d]), ("v", [b, h, n, dv]))]
    feeds = {"q": rng.standard_normal((b, h, m, d)).astype(np.float32),
             "k": rng.standard_normal((b, h, n, d)).astype(np.float32),
             "v": rng.standard_normal((b, h, n, dv)).astype(np.float32)}
    scores = "scaled"
    if mask in ("keys", "full"):  # additive, as BERT (per key) or GPT-2 (per query and key) make it
        shape = [b, 1, 1, n] if mask == "keys" else [b, 1, m, n]
        inputs.append(helper.make_tensor_value_info("mask", f, shape))
        feeds["mask"] = np.where(rng.random(shape) < 0.3, np.float32(-3.4028235e38), np.float32(0)).astype(np.float32)
        feeds["mask"][..., 0] = 0  # every query keeps a key
        nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
        scores = "masked"
    elif mask == "bool":
        shape = [b, 1, m, n]
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, shape))
        feeds["mask"] = rng.random(shape) < 0.7
        feeds["mask"][..., 0] = True
        inits.append(numpy_helper.from_array(np.array(-1e9, np.float32), "low"))
        nodes.append(helper.make_node("Where", ["mask", "scaled", "low"], ["masked"]))
        scores = "masked"
    elif mask == "causal":  # a constant triangle of -inf above the diagonal
        tri = np.triu(np.full((m, n), -np.inf, np.float32), k=n - m + 1)
        inits.append(numpy_helper.from_array(tri, "causal"))
        nodes.append(helper.make_node("Add", ["scaled", "causal"], ["masked"]))
        scores = "masked"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    graph = helper.make_graph(nodes, "attention", inputs, [helper.make_tensor_value_info("y", f, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), feeds


@pytest.mark.parametrize(
    "b, h, m, n, d, mask",
    [
        (1, 2, 64, 64, 64, "none"),
        (2, 3, 100, 77, 32, "none"),  # neither length a multiple of a block
        (1, 2, 130, 200, 80, "keys"),
        (1, 4, 37, 37, 64, "full"),
        (2, 2, 48, 96, 32, "bool"),
        (1, 2, 90, 90, 64, "causal"),
        (1, 4, 1, 300, 64, "none"),  # decode: one query row
        (1, 4, 1, 129, 80, "keys"),
    ],
)
def test_softmax_attention_matches_onnxruntime(b, h, m, n, d, mask, rng):
    model, feeds = softmax_attention(b, h, m, n, d, d, mask, rng)
    _check(model, feeds)


def onnx_attention(b: int, hq: int, hkv: int, m: int, n: int, d: int, causal: bool, rng: np.random.Generator):
    f = TensorProto.FLOAT
    shapes = {"q": [b, hq, m, d], "k": [b, hkv, n, d], "v": [b, hkv, n, d]}
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=int(causal))
    graph = helper.make_graph([node], "attention", [helper.make_tensor_value_info(x, f, s) for x, s in shapes.items()],
                              [helper.make_tensor_value_info("y", f, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=IR_VERSION)
    return model, {x: rng.standard_normal(s).astype(np.float32) for x, s in shapes.items()}


@pytest.mark.parametrize("hq, hkv, m, n, d, causal", [(8, 2, 70, 70, 64, False), (4, 4, 65, 65, 32, True), (6, 2, 1, 100, 80, False)])
def test_attention_op_with_grouped_query_heads(hq, hkv, m, n, d, causal, rng):
    model, feeds = onnx_attention(1, hq, hkv, m, n, d, causal, rng)
    _check(model, feeds)


def test_a_probability_read_outside_keeps_the_three_kernels(rng):
    """Softmax's output is also a graph output: the scores must be written, so no attention group."""
    model, feeds = softmax_attention(1, 2, 32, 32, 32, 32, "none", rng)
    model.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, None))
    assert not _kernels(model)
    expected = ort_run(model, feeds)
    got = einc.compile(model).run(feeds)
    got = got if isinstance(got, dict) else dict(zip(expected, got))
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=name)
