"""parallel-nests: large outlined loop nests whose outer loop is parallel run on the thread pool.

The kernels (GEMM, rows, attention, depthwise) split their work into units on
the pool (ukernels/pool.py), but a plain loop nest (a pad copy before each
convolution, a max pool, an einsum no group kernel takes) ran on one thread.
After `outline-loop-nests` each nest is a noalias function of its own; here a
nest whose split loop carries nothing across iterations gets two more index
arguments (begin, end) for that loop's range, and its call goes to a
`parallel` kernel (ukernels/parallel.py) that runs it through the pool's
`einc_parallel` in units of that range (the same ABI as the kernels' units).

A loop is parallel when it carries no value (no iter_args) and, for every
buffer the nest writes, each access (load or store) of that buffer is affine
in the loop variables with the same coefficient c != 0 of the split variable
and a rest whose range over the inner loops is narrower than |c|: iterations
of the split loop then touch disjoint elements of every written buffer. That
holds for a non-reducing einsum, a pad, gather and concat copies, and the
output loops of a reduction (its reduction loops sit inside, or the store does
not depend on the outer variable and the check fails). Anything but
arith/math/scf ops and memref loads/stores in the nest keeps it serial.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import arith, func, memref, scf
from xdsl.dialects.builtin import (
    FunctionType,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
    UnitAttr,
)
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from einc.backends.llvm.ukernels import SPEC_ATTR
from einc.passes.outline_nests import NOALIAS_ARGS, _outside_values, outline

PARALLEL_WORK = 1 << 15
"""Innermost iterations (32K elements) below which a nest stays on one thread: waking a spinning
worker costs about a microsecond, a sleeping one tens; 32K elements of a copy take ~10 us."""
UNITS_PER_THREAD = 2
"""Units per thread, as the rows kernel: dynamic claiming evens out a worker that starts late."""
ALLOWED = ("arith.", "math.", "scf.")

Affine = tuple[dict[SSAValue, int], int]


def _const(value: SSAValue) -> int | None:
    owner = value.owner
    if isinstance(owner, arith.ConstantOp) and isinstance(owner.value, IntegerAttr):
        return owner.value.value.data
    return None


def _affine(value: SSAValue, ivs: set[SSAValue]) -> Affine | None:
    """`value` as sum(c * iv) + const over the nest's loop variables, or None."""
    if value in ivs:
        return {value: 1}, 0
    if (c := _const(value)) is not None:
        return {}, c
    owner = value.owner
    if isinstance(owner, arith.AddiOp | arith.SubiOp):
        a, b = _affine(owner.lhs, ivs), _affine(owner.rhs, ivs)
        if a is None or b is None:
            return None
        sign = 1 if isinstance(owner, arith.AddiOp) else -1
        coef = dict(a[0])
        for v, k in b[0].items():
            coef[v] = coef.get(v, 0) + sign * k
        return coef, a[1] + sign * b[1]
    if isinstance(owner, arith.MuliOp):
        a, b = _affine(owner.lhs, ivs), _affine(owner.rhs, ivs)
        if a is None or b is None or (a[0] and b[0]):
            return None
        (terms, k), scale = (a, b[1]) if not b[0] else (b, a[1])
        return {v: c * scale for v, c in terms.items()}, k * scale
    return None


def _bounds(loop: scf.ForOp) -> tuple[int, int] | None:
    lb, ub, step = (_const(v) for v in (loop.lb, loop.ub, loop.step))
    return (lb, ub) if lb is not None and ub is not None and step == 1 else None


def _work(op: Operation) -> int:
    """Innermost iterations of the loops in `op` (sibling nests add, nested ones multiply)."""
    inner = sum(_work(o) for region in op.regions for block in region.blocks for o in block.ops) or 1
    if isinstance(op, scf.ForOp):
        b = _bounds(op)
        return inner * (max(0, b[1] - b[0]) if b else 1)
    return inner if op.regions else 0


def _split_loop(nest: scf.ForOp) -> scf.ForOp | None:
    """The first loop of more than one trip, under loops of one trip that hold only it."""
    loop = nest
    while True:
        b = _bounds(loop)
        if b is None or loop.iter_args:
            return None
        if b[1] - b[0] > 1:
            return loop
        body = [o for o in loop.body.block.ops if not isinstance(o, scf.YieldOp | arith.ConstantOp)]
        if len(body) != 1 or not isinstance(body[0], scf.ForOp):
            return None
        loop = body[0]


def is_parallel(nest: scf.ForOp, loop: scf.ForOp) -> bool:
    """No two iterations of `loop` touch one element of a buffer the nest writes (see the module doc)."""
    ops = list(nest.walk())
    if any(not o.name.startswith(ALLOWED) and not isinstance(o, memref.LoadOp | memref.StoreOp) for o in ops):
        return False
    loops = [o for o in ops if isinstance(o, scf.ForOp)]
    if any(o.iter_args for o in ops if isinstance(o, scf.ForOp) and loop.is_ancestor(o)):
        return False  # a value carried in a register across an inner loop is fine, but keep it simple
    ranges: dict[SSAValue, tuple[int, int]] = {}
    for o in loops:
        b = _bounds(o)
        if b is None:
            return False
        ranges[o.body.block.args[0]] = (b[0], b[1] - 1)
    iv = loop.body.block.args[0]
    written = {o.memref for o in ops if isinstance(o, memref.StoreOp)}
    for buf in written:
        coefficient, low, high = None, math.inf, -math.inf
        for o in ops:
            if not isinstance(o, memref.LoadOp | memref.StoreOp) or o.memref is not buf:
                continue
            if len(o.indices) != 1 or (at := _affine(o.indices[0], set(ranges))) is None:
                return False
            terms, const = at
            c = terms.get(iv, 0)
            if c == 0 or coefficient not in (None, c):
                return False
            coefficient = c
            lo = hi = const
            for v, k in terms.items():
                if v is iv:
                    continue
                a, b = ranges[v]
                lo, hi = lo + min(k * a, k * b), hi + max(k * a, k * b)
            low, high = min(low, lo), max(high, hi)
        if coefficient is None or high - low >= abs(coefficient):
            return False
    return True



def _candidate(nest: scf.ForOp) -> scf.ForOp | None:
    """The loop to split `nest` on, if it is large enough and parallel."""
    if _work(nest) < PARALLEL_WORK or (loop := _split_loop(nest)) is None or not is_parallel(nest, loop):
        return None
    return loop


@dataclass(frozen=True)
class ParallelNests(ModulePass):
    """Run outlined nests of at least PARALLEL_WORK iterations with a parallel outer loop on the pool."""

    name: ClassVar[str] = "parallel-nests"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from einc.backends.llvm.ukernels.pool import thread_count

        threads = thread_count()
        if threads < 2:
            return
        # Functions whose arguments all promise noalias kept their nests inline (outline-loop-nests
        # leaves them): outline the nests that will split here, so each has a function to call.
        for fn in [f for f in op.ops if isinstance(f, func.FuncOp) and not f.is_declaration]:
            if not isinstance(fn.attributes.get(NOALIAS_ARGS), UnitAttr) or fn.sym_visibility is not None:
                continue
            for k, nest in enumerate([o for o in fn.body.block.ops if isinstance(o, scf.ForOp) and not o.results]):
                if _candidate(nest) and all(isinstance(v.type, MemRefType) or isinstance(v.owner, arith.ConstantOp) for v in _outside_values(nest)):
                    op.body.block.insert_op_after(outline(fn, nest, f"{fn.sym_name.data}_pnest{k}"), fn)
        fns = {f.sym_name.data: f for f in op.ops if isinstance(f, func.FuncOp)}
        calls = [c for f in fns.values() if not f.is_declaration for c in f.walk() if isinstance(c, func.CallOp)]
        for call in calls:
            fn = fns.get(call.callee.string_value())
            if fn is None or fn.is_declaration or NOALIAS_ARGS not in fn.attributes:
                continue
            nest = next((o for o in fn.body.block.ops if isinstance(o, scf.ForOp | scf.IfOp)), None)
            if not isinstance(nest, scf.ForOp) or not all(isinstance(a.type, MemRefType) for a in fn.args):
                continue
            if (loop := _candidate(nest)) is None:
                continue
            lb, ub = _bounds(loop)  # type: ignore[misc]
            units = min(ub - lb, threads * UNITS_PER_THREAD)
            chunk = -(-(ub - lb) // units)
            count = len(fn.body.block.args)
            begin, end = fn.body.block.insert_arg(IndexType(), count), fn.body.block.insert_arg(IndexType(), count + 1)
            begin.name_hint, end.name_hint = "begin", "end"
            loop.operands[0], loop.operands[1] = begin, end
            fn.function_type = FunctionType.from_lists([a.type for a in fn.body.block.args], [])
            name = f"einc_par_{fn.sym_name.data}"
            spec = {"kind": "parallel", "name": name, "callee": fn.sym_name.data, "nargs": len(call.arguments),
                    "lb": lb, "ub": ub, "chunk": chunk, "units": -(-(ub - lb) // chunk)}
            decl = func.FuncOp.external(name, [a.type for a in call.arguments], [])
            decl.attributes[SPEC_ATTR] = StringAttr(json.dumps(spec, sort_keys=True))
            op.body.block.insert_op_before(decl, fn)
            call.callee = SymbolRefAttr(name)
