"""onnx-to-ein, attention family: Attention (opsets 23-25) and RotaryEmbedding.

Each case runs through the ein interpreter and the CPU backend and is compared
with onnxruntime at RTOL/ATOL (f32); opset 25 (sliding windows), which
onnxruntime lacks, and the fully-masked-row cases, where onnxruntime predates
the spec's errata, are compared with onnx's reference evaluator.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from einc.analysis.pass_count import cascades
from einc.frontend.onnx import import_model
from einc.ir.ein import EinsumOp
from einc.passes import Pipeline
from tests.conftest import IR_VERSION, ort_run
from tests.unit.test_onnx_to_ein_math import check_lowering, onnx_reference

RTOL, ATOL = 1e-4, 1e-5


def _f(r: np.random.Generator, *shape: int, dtype: type = np.float32) -> np.ndarray:
    return r.standard_normal(shape).astype(dtype)


def _mask(r: np.random.Generator, *shape: int) -> np.ndarray:
    """A boolean mask whose rows keep at least their first key."""
    mask = r.random(shape) < 0.6
    mask[..., 0] = True
    return mask


def qkv(q=(2, 3, 4, 8), k=(2, 3, 6, 8), v=(2, 3, 6, 8), **extra):
    """inputs(rng) for Q, K, V of these shapes plus extra named inputs(rng)."""
    return lambda r: {"Q": _f(r, *q), "K": _f(r, *k), "V": _f(r, *v), **{n: f(r) for n, f in extra.items()}}


def case(name, inputs, opset=23, outputs=1, names=None, reference="ort", **attrs):
    return pytest.param(inputs, opset, outputs, names, reference, attrs, id=name)


_PAST = {"past_key": lambda r: _f(r, 2, 3, 5, 8), "past_value": lambda r: _f(r, 2, 3, 5, 8)}
_Q3 = {"q": (2, 4, 24), "k": (2, 6, 24), "v": (2, 6, 24)}
_GQA3 = {"q": (2, 4, 32), "k": (2, 6, 16), "v": (2, 6, 20)}

ATTENTION = [
    case("4d", qkv()),
    case("4d-opset24", qkv(), opset=24),
    case("4d-scale-diff-v", qkv(v=(2, 3, 6, 5)), scale=0.3),
    case("4d-gqa", qkv(q=(2, 6, 4, 8))),
    case("4d-mqa-causal", qkv(q=(1, 4, 5, 8), k=(1, 1, 5, 8), v=(1, 1, 5, 8)), is_causal=1),
    case("4d-causal-cross", qkv(), is_causal=1),
    case("4d-softcap", qkv(), softcap=2.0),
    case("3d", qkv(**_Q3), q_num_heads=3, kv_num_heads=3),
    case("3d-gqa-causal", qkv(**_GQA3), q_num_heads=4, kv_num_heads=2, is_causal=1),
    case("mask-float-2d", qkv(attn_mask=lambda r: _f(r, 4, 6))),
    case("mask-float-3d-gqa", qkv(q=(2, 6, 4, 8), attn_mask=lambda r: _f(r, 6, 4, 6))),
    case("mask-float-4d-broadcast", qkv(attn_mask=lambda r: _f(r, 2, 1, 4, 6)), is_causal=1),
    case("mask-float-rank1", qkv(attn_mask=lambda r: _f(r, 6)), reference="onnx"),
    case("mask-float-one-key", qkv(attn_mask=lambda r: _f(r, 2, 3, 4, 1)), reference="onnx"),
    case("mask-bool-2d", qkv(attn_mask=lambda r: _mask(r, 4, 6))),
    case("mask-bool-4d-gqa-causal", qkv(q=(2, 6, 4, 8), attn_mask=lambda r: _mask(r, 2, 6, 4, 6)), is_causal=1),
    case("mask-bool-3d-input", qkv(**_GQA3, attn_mask=lambda r: _mask(r, 1, 4, 6)), q_num_heads=4, kv_num_heads=2),
    case("past-present", qkv(**_PAST, attn_mask=lambda r: _f(r, 4, 11)), outputs=3),
    case("past-present-causal", qkv(**_PAST), opset=24, outputs=3, is_causal=1),
    case("past-present-3d-gqa", qkv(**_GQA3, past_key=lambda r: _f(r, 2, 2, 3, 8), past_value=lambda r: _f(r, 2, 2, 3, 10)),
         outputs=3, q_num_heads=4, kv_num_heads=2),
    *[case(f"qk-mode{mode}", qkv(**_PAST, attn_mask=lambda r: _f(r, 4, 11)), outputs=4, softcap=3.0,
           qk_matmul_output_mode=mode) for mode in range(4)],
    case("qk-mode3-causal-3d", qkv(**_Q3), outputs=(0, 3), q_num_heads=3, kv_num_heads=3,
         is_causal=1, qk_matmul_output_mode=3),
    case("softmax-precision-double", qkv(attn_mask=lambda r: _mask(r, 4, 6)), opset=24, outputs=(0, 3),
         softmax_precision=11, qk_matmul_output_mode=3, reference="onnx"),
    case("nonpad-padded-mask", qkv(attn_mask=lambda r: _f(r, 2, 3, 4, 4),
                                   nonpad_kv_seqlen=lambda r: np.array([3, 6], np.int64)), opset=24,
         reference="onnx"),
    case("nonpad-causal-decode-gqa", qkv(q=(2, 4, 1, 8), k=(2, 2, 8, 8), v=(2, 2, 8, 8),
                                         nonpad_kv_seqlen=lambda r: np.array([5, 8], np.int64)),
         opset=24, is_causal=1, reference="onnx"),
    case("nonpad-negative-offset", qkv(q=(1, 2, 4, 8), k=(1, 2, 4, 8), v=(1, 2, 4, 8),
                                       nonpad_kv_seqlen=lambda r: np.array([2], np.int64)),
         opset=24, is_causal=1, reference="onnx"),
    case("nonpad-zero-length", qkv(nonpad_kv_seqlen=lambda r: np.array([0, 6], np.int64)), opset=24, reference="onnx"),
    case("fully-masked-row", qkv(q=(1, 2, 2, 8), k=(1, 2, 2, 8), v=(1, 2, 2, 8),
                                 attn_mask=lambda r: np.array([[False, False], [True, True]])),
         outputs=(0, 3), qk_matmul_output_mode=3, reference="onnx"),
    case("window-causal-left", qkv(), opset=25, is_causal=1, left_window_size=2, reference="onnx"),
    case("window-bidirectional", qkv(q=(1, 1, 5, 4), k=(1, 1, 5, 4), v=(1, 1, 5, 4)), opset=25,
         left_window_size=1, right_window_size=2, reference="onnx"),
    case("window-past", qkv(k=(2, 3, 2, 8), v=(2, 3, 2, 8), **_PAST), opset=25, outputs=3,
         is_causal=1, left_window_size=2, reference="onnx"),
]


INPUTS = ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]


def _run(r, inputs, opset, outputs, names, reference, attrs, rtol=RTOL, atol=ATOL):
    feeds = inputs(r)
    if names is None:
        names = [n if n in feeds else "" for n in INPUTS]
        while not names[-1]:
            names.pop()
    model = _model("Attention", feeds, names, outputs, opset, **attrs)
    check_lowering(model, feeds, rtol, atol, reference=onnx_reference if reference == "onnx" else ort_run)


def _model(op_type, feeds, names, outputs, opset, **attrs) -> onnx.ModelProto:
    """A one-node model; `outputs` is a count, or the output positions to keep
    (Attention's 4th output without the present caches)."""
    keep = range(outputs) if isinstance(outputs, int) else outputs
    outs = [f"y{i}" if i in keep else "" for i in range(max(keep) + 1)]
    graph = helper.make_graph(
        [helper.make_node(op_type, names or list(feeds), outs, name=f"{op_type.lower()}_node", **attrs)],
        f"{op_type}_test",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()],
        [onnx.ValueInfoProto(name=o) for o in outs if o],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


@pytest.mark.parametrize("inputs,opset,outputs,names,reference,attrs", ATTENTION)
def test_attention(rng, inputs, opset, outputs, names, reference, attrs):
    _run(rng, inputs, opset, outputs, names, reference, attrs)


def _positions(r: np.random.Generator) -> np.ndarray:
    return r.integers(0, 20, (2, 3)).astype(np.int64)


def rope(name, x, cache, positions=True, **attrs):
    def inputs(r):
        feeds = {"X": _f(r, *x), "cos_cache": _f(r, *cache), "sin_cache": _f(r, *cache)}
        return {**feeds, "position_ids": _positions(r)} if positions else feeds

    return pytest.param(inputs, attrs, id=name)


ROTARY = [
    rope("4d", (2, 4, 3, 8), (20, 4)),
    rope("4d-interleaved", (2, 4, 3, 8), (20, 4), interleaved=1),
    rope("4d-partial", (2, 4, 3, 8), (20, 2), rotary_embedding_dim=4),
    rope("4d-partial-interleaved", (2, 4, 3, 10), (20, 3), interleaved=1, rotary_embedding_dim=6),
    rope("3d", (2, 3, 32), (20, 4), num_heads=4),
    rope("3d-interleaved-partial", (2, 3, 24), (20, 2), num_heads=3, interleaved=1, rotary_embedding_dim=4),
    rope("no-positions", (2, 4, 3, 8), (2, 3, 4), positions=False),
    rope("no-positions-3d-interleaved", (2, 3, 16), (2, 3, 4), positions=False, num_heads=2, interleaved=1),
]


@pytest.mark.parametrize("inputs,attrs", ROTARY)
def test_rotary_embedding(rng, inputs, attrs):
    feeds = inputs(rng)
    model = _model("RotaryEmbedding", feeds, None, 1, 23, **attrs)
    check_lowering(model, feeds, RTOL, ATOL, reference=ort_run)


LOW_PRECISION = [
    case("fp16-gqa-past-mask", qkv(q=(2, 6, 4, 8), **_PAST, attn_mask=lambda r: _f(r, 4, 11)), outputs=3),
    case("fp16-causal-nonpad-decode", qkv(q=(2, 4, 1, 8), k=(2, 2, 8, 8), v=(2, 2, 8, 8),
                                          nonpad_kv_seqlen=lambda r: np.array([5, 8], np.int64)),
         opset=24, is_causal=1),
    case("fp16-softmax-precision-float", qkv(attn_mask=lambda r: _mask(r, 4, 6)), opset=24, outputs=(0, 3),
         softmax_precision=1, qk_matmul_output_mode=3),
]


@pytest.mark.parametrize("inputs,opset,outputs,names,reference,attrs", LOW_PRECISION)
def test_attention_fp16(rng, inputs, opset, outputs, names, reference, attrs):
    """f16 against onnx's reference, which rounds Q and K to f16 after scaling
    them by sqrt(scale); einc scales the f32 products instead (one rounding
    fewer), so scores differ by about an f16 ulp and outputs by a few (atol)."""

    def half(r):
        return {n: a.astype(np.float16) if a.dtype == np.float32 else a for n, a in inputs(r).items()}

    _run(rng, half, opset, outputs, names, "onnx", attrs, rtol=1e-3, atol=4e-3)


def test_bool_mask_shorter_than_the_keys(rng):
    """A mask for the first keys only (external cache): the keys after it are masked out."""
    inputs = qkv(attn_mask=lambda r: _mask(r, 2, 1, 4, 4), nonpad_kv_seqlen=lambda r: np.array([4, 6], np.int64))
    _run(rng, inputs, 24, 1, None, "onnx", {"is_causal": 1})


def _einsums(model: onnx.ModelProto) -> list[EinsumOp]:
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    return [op for op in imported.module.walk() if isinstance(op, EinsumOp)]


def test_attention_is_the_canonical_softmax_cascade(rng):
    """QK, score map, max, exp, sum, divide, PV: what defer-division, fuse and the
    pass-count analysis look for; grouped heads are an index (h = g * 2 + r) on
    the mask, never a repeat of K and V."""
    feeds = qkv(q=(1, 4, 16, 8), k=(1, 2, 16, 8), v=(1, 2, 16, 8), attn_mask=lambda r: _f(r, 1, 4, 16, 16))(rng)
    model = _model("Attention", feeds, None, 1, 23)
    einsums = _einsums(model)
    assert [(op.reduce_op, op.map.data) for op in einsums] == [
        ("add", "$0 * $1"),
        (None, f"$0 * {float(np.float32(8 ** -0.25)) ** 2!r} + $1"),  # sqrt(scale) in f32, squared
        ("max", "$0"),
        (None, "exp($0 - $1)"),
        ("add", "$0"),
        (None, "$0 / $1"),
        ("add", "$0 * $1"),
        ("max", "$0"),  # the mask's row max: rows without a key give 0
        (None, "select(eq($1, -inf), 0.0, $0)"),
    ]
    assert [str(e) for e in einsums[1].input_exprs[1]] == ["0", "g * 2 + r", "p", "m"]
    assert [str(e) for e in einsums[0].input_exprs[1]] == ["b", "g", "m", "e"]


def test_attention_is_three_passes_and_two_after_defer_division(rng):
    feeds = qkv(q=(1, 4, 64, 16), k=(1, 2, 64, 16), v=(1, 2, 64, 16))(rng)
    for attrs in ({}, {"is_causal": 1}, {"softcap": 5.0}):
        module = import_model(_model("Attention", feeds, None, 1, 23, **attrs)).module
        Pipeline("onnx-to-ein").apply(module)
        assert max(c.pass_count for c in cascades(next(iter(module.ops)))) == 3
        Pipeline("defer-division").apply(module)
        assert max(c.pass_count for c in cascades(next(iter(module.ops)))) == 2


@pytest.mark.parametrize(
    "op,feeds,attrs,message",
    [
        ("Attention", qkv(), {"qk_matmul_output_mode": 4}, "qk_matmul_output_mode 4 is not one of 0-3"),
        ("Attention", qkv(q=(1, 3, 4, 8), k=(1, 2, 4, 8), v=(1, 2, 4, 8)), {}, "3 query heads do not group over 2"),
        ("RotaryEmbedding", lambda r: {"X": _f(r, 2, 1, 3, 8), "cos_cache": _f(r, 2, 3, 1), "sin_cache": _f(r, 2, 3, 1)},
         {"rotary_embedding_dim": 3}, "rotary_embedding_dim 3 does not fit head size 8"),
    ],
    ids=["attention-qk-mode", "attention-heads-not-grouped", "rotary-odd-dim"],
)
def test_unsupported_names_node_and_reason(rng, op, feeds, attrs, message):
    from einc.diagnostics import EincError

    values = feeds(rng)
    graph = helper.make_graph(
        [helper.make_node(op, list(values), ["y"], name="the_node", **attrs)],
        "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in values.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=IR_VERSION)
    with pytest.raises(EincError) as err:
        imported = import_model(model)
        Pipeline("onnx-to-ein").apply(imported.module)
    assert "the_node" in str(err.value) and op in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("attrs", [{}, {"is_causal": 1}], ids=["gqa", "gqa-causal"])
def test_triton_takes_the_attention_template(rng, attrs):
    """The cascade is what the Triton target's one-pass attention kernel matches
    (compiling to source needs neither torch nor triton)."""
    from einc.backends.triton.target import compile_for_triton

    feeds = qkv(q=(1, 4, 32, 16), k=(1, 2, 32, 16), v=(1, 2, 32, 16))(rng)
    source = compile_for_triton(import_model(_model("Attention", feeds, None, 1, 23, **attrs))).source
    assert "one pass over 32 keys" in source and "m_new" in source
    assert ("causal (keys <= query + 0)" in source) == bool(attrs)


def test_attention_bf16_causal_with_mask(rng):
    """bf16 through the interpreter and the CPU target, against onnx's reference
    (which computes in bf16 with f32 products), within a few bf16 ulps."""
    import ml_dtypes

    import einc
    from einc.ir.interpret import run_function

    feeds = {n: a.astype(ml_dtypes.bfloat16) for n, a in qkv(attn_mask=lambda r: _f(r, 2, 1, 4, 6))(rng).items()}
    model = _model("Attention", feeds, None, 1, 23, is_causal=1)
    want = onnx_reference(model, feeds)["y0"].astype(np.float32)
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    interpreted = run_function(next(iter(imported.module.ops)), list(feeds.values()), imported.weights)[0]
    compiled = einc.compile(model).run(feeds)["y0"]
    for got in (interpreted, compiled):
        assert got.dtype == ml_dtypes.bfloat16
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-2)
