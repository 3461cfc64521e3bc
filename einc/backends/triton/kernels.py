"""Kernel templates: one Triton kernel per fused group (or per einsum, or data move).

Each template takes the einsums of one kernel in order, the strided views of
the values it reads from memory and the views its results go to, and returns a
`Kernel` (its source, the buffers it takes, its launch grid). Einsums inside a
kernel first get *canonical dims* (`Space`): the index variables of different
einsums that stand for the same rank are unified through the values they share,
so the kernel has one iteration space and each value is a tile over some of it.

- `rows_kernel`: maps and reductions over one reduced rank set R (elementwise
  when R is empty; softmax, LayerNorm, any reduction otherwise). A row that fits
  one block is held in registers across the whole cascade; a longer one is
  walked once per pass of its cascade (FuseMax's pass count, as loops).
- `dot_kernel`: a contraction tiled on `tl.dot` with an elementwise epilogue,
  autotuned over a few tile shapes; affine operand indices make a convolution
  an implicit GEMM.
- `attention_kernel`: QK^T, its elementwise score maps, softmax and PV in one
  pass over the keys with a running max and sum (FlashAttention-2); key/value
  heads shared by several query heads (grouped-query attention) are just
  operands that do not depend on some batch dims. A mask that is a known
  triangular constant becomes an index comparison, and blocks it removes whole
  are skipped.
- `copy_kernel`, `gather_kernel`, `pad_kernel`: data movement.

A group the templates cannot take raises `NoMatch`; the target then emits its
einsums one kernel each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.ir import Operation, SSAValue

from einc.analysis import cascades
from einc.analysis.cascades import (  # noqa: F401
    Attention,
    Contraction,
    NoMatch,
    _product,
    classify,
    match_attention,
)
from einc.backends.triton.emitter import (
    CSE,
    FLOATS,
    TL_TYPES,
    Axis,
    IndentedBuffer,
    Linear,
    Tile,
    Value,
    View,
    compute_type,
    literal,
    next_pow2,
)
from einc.ir import mapexpr
from einc.ir.ein import REDUCTIONS, EinsumOp, GatherOp, PadOp


@dataclass
class Kernel:
    """One `@triton.jit` function and how to launch it."""

    name: str
    source: str
    args: list[str]
    """Buffer names passed in order (pointers)."""
    grid: str
    """Python source of the launch grid: a tuple, or a lambda over autotuned meta-parameters."""
    warps: int | None = None
    """Warps per program, for kernels that are not autotuned."""


MAX_ROW = 8192
"""Longest reduced row a rows kernel keeps in registers; longer rows loop over blocks."""

TILE_ELEMENTS = 4096
"""Elements per program in a rows kernel (rows x block of the row)."""

DOT_CONFIGS_16 = [(128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 256, 64, 8, 4), (128, 128, 64, 8, 4),
                  (128, 128, 64, 4, 4), (64, 256, 64, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
                  (64, 64, 64, 4, 4)]
DOT_CONFIGS_32 = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4),
                  (32, 64, 32, 4, 4)]
"""Tile shapes tried by the autotuner: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), by operand width."""

ATTENTION_CONFIGS_16 = [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 4),
                        (64, 128, 4, 3), (128, 32, 4, 4)]
ATTENTION_CONFIGS_32 = [(64, 64, 4, 2), (64, 32, 4, 3), (32, 32, 4, 3)]
"""(BLOCK_M, BLOCK_N, warps, stages) of the attention kernel."""


RESERVED = {
    "pid", "pid_m", "pid_n", "pid_b", "p", "r", "r0", "k0", "kk", "acc", "mask_p", "mask_r", "offs_m", "offs_n",
    "offs_d", "offs_dv", "rm", "rn", "qk", "q", "k", "v", "m_i", "l_i", "m_new", "alpha", "lo", "hi", "start_n",
    "tl", "triton", "libdevice", "float", "range", "min", "max",
}
"""Names kernel templates use for their own locals: canonical dims avoid them."""


class Space(cascades.Space):
    """Canonical dims named apart from the templates' own locals."""

    RESERVED = frozenset(RESERVED)




def _header(name: str, args: Sequence[str], extra: Sequence[str] = (), doc: Sequence[str] = ()) -> IndentedBuffer:
    buf = IndentedBuffer()
    buf.writeline("@triton.jit")
    buf.writeline(f"def {name}({', '.join([*args, *extra])}):")
    buf.level += 1
    for line in doc:
        buf.writeline(f"# {line}")
    return buf


def _args(views: Sequence[View]) -> list[str]:
    seen: list[str] = []
    for view in views:
        if view.buffer not in seen:
            seen.append(view.buffer)
    return seen


def describe(op: Operation) -> str:
    """An einsum in the papers' notation, for the comment above its code."""
    if not isinstance(op, EinsumOp):
        return op.name
    names = [v.name_hint or f"%{n}" for n, v in enumerate(op.inputs)]
    terms = [f"{n}[{', '.join(map(str, e))}]" for n, e in zip(names, op.input_exprs)]
    body = mapexpr.render(mapexpr.substitute(op.map_expr, [mapexpr.Input(i) for i in range(len(terms))]))
    for i in reversed(range(len(terms))):
        body = body.replace(f"${i}", terms[i])
    if op.reduce_op:
        body = f"{op.reduce_op}_{{{','.join(op.reduction_vars())}}}({body})"
    return f"{op.output.name_hint or 'out'}[{', '.join(op.output_vars)}] = {body}"


def _reduce_source(kind: str, value: str, axis: int) -> str:
    if kind == "mul":
        return f"tl.reduce({value}, {axis}, _mul_combine)"
    return f"tl.{ {'add': 'sum', 'max': 'max', 'min': 'min'}[kind]}({value}, axis={axis})"


COMBINE = {"add": "{a} + {b}", "mul": "{a} * {b}", "max": "tl.maximum({a}, {b})", "min": "tl.minimum({a}, {b})"}


def _warps(elements: int) -> int:
    return 4 if elements <= 2048 else 8 if elements <= 8192 else 16


# -- maps and reductions ----------------------------------------------------------


def rows_kernel(
    name: str, ops: Sequence[EinsumOp], views: Mapping[SSAValue, View], outputs: Sequence[tuple[SSAValue, View]]
) -> Kernel:
    """Maps and reductions over one reduced set of dims R, tiled as [rows, row block]."""
    space = Space(ops)
    reduced = [space.reduced(op) for op in ops if op.reduce_op]
    r_dims = reduced[0] if reduced else []
    if any(set(r) != set(r_dims) for r in reduced):
        raise NoMatch("reductions over different ranks")
    full = {op.output for op in ops if set(space.dims[op.output]) & set(r_dims)}
    p_dims: list[str] = []
    for value, _ in outputs:
        p_dims += [d for d in space.dims[value] if d not in r_dims and d not in p_dims]
    p_dims += [d for d in space.order if d not in r_dims and d not in p_dims]
    n_p = math.prod(space.extents[d] for d in p_dims)
    n_r = math.prod(space.extents[d] for d in r_dims)
    single = n_r <= MAX_ROW
    block_r = next_pow2(n_r) if single else 1024
    block_p = max(1, min(next_pow2(n_p), TILE_ELEMENTS // block_r)) if r_dims else min(1024, next_pow2(n_p))
    args = _args([*views.values(), *(v for _, v in outputs)])
    doc = [describe(op) for op in ops]
    buf = _header(name, args, doc=doc)
    cse = CSE()
    two_d = bool(r_dims)
    buf.writeline(f"p = tl.program_id(0) * {block_p} + tl.arange(0, {block_p})" + ("[:, None]" if two_d else ""))
    mask_p = "mask_p" if n_p % block_p else None
    if mask_p:
        buf.writeline(f"mask_p = p < {n_p}")
    mask_r = "mask_r" if two_d and n_r % block_r else None
    axes = [Axis(p_dims, "p", mask_p)]
    if two_d:
        axes.append(Axis(r_dims, "r", mask_r))
    outer = Tile(buf, cse, space.extents, axes, dict(views))
    in_kernel = {op.output: op for op in ops}

    def ensure(tile: Tile, value: SSAValue) -> None:
        if value in tile.values:
            return
        op = in_kernel[value]
        for operand in op.inputs:
            if operand in in_kernel:
                ensure(tile, operand)
        if op.reduce_op:
            raise AssertionError("reductions are computed before they are read")
        tile.einsum(op, space.names[op])

    def reduce_into(tile: Tile, op: EinsumOp, acc: str | None) -> str:
        """The map of a reduce einsum over the tile, masked to the identity, folded into `acc`."""
        for operand in op.inputs:
            if operand in in_kernel:
                ensure(tile, operand)
        ty = compute_type(_dtype(op.output))
        mapped = tile.cse(tile.buf, _mapped(tile, op, space.names[op], ty))
        if not set(r_dims) & space.deps(op):
            mapped = tile.cse(tile.buf, f"tl.broadcast_to({mapped}, ({block_p}, {block_r}))"
                              if not _is_literal(mapped) else f"tl.full(({block_p}, {block_r}), {mapped}, {ty})")
        identity = literal(REDUCTIONS[op.reduce_op], ty)
        if mask_r:
            mapped = tile.cse(tile.buf, f"tl.where(mask_r, {mapped}, {identity})")
        if acc is None:
            return mapped
        return COMBINE[op.reduce_op].format(a=acc, b=mapped)

    def finish(tile: Tile, op: EinsumOp, folded: str) -> None:
        ty = compute_type(_dtype(op.output))
        text = f"{_reduce_source(op.reduce_op, folded, 1)}[:, None]"
        tile.values[op.output] = Value(tile.cse(tile.buf, text), ty)

    if single:
        if two_d:
            buf.writeline(f"r = tl.arange(0, {block_r})[None, :]")
            if mask_r:
                buf.writeline(f"mask_r = r < {n_r}")
        for op in ops:
            if op.reduce_op:
                finish(outer, op, reduce_into(outer, op, None))
            else:
                ensure(outer, op.output)
        for value, view in outputs:
            ensure(outer, value)
            outer.store(view, space.dims[value], outer.values[value])
    else:
        for op in ops:
            if op.reduce_op:
                ty = compute_type(_dtype(op.output))
                acc = f"acc_{op.output.name_hint or 'r'}".replace(".", "_")
                acc = acc if acc.isidentifier() else "acc"
                buf.writeline(f"{acc} = tl.full(({block_p}, {block_r}), {literal(REDUCTIONS[op.reduce_op], ty)}, {ty})")
                buf.writeline(f"for r0 in range(0, {n_r}, {block_r}):")
                with buf.indent():
                    buf.writeline(f"r = r0 + tl.arange(0, {block_r})[None, :]")
                    if mask_r:
                        buf.writeline(f"mask_r = r < {n_r}")
                    inner = outer.child()
                    buf.writeline(f"{acc} = {reduce_into(inner, op, acc)}")
                finish(outer, op, acc)
            elif op.output not in full:
                ensure(outer, op.output)
        stores_full = [(v, view) for v, view in outputs if v in full]
        for value, view in outputs:
            if value not in full:
                outer.store(view, space.dims[value], outer.values[value])
        if stores_full:
            buf.writeline(f"for r0 in range(0, {n_r}, {block_r}):")
            with buf.indent():
                buf.writeline(f"r = r0 + tl.arange(0, {block_r})[None, :]")
                if mask_r:
                    buf.writeline(f"mask_r = r < {n_r}")
                inner = outer.child()
                for value, view in stores_full:
                    ensure(inner, value)
                    inner.store(view, space.dims[value], inner.values[value])
    grid = f"({math.ceil(n_p / block_p)},)"
    warps = _warps(block_p * (block_r if two_d else 1))
    return Kernel(name, buf.getvalue(), args, grid, warps)


def _mapped(tile: Tile, op: EinsumOp, names: Mapping[str, str], ty: str) -> str:
    from einc.backends.triton.emitter import emit_map

    value = emit_map(op.map_expr, tile.operands(op, names), tile.buf, tile.cse, ty)
    return value.text if value.ty == ty else f"{value.text}.to({ty})"


def _is_literal(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text in ("True", "False") or "float(" in text and "(" not in text.replace("float(", "")


def _dtype(value: SSAValue) -> np.dtype:
    from einc.ir.dtypes import type_to_numpy

    return type_to_numpy(value.type.get_element_type())  # type: ignore[attr-defined]


# -- contractions on tl.dot -----------------------------------------------------------


def is_dot(op: EinsumOp) -> bool:
    """Worth a `tl.dot` kernel: a float sum of products with M and N of 16 or more."""
    try:
        c = classify(op, Space([op]))
    except NoMatch:
        return False
    types = [_dtype(op.inputs[c.a]), _dtype(op.inputs[c.b]), _dtype(op.output)]
    if any(TL_TYPES[t] not in FLOATS or t == np.float64 for t in types):
        return False
    ext = Space([op]).extents
    size = lambda dims: math.prod(ext[d] for d in dims)  # noqa: E731
    return size(c.m) >= 16 and size(c.n) >= 16 and size(c.batch) < 65536


def _dot_configs(widths16: bool, m: int, n: int, k: int) -> list[tuple[int, ...]]:
    configs = []
    for bm, bn, bk, warps, stages in DOT_CONFIGS_16 if widths16 else DOT_CONFIGS_32:
        c = (min(bm, max(16, next_pow2(m))), min(bn, max(16, next_pow2(n))), min(bk, max(16, next_pow2(k))), warps, stages)
        if c not in configs:
            configs.append(c)
    return configs


def dot_kernel(
    name: str, ops: Sequence[EinsumOp], views: Mapping[SSAValue, View], outputs: Sequence[tuple[SSAValue, View]]
) -> Kernel:
    """A contraction on `tl.dot` with the elementwise einsums after it as its epilogue."""
    space = Space(ops)
    main = ops[0]
    c = classify(main, space)
    if any(op.reduce_op for op in ops[1:]):
        raise NoMatch("the epilogue reduces")
    if any(v in (o.output for o in ops) for v in main.inputs):
        raise NoMatch("the contraction reads a value computed in the kernel")
    out_dims = set(space.dims[main.output])
    if any(not set(space.dims[op.output]) <= out_dims or not space.deps(op) <= out_dims for op in ops[1:]):
        raise NoMatch("the epilogue has dims the contraction has not")
    ext = space.extents
    size = lambda dims: math.prod(ext[d] for d in dims)  # noqa: E731
    M, N, K, B = size(c.m), size(c.n), size(c.k), size(c.batch)
    va, vb = views[main.inputs[c.a]], views[main.inputs[c.b]]
    ta, tb = TL_TYPES[va.dtype], TL_TYPES[vb.dtype]
    half = ta == tb and ta in ("tl.float16", "tl.bfloat16")
    configs = _dot_configs(half, M, N, K)
    max_bm, max_bn, max_bk = (max(cfg[i] for cfg in configs) for i in range(3))
    args = _args([*views.values(), *(v for _, v in outputs)])
    doc = [describe(op) for op in ops] + [f"M = {M} ({', '.join(c.m)}), N = {N} ({', '.join(c.n)}), "
                                          f"K = {K} ({', '.join(c.k)}), batch = {B} ({', '.join(c.batch) or '-'})"]
    buf = _header(name, args, ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr", "BLOCK_K: tl.constexpr"], doc)
    cse = CSE()
    buf.writelines([
        "# program ids in groups of 8 rows of tiles, so neighbouring programs share operand tiles in L2",
        "pid = tl.program_id(0)",
        f"num_m = tl.cdiv({M}, BLOCK_M)",
        f"num_n = tl.cdiv({N}, BLOCK_N)",
        "group = pid // (8 * num_n)",
        "size_m = min(num_m - group * 8, 8)",
        "pid_m = group * 8 + (pid % (8 * num_n)) % size_m",
        "pid_n = (pid % (8 * num_n)) // size_m",
        "pid_b = tl.program_id(1)",
        "offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)",
        "offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)",
    ])
    # Loads wrap rows and columns past the end (their results are never stored): no masks.
    buf.writeline(f"rm = offs_m % {M}" if M % max_bm else "rm = offs_m")
    buf.writeline(f"rn = offs_n % {N}" if N % max_bn else "rn = offs_n")
    mask_k = f"kk[None, :] < {K}" if K % max_bk else None
    mask_kt = f"kk[:, None] < {K}" if K % max_bk else None
    batch = Axis(c.batch, "pid_b", None)
    a_tile = Tile(buf, cse, ext, [batch, Axis(c.m, "rm[:, None]", None), Axis(c.k, "kk[None, :]", mask_k)], dict(views))
    b_tile = Tile(buf, cse, ext, [batch, Axis(c.k, "kk[:, None]", mask_kt), Axis(c.n, "rn[None, :]", None)], dict(views))
    buf.writeline("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    buf.writeline(f"for k0 in range(0, {K}, BLOCK_K):")
    exprs = main.input_exprs
    with buf.indent():
        buf.writeline("kk = k0 + tl.arange(0, BLOCK_K)")
        a = a_tile.child().load(main.inputs[c.a], exprs[c.a], space.names[main], raw=True)
        b = b_tile.child().load(main.inputs[c.b], exprs[c.b], space.names[main], raw=True)
        if half:
            buf.writeline(f"acc = tl.dot({a.text}, {b.text}, acc)")
        else:
            buf.writeline(f'acc = tl.dot({a.text}.to(tl.float32), {b.text}.to(tl.float32), acc, input_precision="ieee")')
    mask_m = f"offs_m[:, None] < {M}" if M % max_bm else None
    mask_n = f"offs_n[None, :] < {N}" if N % max_bn else None
    tile = Tile(buf, cse, ext, [batch, Axis(c.m, "offs_m[:, None]", mask_m), Axis(c.n, "offs_n[None, :]", mask_n)],
                dict(views))
    tile.values[main.output] = Value("acc", "tl.float32")
    for op in ops[1:]:
        tile.einsum(op, space.names[op])
    for value, view in outputs:
        tile.store(view, space.dims[value], tile.values[value])
    source = _autotuned(buf, [f'triton.Config({{"BLOCK_M": {bm}, "BLOCK_N": {bn}, "BLOCK_K": {bk}}}, num_warps={w}, num_stages={s})'
                              for bm, bn, bk, w, s in configs])
    grid = f'lambda meta: (triton.cdiv({M}, meta["BLOCK_M"]) * triton.cdiv({N}, meta["BLOCK_N"]), {B})'
    return Kernel(name, source, args, grid)


def _autotuned(buf: IndentedBuffer, configs: Sequence[str]) -> str:
    lines = ["@triton.autotune(configs=tuned(["] + [f"    {c}," for c in configs] + ["]), key=[])"]
    return "\n".join(lines) + "\n" + buf.getvalue()


# -- attention -----------------------------------------------------------------------


def _triangle(values: np.ndarray) -> tuple[int, float, float] | None:
    """(k, a, b) if values[i, j] is a where j - i <= k and b elsewhere, a != b."""
    rows, cols = values.shape
    a, b = values[-1, 0], values[0, -1]
    if a == b or (isinstance(a, float) and math.isnan(a)):
        return None
    k = int(np.sum(values[0] == a)) - 1
    i, j = np.indices(values.shape)
    if not np.array_equal(values, np.where(j - i <= k, a, b)):
        return None
    return k, float(a), float(b)


def attention_kernel(
    name: str,
    ops: Sequence[EinsumOp],
    views: Mapping[SSAValue, View],
    outputs: Sequence[tuple[SSAValue, View]],
    constants: Mapping[SSAValue, np.ndarray] | None = None,
) -> Kernel:
    """One-pass attention (FlashAttention-2): running max and sum over key blocks."""
    att = match_attention(ops)
    final = att.norm.output if att.deferred else att.pv.output
    if [v for v, _ in outputs] != [final]:
        raise NoMatch("attention must yield its output alone")
    space = Space(ops)
    qkc = classify(att.qk, space)
    n_dims = space.reduced(att.gm)
    e_dims = space.reduced(att.qk)
    if len(n_dims) != 1 or len(e_dims) != 1 or space.reduced(att.pv) != n_dims:
        raise NoMatch("attention needs one key rank and one head rank")
    (n_dim,), (e_dim,) = n_dims, e_dims
    q_in, k_in = att.qk.inputs[qkc.a], att.qk.inputs[qkc.b]
    if n_dim in qkc.m:
        q_in, k_in = k_in, q_in
        qkc.m, qkc.n = qkc.n, qkc.m
    if qkc.n != [n_dim] or not qkc.m:
        raise NoMatch("the max is not over the keys")
    m_dim = qkc.m[-1]
    batch = [d for d in space.dims[att.qk.output] if d not in (m_dim, n_dim)]
    classify(att.pv, space)  # PV must be a contraction too
    p_val = att.exp.output if att.deferred else att.norm.output
    v_in = next(v for v in att.pv.inputs if v != p_val)
    f_dims = [d for d in space.dims[att.pv.output] if d not in space.dims[att.qk.output]]
    if len(f_dims) != 1 or any(v not in views for v in (q_in, k_in, v_in)):
        raise NoMatch("attention needs one value rank and Q, K, V from memory")
    f_dim = f_dims[0]
    ext = space.extents
    M, N, D, DV = ext[m_dim], ext[n_dim], ext[e_dim], ext[f_dim]
    B = math.prod(ext[d] for d in batch)
    tq, tk, tv = (TL_TYPES[views[v].dtype] for v in (q_in, k_in, v_in))
    half = tq == tk == tv and tq in ("tl.float16", "tl.bfloat16")
    block_d, block_dv = max(16, next_pow2(D)), max(16, next_pow2(DV))

    # A triangular constant mask becomes an index comparison; blocks it removes are skipped.
    overrides: dict[SSAValue, tuple[str, dict[str, str]]] = {}
    causal: int | None = None
    for op in att.scores:
        for value, exprs in zip(op.inputs, op.input_exprs):
            const = (constants or {}).get(value)
            dims = {space.names[op][v] for e in exprs for v in e.variables}
            if const is None or dims != {m_dim, n_dim} or value in overrides:
                continue
            names = space.names[op]
            i, j = np.indices((M, N))
            grid = {v: (i if names[v] == m_dim else j) for e in exprs for v in e.variables}
            index = tuple(sum((grid[v] * c for v, c in e.terms), np.full((M, N), e.const)) for e in exprs)
            tri = _triangle(np.asarray(const)[index])
            if tri is None:
                continue
            k, a, b = tri
            ty = TL_TYPES[views[value].dtype]
            overrides[value] = (f"tl.where({{n}} - {{m}} <= {k}, {literal(a, ty)}, {literal(b, ty)})",
                                {"m": m_dim, "n": n_dim})
            if _masks_out(att, op, value, b, constants or {}):
                causal = k

    configs = [(min(bm, max(16, next_pow2(M))), min(bn, max(16, next_pow2(N))), w, s)
               for bm, bn, w, s in (ATTENTION_CONFIGS_16 if half else ATTENTION_CONFIGS_32)]
    configs = list(dict.fromkeys(configs))
    max_bm = max(cfg[0] for cfg in configs)
    max_bn = max(cfg[1] for cfg in configs)
    args = _args([*(v for k, v in views.items() if k not in overrides), *(v for _, v in outputs)])
    doc = [describe(op) for op in ops] + [
        f"one pass over {N} keys ({n_dim}) for {M} queries ({m_dim}), head dims {D} ({e_dim}) and {DV} ({f_dim}), "
        f"batch {B} ({', '.join(batch) or '-'})" + (f"; causal (keys <= query + {causal})" if causal is not None else "")
    ]
    buf = _header(name, args, ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr"], doc)
    cse = CSE()
    buf.writelines([
        "pid_b = tl.program_id(1)",
        "offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)",
        f"offs_d = tl.arange(0, {block_d})",
        f"offs_dv = tl.arange(0, {block_dv})",
    ])
    mask_m = f"offs_m[:, None] < {M}" if M % max_bm else None
    mask_d = f"offs_d[None, :] < {D}" if D != block_d else None
    mask_dt = f"offs_d[:, None] < {D}" if D != block_d else None
    mask_dv = f"offs_dv[None, :] < {DV}" if DV != block_dv else None
    ragged_n = N % max_bn != 0
    mask_n = f"offs_n[None, :] < {N}" if ragged_n else None
    mask_nt = f"offs_n[:, None] < {N}" if ragged_n else None
    bx = Axis(batch, "pid_b", None)
    names = space.names
    q_tile = Tile(buf, cse, ext, [bx, Axis([m_dim], "offs_m[:, None]", mask_m), Axis([e_dim], "offs_d[None, :]", mask_d)], dict(views))
    for dim in batch:  # batch indices once, outside the key loop
        q_tile.dim_value(dim)
    q = q_tile.load(q_in, att.qk.input_exprs[list(att.qk.inputs).index(q_in)], names[att.qk], raw=True, name="q")
    if not half:
        q = Value(cse(buf, f"{q.text}.to(tl.float32)"), "tl.float32")
    buf.writelines([
        'm_i = tl.full((BLOCK_M,), -float("inf"), tl.float32)',
        "l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)",
        f"acc = tl.zeros((BLOCK_M, {block_dv}), dtype=tl.float32)",
    ])
    hi = f"min({N}, (tl.program_id(0) + 1) * BLOCK_M + {causal})" if causal is not None else str(N)
    buf.writeline(f"for start_n in range(0, {hi}, BLOCK_N):")
    with buf.indent():
        buf.writeline("offs_n = start_n + tl.arange(0, BLOCK_N)")
        k_cse = cse.child()
        k_tile = Tile(buf, k_cse, ext, [bx, Axis([e_dim], "offs_d[:, None]", mask_dt), Axis([n_dim], "offs_n[None, :]", mask_n)], dict(views))
        k = k_tile.load(k_in, att.qk.input_exprs[list(att.qk.inputs).index(k_in)], names[att.qk], raw=True, name="k")
        dot = f"tl.dot({q.text}, {k.text})" if half else f'tl.dot({q.text}, {k.text}.to(tl.float32), input_precision="ieee")'
        buf.writeline(f"qk = {dot}")
        s_tile = Tile(buf, k_cse, ext, [bx, Axis([m_dim], "offs_m[:, None]", mask_m), Axis([n_dim], "offs_n[None, :]", mask_n)],
                      dict(views), overrides=overrides)
        s_tile.values[att.qk.output] = Value("qk", "tl.float32")
        s = s_tile.values[att.qk.output]
        for op in att.scores:
            s = s_tile.einsum(op, names[op])
        if s.ty != "tl.float32":
            s = Value(k_cse(buf, f"{s.text}.to(tl.float32)"), "tl.float32")
        if ragged_n:
            s = Value(k_cse(buf, f'tl.where({mask_n}, {s.text}, -float("inf"))'), "tl.float32")
        buf.writelines([
            f"m_new = tl.maximum(m_i, tl.max({s.text}, axis=1))",
            "alpha = tl.exp(m_i - m_new)",
            f"p = tl.exp({s.text} - m_new[:, None])",
            "l_i = l_i * alpha + tl.sum(p, axis=1)",
            "acc = acc * alpha[:, None]",
        ])
        v_tile = Tile(buf, k_cse, ext, [bx, Axis([n_dim], "offs_n[:, None]", mask_nt), Axis([f_dim], "offs_dv[None, :]", mask_dv)], dict(views))
        v = v_tile.load(v_in, att.pv.input_exprs[list(att.pv.inputs).index(v_in)], names[att.pv], raw=True, name="v")
        if half:
            buf.writeline(f"acc = tl.dot(p.to({tv}), {v.text}, acc)")
        else:
            buf.writeline(f'acc = tl.dot(p, {v.text}.to(tl.float32), acc, input_precision="ieee")')
        buf.writeline("m_i = m_new")
    buf.writeline("acc = acc / l_i[:, None]")
    o_tile = Tile(buf, cse, ext, [bx, Axis([m_dim], "offs_m[:, None]", mask_m), Axis([f_dim], "offs_dv[None, :]", mask_dv)], dict(views))
    (value, view), = outputs
    o_tile.store(view, space.dims[value], Value("acc", "tl.float32"))
    source = _autotuned(buf, [f'triton.Config({{"BLOCK_M": {bm}, "BLOCK_N": {bn}}}, num_warps={w}, num_stages={s})'
                              for bm, bn, w, s in configs])
    grid = f'lambda meta: (triton.cdiv({M}, meta["BLOCK_M"]), {B})'
    return Kernel(name, source, args, grid)


def _masks_out(att: Attention, op: EinsumOp, mask: SSAValue, masked: float, constants: Mapping[SSAValue, np.ndarray]) -> bool:
    """Whether the score maps give -inf wherever the mask holds `masked`, whatever the scores."""
    rng = np.random.default_rng(0)
    current = rng.standard_normal(8).astype(np.float32) * 10
    for step in att.scores:
        inputs = []
        for value in step.inputs:
            if value == mask:
                inputs.append(np.full(8, masked, np.float32))
            elif isinstance(value.owner, EinsumOp) and value.owner in (att.qk, *att.scores):
                inputs.append(current)
            elif value in constants and np.unique(constants[value]).size == 1:
                inputs.append(np.full(8, np.asarray(constants[value]).reshape(-1)[0]))
            else:
                return False
        current = mapexpr.evaluate(step.map_expr, inputs, np.dtype(np.float32))
    return bool(np.all(np.isneginf(current)))


# -- data movement ------------------------------------------------------------------


def _flat_kernel(name: str, shape: Sequence[int], views: Sequence[View], doc: Sequence[str]) -> tuple[IndentedBuffer, Tile, list[str], int]:
    """A 1-D kernel over the elements of `shape`: dims d0.. on one axis of BLOCK elements."""
    total = max(1, math.prod(shape))
    block = min(1024, next_pow2(total))
    args = _args(views)
    buf = _header(name, args, doc=doc)
    buf.writeline(f"p = tl.program_id(0) * {block} + tl.arange(0, {block})")
    mask = None
    if total % block:
        buf.writeline(f"mask_p = p < {total}")
        mask = "mask_p"
    dims = [f"d{i}" for i in range(len(shape))]
    tile = Tile(buf, CSE(), dict(zip(dims, shape)), [Axis(dims, "p", mask)], {})
    return buf, tile, dims, -(-total // block)


def _load_view(tile: Tile, view: View, dims: Sequence[str], index: Sequence[str] | None = None) -> str:
    """Load `view` at the tile's dims (or at per-dim index sources) in its stored type."""
    if index is None:
        form = Linear(view.offset, tuple((d, s) for d, s in zip(dims, view.strides) if s))
        offset = tile.offset(form)
        mask = tile.mask(form)
    else:
        terms = [f"({i}) * {s}" if s != 1 else f"({i})" for i, s in zip(index, view.strides) if s]
        offset = " + ".join([*terms, str(view.offset)]) if view.offset or not terms else " + ".join(terms)
        mask = tile.axes[0].mask
    mask_args = f", mask={mask}, other={literal(0, TL_TYPES[view.dtype])}" if mask else ""
    return tile.cse(tile.buf, f"tl.load({view.buffer} + {offset}{mask_args})")


def copy_kernel(name: str, src: View, dst: View, doc: str = "copy") -> Kernel:
    """dst[i] = src[i] elementwise: materialises a view, or fills a slice of a concat."""
    buf, tile, dims, grid = _flat_kernel(name, dst.shape, [src, dst], [doc])
    value = _load_view(tile, src, dims)
    tile.store(dst, dims, Value(value, TL_TYPES[src.dtype]))
    return Kernel(name, buf.getvalue(), _args([src, dst]), f"({grid},)")


def gather_kernel(name: str, op: GatherOp, data: View, indices: View, dst: View) -> Kernel:
    """out[a.., i.., b..] = data[a.., indices[i..], b..], negative indices from the end."""
    axis = op.axis.value.data
    buf, tile, dims, grid = _flat_kernel(name, dst.shape, [data, indices, dst], [f"gather along axis {axis}"])
    rank_i = len(indices.shape)
    idx_dims = dims[axis : axis + rank_i]
    idx = _load_view(tile, indices, idx_dims)
    size = data.shape[axis]
    idx = tile.cse(buf, f"tl.where({idx} < 0, {idx} + {size}, {idx})")
    index = [tile.dim_value(d) for d in dims[:axis]] + [idx] + [tile.dim_value(d) for d in dims[axis + rank_i :]]
    value = _load_view(tile, data, dims, index)
    tile.store(dst, dims, Value(value, TL_TYPES[data.dtype]))
    return Kernel(name, buf.getvalue(), _args([data, indices, dst]), f"({grid},)")


def pad_kernel(name: str, op: PadOp, src: View, dst: View) -> Kernel:
    """Constant, edge or reflect padding (negative: crop; interior: dilation) per output element."""
    low, _high, interior = op.amounts
    mode = op.mode.data
    buf, tile, dims, grid = _flat_kernel(name, dst.shape, [src, dst], [f"pad {mode} low {low} interior {interior}"])
    index, valid = [], []
    for d, n, lo, gap in zip(dims, src.shape, low, interior):
        i = tile.dim_value(d)
        s = f"({i} - {lo})" if lo else i
        if gap:
            valid.append(f"({s} % {gap + 1} == 0)")
            s = tile.cse(buf, f"{s} // {gap + 1}")
        if mode == "edge":
            s = f"tl.minimum(tl.maximum({s}, 0), {n - 1})"
        elif mode == "reflect":
            s = tile.cse(buf, f"tl.abs({s})")
            s = f"tl.where({s} > {n - 1}, {2 * (n - 1)} - {s}, {s})"
        else:
            valid.append(f"({s} >= 0) & ({s} < {n})")
        index.append(tile.cse(buf, s))
    ty = TL_TYPES[src.dtype]
    if valid:
        ok = tile.cse(buf, " & ".join(valid))
        safe = [tile.cse(buf, f"tl.where({ok}, {s}, 0)") for s in index]
        value = _load_view(tile, src, dims, safe)
        value = tile.cse(buf, f"tl.where({ok}, {value}, {literal(op.value.value.data, ty)})")
    else:
        value = _load_view(tile, src, dims, index)
    tile.store(dst, dims, Value(value, ty))
    return Kernel(name, buf.getvalue(), _args([src, dst]), f"({grid},)")
