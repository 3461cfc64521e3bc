"""Lowerings of the attention family: Attention (opsets 23-25) and RotaryEmbedding.

Attention becomes the canonical cascade of einsum-cascades.md, so the pass-count
analysis, `defer-division` and the backends' attention templates see it as they
see a MatMul + Softmax graph:

    QK[b,g,r,p,m] = sum_e Q[b,g,r,p,e] * K[b,g,m,e]
    S             = the score map of QK: scale, softcap, + bias
    GM[b,g,r,p]   = max over m of S
    SN            = exp(S - GM)
    SD            = sum over m of SN
    A             = SN / SD
    Y[b,g,r,p,f]  = sum_m A[b,g,r,p,m] * V[b,g,m,f]

Query heads split as h = g * G + r: g is the key/value head and r the query head
within its group, so grouped-query attention is an index (K and V never read r)
rather than a repeat; with G = 1 the r rank is dropped. 3-D inputs are read
through reshape views [B, S, heads, D]: the einsums index them in place.

The bias (attention mask, causal and sliding-window frontiers, padding of an
external cache) is one einsum over iota constants, the mask and
`nonpad_kv_seqlen`, so a constant one folds at compile time. A query row whose
bias is -inf everywhere has no key; the spec makes its output 0, not the NaN
exp(-inf - -inf) gives, so where that can happen a last einsum selects 0 for
such rows from the bias alone, leaving the softmax cascade canonical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto
from xdsl.dialects.builtin import (
    AnyFloat,
    Float32Type,
    Float64Type,
    IntegerType,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, SSAValue

from einc.ir.dtypes import onnx_to_type, type_to_numpy
from einc.ir.ein import GatherOp
from einc.passes.onnx_to_ein.common import (
    CascadeBuilder,
    Lowering,
    Node,
    Unsupported,
    broadcast_indices,
    shape_of,
    tensor_type,
)
from einc.passes.onnx_to_ein.nn import _concat, _input, _lit, _pad, _results, _used


def _elem(value: SSAValue) -> Attribute:
    return value.type.get_element_type()  # type: ignore[attr-defined]


def _typed(elem: Attribute, shape: Sequence[int]) -> TensorType:
    return TensorType(elem, list(shape))


# -- Q, K, V as the einsums read them ------------------------------------------------


@dataclass
class Heads:
    """The head layout: query heads h = g * G + r over `kv` key/value heads."""

    q: int
    kv: int

    @property
    def group(self) -> int:
        return self.q // self.kv

    @property
    def vars(self) -> list[str]:
        return ["g", "r"] if self.group > 1 else ["g"]

    @property
    def shape(self) -> list[int]:
        return [self.kv, self.group] if self.group > 1 else [self.kv]

    @property
    def query_head(self) -> str:
        """The index expression of a query head h in g and r."""
        return f"g * {self.group} + r" if self.group > 1 else "g"


def _query(b: CascadeBuilder, q: SSAValue, heads: Heads) -> tuple[SSAValue, list[str]]:
    """Q as a view with the head split in (g, r), and its index list."""
    if len(shape_of(q)) == 4:
        batch, _, seq, dim = shape_of(q)
        return b.reshape(q, [batch, *heads.shape, seq, dim]), ["b", *heads.vars, "p", "e"]
    batch, seq, hidden = shape_of(q)
    return b.reshape(q, [batch, seq, *heads.shape, hidden // heads.q]), ["b", "p", *heads.vars, "e"]


def _cache(
    b: CascadeBuilder, x: SSAValue, past: SSAValue | None, heads: Heads, dim: str, present: bool
) -> tuple[SSAValue, list[str], SSAValue | None]:
    """K or V as the einsums read it, its index list, and the present cache if wanted.

    A 3-D input is read in place through a [B, S, heads, D] view, unless a cache
    is made: the present cache is 4-D [B, heads, past + S, D] (ONNX's layout),
    the past concatenated with the new keys.
    """
    if len(shape_of(x)) == 3:
        batch, seq, hidden = shape_of(x)
        x = b.reshape(x, [batch, seq, heads.kv, hidden // heads.kv])
        if past is None and not present:
            return x, ["b", "m", "g", dim], None
        x = b.transpose(x, [0, 2, 1, 3])
    if past is not None:
        x = _concat(b, [past, x], 2)
    return x, ["b", "g", "m", dim], x


# -- the bias: mask, causal and window frontiers, padding ------------------------------


_BIAS_DIMS = ["b", "h", "p", "m"]
"""The bias's dimensions: batch, query head, query, key (right-aligned, as numpy)."""


@dataclass
class Bias:
    """The additive bias of the scores over the last dims of [b, h, p, m]; dims of
    size 1 broadcast."""

    value: SSAValue
    may_mask_rows: bool
    """Whether some query row may have no key (then Y's row is 0 by the spec)."""

    @property
    def dims(self) -> list[str]:
        return _BIAS_DIMS[4 - len(shape_of(self.value)):]

    def index(self, heads: Heads, keys: bool = True) -> list[str]:
        """How the scores' einsums (variables b, g, r, p, m) read the bias, or with
        `keys` False its max over the keys."""
        return [
            "0" if size == 1 else heads.query_head if dim == "h" else dim
            for dim, size in zip(self.dims, shape_of(self.value))
            if keys or dim != "m"
        ]

    def empty_rows(self, b: CascadeBuilder) -> SSAValue:
        """The max of the bias over the keys: -inf on rows without a key."""
        shape = shape_of(self.value)
        return b.einsum([self.value], [self.dims], self.dims[:-1], tensor_type(shape[:-1], self.value), reduce="max")


@dataclass
class Frontier:
    """Causal and sliding-window limits on key j for query i: j - (i + offset) in
    [-left, right] (-1 leaves a side open); causal makes right at most 0."""

    causal: bool
    left: int
    right: int

    @property
    def active(self) -> bool:
        return self.causal or self.left >= 0 or self.right >= 0

    def conditions(self, query: str, key: str) -> list[str]:
        """Map-language conditions on key position `key` and query position `query`."""
        conds = []
        if self.causal:
            conds.append(f"le({key}, {query})")
        if self.left >= 0:
            conds.append(f"le({query} - {key}, {self.left})")
        if self.right >= 0:
            conds.append(f"le({key} - {query}, {self.right})")
        return conds

    def empty_rows(self, queries: int, keys: int, offset: int) -> bool:
        """Whether a query row has no key left, for a compile-time offset."""
        pos = np.arange(queries) + offset
        low = np.maximum(pos - self.left, 0) if self.left >= 0 else np.zeros_like(pos)
        high = np.full_like(pos, keys - 1)
        if self.causal:
            high = np.minimum(high, pos)
        if self.right >= 0:
            high = np.minimum(high, pos + self.right)
        return bool(np.any(low > high))


def _all(conds: Sequence[str]) -> str:
    return conds[0] if len(conds) == 1 else f"and({conds[0]}, {_all(conds[1:])})"


def _bias(
    b: CascadeBuilder, node: Node, frontier: Frontier, sizes: dict[str, int], past: int, elem: Attribute
) -> Bias | None:
    """The bias of the scores: one einsum `select(allowed, mask or 0, -inf)` over
    the mask, iotas of key and query positions and nonpad_kv_seqlen (a float
    mask alone is its own bias), or None without mask, frontier or padding.

    The frontier's offset is the past length, or per batch nonpad_kv_seqlen[b]
    minus the queries for an external cache (bottom-right alignment, the spec's
    errata of onnx 1.23)."""
    mask, nonpad = node.input(3), node.input(6)
    queries, keys = sizes["p"], sizes["m"]
    full = [sizes["b"], sizes["h"], queries, keys]
    parts: list[Sequence[int]] = []
    inputs: list[SSAValue] = []
    conds: list[str] = []
    value = "0.0"
    if mask is not None:
        mshape = shape_of(mask)
        boolean = _elem(mask) == IntegerType(1)
        if not boolean and not isinstance(_elem(mask), AnyFloat):
            raise Unsupported("attn_mask must be bool or float")
        if not 1 <= len(mshape) <= 4 or mshape[-1] > keys:
            raise Unsupported(f"attn_mask of shape {list(mshape)} does not fit {keys} keys")
        if mshape[-1] < keys:  # a shorter mask (even of 1): keys past its end are masked out
            low = [0] * len(mshape)
            mask = _pad(b, mask, low, [*low[:-1], keys - mshape[-1]], 0.0 if boolean else -math.inf)
        conds += [f"${len(inputs)}"] if boolean else []
        value = "0.0" if boolean else f"${len(inputs)}"
        inputs.append(mask)
        parts.append(shape_of(mask))
    if nonpad is not None:
        parts.append([sizes["b"], 1, 1, keys])
    if frontier.active:
        parts.append([sizes["b"], 1, queries, keys] if nonpad is not None else [queries, keys])
    if not parts:
        return None
    shape = list(np.broadcast_shapes(*parts, (keys,)))
    if len(shape) > 4 or any(s not in (1, n) for s, n in zip(shape[::-1], full[::-1])):
        raise Unsupported(f"attn_mask does not broadcast to {full}")
    if not conds and value != "0.0" and not frontier.active and nonpad is None and shape[-1] == keys:
        return Bias(inputs[0], True)
    dims = _BIAS_DIMS[4 - len(shape):]
    indices = [broadcast_indices(shape_of(v), dims, shape) for v in inputs]

    def add(value: SSAValue, index: list[str]) -> str:
        inputs.append(value)
        indices.append(index)
        return f"${len(inputs) - 1}"

    if nonpad is not None or frontier.active:
        key = add(b.constant(np.arange(keys), i64), ["m"])
    if nonpad is not None:
        length = add(nonpad, ["b"])
        conds.append(f"lt({key}, {length})")
    rows = mask is not None or nonpad is not None
    if frontier.active:
        query = add(b.constant(np.arange(queries), i64), ["p"])
        position = f"{query} + {length} - {queries}" if nonpad is not None else f"{query} + {past}" if past else query
        conds += frontier.conditions(position, key)
        rows = rows or (nonpad is None and frontier.empty_rows(queries, keys, past))
    select = f"select({_all(conds)}, {value}, -inf)" if conds else value
    bias = b.einsum(inputs, indices, dims, TensorType(elem, shape), select)
    return Bias(bias, rows)


# -- Attention ------------------------------------------------------------------------


_ZERO_EMPTY = "select(eq($1, -inf), 0.0, $0)"
"""Zero where the bias's row max ($1) says the row has no key."""

SOFTMAX_PRECISIONS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _heads(node: Node, q: SSAValue, k: SSAValue, v: SSAValue) -> Heads:
    if len(shape_of(q)) == 4:
        if node.attr("q_num_heads") is not None and node.opset >= 25:
            raise Unsupported("q_num_heads and kv_num_heads are for 3-D inputs only")
        heads = Heads(shape_of(q)[1], shape_of(k)[1])
    else:
        heads = Heads(node.int_attr("q_num_heads", 0), node.int_attr("kv_num_heads", 0))
        if heads.q <= 0 or heads.kv <= 0:
            raise Unsupported("3-D inputs need q_num_heads and kv_num_heads")
        if shape_of(q)[2] % heads.q or shape_of(k)[2] % heads.kv or shape_of(v)[2] % heads.kv:
            raise Unsupported("the hidden size is not a multiple of the number of heads")
    if heads.q % heads.kv:
        raise Unsupported(f"{heads.q} query heads do not group over {heads.kv} key/value heads")
    return heads


def lower_attention(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Scaled dot-product attention as the canonical cascade (module docstring).

    Types follow the reference: QK and PV accumulate in f32 (f64 for f64 inputs or
    a double softmax_precision); scores are in T1, the softmax in softmax_precision
    (default: T1) except that its sums are f32, and the probabilities in T1.
    """
    q, k, v = (_input(node, n) for n in range(3))
    past_k, past_v, nonpad = node.input(4), node.input(5), node.input(6)
    rank = len(shape_of(q))
    if rank not in (3, 4) or len(shape_of(k)) != rank or len(shape_of(v)) != rank:
        raise Unsupported("Q, K and V must all be 3-D or all 4-D")
    if (past_k is None) != (past_v is None):
        raise Unsupported("past_key and past_value go together")
    if nonpad is not None and past_k is not None:
        raise Unsupported("nonpad_kv_seqlen cannot be combined with a past cache")
    mode = node.int_attr("qk_matmul_output_mode", 0)
    if mode not in range(4):
        raise Unsupported(f"qk_matmul_output_mode {mode} is not one of 0-3")
    heads = _heads(node, q, k, v)
    present = _used(node, 1) or _used(node, 2)
    qv, q_index = _query(b, q, heads)
    kv, k_index, present_k = _cache(b, k, past_k, heads, "e", present)
    vv, v_index, present_v = _cache(b, v, past_v, heads, "f", present)
    if shape_of(kv)[-1] != shape_of(qv)[-1]:
        raise Unsupported(f"Q and K have different head sizes ({shape_of(qv)[-1]} and {shape_of(kv)[-1]})")
    ext = {**dict(zip(k_index, shape_of(kv))), **dict(zip(v_index, shape_of(vv))), **dict(zip(q_index, shape_of(qv)))}
    sizes = {"b": ext["b"], "h": heads.q, "p": ext["p"], "m": ext["m"]}

    t1 = _elem(q)
    precision = node.int_attr("softmax_precision", 0)
    if precision and precision not in SOFTMAX_PRECISIONS:
        raise Unsupported(f"softmax_precision {precision} is not a float type")
    soft = onnx_to_type(precision) if precision else t1
    wide = Float64Type() if Float64Type() in (t1, soft) else Float32Type()
    # Q and K are each scaled by sqrt(scale) rounded to T1 (the spec's function body)
    root = float(np.asarray(math.sqrt(node.float_attr("scale", 1.0 / math.sqrt(ext["e"])))).astype(type_to_numpy(t1)))
    scaled = f"$0 * {_lit(root * root)}" if root != 1.0 else "$0"
    softcap = node.float_attr("softcap", 0.0)
    capped = f"tanh({scaled} / {_lit(softcap)}) * {_lit(softcap)}" if softcap > 0 else scaled
    frontier = Frontier(
        bool(node.int_attr("is_causal", 0)), node.int_attr("left_window_size", -1), node.int_attr("right_window_size", -1)
    )

    s_vars = ["b", *heads.vars, "p", "m"]
    s_shape = [ext[d] for d in s_vars]
    stats_vars, stats_shape = s_vars[:-1], s_shape[:-1]
    qk = b.einsum([qv, kv], [q_index, k_index], s_vars, _typed(wide, s_shape), "$0 * $1", "add")
    bias = _bias(b, node, frontier, sizes, shape_of(past_k)[2] if past_k is not None else 0, soft)
    if bias is not None:
        scores = b.einsum([qk, bias.value], [s_vars, bias.index(heads)], s_vars, _typed(t1, s_shape), f"{capped} + $1")
    elif capped != "$0" or t1 != wide:
        scores = b.einsum([qk], [s_vars], s_vars, _typed(t1, s_shape), capped)
    else:
        scores = qk
    gm = b.einsum([scores], [s_vars], stats_vars, _typed(soft, stats_shape), reduce="max")
    sn = b.einsum([scores, gm], [s_vars, stats_vars], s_vars, _typed(soft, s_shape), "exp($0 - $1)")
    # f16/bf16 exponentials are summed and divided in f32, as numpy does in the reference
    sd = b.einsum([sn], [s_vars], stats_vars, _typed(wide, stats_shape), reduce="add")
    probs = b.einsum([sn, sd], [s_vars, stats_vars], s_vars, _typed(t1, s_shape), "$0 / $1")
    y_vars = ["b", *heads.vars, "p", "f"] if rank == 4 else ["b", "p", *heads.vars, "f"]
    y = b.einsum([probs, vv], [s_vars, v_index], y_vars, _typed(wide, [ext[d] for d in y_vars]), "$0 * $1", "add")

    empty = bias.empty_rows(b) if bias is not None and bias.may_mask_rows else None

    def finish(value: SSAValue, vars_: list[str], keyless_zero: bool = True) -> SSAValue:
        """`value` in T1, with 0 on query rows that have no key if `keyless_zero`."""
        ty = _typed(t1, shape_of(value))
        if keyless_zero and bias is not None and empty is not None:
            return b.einsum([value, empty], [vars_, bias.index(heads, keys=False)], vars_, ty, _ZERO_EMPTY)
        return value if _elem(value) == t1 else b.einsum([value], [vars_], vars_, ty)

    outputs: list[SSAValue | None] = [b.reshape(finish(y, y_vars), node.result_types[0].get_shape())]
    if len(node.result_types) > 1:
        outputs += [present_k, present_v]
    if _used(node, 3):
        # spec and onnxruntime: mode 0 is QK before softcap (onnx's reference caps it)
        qk_out = {
            0: lambda: b.einsum([qk], [s_vars], s_vars, _typed(t1, s_shape), scaled),
            1: lambda: b.einsum([qk], [s_vars], s_vars, _typed(t1, s_shape), capped),
            2: lambda: finish(scores, s_vars, keyless_zero=False),
            3: lambda: finish(probs, s_vars),
        }[mode]()
        outputs.append(b.reshape(qk_out, node.result_types[3].get_shape()))
    return _results(outputs)


# -- RotaryEmbedding ------------------------------------------------------------------


def lower_rotary_embedding(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """RoPE: each pair (x1, x2) of the rotated part becomes (x1 cos - x2 sin,
    x1 sin + x2 cos); pairs are the two halves or, interleaved, neighbours.

    With position_ids, cos and sin rows are gathered per (batch, position);
    without, the caches are already [B, S, D/2]. The rotated pairs are one
    einsum each for the real and imaginary parts, read from X at affine offsets,
    and concatenated back (with the unrotated tail) along the head dim.
    """
    x, cos, sin = (_input(node, n) for n in range(3))
    positions = node.input(3)
    shape = shape_of(x)
    if len(shape) == 4:
        batch, n_heads, seq, dim = shape
        view, vars_ = x, ["b", "h", "s", "d"]
    elif len(shape) == 3:
        n_heads = node.int_attr("num_heads", 0)
        if n_heads <= 0 or shape[2] % n_heads:
            raise Unsupported("3-D input needs num_heads dividing its hidden size")
        batch, seq, dim = shape[0], shape[1], shape[2] // n_heads
        view, vars_ = b.reshape(x, [batch, seq, n_heads, dim]), ["b", "s", "h", "d"]
    else:
        raise Unsupported(f"input of rank {len(shape)} (3 or 4 expected)")
    rot = node.int_attr("rotary_embedding_dim", 0) or dim
    half = rot // 2
    if rot % 2 or rot > dim:
        raise Unsupported(f"rotary_embedding_dim {rot} does not fit head size {dim}")
    if positions is not None:
        table = shape_of(cos)
        cos, sin = (
            b.insert(GatherOp(c, positions, 0, tensor_type([*shape_of(positions), table[-1]], c))).results[0]
            for c in (cos, sin)
        )
    if shape_of(cos) != (batch, seq, half) or shape_of(sin) != (batch, seq, half):
        raise Unsupported(f"cos/sin caches of shape {list(shape_of(cos))}, expected {[batch, seq, half]}")
    interleaved = bool(node.int_attr("interleaved", 0))
    lead = list(shape_of(view)[:-1])
    keep = [0] * len(lead)
    rotated = _pad(b, view, [*keep, 0], [*keep, rot - dim])  # a crop when rot < dim
    # pairs on their own axis: [.., pair, 2] interleaved, [.., 2, pair] as halves
    pairs = b.reshape(rotated, [*lead, half, 2] if interleaved else [*lead, 2, half])
    x1, x2 = ([*vars_[:-1], "d", t] if interleaved else [*vars_[:-1], t, "d"] for t in ("0", "1"))
    out_vars = [*vars_, "t"] if interleaved else vars_
    part = tensor_type([*lead, half, *([1] if interleaved else [])], x)
    cs = ["b", "s", "d"]
    real, imag = (
        b.einsum([pairs, pairs, cos, sin], [x1, x2, cs, cs], out_vars, part, text)
        for text in ("$0 * $2 - $1 * $3", "$0 * $3 + $1 * $2")
    )
    parts = [real, imag]
    if interleaved:
        parts = [b.reshape(_concat(b, parts, len(lead) + 1), [*lead, rot])]
    if rot < dim:
        parts.append(_pad(b, view, [*keep, -rot], [*keep, 0]))
    return [b.reshape(_concat(b, parts, len(lead)), shape)]


LOWERINGS: dict[str, Lowering] = {
    "Attention": lower_attention,
    "RotaryEmbedding": lower_rotary_embedding,
}
"""The attention family, by op type."""
