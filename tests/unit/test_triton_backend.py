"""The triton target: generated kernels run in Triton's CPU interpreter against onnxruntime.

`TRITON_INTERPRET=1` must be set before triton is imported (its own `tl.max`,
`tl.sum`, ... are jitted at import), so this module sets it before importing
anything that imports triton; no other test module imports triton. One test
also compiles generated kernels for an H100 (sm_90) with Triton's own
compiler, which needs no GPU: what the interpreter accepts but a GPU would not
is caught here too.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("triton")

import einc  # noqa: E402
from einc.backends.triton.target import compile_for_triton, emit_source  # noqa: E402
from einc.diagnostics import EincError  # noqa: E402
from einc.frontend.onnx import import_model  # noqa: E402
from tests.conftest import IR_VERSION, ort_run, single_node_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RTOL, ATOL = 1e-4, 1e-5
"""fp32 kernels against onnxruntime: sums in another order, tanh/erf written with exp."""


def _lowered(*ops: str) -> None:
    """Skip where onnx-to-ein does not lower an op yet (other families land separately)."""
    from einc.passes.onnx_to_ein import LOWERINGS

    missing = [op for op in ops if op not in LOWERINGS]
    if missing:
        pytest.skip(f"onnx-to-ein does not lower {', '.join(missing)} yet")


def _graph_model(nodes, inputs, outputs, inits=(), opset=17, out_type=TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info(o, out_type, None) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in dict(inits).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], group: str | None = None, rtol=RTOL, atol=ATOL):
    compiled = einc.compile(model, target="triton") if group is None else compile_for_triton(import_model(model), group)
    got = compiled.run(feeds)
    want = ort_run(model, feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name].astype(np.float64), value.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=name)
    return compiled


def _f(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# -- single ops: each kernel template -------------------------------------------

NODE_CASES = [
    ("add-broadcast", "Add", lambda r: {"a": _f(r, 3, 5, 7), "b": _f(r, 5, 1)}, {}),
    ("where", "Where", lambda r: {"c": r.standard_normal((4, 6)) > 0, "a": _f(r, 4, 6), "b": _f(r, 6)}, {}),
    ("pow", "Pow", lambda r: {"a": _f(r, 4, 6), "b": np.array([2.0, 3.0, 0.5, -1.0, 1.0, 0.0], np.float32)}, {}),
    ("softmax-last", "Softmax", lambda r: {"x": _f(r, 3, 5, 33)}, {}),
    ("softmax-axis1", "Softmax", lambda r: {"x": _f(r, 3, 7, 4)}, {"axis": 1}),
    ("softmax-long-row", "Softmax", lambda r: {"x": _f(r, 2, 9000)}, {}),
    ("reduce-sum", "ReduceSum", lambda r: {"x": _f(r, 4, 5, 6), "axes": np.array([0, 2], np.int64)}, {"keepdims": 1}),
    ("reduce-max", "ReduceMax", lambda r: {"x": _f(r, 4, 5, 6)}, {"axes": [1], "keepdims": 0}),
    ("reduce-prod", "ReduceProd", lambda r: {"x": (1 + 0.1 * _f(r, 3, 8))}, {"axes": [1]}),
    ("matmul-batched", "MatMul", lambda r: {"a": _f(r, 2, 20, 24), "b": _f(r, 24, 18)}, {}),
    ("matmul-small", "MatMul", lambda r: {"a": _f(r, 3, 5), "b": _f(r, 5, 2)}, {}),
    ("matmul-f16", "MatMul", lambda r: {"a": _f(r, 32, 48, dtype=np.float16), "b": _f(r, 48, 40, dtype=np.float16)}, {}),
    ("transpose", "Transpose", lambda r: {"x": _f(r, 2, 3, 4)}, {"perm": [2, 0, 1]}),
    ("concat", "Concat", lambda r: {"a": _f(r, 2, 3), "b": _f(r, 2, 5)}, {"axis": 1}),
    ("gather", "Gather", lambda r: {"x": _f(r, 5, 4), "i": np.array([[0, -1], [3, 2]], np.int64)}, {"axis": 0}),
    ("slice", "Slice", lambda r: {"x": _f(r, 6, 8), "starts": np.array([1, 6], np.int64), "ends": np.array([5, 0], np.int64),
                                  "axes": np.array([0, 1], np.int64), "steps": np.array([2, -2], np.int64)}, {}),
    ("pad-reflect", "Pad", lambda r: {"x": _f(r, 3, 4), "pads": np.array([1, 2, 1, 0], np.int64)}, {"mode": "reflect"}),
    ("pad-constant", "Pad", lambda r: {"x": _f(r, 3, 4), "pads": np.array([0, -1, 2, 1], np.int64)}, {}),
    ("conv", "Conv", lambda r: {"x": _f(r, 1, 3, 9, 9), "w": _f(r, 16, 3, 3, 3)}, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("maxpool", "MaxPool", lambda r: {"x": _f(r, 1, 2, 8, 8)}, {"kernel_shape": [3, 3], "strides": [2, 2]}),
]
SHAPE_INPUTS = {"axes", "starts", "ends", "steps", "pads"}


@pytest.mark.parametrize("op_type,make,attrs", [pytest.param(*c[1:], id=c[0]) for c in NODE_CASES])
def test_op_matches_onnxruntime(rng, op_type, make, attrs):
    _lowered(op_type)
    values = make(rng)
    inputs = {k: v for k, v in values.items() if k not in SHAPE_INPUTS}
    inits = {k: v for k, v in values.items() if k in SHAPE_INPUTS}
    out_dtype = TensorProto.FLOAT16 if op_type == "MatMul" and values["a"].dtype == np.float16 else TensorProto.FLOAT
    model = single_node_model(op_type, inputs, initializers=inits, out_dtype=out_dtype, **attrs)
    tol = dict(rtol=2e-2, atol=2e-2) if out_dtype == TensorProto.FLOAT16 else {}
    _check(model, inputs, **tol)


def test_elementwise_functions(rng):
    """Every unary map the interpreter can run, each written in `tl` (no libdevice)."""
    ops = ["Sigmoid", "Tanh", "Erf", "Exp", "Abs", "Neg", "Floor", "Ceil", "Round", "Sin", "Cos", "Sign", "Softplus",
           "Sinh", "Cosh", "Asinh", "Tan"]
    x = (rng.standard_normal((4, 9)) * 1.5).astype(np.float32)
    x[0, :4] = [0.5, 1.5, -2.5, 2.5]  # Round: halves go to even
    _lowered(*ops)
    nodes = [helper.make_node(op, ["x"], [f"y_{op}"], name=op) for op in ops]
    _check(_graph_model(nodes, {"x": x}, [f"y_{op}" for op in ops]), {"x": x})


def test_layernorm_group(rng):
    _lowered("LayerNormalization")
    x = _f(rng, 6, 48)
    scale, bias = _f(rng, 48), _f(rng, 48)
    model = single_node_model("LayerNormalization", {"x": x}, initializers={"s": scale, "b": bias}, axis=-1, epsilon=1e-5)
    compiled = _check(model, {"x": x}, group="rows")
    assert compiled.source.count("@triton.jit") == 2  # the LayerNorm kernel and the module's reduce helper


def test_softmax_group_looped_row(rng):
    """A row longer than one block: the cascade walks it once per pass."""
    x = _f(rng, 3, 9000)
    compiled = _check(single_node_model("Softmax", {"x": x}), {"x": x}, group="rows")
    assert "for r0 in range(0, 9000, 1024):" in compiled.source


SCALAR_CASES = [
    ("reducesum-all", "ReduceSum", {"x": (3, 4)}, {"keepdims": 0}),
    ("reducesum-all-looped", "ReduceSum", {"x": (30, 400)}, {"keepdims": 0}),
    ("reducemax-keepdims", "ReduceMax", {"x": (3, 4)}, {"keepdims": 1}),
    ("matmul-vectors", "MatMul", {"a": (40,), "b": (40,)}, {}),
    ("nll-mean", "NegativeLogLikelihoodLoss", {"x": (3, 5), "t": (3,)}, {"reduction": "mean"}),
    ("nll-sum", "NegativeLogLikelihoodLoss", {"x": (3, 5), "t": (3,)}, {"reduction": "sum"}),
    ("softmax-ce-mean", "SoftmaxCrossEntropyLoss", {"x": (3, 5), "t": (3,)}, {"reduction": "mean"}),
]


@pytest.mark.parametrize("op_type,shapes,attrs", [pytest.param(*c[1:], id=c[0]) for c in SCALAR_CASES])
def test_reduction_to_one_element(rng, op_type, shapes, attrs):
    """A result of one element is stored from a [rows, 1] block through a block of pointers."""
    _lowered(op_type)
    inputs = {n: rng.integers(0, 5, s).astype(np.int64) if n == "t" else _f(rng, *s) for n, s in shapes.items()}  # 5 classes
    _check(single_node_model(op_type, inputs, **attrs), inputs)


def test_contraction_group_epilogue(rng):
    """Gemm, bias and Gelu in one kernel, the MLP example as the fuse pass groups it."""
    _lowered("MatMul", "Add", "Relu")
    x, w, b = _f(rng, 20, 32), _f(rng, 32, 24), _f(rng, 24)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["y"]),
    ]
    compiled = _check(_graph_model(nodes, {"x": x}, ["y"], {"w": w, "b": b}), {"x": x}, group="contraction")
    assert compiled.source.count("tl.dot(") == 1 and compiled.source.count("tl.store(") == 1


# -- grouping (einc.backends.triton.fusion) ----------------------------------------


def _launches(compiled) -> int:
    return len(compiled.manifest["launches"])


def _against_f32(build, rtol=2e-2, atol=2e-2):
    """Compile `build(np.float16)`, check it against onnxruntime on `build(np.float32)` (the
    same values in f32: onnxruntime's CPU lacks fp16 kernels for some ops); returns both compiled."""
    results = []
    for dtype in (np.float32, np.float16):
        model, feeds = build(dtype)
        compiled = einc.compile(model, target="triton")
        got = compiled.run(feeds)
        want = ort_run(*build(np.float32))
        for name, value in want.items():
            np.testing.assert_allclose(got[name].astype(np.float64), value.astype(np.float64), err_msg=name,
                                       **({"rtol": RTOL, "atol": ATOL} if dtype == np.float32 else {"rtol": rtol, "atol": atol}))
        results.append(compiled)
    return results


def test_mlp_epilogues_and_layernorm_fp16():
    """fc1 + bias + erf GELU, fc2 + bias + residual, LayerNorm: three kernels in f32 and fp16."""
    _lowered("MatMul", "Add", "Div", "Erf", "Mul", "LayerNormalization")

    def build(dtype):
        rng = np.random.default_rng(3)
        x, w1, w2 = _f(rng, 2, 16, 32), _f(rng, 32, 64) * 0.2, _f(rng, 64, 32) * 0.2
        inits = {"w1": w1, "b1": _f(rng, 64), "w2": w2, "b2": _f(rng, 32), "s": _f(rng, 32), "b": _f(rng, 32),
                 "sqrt2": np.array(np.sqrt(2.0)), "one": np.array(1.0), "half": np.array(0.5)}
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Div", ["hb", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["hb", "e1"], ["g"]),
            helper.make_node("Mul", ["g", "half"], ["gelu"]),
            helper.make_node("MatMul", ["gelu", "w2"], ["o"]), helper.make_node("Add", ["o", "b2"], ["ob"]),
            helper.make_node("Add", ["ob", "x"], ["r"]),
            helper.make_node("LayerNormalization", ["r", "s", "b"], ["y"], axis=-1, epsilon=1e-5),
        ]
        cast = {k: v.astype(dtype) for k, v in inits.items()}
        out = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        return _graph_model(nodes, {"x": x.astype(dtype)}, ["y"], cast, out_type=out), {"x": x.astype(dtype)}

    for compiled in _against_f32(build):
        assert _launches(compiled) == 3, compiled.manifest["launches"]
        assert compiled.source.count("tl.dot(") == 2 and "tl.erf(" in compiled.source


def test_maps_before_a_reduction_join_its_rows_kernel():
    """A residual add read whole by a LayerNorm is computed in the LayerNorm's kernel (and written,
    as it is also an output); a chain of maps is one kernel."""
    _lowered("Add", "LayerNormalization", "Relu", "Mul")

    def build(dtype):
        rng = np.random.default_rng(4)
        feeds = {"a": _f(rng, 6, 40).astype(dtype), "b": _f(rng, 6, 40).astype(dtype), "c": _f(rng, 40).astype(dtype)}
        nodes = [
            helper.make_node("Add", ["a", "b"], ["r"]),
            helper.make_node("LayerNormalization", ["r", "s", "t"], ["y"], axis=-1, epsilon=1e-5),
            helper.make_node("Relu", ["r"], ["m"]), helper.make_node("Mul", ["m", "c"], ["z"]),
        ]
        rng2 = np.random.default_rng(5)
        inits = {"s": _f(rng2, 40).astype(dtype), "t": _f(rng2, 40).astype(dtype)}
        out = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        return _graph_model(nodes, feeds, ["y", "r", "z"], inits, out_type=out), feeds

    for compiled in _against_f32(build):
        assert _launches(compiled) == 2, compiled.manifest["launches"]


def test_map_branches_meet_in_one_kernel():
    """GPT-2's tanh GELU: 0.5 x and the tanh branch from x meet only in the last product;
    the kernel unifies their dims there and computes all eight maps in one pass."""
    _lowered("Mul", "Pow", "Add", "Tanh")

    def build(dtype):
        x = np.random.default_rng(6).standard_normal((4, 8, 24)).astype(dtype)
        consts = {"half": 0.5, "three": 3.0, "c": 0.044715, "k": 0.7978845608, "one": 1.0}
        nodes = [
            helper.make_node("Mul", ["x", "half"], ["a"]), helper.make_node("Pow", ["x", "three"], ["p"]),
            helper.make_node("Mul", ["p", "c"], ["pc"]), helper.make_node("Add", ["x", "pc"], ["s"]),
            helper.make_node("Mul", ["s", "k"], ["sk"]), helper.make_node("Tanh", ["sk"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["t1"]), helper.make_node("Mul", ["a", "t1"], ["y"]),
        ]
        out = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        inits = {k: np.array(v, dtype) for k, v in consts.items()}
        return _graph_model(nodes, {"x": x}, ["y"], inits, out_type=out), {"x": x}

    for compiled in _against_f32(build):
        assert _launches(compiled) == 1, compiled.manifest["launches"]


@pytest.mark.parametrize("name", ["transformer block", "minilm"])
def test_whole_models_fp16(name):
    """Small fp16 models exported from PyTorch: attention (with MiniLM's padding mask) is the
    one-pass kernel writing its heads straight into the hidden dim, every contraction carries
    its epilogue; checked against PyTorch in f32."""
    import torch

    if name == "minilm":
        pytest.importorskip("transformers")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import io

    import gpu

    torch.manual_seed(0)
    module, inputs = gpu._models(gpu.Bench(smoke=True))[name]()
    module = module.eval()
    with torch.no_grad():
        want = module(*inputs.values()).float()
        module = module.half()
        feeds = {k: (v.half() if v.is_floating_point() else v) for k, v in inputs.items()}
        buffer = io.BytesIO()
        torch.onnx.export(module, tuple(feeds.values()), buffer, input_names=list(feeds), output_names=["y"],
                          opset_version=17, dynamo=False, do_constant_folding=True)
    compiled = einc.compile(onnx.load_from_string(buffer.getvalue()), target="triton")
    got = compiled.run(feeds)["y"].float()
    assert float((got - want).abs().max() / want.abs().max()) < 3e-2
    assert compiled.source.count("m_new = tl.maximum(m_i") == 1
    assert _launches(compiled) <= {"transformer block": 9, "minilm": 16}[name], compiled.manifest["launches"]
    assert compiled.unbound == "the CPU interpreter"  # a GPU binds the launches after the first run


# -- attention -------------------------------------------------------------------


def _attention_model(b, h, s, d, dtype=np.float32, mask=None, kv_heads=None) -> tuple[onnx.ModelProto, dict]:
    """softmax(Q K^T * scale + mask) V; with kv_heads, K and V have fewer heads (GQA)."""
    rng = np.random.default_rng(7)
    groups = h // (kv_heads or h)
    q_shape = [b, kv_heads, groups, s, d] if kv_heads else [b, h, s, d]
    kv_shape = [b, kv_heads, 1, s, d] if kv_heads else [b, h, s, d]
    feeds = {"q": rng.standard_normal(q_shape).astype(dtype), "k": rng.standard_normal(kv_shape).astype(dtype),
             "v": rng.standard_normal(kv_shape).astype(dtype)}
    perm = list(range(len(kv_shape)))
    perm[-2:] = perm[-1], perm[-2]
    inits = {"scale": np.array(1 / np.sqrt(d), dtype)}
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=perm),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["scaled"]),
    ]
    scores = "scaled"
    if mask is not None:
        inits["mask"] = mask.astype(dtype)
        nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
        scores = "masked"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["o"])]
    out_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return _graph_model(nodes, feeds, ["o"], inits, out_type=out_type), feeds


@pytest.mark.parametrize("causal", [False, True])
def test_attention_one_pass(causal):
    s = 80
    mask = np.triu(np.full((s, s), -np.inf), 1) if causal else None
    model, feeds = _attention_model(2, 2, s, 32, mask=mask)
    compiled = _check(model, feeds, group="attention")
    src = compiled.source
    assert "m_new = tl.maximum(m_i" in src and src.count("tl.dot(") == 2
    assert ("(tl.program_id(0) + 1) * BLOCK_M + 0" in src) == causal  # blocks past the diagonal are skipped
    assert "w_mask" not in src.split("def launch")[0] or not causal  # the mask became an index comparison


def test_attention_grouped_query():
    """8 query heads over 2 key/value heads: K and V do not depend on the group dim."""
    model, feeds = _attention_model(1, 8, 40, 16, kv_heads=2)
    compiled = _check(model, feeds, group="attention")
    assert "m_new" in compiled.source


def test_attention_f16():
    model, feeds = _attention_model(1, 2, 64, 32, dtype=np.float16)
    _check(model, feeds, group="attention", rtol=2e-2, atol=2e-2)


def test_unmatched_group_is_emitted_einsum_by_einsum(rng):
    """A group its template does not fit still runs, one kernel per einsum."""
    x = _f(rng, 4, 8)
    compiled = _check(single_node_model("Softmax", {"x": x}), {"x": x}, group="attention")
    assert "m_new" not in compiled.source


# -- models, artifacts, command line ---------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "attention"])
def test_example_models(name):
    sys.path.insert(0, str(ROOT / "examples"))
    from make_models import MODELS

    model = MODELS[f"{name}.onnx"]()
    rng = np.random.default_rng(0)
    inp = model.graph.input[0]
    x = rng.standard_normal([d.dim_value for d in inp.type.tensor_type.shape.dim]).astype(np.float32)
    _check(model, {inp.name: x})


def test_save_load_and_torch_tensors(tmp_path, rng):
    import torch

    x, w = _f(rng, 16, 32), _f(rng, 32, 16)
    model = _graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": x}, ["y"], {"w": w})
    einc.compile(model, target="triton").save(tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["kernels.py", "manifest.json", "weights.bin"]
    loaded = einc.load(tmp_path / "art")
    np.testing.assert_allclose(loaded.run({"x": x})["y"], x @ w, rtol=RTOL, atol=ATOL)
    tx = torch.from_numpy(x)
    out = loaded.run({"x": tx})["y"]
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), x @ w, rtol=RTOL, atol=ATOL)


def test_deterministic_source(rng):
    model = single_node_model("Softmax", {"x": _f(rng, 3, 5)})
    first = einc.compile(model, target="triton")
    second = einc.compile(model, target="triton")
    assert first.source == second.source and first.manifest == second.manifest


def test_cli_emit_source(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    from make_models import make_mlp

    onnx.save(make_mlp(), tmp_path / "mlp.onnx")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "einc.cli", "compile", str(tmp_path / "mlp.onnx"), "--target", "triton",
         "-o", str(tmp_path / "out"), "--emit-source", str(tmp_path / "src")],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    source = (tmp_path / "src" / "mlp.py").read_text()
    assert "def launch(buffers):" in source and "tl.dot(" in source
    compile(source, "mlp.py", "exec")


def test_unsupported_op_names_the_node():
    """An op the backend has no kernel for fails at compile time, naming the node."""
    from xdsl.parser import Parser

    from einc.passes.pipeline import make_context

    text = """
    func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
      %y = "test.op"(%x) : (tensor<4xf32>) -> tensor<4xf32>
      func.return %y : tensor<4xf32>
    }
    """
    ctx = make_context()
    ctx.allow_unregistered = True
    module = Parser(ctx, text).parse_module()
    with pytest.raises(EincError, match=r"node 'y' \(test.op\): the triton target cannot emit"):
        emit_source(module)


def test_missing_torch_says_what_to_install(monkeypatch, rng):
    compiled = einc.compile(single_node_model("Relu", {"x": _f(rng, 4)}), target="triton")
    monkeypatch.setitem(sys.modules, "triton", None)
    with pytest.raises(EincError, match="pip install torch triton"):
        compiled.run({"x": _f(rng, 4)})


def test_kernels_compile_for_hopper():
    """Generated kernels (first autotune config) compile to sm_90 cubins with Triton's compiler."""
    code = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from tests.unit.test_triton_backend import _attention_model, compile_for_triton, import_model
from einc.runtime.triton import _load_module
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
mask = np.triu(np.full((256, 256), -np.inf), 1)
model, _ = _attention_model(1, 2, 256, 64, dtype=np.float16, mask=mask)
compiled = compile_for_triton(import_model(model), "attention")
mod = _load_module(compiled.source)
types = {{"float16": "*fp16", "float32": "*fp32"}}
for name in compiled.manifest["kernels"]:
    fn = getattr(mod, name)
    configs = getattr(fn, "configs", [None])
    jit = getattr(fn, "fn", fn)
    constexprs = dict(configs[0].kwargs) if configs[0] else {{}}
    sig = {{a: ("constexpr" if a in constexprs else "*fp16") for a in jit.arg_names}}
    kernel = triton.compile(ASTSource(jit, sig, constexprs), target=GPUTarget("cuda", 90, 32),
                            options={{"num_warps": configs[0].num_warps, "num_stages": configs[0].num_stages}} if configs[0] else {{}})
    assert kernel.metadata.shared <= 228 * 1024, kernel.metadata.shared
print("compiled", compiled.manifest["kernels"])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TRITON_INTERPRET": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compiled" in proc.stdout


def test_gpu_benchmark_smoke(tmp_path):
    """benchmarks/gpu.py --smoke: every code path on tiny sizes in the interpreter, checked
    against PyTorch; only a model einc cannot compile yet (a missing lowering) may fail."""
    import json

    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode in (0, 2), proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert {r["group"] for r in results} >= {"matmul", "attention", "norms", "models"}
    for r in results:
        allowed = r["status"] in ("ok", "SKIPPED") or (r["status"] == "ERROR" and r["notes"].startswith("EincError"))
        assert allowed, r
    assert all(r["status"] == "ok" for r in results if r["group"] in ("matmul", "attention")), results


def test_every_map_function_has_a_triton_form():
    """A function added to the map language needs a row (a method) in TritonOps."""
    from einc.backends.triton.emitter import has_triton_form
    from einc.ir.mapexpr import FUNCTIONS

    assert [f for f in FUNCTIONS if not has_triton_form(f)] == []
