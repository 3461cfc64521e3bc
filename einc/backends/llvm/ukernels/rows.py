"""Rows groups (softmax, LayerNorm, any reduction with its row-wise maps) as one CPU kernel.

`fuse` makes an `ein.group "rows"`: einsums over rows P and reduced dims R
(einc.passes.fuse.RowSpace). `RowsCall` (the handler `lower-ein-to-loops`
finds in GROUP_KERNELS) turns it into a spec: every operand access as a row
offset (affine in the row number, or a table) plus a column pattern along R
(contiguous, or the same element for the whole row), and the einsums as steps
with the pass each runs in. `RowsPlan` emits the kernel: one loop over rows,
and for each row the cascade's passes over R in 16-lane vectors (the last
chunk masked), in program order:

    for p in rows of this unit:
        per-row values that need no pass (loads of P-only inputs, their maps)
        for pass in 1..K:
            for c in R step 16:   every full einsum and reduction of this pass:
                                  full values in registers, stored only if a
                                  later pass or the caller reads them;
                                  reductions fold into vector accumulators
            accumulators -> one value (a butterfly of shuffles), then the per-row
            maps that become ready (LayerNorm's 1/sqrt(var + eps))

A row is read from memory once; the later passes find it in L1 (a kept full
value that is not a result lives in a scratch row on the stack). Rows are
split into units claimed by the pool's threads (pool.py) when there are
enough elements to pay for waking them (PARALLEL_ELEMENTS).

Groups whose accesses are not contiguous along R (a softmax over a middle
axis) are declined: `lower-ein-to-loops` then lowers their einsums as loops.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir
from xdsl.ir import SSAValue

from einc.backends.llvm.ukernels.declare import call_kernel
from einc.backends.llvm.ukernels.pool import define_entry
from einc.backends.llvm.ukernels.vector import F32, I32, VectorEmitter
from einc.ir import mapexpr
from einc.ir.ein import REDUCTIONS, ConstantOp, EinsumOp, GroupOp, ReshapeOp
from einc.ir.indexexpr import IndexExpr, flat_offset

if TYPE_CHECKING:
    from einc.passes.fuse import RowSpace
    from einc.passes.lower_ein_to_loops import _Emitter, _FunctionLowering

I64 = ir.IntType(64)
PTR = ir.PointerType()
LANES = 16
UNROLL = 2
"""Vector chunks per iteration of a pass (independent accumulators hide the add latency)."""
PARALLEL_ELEMENTS = 1 << 17
"""Fewer elements than this (rows x row length) run on the calling thread. A row costs a few
cycles per 16 elements and pass, so below this a kernel takes tens of microseconds, which a
worker that is not on a core (a loaded host) can stall far longer: the encoder block's softmax
(65K) and LayerNorms (32K) ran faster serial at load 7 (median 1.50 against 1.65 ms)."""
UNITS_PER_THREAD = 2
SCRATCH_BYTES = 1 << 18
"""Most stack bytes for kept rows; a group needing more is lowered as loops."""
MAX_TABLE = 1 << 16
"""Most rows whose offsets may come from a table (offsets not affine in the row number)."""


def _space(group: GroupOp) -> tuple[list[EinsumOp], RowSpace] | None:
    from einc.passes.fuse import (
        RowSpace,  # fuse imports this package (EPILOGUE_FUNCTIONS)
    )

    ops = [op for op in group.body.block.ops if op.name != "ein.yield"]
    if not ops or not all(isinstance(op, EinsumOp) for op in ops):
        return None
    space = RowSpace.seed(ops[0])
    if space is None:
        return None
    for op in ops[1:]:
        if space.join(op) is not None:
            return None
    return ops, space  # type: ignore[return-value]


def _grid(extents: list[int]) -> list[np.ndarray]:
    if not extents:
        return []
    return [g.reshape(-1) for g in np.meshgrid(*[np.arange(n, dtype=np.int64) for n in extents], indexing="ij")]


def _access(space: RowSpace, names: dict[str, str], exprs: list, shape: tuple[int, ...], arg: int) -> dict[str, Any] | None:
    """Row offsets and the column pattern of `X[exprs]` (None: not contiguous along R)."""
    coef, const = flat_offset(exprs, shape, names)
    pg, rg = _grid([space.extents[d] for d in space.p]), _grid([space.extents[d] for d in space.r])
    rows = sum((coef.get(d, 0) * g for d, g in zip(space.p, pg)), np.zeros(max(1, len(pg[0]) if pg else 1), np.int64)) + const
    cols = sum((coef.get(d, 0) * g for d, g in zip(space.r, rg)), np.zeros(len(rg[0]), np.int64))
    if np.all(cols == 0):
        pattern = "zero"
    elif np.array_equal(cols, np.arange(len(cols))):
        pattern = "contiguous"
    else:
        return None
    step = int(rows[1] - rows[0]) if len(rows) > 1 else 0
    if np.array_equal(rows, rows[0] + step * np.arange(len(rows))):
        row: dict[str, Any] = {"stride": step, "const": int(rows[0])}
    elif len(rows) <= MAX_TABLE:
        row = {"table": [int(x) for x in rows]}
    else:
        return None
    return {"arg": arg, "row": row, "col": pattern}


def _scalar_constant(value: SSAValue) -> float | None:
    """The value of a one-element f32 `ein.constant` (a scale, an exponent), else None."""
    owner = value.owner
    while isinstance(owner, ReshapeOp):
        owner = owner.source.owner
    if not isinstance(owner, ConstantOp) or math.prod(value.type.get_shape()) != 1:  # type: ignore[attr-defined]
        return None
    data = owner.value.get_values()
    return float(data[0]) if len(data) == 1 and math.isfinite(float(data[0])) else None


def plan_spec(group: GroupOp) -> dict[str, Any] | None:
    """The kernel spec of a rows group, or None if the rows kernel does not fit it."""
    found = _space(group)
    if found is None:
        return None
    ops, space = found
    if 0 in space.extents.values():
        return None  # an empty tensor: the loops do nothing, no kernel needed
    args = list(group.body.block.args)
    yielded = list(group.yielded)
    index = {op.output: n for n, op in enumerate(ops)}
    accesses: list[dict[str, Any]] = []

    def access(value: SSAValue, exprs: list, shape: tuple[int, ...], arg: int, names: dict[str, str]) -> int | None:
        acc = _access(space, names, exprs, shape, arg)
        if acc is None:
            return None
        if acc not in accesses:
            accesses.append(acc)
        return accesses.index(acc)

    steps: list[dict[str, Any]] = []
    for op in ops:
        refs: list[list[Any]] = []
        subst: list[mapexpr.Expr] = []
        for value, exprs in zip(op.inputs, op.input_exprs):
            known = _scalar_constant(group.inputs[args.index(value)]) if value in args else None
            if known is not None:  # a literal in the map: pow($0, 3.0) becomes multiplications
                subst.append(mapexpr.Const(known))
                continue
            subst.append(mapexpr.Input(len(refs)))
            if value in index:
                refs.append(["v", index[value]])
                continue
            at = access(value, exprs, tuple(value.type.get_shape()), args.index(value), space.names[op])  # type: ignore[attr-defined]
            if at is None:
                return None
            refs.append(["a", at])
        full = space.full(op.output)
        stream = full or op.reduce_op is not None
        steps.append({
            "map": mapexpr.render(mapexpr.substitute(op.map_expr, subst)), "args": refs, "reduce": op.reduce_op, "full": full,
            "pass": space.passes[op] if stream else space.ready[op.output], "store": [],
        })
    for n, value in enumerate(yielded):
        op = ops[index[value]]
        names = {d: d for d in space.p + space.r}
        at = access(value, [IndexExpr.var(d) for d in space.dims[value]], tuple(value.type.get_shape()), len(args) + n, names)  # type: ignore[attr-defined]
        if at is None:
            return None
        steps[index[value]]["store"].append(at)
    for n, step in enumerate(steps):  # a full value read by a later pass is kept (in its output, or a scratch row)
        later = any(["v", n] in s["args"] and s["pass"] > step["pass"] for s in steps if s["full"] or s["reduce"])
        step["keep"] = bool(step["full"] and later)
    cols = math.prod(space.extents[d] for d in space.r)
    if cols < LANES and not any(s["reduce"] for s in steps):
        return None  # maps over short rows: one loop over the whole tensor vectorises better
    scratch = sum(1 for s in steps if s["keep"] and not any(accesses[a]["col"] == "contiguous" for a in s["store"]))
    if scratch * (cols + LANES) * 4 > SCRATCH_BYTES:
        return None
    return {
        "kind": "rows",
        "rows": math.prod(space.extents[d] for d in space.p),
        "cols": cols,
        "passes": space.pass_count,
        "nargs": len(args) + len(yielded),
        "accesses": accesses,
        "steps": steps,
    }


class RowsCall:
    """The handler of "rows" groups (see GROUP_KERNELS in lower_ein_to_loops)."""

    @staticmethod
    def accepts(group: GroupOp) -> bool:
        return plan_spec(group) is not None

    @staticmethod
    def lower(lowering: _FunctionLowering, e: _Emitter, group: GroupOp) -> None:
        spec = plan_spec(group)
        assert spec is not None
        from einc.backends.llvm.ukernels.pool import thread_count

        spec["threads"] = thread_count()
        args = [lowering.buffers[v].ref for v in [*group.inputs, *group.outputs]]
        call_kernel(lowering, e, spec, args, "einc_rows")


# -- the kernel -------------------------------------------------------------------------------


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


class RowsPlan:
    """A rows kernel from its spec: `emit(module)` defines it."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.name: str = spec["name"]
        self.rows, self.cols = int(spec["rows"]), int(spec["cols"])
        self.steps: list[dict[str, Any]] = spec["steps"]
        self.accesses: list[dict[str, Any]] = spec["accesses"]
        self.passes = int(spec["passes"])
        threads = int(spec.get("threads", 1))
        parallel = threads > 1 and self.rows > 1 and self.rows * self.cols >= PARALLEL_ELEMENTS
        self.units = min(self.rows, threads * UNITS_PER_THREAD) if parallel else 1
        self.chunk = -(-self.rows // self.units)
        self.units = -(-self.rows // self.chunk)

    def emit(self, module: ir.Module) -> None:
        body = define_entry(module, self.name, int(self.spec["nargs"]), self.units, True)
        _RowsBody(self, body, module).emit()


class _RowsBody:
    """`name.body(args, unit)`: the rows [unit * chunk, min((unit + 1) * chunk, rows))."""

    def __init__(self, plan: RowsPlan, fn: ir.Function, module: ir.Module):
        self.p = plan
        self.fn = fn
        self.module = module
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.v = VectorEmitter(self.b, LANES)

    # -- helpers -------------------------------------------------------------------------------

    def fptr(self, base: ir.Value, index: ir.Value) -> ir.Value:
        return self.b.gep(base, [index], inbounds=True, source_etype=F32)

    def intrinsic(self, name: str, args: list[ir.Value], ret: ir.Type) -> ir.Value:
        try:
            fn = self.module.get_global(name)
        except KeyError:
            fn = ir.Function(self.module, ir.FunctionType(ret, [a.type for a in args]), name)
        return self.b.call(fn, args)

    def vload(self, ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
        if mask is None:
            return self.b.load(ptr, typ=self.v.vf, align=4)
        return self.intrinsic(f"llvm.masked.load.v{LANES}f32.p0", [ptr, ir.Constant(I32, 4), mask, self.v.const(0.0)], self.v.vf)

    def vstore(self, value: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        if mask is None:
            self.b.store(value, ptr, align=4)
        else:
            self.intrinsic(f"llvm.masked.store.v{LANES}f32.p0", [value, ptr, ir.Constant(I32, 4), mask], ir.VoidType())

    def fold(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.v.call(op, [a, b])

    def horizontal(self, op: str, value: ir.Value) -> ir.Value:
        """All lanes = the fold of all lanes (a butterfly: log2(16) shuffles)."""
        s = LANES // 2
        while s:
            perm = ir.Constant(ir.VectorType(I32, LANES), [i ^ s for i in range(LANES)])
            value = self.fold(op, value, self.b.shuffle_vector(value, ir.Constant(self.v.vf, ir.Undefined), perm))
            s //= 2
        return value

    def as_float(self, value: ir.Value) -> ir.Value:
        return value if value.type == self.v.vf else self.b.uitofp(value, self.v.vf)

    # -- the body ------------------------------------------------------------------------------

    def emit(self) -> None:
        p, b = self.p, self.b
        argv = self.fn.args[0]
        self.ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR) for i in range(int(p.spec["nargs"]))]
        self.tables: dict[int, ir.Value] = {}
        for n, acc in enumerate(p.accesses):
            if "table" in acc["row"]:
                values = acc["row"]["table"]
                arr = ir.ArrayType(I64, len(values))
                g = ir.GlobalVariable(self.module, arr, f"{p.name}.rows{n}")
                g.global_constant, g.linkage = True, "internal"
                g.initializer = ir.Constant(arr, values)
                g.type = PTR
                self.tables[n] = g
        # Scratch rows for kept full values that are no contiguous result.
        self.storage: dict[int, tuple[ir.Value, int | None]] = {}
        padded = -(-p.cols // LANES) * LANES
        for n, step in enumerate(p.steps):
            if not step["keep"]:
                continue
            out = next((a for a in step["store"] if p.accesses[a]["col"] == "contiguous"), None)
            if out is None:
                buf = b.alloca(ir.ArrayType(F32, padded), name=f"scratch{n}")
                buf.align = 64
                buf.type = PTR
                self.storage[n] = (buf, None)
            else:
                self.storage[n] = (self.ptrs[p.accesses[out]["arg"]], out)
        unit = self.fn.args[1]
        lo = b.mul(unit, _c(p.chunk))
        hi = b.add(lo, _c(p.chunk))
        hi = b.select(b.icmp_signed("<", hi, _c(p.rows)), hi, _c(p.rows))
        self.loop(lo, hi, self.row)
        b.ret_void()

    def loop(self, start: ir.Value, stop: ir.Value, body) -> None:
        b = self.b
        pre = b.block
        head, loop, done = (self.fn.append_basic_block(x) for x in ("row.head", "row.body", "row.done"))
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name="row")
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), loop, done)
        b.position_at_end(loop)
        body(i)
        i.add_incoming(b.add(i, _c(1)), b.block)
        b.branch(head)
        b.position_at_end(done)

    def row(self, r: ir.Value) -> None:
        p, b = self.p, self.b
        self.base: list[ir.Value] = []
        for n, acc in enumerate(p.accesses):
            row = acc["row"]
            if n in self.tables:
                off = b.load(b.gep(self.tables[n], [r], inbounds=True, source_etype=I64), typ=I64)
            else:
                off = b.add(b.mul(r, _c(row["stride"])), _c(row["const"]))
            self.base.append(off)
        self.scalars: dict[tuple[str, int], ir.Value] = {}  # per-row values, splat across lanes
        self.after(0)
        for k in range(1, p.passes + 1):
            self.sweep(k)
            self.after(k)

    def scalar(self, ref: list[Any]) -> ir.Value:
        key = (ref[0], int(ref[1]))
        if key not in self.scalars:
            acc = self.p.accesses[key[1]]
            assert ref[0] == "a" and acc["col"] == "zero"
            self.scalars[key] = self.v.splat(self.b.load(self.fptr(self.ptrs[acc["arg"]], self.base[key[1]]), typ=F32))
        return self.scalars[key]

    def store_row_value(self, n: int, value: ir.Value) -> None:
        """A per-row value's results: lane 0 at each of its accesses."""
        for a in self.p.steps[n]["store"]:
            lane = self.b.extract_element(value, ir.Constant(I32, 0))
            self.b.store(lane, self.fptr(self.ptrs[self.p.accesses[a]["arg"]], self.base[a]))

    def after(self, k: int) -> None:
        """Per-row maps whose inputs are ready once pass k has finished."""
        for n, step in enumerate(self.p.steps):
            if step["full"] or step["reduce"] or step["pass"] != k:
                continue
            inputs = [self.scalar(ref) if ref[0] == "a" else self.scalars[("v", int(ref[1]))] for ref in step["args"]]
            value = self.as_float(self.v.expr(mapexpr.parse(step["map"]), inputs))
            self.scalars[("v", n)] = value
            self.store_row_value(n, value)

    def sweep(self, k: int) -> None:
        """Pass k over the row: its full einsums and reductions, chunk by chunk."""
        p, b, v = self.p, self.b, self.v
        mine = [n for n, s in enumerate(p.steps) if (s["full"] or s["reduce"]) and s["pass"] == k]
        reductions = [n for n in mine if p.steps[n]["reduce"]]
        for n in mine:  # hoist P-only loads out of the chunk loop
            for ref in p.steps[n]["args"]:
                if ref[0] == "a" and p.accesses[ref[1]]["col"] == "zero":
                    self.scalar(ref)
        maps = {n: mapexpr.parse(p.steps[n]["map"]) for n in mine}
        identity = {n: v.const(REDUCTIONS[p.steps[n]["reduce"]]) for n in reductions}

        def chunk(c: ir.Value, mask: ir.Value | None, accs: dict[int, ir.Value]) -> dict[int, ir.Value]:
            current: dict[int, ir.Value] = {}
            loads: dict[int, ir.Value] = {}
            out = dict(accs)
            for n in mine:
                step = p.steps[n]
                inputs = []
                for ref in step["args"]:
                    kind, j = ref[0], int(ref[1])
                    if kind == "a":
                        acc = p.accesses[j]
                        if acc["col"] == "zero":
                            inputs.append(self.scalar(ref))
                        else:
                            if j not in loads:
                                loads[j] = self.vload(self.fptr(self.ptrs[acc["arg"]], b.add(self.base[j], c)), mask)
                            inputs.append(loads[j])
                    elif j in current:
                        inputs.append(current[j])
                    elif p.steps[j]["full"]:  # kept by an earlier pass
                        buf, at = self.storage[j]
                        start = b.add(self.base[at], c) if at is not None else c
                        inputs.append(self.vload(self.fptr(buf, start), mask))
                    else:
                        inputs.append(self.scalars[("v", j)])
                value = self.as_float(v.expr(maps[n], inputs))
                if step["reduce"]:
                    if mask is not None:
                        value = b.select(mask, value, identity[n])
                    out[n] = self.fold(step["reduce"], out[n], value)
                    continue
                current[n] = value
                for a in step["store"]:
                    self.vstore(value, self.fptr(self.ptrs[p.accesses[a]["arg"]], b.add(self.base[a], c)), mask)
                if step["keep"] and self.storage[n][1] is None:
                    self.vstore(value, self.fptr(self.storage[n][0], c), mask)
            return out

        # Accumulators: UNROLL independent sets through the main loop, then one.
        sets = [{n: identity[n] for n in reductions} for _ in range(UNROLL)]
        full_chunks, tail = divmod(p.cols, LANES)
        iterations = full_chunks // UNROLL
        if iterations > 1:
            pre = b.block
            head, body, done = (self.fn.append_basic_block(x) for x in (f"pass{k}.head", f"pass{k}.body", f"pass{k}.done"))
            b.branch(head)
            b.position_at_end(head)
            i = b.phi(I64, name=f"c{k}")
            i.add_incoming(_c(0), pre)
            phis = [{n: b.phi(v.vf) for n in reductions} for _ in range(UNROLL)]
            for s, ph in zip(sets, phis):
                for n in reductions:
                    ph[n].add_incoming(s[n], pre)
            b.cbranch(b.icmp_signed("<", i, _c(iterations * UNROLL * LANES)), body, done)
            b.position_at_end(body)
            new = [chunk(b.add(i, _c(u * LANES)), None, phis[u]) for u in range(UNROLL)]
            for ph, s in zip(phis, new):
                for n in reductions:
                    ph[n].add_incoming(s[n], b.block)
            i.add_incoming(b.add(i, _c(UNROLL * LANES)), b.block)
            b.branch(head)
            b.position_at_end(done)
            sets = [dict(ph) for ph in phis]
            done_chunks = iterations * UNROLL
        else:
            done_chunks = 0
        for q in range(done_chunks, full_chunks):
            u = q % UNROLL
            sets[u] = chunk(_c(q * LANES), None, sets[u])
        if tail:
            lanes = ir.Constant(ir.VectorType(ir.IntType(1), LANES), [1 if i < tail else 0 for i in range(LANES)])
            sets[0] = chunk(_c(full_chunks * LANES), lanes, sets[0])
        for n in reductions:
            op = p.steps[n]["reduce"]
            total = sets[0][n]
            for s in sets[1:]:
                total = self.fold(op, total, s[n])
            value = self.horizontal(op, total)
            self.scalars[("v", n)] = value
            self.store_row_value(n, value)
