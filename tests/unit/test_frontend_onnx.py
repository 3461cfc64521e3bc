"""The ONNX importer: types, weights out of line, subgraphs, and every bad-input diagnostic."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    NoneType,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.parser import Parser

from einc.diagnostics import EincError
from einc.frontend import ImportedModel, import_model
from einc.frontend.onnx import ATTRIBUTES
from einc.ir.dtypes import ONNX_TYPES, numpy_to_type, onnx_to_type, type_to_numpy
from einc.ir.ein import ConstantOp, WeightOp
from einc.ir.onnx import NoneOp, OnnxNodeOp, YieldOp, onnx_op_class
from einc.passes.pipeline import make_context


def model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[str],
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    opset: int = 17,
    extra_opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    graph = h.make_graph(
        nodes,
        "test",
        inputs,
        [h.make_tensor_value_info(o, T.UNDEFINED, None) for o in outputs],
        list(initializers),
    )
    opsets = [h.make_opsetid("", opset)] + [
        h.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()
    ]
    return h.make_model(graph, ir_version=10, opset_imports=opsets)


def tensor_input(name: str, dims: list[int | str] | None, dtype: int = T.FLOAT):
    return h.make_tensor_value_info(name, dtype, dims)


def init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(array, name)


def ops_of(imported: ImportedModel) -> list:
    return list(imported.module.walk())


def reparse(imported: ImportedModel) -> str:
    """Print, parse back with einc's context, verify, and return the printed text."""
    text = str(imported.module)
    parsed = Parser(make_context(), text).parse_module()
    parsed.verify()
    assert str(parsed) == text
    return text


def mlp() -> onnx.ModelProto:
    return model(
        [
            h.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc1"),
            h.make_node("Relu", ["h"], ["/act/Relu_output_0"], name="relu"),
            h.make_node("Shape", ["/act/Relu_output_0"], ["shape"], name="shape"),
        ],
        [tensor_input("x", ["N", 784])],
        ["/act/Relu_output_0", "shape"],
        [
            init("w", np.ones((10, 784), np.float32)),
            init("b", np.arange(10, dtype=np.float32)),
        ],
    )


# -- the imported module ------------------------------------------------------------------


def test_types_signature_and_attributes():
    imported = import_model(mlp(), {"x": [64, 784]})
    assert imported.source == "<model>"
    assert imported.inputs == [("x", (64, 784), np.dtype(np.float32))]
    assert imported.outputs == [
        ("/act/Relu_output_0", (64, 10), np.dtype(np.float32)),
        ("shape", (2,), np.dtype(np.int64)),
    ]
    (main,) = imported.module.ops
    assert isinstance(main, func.FuncOp) and main.sym_name.data == "main"
    assert [str(t) for t in main.function_type.inputs] == ["tensor<64x784xf32>"]
    assert [str(t) for t in main.function_type.outputs] == [
        "tensor<64x10xf32>",
        "tensor<2xi64>",
    ]
    assert main.attributes["einc.inputs"] == ArrayAttr([StringAttr("x")])
    assert main.attributes["einc.outputs"] == ArrayAttr(
        [StringAttr("/act/Relu_output_0"), StringAttr("shape")]
    )
    opset = imported.module.attributes["onnx.opset"]
    assert opset.data == {"ai.onnx": IntegerAttr(17, i64)}  # type: ignore[attr-defined]

    gemm = next(op for op in ops_of(imported) if op.name == "onnx.Gemm")
    assert isinstance(gemm, onnx_op_class("Gemm")) and isinstance(gemm, OnnxNodeOp)
    assert gemm.attributes["transB"] == IntegerAttr(1, i64)
    assert gemm.attributes["onnx_node"] == StringAttr("fc1")
    assert gemm.results[0].type == TensorType(f32, [64, 10])

    text = reparse(imported)
    assert '%h = onnx.Gemm(%x, %w, %b) {transB = 1 : i64, onnx_node = "fc1"}' in text
    assert "%act_Relu_output = onnx.Relu(%h)" in text  # readable names from ONNX values


def test_caller_model_is_not_modified():
    proto = mlp()
    before = proto.SerializeToString()
    import_model(proto, {"x": [2, 784]})
    assert proto.SerializeToString() == before


def test_large_weights_stay_out_of_the_ir(tmp_path):
    big = np.random.default_rng(0).standard_normal((1000, 1000)).astype(np.float32)
    proto = model(
        [h.make_node("MatMul", ["x", "fc.weight"], ["y"], name="mm")],
        [tensor_input("x", [4, 1000])],
        ["y"],
        [init("fc.weight", big)],
    )
    path = tmp_path / "big.onnx"
    onnx.save(proto, path)
    imported = import_model(path)
    assert imported.source == str(path)
    text = reparse(imported)
    assert len(text) < 2000
    assert "ein.weight @fc.weight : tensor<1000x1000xf32>" in text
    np.testing.assert_array_equal(imported.weights["fc.weight"], big)


def test_small_constants_inline_large_ones_weights():
    proto = model(
        [
            h.make_node("Constant", [], ["shape"], value_ints=[2, 3], name="c_shape"),
            h.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
            h.make_node("Constant", [], ["table"], value=init("t", np.ones((10, 10), np.uint8))),
            h.make_node("Cast", ["table"], ["tf"], to=T.FLOAT, name="cast"),
            h.make_node("Add", ["r", "bias"], ["y"], name="add"),
        ],
        [tensor_input("x", [6])],
        ["y", "tf"],
        [init("bias", np.array([1, 0, 1], dtype=np.bool_).astype(np.float32))],
    )
    imported = import_model(proto)
    constants = [op for op in ops_of(imported) if isinstance(op, ConstantOp)]
    weights = [op for op in ops_of(imported) if isinstance(op, WeightOp)]
    assert [c.value.get_values() for c in constants] == [(1.0, 0.0, 1.0), (2, 3)]
    assert constants[1].attributes["onnx_node"] == StringAttr("c_shape")
    assert [w.sym.root_reference.data for w in weights] == ["table"]
    assert str(weights[0].result.type) == "tensor<10x10xui8>"
    assert "onnx_node" not in weights[0].attributes  # the Constant node had no name
    assert imported.weights["table"].dtype == np.uint8
    reshape = next(op for op in ops_of(imported) if op.name == "onnx.Reshape")
    assert str(reshape.results[0].type) == "tensor<2x3xf32>"
    reparse(imported)


def test_weight_symbols_are_valid_unique_and_recognisable():
    proto = model(
        [
            h.make_node("Add", ["x", "onnx::Add_1"], ["a"], name="a1"),
            h.make_node("Add", ["a", "onnx__Add_1"], ["b"], name="a2"),
            h.make_node("Add", ["b", "0.w"], ["y"], name="a3"),
        ],
        [tensor_input("x", [100])],
        ["y"],
        [init(n, np.ones(100, np.float32)) for n in ["onnx::Add_1", "onnx__Add_1", "0.w"]],
    )
    imported = import_model(proto)
    assert list(imported.weights) == ["onnx__Add_1", "onnx__Add_1_1", "_0.w"]
    text = reparse(imported)
    assert "@onnx__Add_1_1 :" in text and "@_0.w :" in text


def test_absent_optional_inputs_are_onnx_none():
    proto = model(
        [h.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")],
        [tensor_input("x", [3])],
        ["y"],
        [init("hi", np.array(6.0, np.float32))],
    )
    imported = import_model(proto)
    clip = next(op for op in ops_of(imported) if op.name == "onnx.Clip")
    assert isinstance(clip.operands[1].owner, NoneOp)
    assert clip.operands[1].type == NoneType()
    assert "onnx.Clip(%x, %none, %hi)" in reparse(imported)


def test_if_subgraphs_become_regions():
    then_g = h.make_graph(
        [h.make_node("Relu", ["x"], ["t"], name="then_relu")],
        "then",
        [],
        [h.make_tensor_value_info("t", T.FLOAT, None)],
    )
    else_g = h.make_graph(
        [h.make_node("Mul", ["x", "k"], ["e"], name="else_mul")],
        "else",
        [],
        [h.make_tensor_value_info("e", T.FLOAT, None)],
        [init("k", np.full((2, 3), 2.0, np.float32))],
    )
    proto = model(
        [
            h.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
            h.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
            h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="if"),
        ],
        [tensor_input("x", ["B", 3])],
        ["y"],
        [init("zero", np.array(0.0, np.float32))],
    )
    imported = import_model(proto, {"x": (2, 3)})
    op = next(op for op in ops_of(imported) if op.name == "onnx.If")
    assert isinstance(op, OnnxNodeOp)
    # onnx.helper.make_node sorts attributes by name: else_branch is region 0 here
    assert op.attributes["else_branch"] == IntegerAttr(0, i64)
    assert op.attributes["then_branch"] == IntegerAttr(1, i64)
    else_r, then_r = op.graphs
    assert [o.name for o in then_r.block.ops] == ["onnx.Relu", "onnx.yield"]
    assert [o.name for o in else_r.block.ops] == ["ein.constant", "onnx.Mul", "onnx.yield"]
    assert isinstance(then_r.block.last_op, YieldOp)
    assert op.results[0].type == TensorType(f32, [2, 3])
    text = reparse(imported)
    assert "onnx.If(%c) {else_branch = 0 : i64, then_branch = 1 : i64" in text


def test_attribute_encoding():
    cases = [
        (3, IntegerAttr(3, i64)),
        (0.5, FloatAttr(0.5, f32)),
        ("nearest", StringAttr("nearest")),
        ([1, 2], DenseArrayBase.from_list(i64, [1, 2])),
        ([0.5, 2.0], DenseArrayBase.from_list(f32, [0.5, 2.0])),
        (["a", "b"], ArrayAttr([StringAttr("a"), StringAttr("b")])),
    ]
    for value, expected in cases:
        attr = h.make_attribute("a", value)
        assert ATTRIBUTES[attr.type](attr) == expected
    value = ATTRIBUTES[onnx.AttributeProto.TENSOR](
        h.make_attribute("t", init("t", np.array([[1, 2]], np.int32)))
    )
    assert str(value) == "dense<[[1, 2]]> : tensor<1x2xi32>"


def test_dtype_table_agrees_with_onnx():
    for elem_type, t in ONNX_TYPES.items():
        assert onnx_to_type(elem_type) == t
        assert type_to_numpy(t) == h.tensor_dtype_to_np_dtype(elem_type)
        assert numpy_to_type(type_to_numpy(t)) == t
    assert type_to_numpy(onnx_to_type(T.BFLOAT16)) == np.dtype(ml_dtypes.bfloat16)
    assert str(onnx_to_type(T.UINT8)) == "ui8" and str(onnx_to_type(T.BOOL)) == "i1"
    with pytest.raises(EincError, match="element type STRING is not supported"):
        onnx_to_type(T.STRING)


def test_unknown_op_type_is_a_clear_error():
    with pytest.raises(EincError, match="'NoSuchOp' is not an op of the default ONNX domain"):
        onnx_op_class("NoSuchOp")


# -- bad input ------------------------------------------------------------------------------


def relu_model(dims: list[int | str] | None) -> onnx.ModelProto:
    return model([h.make_node("Relu", ["x"], ["y"], name="r")], [tensor_input("x", dims)], ["y"])


def error_of(*args, **kwargs) -> EincError:
    with pytest.raises(EincError) as info:
        import_model(*args, **kwargs)
    return info.value


def test_missing_file(tmp_path):
    err = error_of(tmp_path / "nope.onnx")
    assert err.file == str(tmp_path / "nope.onnx") and err.reason == "no such file"


@pytest.mark.parametrize("content", [b"this is not a model\n", "truncated"])
def test_not_onnx_or_truncated(tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        content = mlp().SerializeToString()[:-20]
    path.write_bytes(content)
    err = error_of(path)
    assert err.file == str(path)
    assert err.reason.startswith("not an ONNX model")


def test_empty_file_is_not_a_model(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert error_of(path).reason == "not an ONNX model: it has no graph"


def test_opset_newer_than_installed_onnx():
    known = onnx.defs.onnx_opset_version()
    err = error_of(model([], [tensor_input("x", [1])], ["x"], opset=known + 5))
    assert f"opset {known + 5}" in err.reason
    assert f"onnx {onnx.__version__} knows opsets up to {known}" in err.reason
    assert err.file == "<model>"


def test_symbolic_dims_need_a_shape():
    err = error_of(relu_model(["N", 3, None]))
    assert "input 'x' has symbolic or unknown dims [N, 3, ?]" in err.reason
    assert "--input-shape x=Dx3xD" in err.reason
    err = error_of(relu_model(None))
    assert "input 'x' has unknown rank" in err.reason and "--input-shape x=DxD" in err.reason
    assert import_model(relu_model(None), {"x": [2, 2]}).inputs[0][1] == (2, 2)


def test_input_shapes_must_match_the_model():
    err = error_of(relu_model(["N", 3]), {"z": [1, 3]})
    assert "'z', which is not an input of the model (its inputs: x)" in err.reason
    err = error_of(relu_model(["N", 3]), {"x": [1, 3, 5]})
    assert "input 'x' has rank 2 (dims [N, 3]) but the given shape [1, 3, 5] has rank 3" in (
        err.reason
    )
    err = error_of(relu_model(["N", 3]), {"x": [1, 4]})
    assert "dim 1 is fixed at 3 but the given shape [1, 4] sets it to 4" in err.reason


def test_value_of_unknown_shape_names_node_op_and_value():
    proto = model(
        [h.make_node("NonZero", ["x"], ["idx"], name="nz")], [tensor_input("x", [4])], ["idx"]
    )
    err = error_of(proto)
    assert (err.node, err.op) == ("nz", "NonZero")
    assert err.reason == "shape inference could not determine the shape of value 'idx': dims [1, ?]"
    assert str(err).startswith("<model>: node 'nz' (NonZero): ")


def test_other_domains_are_listed_in_one_error():
    proto = model(
        [
            h.make_node("FusedMatMul", ["x", "x"], ["a"], domain="com.microsoft", name="f1"),
            h.make_node("Relu", ["a"], ["b"], name="ok"),
            h.make_node("Gelu2", ["b"], ["y"], domain="com.x", name="g"),
        ],
        [tensor_input("x", [2, 2])],
        ["y"],
        extra_opsets={"com.microsoft": 1, "com.x": 1},
    )
    err = error_of(proto)
    first, *rest = err.reason.splitlines()
    assert first == "2 unsupported nodes: 'f1' (com.microsoft.FusedMatMul), 'g' (com.x.Gelu2)"
    assert "com.microsoft, com.x" in rest[0]


def test_shape_inference_errors_are_diagnostics():
    proto = model(
        [h.make_node("Add", ["x", "z"], ["y"], name="add1")],
        [tensor_input("x", [2]), tensor_input("z", [3])],
        ["y"],
    )
    err = error_of(proto)
    assert (err.node, err.op) == ("add1", "Add")
    assert "shape inference failed" in err.reason and "Incompatible dimensions" in err.reason


def test_unread_output_of_unknown_type_is_none():
    # Dropout-7 leaves the type of its mask open; nobody reads it here
    proto = model(
        [h.make_node("Dropout", ["x"], ["y", "mask"], name="drop")],
        [tensor_input("x", [2])],
        ["y"],
        opset=9,
    )
    drop = next(op for op in ops_of(import_model(proto)) if op.name == "onnx.Dropout")
    assert [r.type for r in drop.results] == [TensorType(f32, [2]), NoneType()]


def test_undefined_input_names_the_node():
    err = error_of(
        model([h.make_node("Relu", ["q"], ["y"], name="r")], [tensor_input("x", [2])], ["y"])
    )
    assert (err.node, err.op) == ("r", "Relu")
    assert err.reason.startswith("input 'q' is not defined before this node")


def test_only_tensor_values():
    seq = h.make_tensor_sequence_value_info("s", T.FLOAT, [2])
    err = error_of(model([h.make_node("Identity", ["s"], ["y"])], [seq], ["y"]))
    assert err.reason == "input 's' is not a tensor: only tensors are supported"
    strings = tensor_input("x", [2], T.STRING)
    err = error_of(model([h.make_node("Relu", ["x"], ["y"])], [strings], ["y"]))
    assert err.reason == "value 'x': element type STRING is not supported"


def test_external_data(tmp_path):
    big = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    proto = model(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [tensor_input("x", [1, 100])],
        ["y"],
        [init("w", big)],
    )
    path = tmp_path / "m.onnx"
    onnx.save(proto, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    np.testing.assert_array_equal(import_model(path).weights["w"], big)
    (tmp_path / "w.bin").unlink()
    err = error_of(path)
    assert err.file == str(path) and err.reason.startswith("cannot load the model:")


def test_shapes_computed_through_shape_arithmetic_are_folded():
    """onnx's data propagation stops at ReduceMax on shapes; einc folds it."""
    x = h.make_tensor_value_info("x", T.FLOAT, [3, 1])
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("ReduceMax", ["s"], ["m"], keepdims=1),
        h.make_node("Mul", ["m", "scale"], ["s2"]),
        h.make_node("Expand", ["x", "s2"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [x],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([1, 4], np.int64), "scale")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    assert [(n, s) for n, s, _ in import_model(model).outputs] == [("y", (3, 12))]


def runtime_if_model(
    then_nodes: list[onnx.NodeProto], else_nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]
) -> onnx.ModelProto:
    """x: [1, n] floats and c: a bool known only at run time; y = If(c) of the branches,
    each of which names its last node's output y_then / y_else."""
    branches = {
        f"{name}_branch": h.make_graph(nodes, name, [], [tensor_input(f"y_{name}", None)])
        for name, nodes in (("then", then_nodes), ("else", else_nodes))
    }
    inputs = [tensor_input("x", [1, "n"]), tensor_input("c", [], T.BOOL)]
    graph = h.make_graph([h.make_node("If", ["c"], ["y"], **branches)], "g", inputs, [tensor_input("y", None)], initializers)
    return h.make_model(graph, ir_version=10, opset_imports=[h.make_opsetid("", 17)])


def compiled_against_onnxruntime(m: onnx.ModelProto, x: np.ndarray) -> dict[bool, tuple[np.ndarray, np.ndarray | None]]:
    """For each condition: einc's y and onnxruntime's (None where onnxruntime fails)."""
    import onnxruntime as ort

    import einc

    compiled = einc.compile(m, input_shapes={"x": x.shape}, cache=False)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    results = {}
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        try:
            want = session.run(None, feeds)[0]
        except ort.capi.onnxruntime_pybind11_state.Fail:  # the branch fails at run time
            want = None
        results[c] = (compiled.run(feeds)["y"], want)
    return results


def test_branch_shapes_fold_inside_a_runtime_if():
    """The If's result is a scalar whatever the pads, so onnx types the model, but
    the Pad inside each branch has a width only the pads' value gives: each branch
    is inferred as a model of its own, with the outer initializer it reads."""
    m = runtime_if_model(
        [h.make_node("Pad", ["x", "pads"], ["p"]), h.make_node("ReduceSum", ["p"], ["y_then"], keepdims=0)],
        [h.make_node("Pad", ["x", "pads"], ["p2"]), h.make_node("ReduceMax", ["p2"], ["y_else"], keepdims=0)],
        [init("pads", np.array([0, 2, 0, 3], np.int64))],
    )
    x = np.random.default_rng(0).standard_normal((1, 5)).astype(np.float32) - 2
    for c, (got, want) in compiled_against_onnxruntime(m, x).items():
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"c={c}")


def test_branch_that_cannot_run_on_these_shapes_gives_nan():
    """The else branch multiplies [1, 6] by [5, 4]: onnxruntime fails when it is
    taken. einc compiles the If with that branch as NaN, and warns."""
    w = np.arange(24, dtype=np.float32).reshape(6, 4) / 24
    m = runtime_if_model(
        [h.make_node("MatMul", ["x", "w"], ["y_then"])],
        [h.make_node("MatMul", ["x", "w_bad"], ["y_else"])],
        [init("w", w), init("w_bad", np.ones((5, 4), np.float32))],
    )
    x = np.random.default_rng(0).standard_normal((1, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"node .* \(If\): its else_branch cannot run on these input shapes"):
        results = compiled_against_onnxruntime(m, x)
    got, want = results[True]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    got, want = results[False]
    assert want is None and got.shape == (1, 4) and np.isnan(got).all()


def test_stft_without_onesided_infers_the_schema_default():
    """onnx 1.23's shape inference reads a missing onesided as 0 (16 bins, which
    then clash with the declared 9); the schema's default is 1. The importer's
    inference copy spells it out; the user's model is left as it was."""
    signal = h.make_tensor_value_info("x", T.FLOAT, [1, 64, 1])
    window = h.make_tensor_value_info("w", T.FLOAT, [16])
    node = h.make_node("STFT", ["x", "step", "w"], ["y"])
    graph = h.make_graph([node], "g", [signal, window], [h.make_tensor_value_info("y", T.FLOAT, [1, 7, 9, 2])],
                         [init("step", np.array(8, np.int64))])
    m = h.make_model(graph, ir_version=10, opset_imports=[h.make_opsetid("", 17)])
    assert [(n, s) for n, s, _ in import_model(m).outputs] == [("y", (1, 7, 9, 2))]
    assert not m.graph.node[0].attribute

    import onnxruntime as ort

    import einc

    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((1, 64, 1)).astype(np.float32), "w": np.hanning(16).astype(np.float32)}
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(einc.compile(m, cache=False).run(feeds)["y"], want, rtol=1e-4, atol=1e-5)
