"""onnx-to-ein, recurrent family: LinearAttention and CausalConvWithState (opset 27).

onnxruntime has neither op, so each case runs through the ein interpreter and the
CPU backend and is compared with onnx's reference evaluator: f32 at RTOL/ATOL;
f16 at F16_TOL, one f16 ulp (2^-10 relative), because both sides sum in f32 but
in different orders, and a sum that lands near a rounding boundary of f16 can
round either way.
"""

from __future__ import annotations

import numpy as np
import pytest

from einc.diagnostics import EincError
from einc.frontend.onnx import import_model
from einc.ir.ein import EinsumOp
from einc.passes import Pipeline
from einc.passes.onnx_to_ein import recurrent
from tests.conftest import single_node_model
from tests.unit.test_onnx_to_ein_math import check_lowering, node_model, onnx_reference

RTOL, ATOL = 1e-4, 1e-5
F16_TOL = 2e-3
OPSET = 27


def _f(r: np.random.Generator, *shape: int, dtype: type = np.float32, scale: float = 1.0) -> np.ndarray:
    return (r.standard_normal(shape) * scale).astype(dtype)


def _unit_keys(r: np.random.Generator, b: int, t: int, heads: int, d: int, dtype: type = np.float32) -> np.ndarray:
    """Keys L2-normalised per head, as the delta rules expect (they keep the state bounded)."""
    k = r.standard_normal((b, t, heads, d))
    return (k / np.linalg.norm(k, axis=-1, keepdims=True)).reshape(b, t, heads * d).astype(dtype)


def _attention_inputs(
    r: np.random.Generator,
    b: int = 2, t: int = 5, hq: int = 2, hkv: int = 2, dk: int = 4, dv: int = 3,
    past: bool = False, decay: int | None = None, beta: int | None = None,
    dtype: type = np.float32, state_dtype: type | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Feeds and input names (absent optional inputs as "") of one LinearAttention.

    `decay` and `beta` give the width of those inputs' last dimension.
    """
    feeds = {
        "query": _f(r, b, t, hq * dk, dtype=dtype),
        "key": _unit_keys(r, b, t, hkv, dk, dtype) if beta else _f(r, b, t, hkv * dk, dtype=dtype),
        "value": _f(r, b, t, hkv * dv, dtype=dtype),
    }
    optional = {
        "past_state": _f(r, b, hkv, dk, dv, dtype=state_dtype or dtype, scale=0.3) if past else None,
        "decay": (-np.abs(_f(r, b, t, decay)) * 0.2).astype(dtype) if decay else None,
        "beta": r.uniform(0.1, 0.9, (b, t, beta)).astype(dtype) if beta else None,
    }
    feeds.update({n: a for n, a in optional.items() if a is not None})
    names = ["query", "key", "value", *(n if a is not None else "" for n, a in optional.items())]
    while names[-1] == "":
        names.pop()
    return feeds, names


def la(name, rule, attrs=None, tol=(RTOL, ATOL), **shape):
    return pytest.param(rule, {"q_num_heads": shape.get("hq", 2), "kv_num_heads": shape.get("hkv", 2), **(attrs or {})},
                        shape, tol, id=name)


LINEAR_ATTENTION = [
    la("linear", "linear"),
    la("linear-past-gqa", "linear", hq=4, hkv=2, past=True),
    la("linear-decode", "linear", t=1, past=True),
    la("gated-per-key-past-gqa", "gated", hq=4, hkv=2, past=True, decay=8),
    la("gated-per-head-mqa", "gated", hq=3, hkv=1, decay=1),
    la("delta-past-beta-scalar", "delta", past=True, beta=1),
    la("delta-no-past", "delta", t=3, beta=2),
    la("gated-delta-per-key", "gated_delta", decay=8, beta=2),
    la("gated-delta-per-head-gqa-past-scale", "gated_delta", {"scale": 0.7}, hq=4, hkv=2, past=True, decay=2, beta=2),
    la("gated-delta-decode-mqa", "gated_delta", hq=4, hkv=1, t=1, past=True, decay=4, beta=1),
    la("gated-delta-fp16", "gated_delta", tol=(F16_TOL, F16_TOL), hq=4, hkv=2, past=True, decay=8, beta=2,
       dtype=np.float16),
    la("gated-delta-fp16-f32-state", "gated_delta", tol=(F16_TOL, F16_TOL), past=True, decay=2, beta=2,
       dtype=np.float16, state_dtype=np.float32),
]


@pytest.mark.parametrize("rule,attrs,shape,tol", LINEAR_ATTENTION)
def test_linear_attention(rng, rule, attrs, shape, tol):
    feeds, names = _attention_inputs(rng, **shape)
    model = node_model("LinearAttention", feeds, opset=OPSET, input_names=names, n_outputs=2,
                       update_rule=rule, **attrs)
    check_lowering(model, feeds, *tol, reference=onnx_reference)


def _einsums(rule: str, t: int, **shape) -> int:
    feeds, names = _attention_inputs(np.random.default_rng(0), t=t, **shape)
    model = node_model("LinearAttention", feeds, opset=OPSET, input_names=names, n_outputs=2,
                       update_rule=rule, q_num_heads=2, kv_num_heads=2)
    imported = import_model(model)
    Pipeline("onnx-to-ein").apply(imported.module)
    return sum(isinstance(op, EinsumOp) for op in imported.module.walk())


def test_linear_and_gated_rules_do_not_unroll():
    """The parallel (causal contraction) form: the cascade's size does not depend on T."""
    assert _einsums("linear", 3) == _einsums("linear", 24)
    assert _einsums("gated", 3, past=True, decay=8) == _einsums("gated", 24, past=True, decay=8)


def test_delta_rules_cost_four_einsums_per_chunk():
    """Two more chunks of DELTA_CHUNK tokens: eight more einsums, not three per token."""
    n = recurrent.DELTA_CHUNK
    longer = _einsums("gated_delta", 4 * n, past=True, decay=2, beta=2)
    assert longer - _einsums("gated_delta", 2 * n, past=True, decay=2, beta=2) == 2 * 4


@pytest.mark.parametrize(
    "rule,shape",
    [
        pytest.param("gated_delta", {"t": 11, "hq": 4, "hkv": 2, "past": True, "decay": 8, "beta": 2}, id="gated-delta-past-gqa"),
        pytest.param("gated_delta", {"t": 8, "decay": 2, "beta": 1}, id="gated-delta-per-head-whole-chunks"),
        pytest.param("delta", {"t": 9, "beta": 1}, id="delta-no-past"),
    ],
)
def test_delta_rules_over_several_chunks(rng, monkeypatch, rule, shape):
    """Chunks of 4 tokens: the chunk-to-chunk state and the padding of the last chunk."""
    monkeypatch.setattr(recurrent, "DELTA_CHUNK", 4)
    feeds, names = _attention_inputs(rng, **shape)
    model = node_model("LinearAttention", feeds, opset=OPSET, input_names=names, n_outputs=2,
                       update_rule=rule, q_num_heads=shape.get("hq", 2), kv_num_heads=shape.get("hkv", 2))
    check_lowering(model, feeds, RTOL, ATOL, reference=onnx_reference)


def test_delta_rule_is_stable_for_alike_keys():
    """Nearly equal keys and beta near 1 make each chunk's triangular system hard: the
    inverse as a product of powers of L loses 4e-4 here; forward substitution does not."""
    r = np.random.default_rng(1)
    b, t, h, dk, dv = 1, 2 * recurrent.DELTA_CHUNK, 2, 16, 8
    keys = r.standard_normal((1, 1, h, dk)) + 0.05 * r.standard_normal((b, t, h, dk))
    keys /= np.linalg.norm(keys, axis=-1, keepdims=True)
    feeds = {"query": _f(r, b, t, h * dk), "key": keys.reshape(b, t, h * dk).astype(np.float32),
             "value": _f(r, b, t, h * dv), "beta": r.uniform(0.95, 1.0, (b, t, h)).astype(np.float32)}
    model = node_model("LinearAttention", feeds, opset=OPSET, input_names=["query", "key", "value", "", "", "beta"],
                       n_outputs=2, update_rule="delta", q_num_heads=h, kv_num_heads=h)
    check_lowering(model, feeds, RTOL, ATOL, reference=onnx_reference)


def _lower(model) -> None:
    imported = import_model(model)
    Pipeline("onnx-to-ein").apply(imported.module)


@pytest.mark.parametrize(
    "rule,message", [("softmax", "update_rule"), ("gated", "decay"), ("delta", "beta")]
)
def test_linear_attention_bad_node_is_a_diagnostic(rng, rule, message):
    """Rules without their gate inputs, or unknown: one diagnostic naming the node."""
    feeds, names = _attention_inputs(rng)
    model = single_node_model("LinearAttention", feeds, n_outputs=2, opset=OPSET, input_names=names,
                              update_rule=rule, q_num_heads=2, kv_num_heads=2)
    with pytest.raises(EincError) as err:
        _lower(model)
    assert message in str(err.value) and "'linearattention_node' (LinearAttention)" in str(err.value)


# -- CausalConvWithState --------------------------------------------------------------------


def conv(name, length=6, taps=3, bias=False, past=False, activation="none", dtype=np.float32, batch=2, channels=3):
    return pytest.param(length, taps, bias, past, activation, dtype, batch, channels, id=name)


CAUSAL_CONV = [
    conv("basic"),
    conv("bias-past-silu", bias=True, past=True, activation="silu"),
    conv("decode-swish", length=1, taps=4, past=True, activation="swish", bias=True),
    conv("short-input-no-past", length=1, taps=4),
    conv("kernel-one-bias", taps=1, bias=True),
    conv("one-channel-past", batch=1, channels=1, past=True),
    conv("fp16-bias-past-silu", bias=True, past=True, activation="silu", dtype=np.float16),
]


@pytest.mark.parametrize("length,taps,bias,past,activation,dtype,batch,channels", CAUSAL_CONV)
def test_causal_conv_with_state(rng, length, taps, bias, past, activation, dtype, batch, channels):
    feeds = {"input": _f(rng, batch, channels, length, dtype=dtype), "weight": _f(rng, channels, 1, taps, dtype=dtype)}
    names = ["input", "weight", "", ""]
    if bias:
        feeds["bias"], names[2] = _f(rng, channels, dtype=dtype), "bias"
    if past:
        feeds["past_state"], names[3] = _f(rng, batch, channels, taps - 1, dtype=dtype), "past_state"
    while names[-1] == "":
        names.pop()
    model = node_model("CausalConvWithState", feeds, opset=OPSET, input_names=names, n_outputs=2, activation=activation)
    tol = (F16_TOL, F16_TOL) if dtype == np.float16 else (RTOL, ATOL)
    check_lowering(model, feeds, *tol, reference=onnx_reference)


def test_causal_conv_unknown_activation_is_a_diagnostic(rng):
    feeds = {"input": _f(rng, 1, 2, 4), "weight": _f(rng, 2, 1, 3)}
    model = single_node_model("CausalConvWithState", feeds, n_outputs=2, opset=OPSET, activation="gelu")
    with pytest.raises(EincError) as err:
        _lower(model)
    assert "activation" in str(err.value) and "(CausalConvWithState)" in str(err.value)
