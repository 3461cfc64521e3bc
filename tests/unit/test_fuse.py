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
    (group,) = _groups(module)
    assert [op.name for op in group.body.block.ops] == ["ein.einsum", "ein.yield"]
    assert "read outside" in group.attributes["einc.why"].data


def test_non_contractions_are_left_alone(rng):
    from tests.conftest import single_node_model

    model = single_node_model("Softmax", {"x": rng.standard_normal((3, 5)).astype(np.float32)})
    module = import_model(model).module
    Pipeline("onnx-to-ein,fuse").apply(module)
    assert not _groups(module)


def test_explain_lists_the_groups_and_why(tmp_path):
    import json

    from einc.tools.explain import explain
    from tests.unit.test_ukernels import _chain_model

    model, _ = _chain_model(np.random.default_rng(0), "Relu")
    text = explain(model)
    assert "fused groups (fuse, tile): 1" in text and "max($0, 0.0)" in text and "why: contraction with 3" in text
    (group,) = json.loads(explain(model, as_json=True))["groups"]
    assert group["kind"] == "contraction" and group["tile"]["mr"] > 0 and group["maps"][0] == "$0 * $1 reduce add"
