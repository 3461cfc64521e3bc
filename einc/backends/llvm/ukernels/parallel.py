"""`parallel` kernels: an outlined loop nest (parallel-nests) run in units of its outer loop on the pool.

`name(args...)` packs the nest's buffer pointers and calls
`einc_parallel(name.body, args, units)`; `name.body(args, unit)` calls the
nest `callee(args..., begin, end)` with the unit's share [lb + unit * chunk,
min(lb + (unit + 1) * chunk, ub)) of the split loop. The nest is private with
one call, so LLVM inlines it into the body, noalias arguments and all.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir

from einc.backends.llvm.ukernels.pool import define_entry

_I64, _PTR = ir.IntType(64), ir.PointerType()


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


class ParallelPlan:
    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def pack(self, which: str, data: Any) -> Any:
        raise ValueError("a parallel nest reads its operands in place")

    def emit(self, module: ir.Module) -> None:
        s = self.spec
        n = int(s["nargs"])
        body = define_entry(module, s["name"], n, int(s["units"]), True)
        callee = module.get_global(s["callee"])
        b = ir.IRBuilder(body.append_basic_block("entry"))
        args, unit = body.args
        ptrs = [b.load(b.gep(args, [_c(i)], source_etype=_PTR), typ=_PTR) for i in range(n)]
        begin = b.add(_c(int(s["lb"])), b.mul(unit, _c(int(s["chunk"]))))
        end = b.add(begin, _c(int(s["chunk"])))
        end = b.select(b.icmp_signed("<", end, _c(int(s["ub"]))), end, _c(int(s["ub"])))
        b.call(callee, [*ptrs, begin, end])
        b.ret_void()
