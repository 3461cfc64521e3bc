"""Per-region cost of running work on all cores from compiled code: fork/join vs the pool.

    .venv/bin/python benchmarks/threads.py

Both variants are LLVM IR compiled like a model's code. `fork/join` creates
n - 1 pthreads for a region and joins them (what a per-op parallel loop
would do); `pool` is einc_parallel (ukernels/pool.py): workers made once,
units claimed from a ticket. The body does no work, so the times are the
overhead a parallel region adds to a layer.
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import time
from pathlib import Path

import llvmlite.binding as llvm
import llvmlite.ir as ir

sys.path.insert(0, str(Path(__file__).parent.parent))

from einc.backends.llvm.translate import compile_to_object  # noqa: E402
from einc.backends.llvm.ukernels.pool import BODY, add_pool, thread_count  # noqa: E402
from einc.runtime.jit import load_object  # noqa: E402

I64, PTR = ir.IntType(64), ir.PointerType()


def module(threads: int) -> ir.Module:
    m = ir.Module()
    m.triple = llvm.get_process_triple()
    body = ir.Function(m, BODY, "body")
    b = ir.IRBuilder(body.append_basic_block())
    b.ret_void()
    pool = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR]), "pool")
    b = ir.IRBuilder(pool.append_basic_block())
    b.call(add_pool(m), [body, pool.args[0], ir.Constant(I64, threads)])
    b.ret_void()
    # fork/join: pthread_create(start) for threads - 1 workers, run share 0, join them all.
    create = m.get_global("pthread_create")
    join = m.get_global("pthread_join")
    start = ir.Function(m, ir.FunctionType(PTR, [PTR]), "start")
    b = ir.IRBuilder(start.append_basic_block())
    b.ret(ir.Constant(PTR, None))
    fork = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR]), "fork")
    b = ir.IRBuilder(fork.append_basic_block())
    slots = []
    for _ in range(threads - 1):
        slot = b.alloca(I64)
        slot.type = PTR  # llvmlite types allocas as typed pointers; the calls take `ptr`
        slots.append(slot)
    for slot in slots:
        b.call(create, [slot, ir.Constant(PTR, None), start, ir.Constant(PTR, None)])
    for slot in slots:
        b.call(join, [b.load(slot, typ=I64), ir.Constant(PTR, None)])
    b.ret_void()
    return m


def main() -> int:
    threads = max(2, thread_count())
    code = load_object(compile_to_object(module(threads)))
    arg = ctypes.c_int64()
    for name in ("fork", "pool"):
        fn = code.function(name, None, ctypes.c_void_p)
        for _ in range(100):
            fn(ctypes.addressof(arg))
        times = []
        for _ in range(2000):
            t = time.perf_counter()
            fn(ctypes.addressof(arg))
            times.append(time.perf_counter() - t)
        print(f"{name:5s} ({threads} threads): median {statistics.median(times) * 1e6:7.2f} us per region")
    code.function("einc_release", None)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
