"""Attention groups (QK^T, score maps, softmax, PV) as one CPU kernel: FlashAttention-2.

`fuse` makes an `ein.group "attention"` from the cascade QK = Q K^T, the
elementwise score maps (scale, additive or boolean mask), GM = max over the
keys, SN = exp(S - GM), SD = sum of SN, PV = SN V and the division by SD
(before or, after `defer-division`, after PV). `AttentionCall` (the handler
`lower-ein-to-loops` finds in GROUP_KERNELS) turns it into a spec: the batch,
query (M), key (N), head (E) and value (F) ranks, every operand's offset
coefficients, and the score maps composed into one map of the scores ($0) and
the extra inputs ($1..: masks, read at (query, key)). `AttentionPlan` emits,
for every work unit (one batch index x one block of BM queries):

    Qp[e][m] = Q block, queries along the 16 vector lanes (zero past M)
    O[f][m] = 0, run_max = -inf, run_sum = 0
    for each block of BN keys:                 1 pass over the keys
        S[n][m] = score map(sum_e Qp[e][m] * K[n, e])   (K[n, e] broadcast)
        block max, new max = max(run_max, block max)
        P[n][m] = exp(S - new max), run_sum = run_sum * alpha + sum_n P
        O[f][m] = O[f][m] * alpha + sum_n V[n, f] * P[n][m]  (V[n, f] broadcast)
    out[m, f] = O[f][m] / run_sum

Queries along the lanes make every softmax reduction a lane-wise vector op (no
shuffles), let K and V be read in place at any layout (one broadcast per
element), and leave only the query count to mask; the key block (BN x BM
scores) and the accumulator (F x BM) stay in L1. The scores never reach memory
beyond that block. Under ROWWISE_BELOW queries (decode) a unit is one query row
and the lanes run along the keys (when K^T is stored) or the head dim instead. A row whose every score is -inf gives 0/0 (NaN), as the
3-pass cascade does. Units are claimed by the pool's threads (pool.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir
from xdsl.dialects.builtin import (
    Float32Type,
    IntegerType,
)
from xdsl.ir import SSAValue

from einc.backends.llvm.ukernels.declare import call_kernel
from einc.backends.llvm.ukernels.gemm import offset_table
from einc.backends.llvm.ukernels.pool import define_entry
from einc.backends.llvm.ukernels.vector import (
    EPILOGUE_FUNCTIONS,
    F32,
    I32,
    VectorEmitter,
)
from einc.ir import mapexpr
from einc.ir.ein import ConstantOp, EinsumOp, GroupOp, ReshapeOp
from einc.ir.indexexpr import IndexExpr, flat_offset

if TYPE_CHECKING:
    from einc.passes.lower_ein_to_loops import _Emitter, _FunctionLowering

I8 = ir.IntType(8)
I64 = ir.IntType(64)
PTR = ir.PointerType()
LANES = 16
BLOCK_KEYS = 64
"""Keys per block: the BN x BM scores (8 KiB at BM = 32) stay in L1 between the block's passes."""
KEY_TILE = {1: 12, 2: 8}
"""Keys whose scores are computed together, by query vectors per unit (accumulators in registers)."""
VALUE_TILE = {1: 12, 2: 8}
"""Value columns accumulated together, by query vectors per unit."""
ROWWISE_BELOW = 4
"""Fewer queries than this (decode) run one query row per unit with the keys or the head
dims along the lanes (`_RowBody`): queries along the lanes would use 1 lane in 16. Measured
(8 heads x 1024 keys x 64, 1 thread, CPU time): 1 query 0.61 -> 0.27 ms (the three-kernel
form: 0.32 ms); at 4 queries both ways take about 0.5 ms."""
MAX_SCRATCH = 96 * 1024
"""Most bytes of per-unit scratch (Qp, the score block, the accumulator) on the stack."""
SERIAL_FLOPS = 2_000_000
"""Attention smaller than this runs on the calling thread alone."""


class Decline(Exception):
    """The kernel does not handle this cascade; the message says why."""


# -- the spec ------------------------------------------------------------------------------


def _elem(value: SSAValue) -> Any:
    return value.type.get_element_type()  # type: ignore[attr-defined]


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def _scalar_constant(value: SSAValue) -> float | None:
    owner = value.owner
    while isinstance(owner, ReshapeOp):
        owner = owner.source.owner
    if not isinstance(owner, ConstantOp) or math.prod(_shape(value)) != 1 or not isinstance(_elem(value), Float32Type):
        return None
    data = owner.value.get_values()
    return float(data[0]) if len(data) == 1 and math.isfinite(float(data[0])) else None


def describe(ops: Sequence[EinsumOp], inputs: Sequence[SSAValue], outer: Callable[[SSAValue], SSAValue] | None = None) -> dict[str, Any]:
    """The kernel spec of an attention cascade `ops` whose outside values are `inputs` (the
    group's arguments in order); `outer` maps an argument to the value behind it (for
    one-element constants). Raises Decline with the reason the kernel cannot run it."""
    from einc.analysis.cascades import NoMatch, Space, classify, match_attention
    from einc.passes.fuse import contraction_scale

    try:
        att = match_attention(ops)
        space = Space(ops)
        qkc = classify(att.qk, space)
        classify(att.pv, space)
    except NoMatch as e:
        raise Decline(str(e)) from None
    if not all(isinstance(_elem(v), Float32Type) for v in [*(op.output for op in ops), *att.qk.inputs, *att.pv.inputs]):
        raise Decline("not f32 (the kernel computes f32 only)")
    n_dims, e_dims = space.reduced(att.gm), space.reduced(att.qk)
    if len(n_dims) != 1 or len(e_dims) != 1 or space.reduced(att.pv) != n_dims:
        raise Decline("more than one key rank or head rank")
    (n_dim,), (e_dim,) = n_dims, e_dims
    a_in, b_in = att.qk.inputs[qkc.a], att.qk.inputs[qkc.b]
    q_at, k_at = qkc.a, qkc.b
    if n_dim in qkc.m:
        q_at, k_at, a_in, b_in = k_at, q_at, b_in, a_in
        qkc.m, qkc.n = qkc.n, qkc.m
    if qkc.n != [n_dim] or not qkc.m:
        raise Decline("the max is not over the keys")
    m_dim = qkc.m[-1]
    s_dims = space.dims[att.qk.output]
    batch = [d for d in s_dims if d not in (m_dim, n_dim)]
    p_val = att.exp.output if att.deferred else att.norm.output
    v_at = next(i for i, v in enumerate(att.pv.inputs) if v != p_val)
    f_dims = [d for d in space.dims[att.pv.output] if d not in s_dims]
    if len(f_dims) != 1:
        raise Decline("more than one value rank")
    f_dim = f_dims[0]
    final = att.norm.output if att.deferred else att.pv.output
    if set(space.dims[final]) != set(batch) | {m_dim, f_dim}:
        raise Decline("the output has other ranks")
    if any(v not in inputs for v in (a_in, b_in, att.pv.inputs[v_at])):
        raise Decline("Q, K or V is computed inside the group")
    ext = space.extents

    def operand(op: EinsumOp, at: int) -> dict[str, Any]:
        value = op.inputs[at]
        coef, const = flat_offset(op.input_exprs[at], _shape(value), space.names[op])
        if any(d not in (*batch, m_dim, n_dim, e_dim, f_dim) for d in coef):
            raise Decline("an operand is indexed by a rank outside attention")
        return {"coef": coef, "const": const, "input": list(inputs).index(value)}

    spec: dict[str, Any] = {
        "kind": "attention",
        "batch": {d: ext[d] for d in batch},
        "m": ext[m_dim], "n": ext[n_dim], "e": ext[e_dim], "f": ext[f_dim],
        "dims": {"m": m_dim, "n": n_dim, "e": e_dim, "f": f_dim},
        "q": operand(att.qk, q_at), "k": operand(att.qk, k_at), "v": operand(att.pv, v_at),
    }
    if spec["q"]["coef"].get(n_dim) or spec["k"]["coef"].get(m_dim) or spec["v"]["coef"].get(m_dim):
        raise Decline("Q depends on the keys or K/V on the queries")
    out_coef, out_const = flat_offset([IndexExpr.var(d) for d in space.dims[final]], _shape(final))
    spec["out"] = {"coef": out_coef, "const": out_const}
    # The score maps, composed: $0 is QK (its constant factor applied), $1.. the masks.
    scale = contraction_scale(att.qk) or 1.0
    expr: mapexpr.Expr = mapexpr.Input(0) if scale == 1.0 else mapexpr.Call("mul", (mapexpr.Input(0), mapexpr.Const(scale)))
    values: dict[SSAValue, mapexpr.Expr] = {att.qk.output: expr}
    extras: list[dict[str, Any]] = []
    for op in att.scores:
        missing = _functions(op.map_expr) - EPILOGUE_FUNCTIONS
        if missing:
            raise Decline(f"a score map uses {', '.join(sorted(missing))}, which the vector code lacks")
        if set(space.dims[op.output]) != set(s_dims):
            raise Decline("a score map changes the scores' shape")
        subst: list[mapexpr.Expr] = []
        for at, value in enumerate(op.inputs):
            if value in values:
                subst.append(values[value])
                continue
            known = _scalar_constant(outer(value) if outer else value)
            if known is not None:
                subst.append(mapexpr.Const(known))
                continue
            elem = _elem(value)
            if not (isinstance(elem, Float32Type) or elem == IntegerType(1)):
                raise Decline("a mask is neither f32 nor bool")
            x = operand(op, at)
            x["bool"] = elem == IntegerType(1)
            if any(d not in (*batch, m_dim, n_dim) for d in x["coef"]):
                raise Decline("a mask is indexed by a head rank")
            if x not in extras:
                extras.append(x)
            subst.append(mapexpr.Input(1 + extras.index(x)))
        values[op.output] = mapexpr.substitute(op.map_expr, subst)
    scores = att.scores[-1].output if att.scores else att.qk.output
    spec["score"] = mapexpr.render(values[scores])
    spec["extras"] = extras
    spec["qv"] = query_vectors(spec["m"])
    bm = LANES * spec["qv"]
    scratch = 4 * bm * (spec["e"] + BLOCK_KEYS + spec["f"])
    if scratch > MAX_SCRATCH:
        raise Decline(f"head dims {spec['e']}/{spec['f']} need {scratch} bytes of scratch per unit (at most {MAX_SCRATCH})")
    return spec


def _functions(expr: mapexpr.Expr) -> set[str]:
    if isinstance(expr, mapexpr.Call):
        return {expr.fn}.union(*(_functions(a) for a in expr.args))
    return set()


def query_vectors(m: int) -> int:
    """Query vectors per unit: 2 (32 queries), 1 for 16 queries or fewer. With 64 queries the
    Q block, the score block and the accumulator (16 KiB each at head dim 64) left L1: a causal
    8 x 512 x 64 took 4.26 ms against 3.58 ms (one thread, CPU time)."""
    return 1 if m <= LANES else 2


def group_spec(group: GroupOp) -> dict[str, Any]:
    ops = [op for op in group.body.block.ops if isinstance(op, EinsumOp)]
    args = list(group.body.block.args)
    outer = dict(zip(args, group.inputs))
    if len(group.outputs) != 1:
        raise Decline("attention must yield its output alone")
    return describe(ops, args, lambda v: outer.get(v, v))


class AttentionCall:
    """The handler of "attention" groups (see GROUP_KERNELS in lower_ein_to_loops)."""

    @staticmethod
    def accepts(group: GroupOp) -> bool:
        try:
            group_spec(group)
        except Decline:
            return False
        return True

    @staticmethod
    def lower(lowering: _FunctionLowering, e: _Emitter, group: GroupOp) -> None:
        from einc.backends.llvm.ukernels.pool import thread_count

        spec = group_spec(group)
        spec["threads"] = thread_count()
        args = [lowering.buffers[v].ref for v in [*group.inputs, *group.outputs]]
        spec["nargs"] = len(args)
        call_kernel(lowering, e, spec, args, "einc_attention")


# -- the kernel -------------------------------------------------------------------------------


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


class AttentionPlan:
    """An attention kernel from its spec: `emit(module)` defines it."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.name: str = spec["name"]
        self.m, self.n, self.e, self.f = (int(spec[k]) for k in "mnef")
        self.qv = int(spec["qv"])
        self.bm = LANES * self.qv
        self.batch: dict[str, int] = spec["batch"]
        self.nb = math.prod(self.batch.values())
        self.rowwise = self.m < ROWWISE_BELOW
        self.qblocks = self.m if self.rowwise else -(-self.m // self.bm)
        self.units = self.nb * self.qblocks
        flops = 2 * self.nb * self.m * self.n * (self.e + self.f)
        self.parallel = int(spec.get("threads", 1)) > 1 and self.units > 1 and flops >= SERIAL_FLOPS
        dims = spec["dims"]
        self.dims = dims
        names = list(self.batch)

        def tables(which: dict[str, Any]) -> dict[str, Any]:
            coef = {d: int(c) for d, c in which["coef"].items()}
            return {
                "batch": offset_table(self.batch, names, coef) + int(which.get("const", 0)),
                **{r: coef.get(dims[r], 0) for r in "mnef"},
            }

        self.q, self.k, self.v, self.o = (tables(spec[w]) for w in ("q", "k", "v", "out"))
        self.extras = [tables(x) | {"input": x["input"], "bool": x["bool"]} for x in spec["extras"]]
        self.score = mapexpr.parse(spec["score"])

    def emit(self, module: ir.Module) -> None:
        body = define_entry(module, self.name, int(self.spec["nargs"]), self.units, self.parallel)
        (_RowBody if self.rowwise else _AttentionBody)(self, body, module).emit()


class _Loops:
    """Counted loops at a builder's position (loop-carried values live in allocas: mem2reg)."""

    def __init__(self, b: ir.IRBuilder, fn: ir.Function):
        self.b, self.fn = b, fn

    def loop(self, start: ir.Value, stop: ir.Value, step: int, body: Callable[[ir.Value], Any], name: str) -> None:
        b = self.b
        pre = b.block
        head, loop, done = (self.fn.append_basic_block(f"{name}.{x}") for x in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), loop, done)
        b.position_at_end(loop)
        body(i)
        i.add_incoming(b.add(i, _c(step)), b.block)
        b.branch(head)
        b.position_at_end(done)


class _AttentionBody(_Loops):
    """`name.body(args, unit)`: one batch index, one block of BM queries."""

    def __init__(self, plan: AttentionPlan, fn: ir.Function, module: ir.Module):
        self.p = plan
        self.module = module
        self.allocas = ir.IRBuilder(fn.append_basic_block("allocas"))  # the entry block: stack slots, then a branch
        self.start = fn.append_basic_block("start")
        super().__init__(ir.IRBuilder(self.start), fn)
        self.v = VectorEmitter(self.b, LANES)
        self._tables: dict[bytes, ir.Value] = {}

    # -- helpers -------------------------------------------------------------------------------

    def state(self, ty: ir.Type, count: int, name: str, align: int = 64) -> ir.Value:
        """A stack array allocated in the entry block (small ones become registers)."""
        slot = self.allocas.alloca(ir.ArrayType(ty, count), name=name)
        slot.align = align
        slot.type = PTR
        return slot

    def table(self, values: np.ndarray) -> ir.Value:
        values = np.asarray(values, dtype=np.int64)
        key = values.tobytes()
        if key not in self._tables:
            arr = ir.ArrayType(I64, len(values))
            g = ir.GlobalVariable(self.module, arr, f"{self.p.name}.t{len(self._tables)}")
            g.global_constant, g.linkage = True, "internal"
            g.initializer = ir.Constant(arr, [int(x) for x in values])
            g.type = PTR
            self._tables[key] = g
        return self._tables[key]

    def intrinsic(self, name: str, args: list[ir.Value], ret: ir.Type) -> ir.Value:
        try:
            fn = self.module.get_global(name)
        except KeyError:
            fn = ir.Function(self.module, ir.FunctionType(ret, [a.type for a in args]), name)
        return self.b.call(fn, args)

    def ptr(self, base: ir.Value, index: ir.Value, ty: ir.Type = F32) -> ir.Value:
        return self.b.gep(base, [index], inbounds=True, source_etype=ty)

    def vec(self, slot: ir.Value, index: int | ir.Value) -> ir.Value:
        """Pointer to vector `index` of a scratch array of f32 vectors."""
        return self.b.gep(slot, [index if isinstance(index, ir.Value) else _c(index)], inbounds=True, source_etype=self.v.vf)

    def load(self, ptr: ir.Value) -> ir.Value:
        return self.b.load(ptr, typ=self.v.vf, align=64)

    def store(self, value: ir.Value, ptr: ir.Value) -> None:
        self.b.store(value, ptr, align=64)

    def splat_load(self, ptr: ir.Value, boolean: bool = False) -> ir.Value:
        if boolean:
            byte = self.b.load(ptr, typ=I8)
            return self.v.splat(self.b.uitofp(self.b.icmp_unsigned("!=", byte, ir.Constant(I8, 0)), F32))
        return self.v.splat(self.b.load(ptr, typ=F32))

    def lanes_of(self, base: ir.Value, stride: int, mask: ir.Value, boolean: bool = False) -> ir.Value:
        """The 16 elements base + stride * lane (lanes outside `mask` read as 0)."""
        b, v = self.b, self.v
        ety = I8 if boolean else F32
        if stride == 1 and not boolean:
            return self.intrinsic(f"llvm.masked.load.v{LANES}f32.p0", [base, ir.Constant(I32, 4), mask, v.const(0.0)], v.vf)
        offsets = ir.Constant(ir.VectorType(I64, LANES), [stride * i for i in range(LANES)])
        ptrs = b.gep(base, [offsets], source_etype=ety)
        ptrs.type = ir.VectorType(PTR, LANES)
        if boolean:
            vi8 = ir.VectorType(I8, LANES)
            raw = self.intrinsic(f"llvm.masked.gather.v{LANES}i8.v{LANES}p0", [ptrs, ir.Constant(I32, 1), mask, ir.Constant(vi8, [0] * LANES)], vi8)
            return b.uitofp(b.icmp_unsigned("!=", raw, ir.Constant(vi8, [0] * LANES)), v.vf)
        return self.intrinsic(f"llvm.masked.gather.v{LANES}f32.v{LANES}p0", [ptrs, ir.Constant(I32, 4), mask, v.const(0.0)], v.vf)

    def lane_mask(self, count: ir.Value) -> ir.Value:
        b = self.b
        vi = ir.VectorType(I32, LANES)
        splat = b.shuffle_vector(b.insert_element(ir.Constant(vi, ir.Undefined), b.trunc(count, I32), ir.Constant(I32, 0)),
                                 ir.Constant(vi, ir.Undefined), ir.Constant(vi, [0] * LANES))
        return b.icmp_signed("<", ir.Constant(vi, list(range(LANES))), splat)

    def smin(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", a, c), a, c)

    # -- the body ------------------------------------------------------------------------------

    def emit(self) -> None:
        p, b, v = self.p, self.b, self.v
        qv, e_n, f_n = p.qv, p.e, p.f
        argv = self.fn.args[0]
        nargs = int(p.spec["nargs"])
        ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR) for i in range(nargs)]
        self.Q, self.K, self.V = (ptrs[p.spec[w]["input"]] for w in "qkv")
        self.O = ptrs[nargs - 1]
        self.X = [ptrs[x["input"]] for x in p.extras]
        self.qp = self.state(v.vf, e_n * qv, "qp")
        self.sp = self.state(v.vf, BLOCK_KEYS * qv, "scores")
        self.acc = self.state(v.vf, f_n * qv, "acc")
        self.run_max = self.state(v.vf, qv, "run_max")
        self.run_sum = self.state(v.vf, qv, "run_sum")
        self.blk = self.state(v.vf, qv, "block")
        unit = self.fn.args[1]
        bi = b.udiv(unit, _c(p.qblocks))
        m0 = b.mul(b.urem(unit, _c(p.qblocks)), _c(p.bm))

        def base(which: dict[str, Any]) -> ir.Value:
            return b.load(self.ptr(self.table(which["batch"]), bi, I64), typ=I64)

        self.qb, self.kb, self.vb, self.ob = (base(w) for w in (p.q, p.k, p.v, p.o))
        self.xb = [base(x) for x in p.extras]
        self.m0 = m0
        self.masks = [self.lane_mask(b.sub(_c(p.m), b.add(m0, _c(LANES * j)))) for j in range(qv)]
        # Q block, queries along the lanes.
        rows = [b.add(m0, _c(LANES * j)) for j in range(qv)]

        def pack(e: ir.Value) -> None:
            for j in range(qv):
                at = b.add(self.qb, b.add(b.mul(rows[j], _c(p.q["m"])), b.mul(e, _c(p.q["e"]))))
                self.store(self.lanes_of(self.ptr(self.Q, at), p.q["m"], self.masks[j]), self.vec(self.qp, b.add(b.mul(e, _c(qv)), _c(j))))

        self.loop(_c(0), _c(e_n), 1, pack, "pack")
        self.loop(_c(0), _c(f_n * qv), 1, lambda i: self.store(v.const(0.0), self.vec(self.acc, i)), "zero")
        for j in range(qv):
            self.store(v.const(-math.inf), self.vec(self.run_max, j))
            self.store(v.const(0.0), self.vec(self.run_sum, j))
        self.loop(_c(0), _c(p.n), BLOCK_KEYS, self.key_block, "kblock")
        # out[m, f] = acc[f][m] / run_sum[m]
        inv = [b.fdiv(v.const(1.0), self.load(self.vec(self.run_sum, j))) for j in range(qv)]

        def write(f: ir.Value) -> None:
            for j in range(qv):
                value = b.fmul(self.load(self.vec(self.acc, b.add(b.mul(f, _c(qv)), _c(j)))), inv[j])
                at = b.add(self.ob, b.add(b.mul(rows[j], _c(p.o["m"])), b.mul(f, _c(p.o["f"]))))
                self.scatter(value, self.ptr(self.O, at), p.o["m"], self.masks[j])

        self.loop(_c(0), _c(f_n), 1, write, "write")
        b.ret_void()
        self.allocas.branch(self.start)

    def scatter(self, value: ir.Value, base: ir.Value, stride: int, mask: ir.Value) -> None:
        b = self.b
        if stride == 1:
            self.intrinsic(f"llvm.masked.store.v{LANES}f32.p0", [value, base, ir.Constant(I32, 4), mask], ir.VoidType())
            return
        offsets = ir.Constant(ir.VectorType(I64, LANES), [stride * i for i in range(LANES)])
        ptrs = b.gep(base, [offsets], source_etype=F32)
        ptrs.type = ir.VectorType(PTR, LANES)
        self.intrinsic(f"llvm.masked.scatter.v{LANES}f32.v{LANES}p0", [value, ptrs, ir.Constant(I32, 4), mask], ir.VoidType())

    def tiled(self, start: ir.Value, stop: ir.Value, tile: int, body: Callable[[ir.Value, int], None], name: str) -> None:
        """body(i, t) over [start, stop): tiles of `tile`, then single steps."""
        b = self.b
        count = b.sub(stop, start)
        main = b.add(start, b.mul(b.sdiv(count, _c(tile)), _c(tile)))
        self.loop(start, main, tile, lambda i: body(i, tile), f"{name}.tile")
        self.loop(main, stop, 1, lambda i: body(i, 1), f"{name}.one")

    def key_block(self, n0: ir.Value) -> None:
        p, b, v = self.p, self.b, self.v
        qv = p.qv
        n1 = self.smin(b.add(n0, _c(BLOCK_KEYS)), _c(p.n))
        for j in range(qv):
            self.store(v.const(-math.inf), self.vec(self.blk, j))
        self.tiled(n0, n1, KEY_TILE[qv], lambda n, t: self.scores(n0, n, t), "qk")
        # A block whose every score is -inf (above a causal diagonal) adds nothing: skip it.
        live = b.fcmp_ordered("!=", self.load(self.vec(self.blk, 0)), v.const(-math.inf))
        for j in range(1, qv):
            live = b.or_(live, b.fcmp_ordered("!=", self.load(self.vec(self.blk, j)), v.const(-math.inf)))
        any_live = b.icmp_unsigned("!=", b.bitcast(live, ir.IntType(LANES)), ir.Constant(ir.IntType(LANES), 0))
        rest, after = self.fn.append_basic_block("block.live"), self.fn.append_basic_block("block.next")
        b.cbranch(any_live, rest, after)
        b.position_at_end(rest)
        self.update(n0, n1)
        b.branch(after)
        b.position_at_end(after)

    def update(self, n0: ir.Value, n1: ir.Value) -> None:
        """The block's softmax update and its values: rescale by the new max, add exp(S - max) V."""
        p, b, v = self.p, self.b, self.v
        qv = p.qv
        # New running max (0 where it is still -inf, so exp never sees -inf - -inf), rescale.
        alpha, safe = [], []
        for j in range(qv):
            old = self.load(self.vec(self.run_max, j))
            new = v.call("max", [old, self.load(self.vec(self.blk, j))])
            self.store(new, self.vec(self.run_max, j))
            s = b.select(b.fcmp_ordered("==", new, v.const(-math.inf)), v.const(0.0), new)
            safe.append(s)
            alpha.append(v.exp(b.fsub(old, s)))
        sums = self.state(v.vf, qv, "sums")
        for j in range(qv):
            self.store(v.const(0.0), self.vec(sums, j))

        def exps(n: ir.Value) -> None:
            row = b.mul(b.sub(n, n0), _c(qv))
            for j in range(qv):
                at = self.vec(self.sp, b.add(row, _c(j)))
                pv = v.exp(b.fsub(self.load(at), safe[j]))
                self.store(pv, at)
                self.store(b.fadd(self.load(self.vec(sums, j)), pv), self.vec(sums, j))

        self.loop(n0, n1, 1, exps, "exp")
        for j in range(qv):
            at = self.vec(self.run_sum, j)
            self.store(v.fma(self.load(at), alpha[j], self.load(self.vec(sums, j))), at)
        self.tiled(_c(0), _c(p.f), VALUE_TILE[qv], lambda f, t: self.values(n0, n1, f, t, alpha), "pv")

    def scores(self, n0: ir.Value, n: ir.Value, tile: int) -> None:
        """S[n..n+tile][m] = score(sum_e Qp[e][m] K[n, e]); the block max follows."""
        p, b, v = self.p, self.b, self.v
        qv = p.qv
        acc = self.state(v.vf, tile * qv, f"s{tile}")
        for i in range(tile * qv):
            self.store(v.const(0.0), self.vec(acc, i))
        keys = [self.ptr(self.K, b.add(self.kb, b.mul(b.add(n, _c(t)), _c(p.k["n"])))) for t in range(tile)]

        def step(e: ir.Value) -> None:
            qs = [self.load(self.vec(self.qp, b.add(b.mul(e, _c(qv)), _c(j)))) for j in range(qv)]
            for t in range(tile):
                k = self.splat_load(self.ptr(keys[t], b.mul(e, _c(p.k["e"]))))
                for j in range(qv):
                    at = self.vec(acc, t * qv + j)
                    self.store(v.fma(qs[j], k, self.load(at)), at)

        self.loop(_c(0), _c(p.e), 1, step, "e")
        for t in range(tile):
            key = b.add(n, _c(t))
            row = b.mul(b.sub(key, n0), _c(qv))
            for j in range(qv):
                inputs = [self.load(self.vec(acc, t * qv + j))]
                rows = b.add(self.m0, _c(LANES * j))
                for x, base, xb in zip(p.extras, self.X, self.xb):
                    at = b.add(xb, b.add(b.mul(rows, _c(x["m"])), b.mul(key, _c(x["n"]))))
                    ptr = self.ptr(base, at, I8 if x["bool"] else F32)
                    inputs.append(self.splat_load(ptr, x["bool"]) if x["m"] == 0 else self.lanes_of(ptr, x["m"], self.masks[j], x["bool"]))
                s = v.expr(p.score, inputs)
                s = s if s.type == v.vf else b.uitofp(s, v.vf)
                self.store(s, self.vec(self.sp, b.add(row, _c(j))))
                blk = self.vec(self.blk, j)
                self.store(v.call("max", [self.load(blk), s]), blk)

    def values(self, n0: ir.Value, n1: ir.Value, f: ir.Value, tile: int, alpha: list[ir.Value]) -> None:
        """acc[f..f+tile][m] = acc * alpha + sum_n V[n, f] P[n][m] over the block's keys."""
        p, b, v = self.p, self.b, self.v
        qv = p.qv
        acc = self.state(v.vf, tile * qv, f"o{tile}")
        for t in range(tile):
            for j in range(qv):
                src = self.vec(self.acc, b.add(b.mul(b.add(f, _c(t)), _c(qv)), _c(j)))
                self.store(b.fmul(self.load(src), alpha[j]), self.vec(acc, t * qv + j))

        def step(n: ir.Value) -> None:
            row = b.mul(b.sub(n, n0), _c(qv))
            ps = [self.load(self.vec(self.sp, b.add(row, _c(j)))) for j in range(qv)]
            vrow = b.add(self.vb, b.mul(n, _c(p.v["n"])))
            for t in range(tile):
                x = self.splat_load(self.ptr(self.V, b.add(vrow, b.mul(b.add(f, _c(t)), _c(p.v["f"])))))
                for j in range(qv):
                    at = self.vec(acc, t * qv + j)
                    self.store(v.fma(ps[j], x, self.load(at)), at)

        self.loop(n0, n1, 1, step, "n")
        for t in range(tile):
            for j in range(qv):
                dst = self.vec(self.acc, b.add(b.mul(b.add(f, _c(t)), _c(qv)), _c(j)))
                self.store(self.load(self.vec(acc, t * qv + j)), dst)


class _RowBody(_AttentionBody):
    """`name.body(args, unit)` for few queries: one query row, keys in blocks of 16 lanes.

    Per block: 16 scores as dot products along the head dim (E in vectors, a butterfly
    sum each), the score maps and softmax update on the 16 lanes, then O (F in vectors)
    += p[key] V[key] for each key."""

    def hfold(self, op: str, value: ir.Value) -> ir.Value:
        """Every lane = the fold of all lanes."""
        step = LANES // 2
        while step:
            perm = ir.Constant(ir.VectorType(I32, LANES), [i ^ step for i in range(LANES)])
            value = self.v.call(op, [value, self.b.shuffle_vector(value, ir.Constant(self.v.vf, ir.Undefined), perm)])
            step //= 2
        return value

    def emit(self) -> None:
        p, b, v = self.p, self.b, self.v
        argv = self.fn.args[0]
        nargs = int(p.spec["nargs"])
        ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR) for i in range(nargs)]
        self.Q, self.K, self.V = (ptrs[p.spec[w]["input"]] for w in "qkv")
        self.O = ptrs[nargs - 1]
        self.X = [ptrs[x["input"]] for x in p.extras]
        unit = self.fn.args[1]
        bi = b.udiv(unit, _c(p.m))
        self.row = b.urem(unit, _c(p.m))

        def base(which: dict[str, Any]) -> ir.Value:
            return b.load(self.ptr(self.table(which["batch"]), bi, I64), typ=I64)

        self.qb, self.kb, self.vb, self.ob = (base(w) for w in (p.q, p.k, p.v, p.o))
        self.xb = [base(x) for x in p.extras]
        self.ev, self.fv = -(-p.e // LANES), -(-p.f // LANES)
        self.emask = [self.lane_mask(_c(p.e - LANES * c)) for c in range(self.ev)]
        self.fmask = [self.lane_mask(_c(p.f - LANES * c)) for c in range(self.fv)]
        qrow = b.add(self.qb, b.mul(self.row, _c(p.q["m"])))
        self.q = [self.lanes_of(self.ptr(self.Q, b.add(qrow, _c(LANES * c * p.q["e"]))), p.q["e"], self.emask[c]) for c in range(self.ev)]
        self.o_acc = self.state(v.vf, self.fv, "o")
        for c in range(self.fv):
            self.store(v.const(0.0), self.vec(self.o_acc, c))
        self.run_max = self.state(v.vf, 1, "run_max")
        self.run_sum = self.state(v.vf, 1, "run_sum")
        self.store(v.const(-math.inf), self.vec(self.run_max, 0))
        self.store(v.const(0.0), self.vec(self.run_sum, 0))
        self.loop(_c(0), _c(p.n), LANES, self.key_block, "kblock")
        inv = b.fdiv(v.const(1.0), self.hfold("add", self.load(self.vec(self.run_sum, 0))))
        orow = b.add(self.ob, b.mul(self.row, _c(p.o["m"])))
        for c in range(self.fv):
            value = b.fmul(self.load(self.vec(self.o_acc, c)), inv)
            self.scatter(value, self.ptr(self.O, b.add(orow, _c(LANES * c * p.o["f"]))), p.o["f"], self.fmask[c])
        b.ret_void()
        self.allocas.branch(self.start)

    def key_block(self, n0: ir.Value) -> None:
        p, b = self.p, self.b
        count = self.smin(_c(LANES), b.sub(_c(p.n), n0))
        live = self.lane_mask(count)
        last = _c(p.n - 1)
        keys = [self.smin(b.add(n0, _c(t)), last) for t in range(LANES)]  # past the end: the last key, weight 0
        if abs(p.k["n"]) == 1:  # K^T stored (keys contiguous): the keys along the lanes, Q broadcast
            s = self.scores_along_keys(n0, live)
        else:
            s = self.scores_along_head(keys)
        self.softmax_values(n0, keys, live, s)

    def scores_along_keys(self, n0: ir.Value, live: ir.Value) -> ir.Value:
        p, b, v = self.p, self.b, self.v
        acc = self.state(v.vf, 1, "dot")
        self.store(v.const(0.0), self.vec(acc, 0))
        qrow = b.add(self.qb, b.mul(self.row, _c(p.q["m"])))
        krow = b.add(self.kb, b.mul(n0, _c(p.k["n"])))

        def step(e: ir.Value) -> None:
            q = self.splat_load(self.ptr(self.Q, b.add(qrow, b.mul(e, _c(p.q["e"])))))
            k = self.lanes_of(self.ptr(self.K, b.add(krow, b.mul(e, _c(p.k["e"])))), p.k["n"], live)
            self.store(v.fma(q, k, self.load(self.vec(acc, 0))), self.vec(acc, 0))

        self.loop(_c(0), _c(p.e), 1, step, "e")
        return self.load(self.vec(acc, 0))

    def scores_along_head(self, keys: list[ir.Value]) -> ir.Value:
        """16 dot products along the head dim (K rows contiguous, or gathered)."""
        p, b, v = self.p, self.b, self.v
        s = v.const(0.0)
        for t in range(LANES):
            krow = b.add(self.kb, b.mul(keys[t], _c(p.k["n"])))
            dot = None
            for c in range(self.ev):
                k = self.lanes_of(self.ptr(self.K, b.add(krow, _c(LANES * c * p.k["e"]))), p.k["e"], self.emask[c])
                dot = b.fmul(self.q[c], k) if dot is None else v.fma(self.q[c], k, dot)
            s = b.insert_element(s, b.extract_element(self.hfold("add", dot), ir.Constant(I32, 0)), ir.Constant(I32, t))
        return s

    def softmax_values(self, n0: ir.Value, keys: list[ir.Value], live: ir.Value, s: ir.Value) -> None:
        p, b, v = self.p, self.b, self.v
        inputs = [s]
        for x, base, xb in zip(p.extras, self.X, self.xb):
            at = b.add(xb, b.add(b.mul(self.row, _c(x["m"])), b.mul(n0, _c(x["n"]))))
            ptr = self.ptr(base, at, I8 if x["bool"] else F32)
            inputs.append(self.splat_load(ptr, x["bool"]) if x["n"] == 0 else self.lanes_of(ptr, x["n"], live, x["bool"]))
        s = v.expr(p.score, inputs)
        s = s if s.type == v.vf else b.uitofp(s, v.vf)
        s = b.select(live, s, v.const(-math.inf))
        old = self.load(self.vec(self.run_max, 0))
        new = v.call("max", [old, self.hfold("max", s)])
        self.store(new, self.vec(self.run_max, 0))
        safe = b.select(b.fcmp_ordered("==", new, v.const(-math.inf)), v.const(0.0), new)
        alpha = v.exp(b.fsub(old, safe))
        probs = b.select(live, v.exp(b.fsub(s, safe)), v.const(0.0))
        total = self.vec(self.run_sum, 0)
        self.store(v.fma(self.load(total), alpha, probs), total)
        acc = [b.fmul(self.load(self.vec(self.o_acc, c)), alpha) for c in range(self.fv)]
        for t in range(LANES):
            weight = v.splat(b.extract_element(probs, ir.Constant(I32, t)))
            vrow = b.add(self.vb, b.mul(keys[t], _c(p.v["n"])))
            for c in range(self.fv):
                x = self.lanes_of(self.ptr(self.V, b.add(vrow, _c(LANES * c * p.v["f"]))), p.v["f"], self.fmask[c])
                acc[c] = v.fma(weight, x, acc[c])
        for c in range(self.fv):
            self.store(acc[c], self.vec(self.o_acc, c))
