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
attention cost too). The delta rules make u_t read S_{t-1}, a dependence along
the sequence that stays: unrolled per token it costs three einsums a token (a
128-token prefill compiled in about 100 s), so U comes from the chunked form
(DeltaNet's WY/UT transform): per chunk of DELTA_CHUNK tokens a unit triangular
system whose inverse is found for all chunks at once by forward substitution
(C - 1 einsums), then four einsums per chunk carry the state, while the outputs still come from the
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

from einc.ir.ein import PadOp
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

DELTA_CHUNK = 16
"""Tokens per chunk of the delta rules (C - 1 einsums solve every chunk's triangular
system, four per chunk carry the state: C near 2 sqrt(T) needs the fewest)."""

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
    scale = node.float_attr("scale", 0.0) or 1.0 / math.sqrt(dk)

    heads, hvars = ([hkv, group], ["g", "r"]) if group > 1 else ([hkv], ["g"])
    q = b.reshape(_cast(b, query, F32), [batch, seq, *heads, dk])
    k = b.reshape(_cast(b, key, F32), [batch, seq, hkv, dk])
    v = b.reshape(_cast(b, value, F32), [batch, seq, hkv, dv])
    s0 = None if past is None else _cast(b, past, F32)
    qi = ["b", "t", *hvars, "e"]

    iota = _iota(b, seq)
    cum = g = None
    gx = "e"  # the decay's last index: per key dimension, or "0" for one decay per head
    if decay is not None:
        width = shape_of(decay)[2]
        if width not in (hkv, hkv * dk):
            raise Unsupported(f"decay's last dim {width} must be kv_num_heads or kv_num_heads * d_k")
        gx = "e" if width == hkv * dk else "0"
        g = b.reshape(_cast(b, decay, F32), [batch, seq, hkv, width // hkv])
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
        u, state = _delta_chunks(b, k, v, g, cum, gx, beta32, bh, s0)
    else:
        u, state = v, None

    # Outputs: the causal contraction over s, plus the past state read by the query.
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


def _delta_chunks(
    b: CascadeBuilder,
    k: SSAValue,
    v: SSAValue,
    g: SSAValue | None,
    cum: SSAValue | None,
    gx: str,
    beta: SSAValue,
    bh: str,
    state: SSAValue | None,
) -> tuple[SSAValue, SSAValue]:
    """The corrected values U [B, T, Hkv, dv] and the last state, chunk by chunk.

    Within a chunk of C tokens starting from state S, u_i = beta_i (v_i - k_i^T D_i S_{i-1})
    unrolls (with the running decays G) to the unit lower-triangular system

        (I - L) U = beta V - beta (exp(G_i - G_start) k_i)^T S,
        L[i,j] = -beta_i sum_e k_i[e] k_j[e] exp(G_i[e] - G_j[e])   (j < i)

    whose matrix does not involve S: every chunk's inverse P is computed at once,
    by forward substitution (C - 1 steps of one row each: the product
    (I + L)(I + L^2)(I + L^4)... takes log2(C) steps, but its powers of L cancel
    badly when keys are alike: 4e-4 relative error at C = 16, 1e2 at C = 32), and
    so are P (beta V) and P (beta exp(G - G_start) K). What stays
    sequential is four einsums per chunk: the state's recall and the chunk's U,
    then the state update `S' = exp(G_end - G_start) S + sum_i exp(G_end - G_i) k_i u_i^T`.
    The sequence is padded to whole chunks with tokens of zero key, value, beta
    and decay, which leave U and the state unchanged.
    """
    batch, seq, hkv, dk = shape_of(k)
    dv = shape_of(v)[3]
    chunk = min(DELTA_CHUNK, 1 << (seq - 1).bit_length())
    chunks = -(-seq // chunk)
    extra = chunks * chunk - seq

    def chunked(x: SSAValue, mode: str = "constant") -> SSAValue:
        """[B, T, ...] padded to whole chunks, as a view [B, chunks, C, ...]."""
        rank = len(shape_of(x))
        high = [0, extra] + [0] * (rank - 2)
        if extra:
            padded_ty = TensorType(F32, [batch, seq + extra, *shape_of(x)[2:]])
            x = b.insert(PadOp(x, [0] * rank, high, padded_ty, mode=mode)).results[0]
        return b.reshape(x, [batch, chunks, chunk, *shape_of(x)[2:]])

    kc, vc, bc = chunked(k), chunked(v), chunked(beta)
    ki, kj, vj = ["b", "c", "i", "g", "e"], ["b", "c", "j", "g", "e"], ["b", "c", "j", "g", "f"]
    bi, bj = ["b", "c", "i", bh], ["b", "c", "j", bh]
    iota = _iota(b, chunk)
    gates: list[SSAValue] = []
    if g is not None and cum is not None:
        gates = [chunked(cum, "edge"), chunked(g)]

    def gate(at: str, since: str, first: int) -> tuple[list[SSAValue], list[list[str]], str]:
        """exp(G[at] - G[since]) as inputs from number `first` on; `since` "start" is
        the state before the chunk (G at its first token less that token's decay)."""
        if not gates:
            return [], [], ""
        cg, dg = gates
        if since == "start":
            idx = [["b", "c", at, "g", gx], ["b", "c", "0", "g", gx], ["b", "c", "0", "g", gx]]
            return [cg, cg, dg], idx, f"exp(${first} - ${first + 1} + ${first + 2}) * "
        idx = [["b", "c", at, "g", gx], ["b", "c", since, "g", gx]]
        return [cg, cg], idx, f"exp(${first} - ${first + 1}) * "

    square = ["b", "c", "g", "i", "j"]
    sq_ty = _f32([batch, chunks, hkv, chunk, chunk])
    w_in, w_idx, w_map = gate("i", "j", 5)
    lower = b.einsum([bc, kc, kc, iota, iota, *w_in], [bi, ki, kj, ["i"], ["j"], *w_idx], square, sq_ty,
                     f"select(lt($4, $3), -({w_map}$0 * $1 * $2), 0.0)", "add")
    # Forward substitution, row r of every chunk's inverse at step r: X <- (I + E_r L) X
    # (row 0 of L is zero, so the first step is X = I + E_1 L).
    inverse = b.einsum([lower, iota, iota], [square, ["i"], ["j"]], square, sq_ty,
                       "select(eq($1, $2), 1.0, 0.0) + select(eq($1, 1), $0, 0.0)")
    for row in range(2, chunk):
        inverse = b.einsum([lower, inverse, iota, iota], [["b", "c", "g", "i", "m"], ["b", "c", "g", "m", "j"], ["i"], ["m"]],
                           square, sq_ty, f"(select(eq($2, $3), 1.0, 0.0) + select(eq($2, {row}), $0, 0.0)) * $1", "add")
    u0 = b.einsum([inverse, bc, vc], [square, bj, vj], ["b", "c", "i", "g", "f"],
                  _f32([batch, chunks, chunk, hkv, dv]), "$0 * $1 * $2", "add")
    d_in, d_idx, d_map = gate("j", "start", 3)
    kw = b.einsum([inverse, bc, kc, *d_in], [square, bj, kj, *d_idx], ["b", "c", "i", "g", "e"],
                  _f32([batch, chunks, chunk, hkv, dk]), f"{d_map}$0 * $1 * $2", "add")

    state_idx, u_idx = ["b", "g", "e", "f"], ["b", "i", "g", "f"]
    state_ty, u_ty = _f32([batch, hkv, dk, dv]), _f32([batch, chunk, hkv, dv])
    us: list[SSAValue] = []
    for c in range(chunks):
        u0_c = _fix_chunk([["b", "c", "i", "g", "f"]], c)[0]
        if state is None:
            u = b.einsum([u0], [u0_c], u_idx, u_ty)
        else:
            recall = b.einsum([kw, state], [*_fix_chunk([ki], c), state_idx], u_idx, u_ty, "$0 * $1", "add")
            u = b.einsum([u0, recall], [u0_c, u_idx], u_idx, u_ty, "$0 - $1")
        e_in, e_idx, e_map = gate(str(chunk - 1), "i", 2)
        written = b.einsum([kc, u, *e_in], [*_fix_chunk([ki], c), u_idx, *_fix_chunk(e_idx, c)], state_idx,
                           state_ty, f"{e_map}$0 * $1", "add")
        if state is None:
            state = written
        else:
            s_in, s_idx, s_map = gate(str(chunk - 1), "start", 2)
            state = b.einsum([written, state, *s_in], [state_idx, state_idx, *_fix_chunk(s_idx, c)], state_idx,
                             state_ty, f"$0 + {s_map}$1")
        us.append(u)
    values = _concat(b, us, 1)
    return _pad(b, values, [0, 0, 0, 0], [0, -extra, 0, 0]), state


def _fix_chunk(idx: list[list[str]], c: int) -> list[list[str]]:
    """Index lists over chunks ("c") read at chunk `c`."""
    return [[str(c) if x == "c" else x for x in dims] for dims in idx]


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
