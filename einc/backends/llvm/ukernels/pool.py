"""The thread pool inside a model's code: `einc_parallel` and `einc_release`.

`add_pool(module)` defines, in the model's own LLVM module, a pool that its
kernels call as `einc_parallel(body, args, units)`: the caller and the pool's
workers claim units one at a time from a shared ticket and run
`body(args, unit)`; the call returns when every unit is done. The runtime calls
`einc_release()` before it unloads the code, which stops and joins the
workers, so no thread is ever left running code that is gone. Everything is
libc (pthread_create/join, a futex through syscall, sched_yield): it works the
same whether the object is linked by MCJIT or as a shared library.

Choices, measured on the 2-core Zen 5 host (`benchmarks/threads.py`):

- Threads are created once, on the first parallel call, not per region:
  pthread_create + join costs tens of microseconds, the budget of a whole
  small layer. A spinning worker starts a region in under a microsecond.
- Units are claimed dynamically, not split statically per thread: on a
  loaded machine a worker may not get a core for milliseconds, and the caller
  then runs the units itself instead of waiting for it.
- The caller claims from the front of the range and the workers from its
  back, so with two threads each runs one contiguous half: kernels number
  their units along the output, and the next layer then reads mostly what its
  own core wrote (claims in turn interleave the halves and a core packs data
  from the other core's cache: 3x3 64->64 at 56x56 0.69 -> 0.56 ms, 7x7/2 stem
  0.78 -> 0.62 ms, 2 threads).
- Workers spin on a generation counter for a while (layers of one inference
  follow each other within microseconds), then sleep on a futex, so an idle
  process leaves the cores to others. The ticket holds the generation with
  the range left, so a late worker can never claim a unit of a finished region.
- A caller that finds the pool busy (another thread's inference, or a forked
  child whose workers do not exist) runs its units alone.
"""

from __future__ import annotations

import os

import llvmlite.ir as ir

SPIN = int(os.environ.get("EINC_POOL_SPIN", "20000"))
"""Pause iterations a worker spins before it sleeps (a few hundred microseconds)."""
MAX_THREADS = 64
PAUSE = os.environ.get("EINC_POOL_PAUSE", "1") == "1"

_I32, _I64, _PTR = ir.IntType(32), ir.IntType(64), ir.PointerType()
BODY = ir.FunctionType(ir.VoidType(), [_PTR, _I64])
PARALLEL = ir.FunctionType(ir.VoidType(), [_PTR, _PTR, _I64])
_UNIT_BITS = 22
_UNIT_MASK = (1 << _UNIT_BITS) - 1
_GEN_MASK = (1 << (64 - 2 * _UNIT_BITS)) - 1
"""The ticket: generation (20 bits) | next unit from the front (22) | end of the units left (22)."""
_SYS_FUTEX, _FUTEX_WAIT, _FUTEX_WAKE = 202, 128, 129  # x86-64 Linux, private futexes


def thread_count() -> int:
    """Threads the pool will run (EINC_NUM_THREADS, else this process's cores): kernels plan their split for it."""
    env = os.environ.get("EINC_NUM_THREADS")
    return max(1, min(MAX_THREADS, int(env))) if env else len(os.sched_getaffinity(0))


def _c32(v: int) -> ir.Constant:
    return ir.Constant(_I32, v)


def _c64(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _global(m: ir.Module, name: str, ty: ir.Type) -> ir.GlobalVariable:
    g = ir.GlobalVariable(m, ty, f"einc.pool.{name}")
    g.initializer = ir.Constant(ty, None)
    g.linkage = "internal"
    g.align = 64  # own cache lines: workers poll `gen`, the caller polls `done`
    return g


def _load(b: ir.IRBuilder, ptr: ir.Value, ty: ir.Type = _I32) -> ir.Value:
    return b.load_atomic(ptr, "seq_cst", 4 if ty == _I32 else 8, typ=ty)


def _callee(fn: ir.Value) -> ir.Value:
    """A job pointer that llvmlite can call (opaque pointers carry no function type)."""
    fn.__class__ = type(f"Body{type(fn).__name__}", (type(fn),), {"function_type": property(lambda _: BODY)})
    return fn


def _declare(m: ir.Module, name: str, ty: ir.FunctionType) -> ir.Function:
    try:
        return m.get_global(name)  # type: ignore[return-value]
    except KeyError:
        return ir.Function(m, ty, name)


def add_pool(m: ir.Module) -> ir.Function:
    """Define `einc_parallel` (internal) and `einc_release` (exported) in `m`."""
    try:
        existing = m.get_global("einc_parallel")
        if existing.blocks:  # type: ignore[attr-defined]
            return existing  # type: ignore[return-value]
    except KeyError:
        existing = None
    gen, sleepers, busy, stop = (_global(m, n, _I32) for n in ("gen", "sleepers", "busy", "stop"))
    ticket, done, units, started = (_global(m, n, _I64) for n in ("ticket", "done", "units", "started"))
    job_fn, job_arg = _global(m, "fn", _PTR), _global(m, "arg", _PTR)
    handles = _global(m, "handles", ir.ArrayType(_I64, MAX_THREADS))
    syscall = _declare(m, "syscall", ir.FunctionType(_I64, [_I64], var_arg=True))
    yield_ = _declare(m, "sched_yield", ir.FunctionType(_I32, []))
    nprocs = _declare(m, "get_nprocs", ir.FunctionType(_I32, []))
    getenv = _declare(m, "getenv", ir.FunctionType(_PTR, [_PTR]))
    atoi = _declare(m, "atoi", ir.FunctionType(_I32, [_PTR]))
    pause = _declare(m, "llvm.x86.sse2.pause", ir.FunctionType(ir.VoidType(), []))
    create = _declare(m, "pthread_create", ir.FunctionType(_I32, [_PTR, _PTR, _PTR, _PTR]))
    join = _declare(m, "pthread_join", ir.FunctionType(_I32, [_I64, _PTR]))

    def futex(b: ir.IRBuilder, op: int, value: ir.Value) -> None:
        b.call(syscall, [_c64(_SYS_FUTEX), gen, _c32(op), value, ir.Constant(_PTR, None)])

    # claim(g, back): run units of generation g while the ticket has some left, from the front of
    # the range (the caller) or from its back (the workers).
    claim = ir.Function(m, ir.FunctionType(ir.VoidType(), [_I32, ir.IntType(1)]), "einc.pool.claim")
    claim.linkage = "internal"
    entry, loop, swap, run, out = (claim.append_basic_block(n) for n in ("entry", "loop", "swap", "run", "out"))
    b = ir.IRBuilder(entry)
    fn, arg = b.load(job_fn, typ=_PTR), b.load(job_arg, typ=_PTR)
    g = b.zext(b.and_(claim.args[0], _c32(_GEN_MASK)), _I64)
    from_back = claim.args[1]
    b.branch(loop)
    b.position_at_end(loop)
    t = _load(b, ticket, _I64)
    front = b.and_(b.lshr(t, _c64(_UNIT_BITS)), _c64(_UNIT_MASK))
    back = b.and_(t, _c64(_UNIT_MASK))
    mine = b.and_(b.icmp_unsigned("==", b.lshr(t, _c64(2 * _UNIT_BITS)), g), b.icmp_unsigned("<", front, back))
    b.cbranch(mine, swap, out)
    b.position_at_end(swap)
    unit = b.select(from_back, b.sub(back, _c64(1)), front)
    claimed = b.select(from_back, b.sub(t, _c64(1)), b.add(t, _c64(1 << _UNIT_BITS)))
    pair = b.cmpxchg(ticket, t, claimed, "seq_cst", "seq_cst")
    b.cbranch(b.extract_value(pair, 1), run, loop)
    b.position_at_end(run)
    b.call(_callee(fn), [arg, unit])
    b.atomic_rmw("add", done, _c64(1), "seq_cst")
    b.branch(loop)
    b.position_at_end(out)
    b.ret_void()

    # worker: spin on `gen`, then sleep on it; claim units of each new generation.
    worker = ir.Function(m, ir.FunctionType(_PTR, [_PTR]), "einc.pool.worker")
    worker.linkage = "internal"
    entry, wait, spin, check, sleep, sleep_now, woke, work, run_units, leave = (
        worker.append_basic_block(x)
        for x in ("entry", "wait", "spin", "check", "sleep", "futex", "woke", "work", "claim", "leave")
    )
    b = ir.IRBuilder(entry)
    seen0 = _load(b, gen)
    b.branch(wait)
    b.position_at_end(wait)
    seen = b.phi(_I32)
    seen.add_incoming(seen0, entry)
    b.branch(spin)
    b.position_at_end(spin)
    count = b.phi(_I64)
    count.add_incoming(_c64(0), wait)
    count.add_incoming(_c64(0), woke)
    now = _load(b, gen)
    # A worker that started after `einc_release` bumped `gen` would wait for a
    # generation that never comes: `stop` is checked while waiting too.
    changed = b.or_(b.icmp_unsigned("!=", now, seen), b.icmp_unsigned("!=", _load(b, stop), _c32(0)))
    b.cbranch(changed, work, check)
    b.position_at_end(check)
    if PAUSE:
        b.call(pause, [])
    more = b.add(count, _c64(1))
    count.add_incoming(more, check)
    b.cbranch(b.icmp_unsigned("<", more, _c64(SPIN)), spin, sleep)
    b.position_at_end(sleep)
    b.atomic_rmw("add", sleepers, _c32(1), "seq_cst")
    idle = b.and_(b.icmp_unsigned("==", _load(b, gen), seen), b.icmp_unsigned("==", _load(b, stop), _c32(0)))
    b.cbranch(idle, sleep_now, woke)
    b.position_at_end(sleep_now)
    futex(b, _FUTEX_WAIT, seen)
    b.branch(woke)
    b.position_at_end(woke)
    b.atomic_rmw("sub", sleepers, _c32(1), "seq_cst")
    b.branch(spin)
    b.position_at_end(work)
    b.cbranch(b.icmp_unsigned("!=", _load(b, stop), _c32(0)), leave, run_units)
    b.position_at_end(run_units)
    b.call(claim, [now, ir.Constant(ir.IntType(1), 1)])
    seen.add_incoming(now, run_units)
    b.branch(wait)
    b.position_at_end(leave)
    b.ret(ir.Constant(_PTR, None))

    # einc_parallel(body, args, units)
    par = existing if existing is not None else ir.Function(m, PARALLEL, "einc_parallel")
    par.linkage = "internal"
    body, args, count_units = par.args
    blocks = ("entry", "try", "serial", "sloop", "sstep", "sdone", "start", "spawn", "spawned", "publish",
              "wake", "mine", "join", "relax", "yield", "done")
    bb = {x: par.append_basic_block(x) for x in blocks}
    b = ir.IRBuilder(bb["entry"])
    few = b.icmp_unsigned(">", count_units, _c64(1))
    b.cbranch(b.and_(few, b.icmp_unsigned("<=", count_units, _c64(_UNIT_MASK))), bb["try"], bb["serial"])
    b.position_at_end(bb["try"])
    lock = b.cmpxchg(busy, _c32(0), _c32(1), "seq_cst", "seq_cst")
    b.cbranch(b.extract_value(lock, 1), bb["start"], bb["serial"])
    b.position_at_end(bb["serial"])
    b.branch(bb["sloop"])
    b.position_at_end(bb["sloop"])
    i = b.phi(_I64)
    i.add_incoming(_c64(0), bb["serial"])
    b.cbranch(b.icmp_unsigned("<", i, count_units), bb["sstep"], bb["sdone"])
    b.position_at_end(bb["sstep"])
    b.call(_callee(body), [args, i])
    i.add_incoming(b.add(i, _c64(1)), bb["sstep"])
    b.branch(bb["sloop"])
    b.position_at_end(bb["sdone"])
    b.ret_void()
    # First parallel call: start EINC_NUM_THREADS (else all online cores) - 1 workers.
    b.position_at_end(bb["start"])
    threads = b.load(started, typ=_I64)
    b.cbranch(b.icmp_unsigned("==", threads, _c64(0)), bb["spawn"], bb["publish"])
    b.position_at_end(bb["spawn"])
    name = ir.GlobalVariable(m, ir.ArrayType(ir.IntType(8), 17), "einc.pool.env")
    name.initializer = ir.Constant(ir.ArrayType(ir.IntType(8), 17), bytearray(b"EINC_NUM_THREADS\0"))
    name.global_constant, name.linkage = True, "internal"
    name.type = _PTR
    env = b.call(getenv, [name])
    from_env, from_cores, chosen = (par.append_basic_block(x) for x in ("env", "cores", "chosen"))
    b.cbranch(b.icmp_unsigned("==", env, ir.Constant(_PTR, None)), from_cores, from_env)
    b.position_at_end(from_env)
    by_env = b.call(atoi, [env])
    b.branch(chosen)
    b.position_at_end(from_cores)
    by_cores = b.call(nprocs, [])
    b.branch(chosen)
    b.position_at_end(chosen)
    wanted = b.phi(_I32)
    wanted.add_incoming(by_env, from_env)
    wanted.add_incoming(by_cores, from_cores)
    wanted = b.sext(wanted, _I64)
    wanted = b.select(b.icmp_signed("<", wanted, _c64(1)), _c64(1), wanted)
    wanted = b.select(b.icmp_signed(">", wanted, _c64(MAX_THREADS)), _c64(MAX_THREADS), wanted)
    b.branch(bb["spawned"])
    b.position_at_end(bb["spawned"])
    j = b.phi(_I64)
    j.add_incoming(_c64(1), chosen)
    make, made = par.append_basic_block("make"), par.append_basic_block("made")
    b.cbranch(b.icmp_unsigned("<", j, wanted), make, made)
    b.position_at_end(make)
    handles.type = _PTR
    slot = b.gep(handles, [j], source_etype=_I64)
    b.call(create, [slot, ir.Constant(_PTR, None), worker, ir.Constant(_PTR, None)])
    j.add_incoming(b.add(j, _c64(1)), make)
    b.branch(bb["spawned"])
    b.position_at_end(made)
    b.store(wanted, started)
    b.branch(bb["publish"])
    b.position_at_end(bb["publish"])
    total = b.load(started, typ=_I64)
    alone = par.append_basic_block("alone")
    go = par.append_basic_block("go")
    b.cbranch(b.icmp_unsigned("<=", total, _c64(1)), alone, go)
    b.position_at_end(alone)
    b.store_atomic(_c32(0), busy, "seq_cst", 4)
    b.branch(bb["serial"])
    b.position_at_end(go)
    g = b.add(b.load(gen, typ=_I32), _c32(1))
    b.store(body, job_fn)
    b.store(args, job_arg)
    b.store(count_units, units)
    b.store_atomic(_c64(0), done, "seq_cst", 8)
    first = b.or_(b.shl(b.zext(b.and_(g, _c32(_GEN_MASK)), _I64), _c64(2 * _UNIT_BITS)), count_units)
    b.store_atomic(first, ticket, "seq_cst", 8)
    b.store_atomic(g, gen, "seq_cst", 4)
    b.cbranch(b.icmp_unsigned("!=", _load(b, sleepers), _c32(0)), bb["wake"], bb["mine"])
    b.position_at_end(bb["wake"])
    futex(b, _FUTEX_WAKE, _c32(2**31 - 1))
    b.branch(bb["mine"])
    b.position_at_end(bb["mine"])
    b.call(claim, [g, ir.Constant(ir.IntType(1), 0)])
    b.branch(bb["join"])
    b.position_at_end(bb["join"])
    spins = b.phi(_I64)
    spins.add_incoming(_c64(0), bb["mine"])
    b.cbranch(b.icmp_unsigned("==", _load(b, done, _I64), count_units), bb["done"], bb["relax"])
    b.position_at_end(bb["relax"])
    b.call(pause, [])
    spins.add_incoming(b.add(spins, _c64(1)), bb["relax"])
    b.cbranch(b.icmp_unsigned(">", spins, _c64(2000)), bb["yield"], bb["join"])
    b.position_at_end(bb["yield"])
    b.call(yield_, [])
    spins.add_incoming(_c64(0), bb["yield"])
    b.branch(bb["join"])
    b.position_at_end(bb["done"])
    b.store_atomic(_c32(0), busy, "seq_cst", 4)
    b.ret_void()

    # einc_release(): stop and join the workers (the runtime calls it before unloading).
    release = _declare(m, "einc_release", ir.FunctionType(ir.VoidType(), []))
    entry, loop, step, end = (release.append_basic_block(x) for x in ("entry", "loop", "step", "end"))
    b = ir.IRBuilder(entry)
    threads = b.load(started, typ=_I64)
    b.store_atomic(_c32(1), stop, "seq_cst", 4)
    b.atomic_rmw("add", gen, _c32(1), "seq_cst")
    futex(b, _FUTEX_WAKE, _c32(2**31 - 1))
    b.branch(loop)
    b.position_at_end(loop)
    k = b.phi(_I64)
    k.add_incoming(_c64(1), entry)
    b.cbranch(b.icmp_unsigned("<", k, threads), step, end)
    b.position_at_end(step)
    handle = b.load(b.gep(handles, [k], source_etype=_I64), typ=_I64)
    b.call(join, [handle, ir.Constant(_PTR, None)])
    k.add_incoming(b.add(k, _c64(1)), step)
    b.branch(loop)
    b.position_at_end(end)
    b.store(_c64(0), started)
    b.store_atomic(_c32(0), stop, "seq_cst", 4)
    b.ret_void()
    return par


def define_entry(m: ir.Module, name: str, n_args: int, units: int, parallel: bool) -> ir.Function:
    """Define kernel `name(ptr x n_args)` (declared by the model's call, or here) and return its
    empty `name.body(args, unit)`: the entry stores its arguments in an array and runs units
    0..units-1 of the body on the pool (`parallel`, more than one unit) or one after the other on
    the calling thread. Every kernel (GEMM, depthwise, rows, attention, parallel nests) starts so."""
    try:
        fn = m.get_global(name)
    except KeyError:
        fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [_PTR] * n_args), name)
    body = ir.Function(m, BODY, f"{name}.body")
    body.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    argv = b.alloca(ir.ArrayType(_PTR, n_args))
    argv.type = _PTR  # an opaque pointer (llvmlite types allocas as typed pointers)
    for i, arg in enumerate(fn.args):
        b.store(arg, b.gep(argv, [_c64(i)], source_etype=_PTR))
    if parallel and units > 1:
        b.call(add_pool(m), [body, argv, _c64(units)])
        b.ret_void()
        return body
    loop, step, done = (fn.append_basic_block(x) for x in ("units", "unit", "done"))
    b.branch(loop)
    b.position_at_end(loop)
    u = b.phi(_I64)
    u.add_incoming(_c64(0), fn.entry_basic_block)
    b.cbranch(b.icmp_unsigned("<", u, _c64(units)), step, done)
    b.position_at_end(step)
    b.call(body, [argv, u])
    u.add_incoming(b.add(u, _c64(1)), step)
    b.branch(loop)
    b.position_at_end(done)
    b.ret_void()
    return body
