"""fold-weights: ops on weights only run at compile time; models still match onnxruntime.

Each model runs through onnx-to-ein + fold-weights in the ein interpreter and
compiled for the CPU, both against onnxruntime (rtol 1e-5, atol 1e-5: folding
only reorders nothing, the CPU's GEMM sums in its own order). The folded IR is
checked for what is left on weights, and the artifact for the weights it holds.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import einc
from einc.backends.llvm.target import buffer_table, compile_for_cpu
from einc.frontend.onnx import import_model
from einc.ir.ein import ConstantOp, EinsumOp, ReshapeOp, WeightOp
from einc.ir.interpret import run_function
from einc.passes import Pipeline
from einc.passes.pipeline import CPU_LOOPS
from tests.conftest import IR_VERSION, ort_run

RTOL, ATOL = 1e-5, 1e-5
F = onnx.TensorProto.FLOAT


def _model(nodes: list, inputs: dict[str, tuple], inits: dict[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "fold",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def _source(value) -> object:
    while isinstance(value.owner, ReshapeOp):
        value = value.owner.source
    return value.owner


def _folded(model: onnx.ModelProto):
    imported = import_model(model)
    Pipeline("onnx-to-ein,defer-division,fold-weights").apply(imported.module)
    imported.module.verify()
    return imported


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], want: np.ndarray | None = None):
    """Interpreter and CPU code of the folded model against onnxruntime (or `want`); the folded import."""
    want = ort_run(model, feeds)["y"] if want is None else want
    imported = _folded(model)
    main = imported.module.ops.first
    (got,) = run_function(main, list(feeds.values()), imported.weights)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    compiled = einc.compile(model, cache=False)
    np.testing.assert_allclose(compiled.run(feeds)["y"], want, rtol=RTOL, atol=ATOL)
    weight_only = [
        op for op in main.walk()
        if isinstance(op, EinsumOp) and all(isinstance(_source(v), (WeightOp, ConstantOp)) for v in op.inputs)
    ]
    assert not weight_only, "an einsum on weights only was left to run time"
    return imported, compiled


def _weights(compiled) -> dict[str, list[int]]:
    return {b["name"]: b["shape"] for b in compiled.manifest["buffers"] if b["role"] == "weight"}


def test_transposed_weight_folds_and_is_prepacked(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 32)).astype(np.float32)
    model = _model(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])],
        {"x": (4, 32)}, {"w": w},
    )
    imported, compiled = _check(model, {"x": rng.standard_normal((4, 32)).astype(np.float32)})
    (sym,) = imported.weights
    np.testing.assert_array_equal(imported.weights[sym], w.T)
    assert _weights(compiled) == {sym: [32, 16]}
    # fuse + the GEMM kernel see the folded weight as a weight: packed once at compile time
    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    (entry,) = [b for b in buffer_table(module) if b["role"] == "weight"]
    assert entry["pack"] is not None


def test_concatenated_lstm_weights_fold(rng: np.random.Generator) -> None:
    gates = {f"w{i}": rng.standard_normal((16, 8)).astype(np.float32) for i in range(4)}
    model = _model(
        [
            helper.make_node("Concat", list(gates), ["w"], axis=0),
            helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["y"]),
        ],
        {"x": (2, 8)}, gates,
    )
    imported, compiled = _check(model, {"x": rng.standard_normal((2, 8)).astype(np.float32)})
    assert list(imported.weights) == ["wt_folded"], "the gate weights are dropped, one folded weight is left"
    np.testing.assert_array_equal(imported.weights["wt_folded"], np.concatenate(list(gates.values())).T)
    assert _weights(compiled) == {"wt_folded": [8, 64]}


def test_batchnorm_scaled_conv_weight_folds(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    scale = rng.uniform(0.5, 2, (8, 1, 1, 1)).astype(np.float32)
    model = _model(
        [helper.make_node("Mul", ["w", "scale"], ["ws"]), helper.make_node("Conv", ["x", "ws", "b"], ["y"], pads=[1] * 4)],
        {"x": (1, 4, 10, 10)}, {"w": w, "scale": scale, "b": rng.standard_normal(8).astype(np.float32)},
    )
    imported, compiled = _check(model, {"x": rng.standard_normal((1, 4, 10, 10)).astype(np.float32)})
    (sym,) = imported.weights
    np.testing.assert_allclose(imported.weights[sym], w * scale, rtol=1e-6)
    assert _weights(compiled) == {sym: [8, 4, 3, 3]}


def test_dequantized_weight_folds(rng: np.random.Generator) -> None:
    q = rng.integers(-128, 127, (24, 6), dtype=np.int8)
    model = _model(
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"]), helper.make_node("MatMul", ["x", "w"], ["y"])],
        {"x": (3, 24)}, {"q": q, "s": np.array(0.02, np.float32), "z": np.array(3, np.int8)},
    )
    x = rng.standard_normal((3, 24)).astype(np.float32)
    # onnxruntime turns DequantizeLinear + MatMul into an integer matmul on x quantised at
    # run time (0.5% off here): the reference is the definition instead
    imported, _ = _check(model, {"x": x}, x @ ((q.astype(np.float32) - 3) * np.float32(0.02)))
    (sym,) = imported.weights
    assert imported.weights[sym].dtype == np.float32


def test_expand_of_weight_does_not_fold(rng: np.random.Generator) -> None:
    w = rng.standard_normal((1, 100)).astype(np.float32)
    model = _model(
        [
            helper.make_node("Expand", ["w", "shape"], ["we"]),
            helper.make_node("Add", ["x", "we"], ["y"]),
        ],
        {"x": (32, 100)}, {"w": w, "shape": np.array([32, 100], np.int64)},
    )
    feeds = {"x": rng.standard_normal((32, 100)).astype(np.float32)}
    imported = _folded(model)
    assert list(imported.weights) == ["w"]
    main = imported.module.ops.first
    assert any(isinstance(op, EinsumOp) and isinstance(op.inputs[0].owner, WeightOp) for op in main.walk())
    compiled = einc.compile(model, cache=False)
    np.testing.assert_allclose(compiled.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=RTOL, atol=ATOL)
    assert _weights(compiled) == {"w": [1, 100]}


def test_weight_only_and_runtime_parts(rng: np.random.Generator) -> None:
    """Weight-only branches fold; everything reading the input still runs; the artifact is deterministic."""
    inits = {
        "w1": rng.standard_normal((32, 16)).astype(np.float32),
        "w2a": rng.standard_normal((32, 8)).astype(np.float32),
        "w2b": rng.standard_normal((32, 8)).astype(np.float32),
        "b1": rng.standard_normal(32).astype(np.float32),
        "b2": rng.standard_normal(32).astype(np.float32),
        "two": np.array(2.0, np.float32),
    }
    model = _model(
        [
            helper.make_node("Transpose", ["w1"], ["w1t"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "w1t"], ["h"]),  # [4, 32]
            helper.make_node("Add", ["b1", "b2"], ["b"]),
            helper.make_node("Add", ["h", "b"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("Sub", ["w2a", "w2b"], ["w2d"]),
            helper.make_node("Mul", ["w2d", "two"], ["w2"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),  # [4, 8]
        ],
        {"x": (4, 16)}, inits,
    )
    imported, compiled = _check(model, {"x": rng.standard_normal((4, 16)).astype(np.float32)})
    assert sorted(imported.weights) == ["w1t_folded", "w2_folded"]
    assert _weights(compiled) == {"w1t_folded": [16, 32], "w2_folded": [32, 8]}
    main = imported.module.ops.first
    contractions = [op for op in main.walk() if isinstance(op, EinsumOp) and op.reduce_op == "add"]
    assert len(contractions) == 2, "both matmuls on the input stay"
    again = einc.compile(model, cache=False)
    assert again.manifest == compiled.manifest and bytes(again._weights) == bytes(compiled._weights)


def test_returned_weight_only_value_still_computed(rng: np.random.Generator) -> None:
    """A model output computed from weights only stays an op: outputs are written by code."""
    w = rng.standard_normal((10, 12)).astype(np.float32)
    model = _model(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("Add", ["wt", "x"], ["y"])],
        {"x": (12, 10)}, {"w": w},
    )
    feeds = {"x": rng.standard_normal((12, 10)).astype(np.float32)}
    _check(model, feeds)
    model = _model([helper.make_node("Transpose", ["w"], ["y"], perm=[1, 0])], {}, {"w": w})
    np.testing.assert_array_equal(einc.compile(model, cache=False).run({})["y"], w.T)
