"""The `fuse` pass: which einsums join a contraction group, and that groups keep the meaning."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects import func

from einc.frontend.onnx import import_model
from einc.ir.ein import EinsumOp, GroupOp
from einc.ir.interpret import run_function
from einc.passes import Pipeline
from einc.passes.fuse import contraction_scale
from tests.unit.test_ukernels import _chain_model


def _main(module) -> func.FuncOp:
    return next(op for op in module.ops if isinstance(op, func.FuncOp))


def _groups(module) -> list[GroupOp]:
    return [op for op in _main(module).body.block.ops if isinstance(op, GroupOp)]


def _run(module, feeds, weights):
    fn = _main(module)
    names = [a.name_hint for a in fn.body.block.args]
    return run_function(fn, [feeds[n] for n in names], weights)


@pytest.mark.parametrize("activation", ["Relu", "Gelu", "Sigmoid"])
def test_gemm_chain_becomes_one_group_with_the_same_meaning(activation, rng):
    model, feeds = _chain_model(rng, activation)
    imported = import_model(model)
    module = imported.module
    Pipeline("onnx-to-ein,defer-division").apply(module)
    before = _run(module, feeds, imported.weights)
    Pipeline("fuse").apply(module)
    (group,) = _groups(module)
    assert group.kind.data == "contraction"
    body = [op for op in group.body.block.ops if isinstance(op, EinsumOp)]
    assert contraction_scale(body[0]) == 1.0 and all(op.reduce_op is None for op in body[1:])
    assert not [op for op in _main(module).body.block.ops if isinstance(op, EinsumOp)]  # all fused
    after = _run(module, feeds, imported.weights)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)


def test_a_second_reader_outside_ends_the_chain():
    text = """
    func.func @main(%a: tensor<4x8xf32>, %b: tensor<8x3xf32>) -> (tensor<4x3xf32>, tensor<4x3xf32>) {
      %0 = ein.einsum (%a[m, k], %b[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32>
      %1 = ein.einsum (%0[i, j]) -> [i, j] map "max($0, 0.0)" : (tensor<4x3xf32>) -> tensor<4x3xf32>
      %2 = ein.einsum (%0[i, j]) -> [i, j] map "$0 * 2.0" : (tensor<4x3xf32>) -> tensor<4x3xf32>
      func.return %1, %2 : tensor<4x3xf32>, tensor<4x3xf32>
    }
    """
    from xdsl.parser import Parser

    from einc.passes.pipeline import make_context

    module = Parser(make_context(), text).parse_module()
    Pipeline("fuse").apply(module)
    group, siblings = _groups(module)
    assert [op.name for op in group.body.block.ops] == ["ein.einsum", "ein.yield"]
    assert "read outside" in group.attributes["einc.why"].data
    assert siblings.kind.data == "rows" and len(siblings.outputs) == 2  # the two readers: one loop over the product


def _parse(text: str):
    from xdsl.parser import Parser

    from einc.passes.pipeline import make_context

    return Parser(make_context(), text).parse_module()


def _kinds(module) -> list[str]:
    return [g.kind.data for g in _groups(module)]


@pytest.mark.parametrize(
    ("op", "attrs", "maps", "passes"),
    [
        ("Softmax", {"axis": -1}, ["$0 reduce max", "exp($0 - $1)", "$0 reduce add", "$0 / $1"], 3),
        ("LayerNormalization", {"axis": -1, "epsilon": 1e-5}, None, 3),
        ("ReduceSum", {"keepdims": 0}, ["$0 reduce add"], 1),
    ],
)
def test_a_reduction_and_its_row_maps_become_one_rows_group_with_the_same_meaning(op, attrs, maps, passes, rng):
    from tests.conftest import single_node_model

    x = rng.standard_normal((3, 4, 20)).astype(np.float32)
    inits = {"g": rng.standard_normal(20).astype(np.float32), "b": rng.standard_normal(20).astype(np.float32)} if op == "LayerNormalization" else {}
    if op == "ReduceSum":
        inits = {"axes": np.array([-1], np.int64)}
    imported = import_model(single_node_model(op, {"x": x}, initializers=inits, **attrs))
    module = imported.module
    Pipeline("onnx-to-ein,defer-division").apply(module)
    before = _run(module, {"x": x}, imported.weights)
    Pipeline("fuse").apply(module)
    (group,) = _groups(module)
    assert group.kind.data == "rows"
    body = [e for e in group.body.block.ops if isinstance(e, EinsumOp)]
    if maps is not None:
        assert [e.map.data + (f" reduce {e.reduce_op}" if e.reduce_op else "") for e in body] == maps
    assert f"{passes} pass" in group.attributes["einc.why"].data
    assert not [o for o in _main(module).body.block.ops if isinstance(o, EinsumOp)]
    after = _run(module, {"x": x}, imported.weights)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6, atol=1e-7)


def test_rows_pass_count_agrees_with_the_analysis(rng):
    """The group's passes are FuseMax's count, as einc.analysis.pass_count gives it for the cascade alone."""
    from einc.analysis.pass_count import cascades
    from einc.passes.fuse import rows_chain
    from tests.conftest import single_node_model

    for op, attrs in [("Softmax", {"axis": -1}), ("LayerNormalization", {"axis": -1})]:
        x = rng.standard_normal((2, 16)).astype(np.float32)
        inits = {"g": np.ones(16, np.float32), "b": np.zeros(16, np.float32)} if op == "LayerNormalization" else {}
        module = import_model(single_node_model(op, {"x": x}, initializers=inits, **attrs)).module
        Pipeline("onnx-to-ein,defer-division").apply(module)
        (cascade,) = [c for c in cascades(_main(module)) if c.pass_count > 1]
        seed = next(o for o in _main(module).body.block.ops if isinstance(o, EinsumOp) and o.reduce_op)
        space, _ = rows_chain(seed)
        assert space.pass_count == cascade.pass_count == 3
        assert {space.passes[e] for e in space.passes} == {cascade.passes[e] for e in cascade.einsums if e in space.passes}


def test_attention_softmax_yields_exponentials_and_sums_for_the_value_contraction():
    """Scores from one contraction, a partial softmax (division deferred), the value contraction:
    the rows group keeps max, exp and sum, and both exp and sum are its results (with the
    attention kernel off: `fuse{attention=false}`)."""
    module = _parse("""
    func.func @main(%q: tensor<8x4xf32>, %k: tensor<6x4xf32>, %v: tensor<6x3xf32>) -> tensor<8x3xf32> {
      %s = ein.einsum (%q[m, e], %k[n, e]) -> [m, n] map "$0 * $1" reduce add : (tensor<8x4xf32>, tensor<6x4xf32>) -> tensor<8x6xf32>
      %mx = ein.einsum (%s[m, n]) -> [m] reduce max : (tensor<8x6xf32>) -> tensor<8xf32>
      %ex = ein.einsum (%s[m, n], %mx[m]) -> [m, n] map "exp($0 - $1)" : (tensor<8x6xf32>, tensor<8xf32>) -> tensor<8x6xf32>
      %sm = ein.einsum (%ex[m, n]) -> [m] reduce add : (tensor<8x6xf32>) -> tensor<8xf32>
      %av = ein.einsum (%ex[m, n], %v[n, f]) -> [m, f] map "$0 * $1" reduce add : (tensor<8x6xf32>, tensor<6x3xf32>) -> tensor<8x3xf32>
      %o = ein.einsum (%av[m, f], %sm[m]) -> [m, f] map "$0 / $1" : (tensor<8x3xf32>, tensor<8xf32>) -> tensor<8x3xf32>
      func.return %o : tensor<8x3xf32>
    }
    """)
    rng = np.random.default_rng(0)
    feeds = {"q": rng.standard_normal((8, 4), np.float32), "k": rng.standard_normal((6, 4), np.float32), "v": rng.standard_normal((6, 3), np.float32)}
    before = _run(module, feeds, {})
    Pipeline("fuse{attention=false}").apply(module)
    assert _kinds(module) == ["contraction", "rows", "contraction"]
    rows = _groups(module)[1]
    assert len(rows.outputs) == 2 and "2 passes" in rows.attributes["einc.why"].data
    assert "read by ein.group" in rows.attributes["einc.why"].data
    assert "not an attention group: the attention kernel is off" in _groups(module)[0].attributes["einc.why"].data
    np.testing.assert_allclose(_run(module, feeds, {})[0], before[0], rtol=1e-6)


_ATTENTION = """
func.func @main(%q: tensor<2x8x4xf32>, %k: tensor<2x6x4xf32>, %v: tensor<2x6x3xf32>, %mask: tensor<8x6xf32>) -> tensor<2x8x3xf32> {
  %s = ein.einsum (%q[b, m, e], %k[b, n, e]) -> [b, m, n] map "$0 * $1" reduce add : (tensor<2x8x4xf32>, tensor<2x6x4xf32>) -> tensor<2x8x6xf32>
  %sc = ein.einsum (%s[b, m, n], %mask[m, n]) -> [b, m, n] map "$0 * 0.5 + $1" : (tensor<2x8x6xf32>, tensor<8x6xf32>) -> tensor<2x8x6xf32>
  %mx = ein.einsum (%sc[b, m, n]) -> [b, m] reduce max : (tensor<2x8x6xf32>) -> tensor<2x8xf32>
  %ex = ein.einsum (%sc[b, m, n], %mx[b, m]) -> [b, m, n] map "exp($0 - $1)" : (tensor<2x8x6xf32>, tensor<2x8xf32>) -> tensor<2x8x6xf32>
  %sm = ein.einsum (%ex[b, m, n]) -> [b, m] reduce add : (tensor<2x8x6xf32>) -> tensor<2x8xf32>
  %av = ein.einsum (%ex[b, m, n], %v[b, n, f]) -> [b, m, f] map "$0 * $1" reduce add : (tensor<2x8x6xf32>, tensor<2x6x3xf32>) -> tensor<2x8x3xf32>
  %o = ein.einsum (%av[b, m, f], %sm[b, m]) -> [b, m, f] map "$0 / $1" : (tensor<2x8x3xf32>, tensor<2x8xf32>) -> tensor<2x8x3xf32>
  func.return %o : tensor<2x8x3xf32>
}
"""


def test_attention_becomes_one_group_of_one_pass_with_the_same_meaning():
    """QK^T, a score map with a mask, max, exp, sum, PV and the deferred division: one
    "attention" group whose why names its one pass over the keys."""
    module = _parse(_ATTENTION)
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s, np.float32) for n, s in (("q", (2, 8, 4)), ("k", (2, 6, 4)), ("v", (2, 6, 3)), ("mask", (8, 6)))}
    before = _run(module, feeds, {})
    Pipeline("fuse").apply(module)
    (group,) = _groups(module)
    assert group.kind.data == "attention" and len(group.outputs) == 1
    why = group.attributes["einc.why"].data
    assert "1 score map" in why and "1 pass over the 6 keys" in why
    np.testing.assert_allclose(_run(module, feeds, {})[0], before[0], rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (("func.return %o : tensor<2x8x3xf32>", "func.return %o, %ex : tensor<2x8x3xf32>, tensor<2x8x6xf32>"), "read outside"),
        (("tensor<8x6xf32>", "tensor<8x6xf16>"), "neither f32 nor bool"),
        (('"$0 * 0.5 + $1"', '"atan($0) + $1"'), "the vector code lacks"),
    ],
)
def test_attention_the_kernel_declines_falls_back_with_the_reason(change, why):
    text = _ATTENTION.replace(*change)
    if "tensor<2x8x6xf32>)" in change[1]:
        text = text.replace("-> tensor<2x8x3xf32> {", "-> (tensor<2x8x3xf32>, tensor<2x8x6xf32>) {")
    module = _parse(text)
    Pipeline("fuse").apply(module)
    kinds = _kinds(module)
    assert "attention" not in kinds and kinds[0] == "contraction"
    assert why in _groups(module)[0].attributes["einc.why"].data


@pytest.mark.parametrize(
    ("reader", "why"),
    [
        ('(%ex[m, n]) -> [n] reduce add : (tensor<8x8xf32>) -> tensor<8xf32>', "read by an einsum of other rows"),
        ('(%ex[n, m]) -> [m, n] map "$0"', "in another order (a transpose)"),
        ('(%ex[m, n], %s[n, m]) -> [m, n] map "$0 + $1" : (tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>', "read with an input's dims in another order"),
        ('(%ex[m, n]) -> [m, n] map "$0" : (tensor<8x8xf32>) -> tensor<8x8xf16>', "non-f32"),
    ],
)
def test_a_reader_that_does_not_fit_the_rows_ends_the_group(reader, why):
    types = "" if ":" in reader else " : (tensor<8x8xf32>) -> tensor<8x8xf32>"
    out = ("8x" if "reduce" in reader else "8x8x") + ("f16" if "f16" in reader else "f32")
    module = _parse(f"""
    func.func @main(%s: tensor<8x8xf32>) -> tensor<{out}> {{
      %mx = ein.einsum (%s[m, n]) -> [m] reduce max : (tensor<8x8xf32>) -> tensor<8xf32>
      %ex = ein.einsum (%s[m, n], %mx[m]) -> [m, n] map "exp($0 - $1)" : (tensor<8x8xf32>, tensor<8xf32>) -> tensor<8x8xf32>
      %t = ein.einsum {reader}{types}
      func.return %t : tensor<{out}>
    }}
    """)
    Pipeline("fuse").apply(module)
    group = _groups(module)[0]  # (a reduction over other dims starts a group of its own)
    assert group.kind.data == "rows" and len([e for e in group.body.block.ops if isinstance(e, EinsumOp)]) == 2
    assert why in group.attributes["einc.why"].data


def test_explain_lists_the_groups_and_why(tmp_path):
    import json

    from einc.tools.explain import explain
    from tests.unit.test_ukernels import _chain_model

    model, _ = _chain_model(np.random.default_rng(0), "Relu")
    text = explain(model)
    assert "fused groups (fuse, winograd, tile): 1" in text and "max($0, 0.0)" in text and "why: contraction with 3" in text
    (group,) = json.loads(explain(model, as_json=True))["groups"]
    assert group["kind"] == "contraction" and group["tile"]["mr"] > 0 and group["maps"][0] == "$0 * $1 reduce add"
    kernel = group["cpu_kernel"]  # the register tile the CPU kernel takes, which may differ from the tile pass's
    assert kernel["kind"] == "gemm" and f"cpu kernel: gemm, register tile {kernel['mr']} x {kernel['nr']}" in text


@pytest.mark.parametrize(("op", "kind"), [("MaxPool", "window"), ("AveragePool", None)])
def test_a_max_over_a_window_becomes_a_window_group_with_the_same_meaning(op, kind, rng):
    """MaxPool (max over taps of image + a constant per tap) is a group of its own; AveragePool
    (a sum of products) is not a window group."""
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"x": rng.standard_normal((1, 3, 9, 11)).astype(np.float32)}
    before = import_model(model)
    Pipeline("onnx-to-ein").apply(before.module)
    after = import_model(model)
    Pipeline("onnx-to-ein,fuse").apply(after.module)
    kinds = [g.kind.data for g in _groups(after.module)]
    assert ("window" in kinds) == (kind == "window")
    np.testing.assert_array_equal(_run(after.module, feeds, after.weights)[0], _run(before.module, feeds, before.weights)[0])
