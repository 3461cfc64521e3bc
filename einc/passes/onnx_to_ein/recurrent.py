"""Lowerings of the recurrent family (opset 27): LinearAttention and CausalConvWithState.

LinearAttention. Every update rule is the recurrence S_t = D_t S_{t-1} + k_t u_t^T,
o_t = scale q_t^T S_t, with D_t = diag(exp(g_t)) (the identity without gates) and
u_t = v_t (linear, gated) or u_t = beta_t (v_t - (D_t S_{t-1})^T k_t) (delta rules).
With G_t = sum_{s<=t} g_s (a running sum of the log-space decays) it unrolls to

    S_t = exp(G_t) S_0 + sum_{s<=t} exp(G_t - G_s) k_s u_s^T

so once every u_s is known, the outputs are one causal (masked) contraction, the
parallel form of GLA/RetNet, with the past state as one more term:

    A[b,t,g,r,s] = sum_e select(s <= t, scale q[t,e] k[s,e] exp(G[t,e] - G[s,e]), 0)
    O[b,t,g,r,f] = sum_s A * U[b,s,g,f]  +  sum_e scale q[t,e] exp(G[t,e]) S_0[b,g,e,f]

and the present state is the same sum at t = T-1. For the linear and gated rules
u = v: a handful of einsums whatever T is (T^2 work, which the scores of softmax
attention cost too). The delta rules make u_t read S_{t-1}, a data dependence
along the sequence that no reordering removes (the chunked WY form still solves a
triangular system token by token inside each chunk), so u_t and S_t come from the
recurrence unrolled over the static T: three einsums per token (retrieve, correct,
update), at most DELTA_UNROLL_LIMIT tokens, while the outputs still come from the
parallel form above. Query heads split as h = g * G + r over key/value heads g
(grouped-query attention as an index, as in attention.py). Half-precision inputs
are widened to f32 first and results rounded at the end, as the reference
accumulates in f32.

CausalConvWithState. The past (or k-1 zeros) concatenated before the input, one
depthwise einsum `Y[b,c,l] = sum_j P[b,c,l+j] * W[c,0,j]` with the bias and
SiLU as its epilogue, and the present state the last k-1 positions of P (a crop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import Float32Type, TensorType
from xdsl.ir import Attribute, SSAValue

from einc.passes.onnx_to_ein.common import (
    CascadeBuilder,
    Lowering,
    Node,
    Unsupported,
    shape_of,
)
from einc.passes.onnx_to_ein.nn import _concat, _input, _pad
from einc.passes.onnx_to_ein.tensor import _empty, _iota

F32 = Float32Type()

DELTA_UNROLL_LIMIT = 1024
"""Longest sequence the delta rules unroll (three einsums per token)."""

UPDATE_RULES: dict[str, tuple[bool, bool]] = {
    "linear": (False, False),
    "gated": (True, False),
    "delta": (False, True),
    "gated_delta": (True, True),
}
"""update_rule -> (gated: decays the state by exp(decay), delta: corrects values by the state's recall)."""


def _elem(value: SSAValue) -> Attribute:
    return value.type.get_element_type()  # type: ignore[attr-defined]


def _cast(b: CascadeBuilder, x: SSAValue, elem: Attribute) -> SSAValue:
    """`x` converted to element type `elem` (itself if it has it already)."""
    if _elem(x) == elem:
        return x
    return b.elementwise([x], "$0", TensorType(elem, list(shape_of(x))))


def _f32(shape: Sequence[int]) -> TensorType:
    return TensorType(F32, list(shape))


# -- LinearAttention ---------------------------------------------------------------------


def lower_linear_attention(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    rule = node.string_attr("update_rule", "gated_delta")
    if rule not in UPDATE_RULES:
        raise Unsupported(f"update_rule '{rule}' (expected one of {', '.join(UPDATE_RULES)})")
    gated, delta = UPDATE_RULES[rule]
    hq, hkv = node.int_attr("q_num_heads", 0), node.int_attr("kv_num_heads", 0)
    if hq <= 0 or hkv <= 0 or hq % hkv:
        raise Unsupported(f"q_num_heads {hq} must be a positive multiple of kv_num_heads {hkv}")
    query, key, value = (_input(node, n) for n in range(3))
    past, decay, beta = node.input(3), node.input(4), node.input(5)
    if gated != (decay is not None) or delta != (beta is not None):
        raise Unsupported(f"update_rule '{rule}' {'needs' if gated else 'takes no'} decay and "
                          f"{'needs' if delta else 'takes no'} beta")
    if any(len(shape_of(x)) != 3 for x in (query, key, value)):
        raise Unsupported("query, key and value must be 3-D (B, T, heads * D)")
    batch, seq, _ = shape_of(query)
    dk, dv, group = shape_of(query)[2] // hq, shape_of(value)[2] // hkv, hq // hkv
    if delta and seq > DELTA_UNROLL_LIMIT:
        raise Unsupported(f"the {rule} rule unrolls over the sequence; {seq} tokens exceed {DELTA_UNROLL_LIMIT}")
    scale = node.float_attr("scale", 0.0) or 1.0 / math.sqrt(dk)

    heads, hvars = ([hkv, group], ["g", "r"]) if group > 1 else ([hkv], ["g"])
    q = b.reshape(_cast(b, query, F32), [batch, seq, *heads, dk])
    k = b.reshape(_cast(b, key, F32), [batch, seq, hkv, dk])
    v = b.reshape(_cast(b, value, F32), [batch, seq, hkv, dv])
    s0 = None if past is None else _cast(b, past, F32)
    qi = ["b", "t", *hvars, "e"]

    cum = g = None
    gx = "e"  # the decay's last index: per key dimension, or "0" for one decay per head
    if decay is not None:
        width = shape_of(decay)[2]
        if width not in (hkv, hkv * dk):
            raise Unsupported(f"decay's last dim {width} must be kv_num_heads or kv_num_heads * d_k")
        gx = "e" if width == hkv * dk else "0"
        g = b.reshape(_cast(b, decay, F32), [batch, seq, hkv, width // hkv])
        iota = _iota(b, seq)
        cum = b.einsum(  # G_t = sum_{s<=t} g_s
            [g, iota, iota], [["b", "s", "g", "x"], ["s"], ["t"]], ["b", "t", "g", "x"],
            _f32(shape_of(g)), "select(le($1, $2), $0, 0.0)", "add",
        )

    if delta:
        assert beta is not None
        if shape_of(beta)[2] not in (hkv, 1):
            raise Unsupported(f"beta's last dim {shape_of(beta)[2]} must be kv_num_heads or 1")
        beta32 = _cast(b, beta, F32)
        bh = "0" if shape_of(beta)[2] == 1 else "g"
        u, state = _delta_recurrence(b, k, v, g, gx, beta32, bh, s0)
    else:
        u, state = v, None

    # Outputs: the causal contraction over s, plus the past state read by the query.
    iota = _iota(b, seq)
    gates, gate_idx = ([cum, cum], [["b", "t", "g", gx], ["b", "s", "g", gx]]) if cum is not None else ([], [])
    weight = "exp($4 - $5) * " if cum is not None else ""
    scores = b.einsum(
        [q, k, iota, iota, *gates],
        [qi, ["b", "s", "g", "e"], ["t"], ["s"], *gate_idx],
        ["b", "t", *hvars, "s"],
        _f32([batch, seq, *heads, seq]),
        f"select(le($3, $2), {weight}{scale!r} * $0 * $1, 0.0)",
        "add",
    )
    out_shape = [batch, seq, *heads, dv]
    out = b.einsum([scores, u], [["b", "t", *hvars, "s"], ["b", "s", "g", "f"]], ["b", "t", *hvars, "f"],
                   _f32(out_shape), "$0 * $1", "add")
    if s0 is not None:
        gate = "exp($2) * " if cum is not None else ""
        recalled = b.einsum([q, s0, *gates[:1]], [qi, ["b", "g", "e", "f"], *gate_idx[:1]], ["b", "t", *hvars, "f"],
                            _f32(out_shape), f"{gate}{scale!r} * $0 * $1", "add")
        out = b.elementwise([out, recalled], "$0 + $1", _f32(out_shape))
    output = b.reshape(_cast(b, out, _elem(query)), node.result_types[0].get_shape())

    if state is None:
        state = _final_state(b, k, u, cum, gx, s0, seq)
    present = _cast(b, state, node.result_types[1].get_element_type())
    return [output, present]


def _final_state(
    b: CascadeBuilder, k: SSAValue, u: SSAValue, cum: SSAValue | None, gx: str, s0: SSAValue | None, seq: int
) -> SSAValue:
    """S_T = sum_s exp(G_T - G_s) k_s u_s^T + exp(G_T) S_0 (no exp without gates)."""
    batch, _, hkv, dk = shape_of(k)
    shape = [batch, hkv, dk, shape_of(u)[3]]
    last = str(seq - 1)
    inputs, idx = [k, u], [["b", "s", "g", "e"], ["b", "s", "g", "f"]]
    weight = ""
    if cum is not None:
        inputs += [cum, cum]
        idx += [["b", last, "g", gx], ["b", "s", "g", gx]]
        weight = "exp($2 - $3) * "
    state = b.einsum(inputs, idx, ["b", "g", "e", "f"], _f32(shape), f"{weight}$0 * $1", "add")
    if s0 is None:
        return state
    if cum is None:
        return b.elementwise([state, s0], "$0 + $1", _f32(shape))
    return b.einsum([state, s0, cum], [["b", "g", "e", "f"], ["b", "g", "e", "f"], ["b", last, "g", gx]],
                    ["b", "g", "e", "f"], _f32(shape), "$0 + exp($2) * $1")


def _delta_recurrence(
    b: CascadeBuilder,
    k: SSAValue,
    v: SSAValue,
    g: SSAValue | None,
    gx: str,
    beta: SSAValue,
    bh: str,
    state: SSAValue | None,
) -> tuple[SSAValue, SSAValue]:
    """The corrected values U [B, T, Hkv, dv] and the last state, token by token:

        R[b,g,f]   = sum_e exp(g[t,e]) S[b,g,e,f] k[t,e]        (the state's recall of k_t)
        U_t[b,g,f] = beta[t] * (v[t,f] - R)
        S[b,g,e,f] = exp(g[t,e]) S + k[t,e] U_t                  (a zero S_0 skips the recall)
    """
    batch, seq, hkv, dk = shape_of(k)
    dv = shape_of(v)[3]
    us: list[SSAValue] = []
    state_idx = ["b", "g", "e", "f"]
    for t in range(seq):
        kt, vt, bt = ["b", str(t), "g", "e"], ["b", str(t), "g", "f"], ["b", str(t), bh]
        gate, gate_idx = ([g], [["b", str(t), "g", gx]]) if g is not None else ([], [])
        if state is None:
            u = b.einsum([beta, v], [bt, vt], ["b", "g", "f"], _f32([batch, hkv, dv]), "$0 * $1")
            state = b.einsum([k, u], [kt, ["b", "g", "f"]], state_idx, _f32([batch, hkv, dk, dv]), "$0 * $1")
        else:
            recall = b.einsum([state, k, *gate], [state_idx, kt, *gate_idx], ["b", "g", "f"],
                              _f32([batch, hkv, dv]), f"{'exp($2) * ' if gate else ''}$0 * $1", "add")
            u = b.einsum([beta, v, recall], [bt, vt, ["b", "g", "f"]], ["b", "g", "f"],
                         _f32([batch, hkv, dv]), "$0 * ($1 - $2)")
            state = b.einsum([state, k, u, *gate], [state_idx, kt, ["b", "g", "f"], *gate_idx], state_idx,
                             _f32([batch, hkv, dk, dv]), f"{'exp($3) * ' if gate else ''}$0 + $1 * $2")
        us.append(b.reshape(u, [batch, 1, hkv, dv]))
    return _concat(b, us, 1), state


# -- CausalConvWithState -------------------------------------------------------------------

ACTIVATIONS: dict[str, str] = {"none": "$0", "silu": "$0 * sigmoid($0)", "swish": "$0 * sigmoid($0)"}
"""activation -> its map over the convolution's (rounded) result."""


def lower_causal_conv_with_state(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    activation = node.string_attr("activation", "none")
    if activation not in ACTIVATIONS:
        raise Unsupported(f"activation '{activation}' (expected one of {', '.join(ACTIVATIONS)})")
    x, w = _input(node, 0), _input(node, 1)
    bias, past = node.input(2), node.input(3)
    if len(shape_of(x)) != 3 or len(shape_of(w)) != 3 or shape_of(w)[1] != 1:
        raise Unsupported("input must be (B, C, L) and weight (C, 1, k)")
    batch, channels, length = shape_of(x)
    taps = shape_of(w)[2]
    out_ty, state_ty = node.result_types
    elem = _elem(x)
    if past is None:
        padded = _pad(b, x, [0, 0, taps - 1], [0, 0, 0])
    else:
        padded = _concat(b, [past, x], 2)
    conv = b.einsum(
        [_cast(b, padded, F32), _cast(b, w, F32)], [["b", "c", "l + j"], ["c", "0", "j"]], ["b", "c", "l"],
        _f32([batch, channels, length]), "$0 * $1", "add",
    )
    act = ACTIVATIONS[activation]
    biased = [conv] if bias is None else [conv, b.reshape(_cast(b, bias, F32), [channels, 1])]
    add = "$0" if bias is None else "($0 + $1)"
    if elem == F32:  # bias and activation in one epilogue
        plain = bias is None and activation == "none"
        y = conv if plain else b.elementwise(biased, act.replace("$0", add), out_ty)
    else:  # the reference rounds the biased convolution, then computes its activation in f32
        y = _cast(b, conv if bias is None else b.elementwise(biased, add, _f32(shape_of(conv))), elem)
        if activation != "none":
            y = _cast(b, b.elementwise([_cast(b, y, F32)], act, _f32(shape_of(y))), elem)
    return [y, _present(b, padded, length, taps, state_ty)]


def _present(b: CascadeBuilder, padded: SSAValue, length: int, taps: int, ty: TensorType) -> SSAValue:
    """The last k-1 positions of the padded input (nothing for k = 1)."""
    if taps == 1:
        return _empty(b, ty)
    return _pad(b, padded, [0, 0, -length], [0, 0, 0])


LOWERINGS: dict[str, Lowering] = {
    "LinearAttention": lower_linear_attention,
    "CausalConvWithState": lower_causal_conv_with_state,
}
