"""A GotoBLAS/BLIS-style f32 GEMM for any affine contraction, in LLVM IR.

The contraction `C[b, m, n] = epilogue(sum_k A[b, m, k] * B[b, n, k], E...)`
is described by a `spec` (a JSON-able dict made by `calls.py` from an
`ein.group "contraction"`): the index variables of each role (batch, M, N, K)
with their extents, and for every operand the coefficient of each variable in
its flat offset. Because offsets are affine, the address of A[b, m, k] is
`ab[b] + am[m] + ak[k]` with small offset tables computed here at compile
time: the same kernel runs matmul, batched and transposed matmul, Gemm and
convolution as an implicit GEMM (the tables of `I[c, p + r, q + s]` walk the
image; no im2col is materialised beyond one packed KC x NC block).

Structure (per thread, for each unit of work = one batch index, one block of
N, one block of M):

    for pc in K step KC:               pack A block MC x KC (unless prepacked)
                                       pack B block KC x NC (unless prepacked)
      for jr in NC step NR:            B sliver KC x NR stays in L1
        for ir in MC step MR:          A sliver MR x KC streams from L2
          MR x NR accumulators in registers, one rank-1 update per k:
          NR/16 vector loads of B, MR broadcasts of A, MR*NR/16 FMAs;
          C tile += acc; on the last K block, apply the epilogue and store.

Operands that are weights are packed once at compile time (`pack_operand`,
called by the CPU target when it lays out weights.bin) in the same panel
layout the runtime packing produces: [batch][panel][Kp][R], zero-padded, so
the kernel reads a prepacked operand exactly like a packed block. Units are
claimed by the threads of the model's pool (`einc_parallel`, pool.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir
import numpy as np

from einc.backends.llvm.ukernels.pool import define_entry
from einc.backends.llvm.ukernels.vector import F32, I32, VectorEmitter
from einc.ir import mapexpr

I64 = ir.IntType(64)
PTR = ir.PointerType()
KU = 4
GRAIN = 1
"""Units per thread the split aims at. Measured on the quiet 2-core host: 1 beats 3 and 6
(MLP 0.52 / 0.62 / 0.64 ms, sgemm 1024 514 / 439 / 380 GFLOP/s): each unit repeats
packing and table set-up, and a late worker is the exception when cores are free."""
LARGE_M = 256
"""Above this many rows KC is at most LARGE_KC; below, one deep K block avoids partial sums in C
(MLP, 64 rows: KC 1024 0.51 ms, KC 256 0.535 ms)."""
LARGE_KC = 1024
"""With 14 x 32 tiles a KC of 256 (a B sliver for L1) won on sgemm 1024 (515 -> 541 GFLOP/s, 2 threads);
with 6 x 64 tiles deep K blocks win: sgemm 2048 KC 256 / 512 / 1024 177 / 188 / 192 GFLOP/s on one
thread (OpenBLAS 199), 337 / 362 / 370 on two (OpenBLAS 392): each K block re-reads and re-writes
a C beyond the caches (2026-12-07, one process, interleaved)."""
SMALL_C = 512 * 1024
"""Bytes of C that stay in L2 across K blocks: then KC is not capped above LARGE_M rows, since
each K block re-reads and re-writes C (ResNet's 3x3 conv with 512 channels at 7x7, C 100 KB,
1 thread: 18 K blocks of 256 -> 5 of 1024 was 7-13% faster in 5 runs at load 3-4)."""
PREFETCH_BYTES = 1 << 20
PREFETCH = True
"""Prepacked B (weights) beyond this size does not stay in L2 (1 MiB): it comes from L3, or from
DRAM where other processes share the L3. While the tiles of a block reuse one panel from L2, they
prefetch the next panel's rows, so the first tile of the next panel does not wait for memory
(ResNet-18's 512-channel layers stream 9.4 MB of weights each: the model 7.87 -> 7.73 ms, medians
of 8 rounds with both builds in one process, taken twice). From 1 MiB, not 4 MiB: the MLP's
3.2 and 4 MB weights with the L3 flushed before each run 1.414 -> 0.924 ms (onnxruntime 1.215),
warm 0.668 -> 0.632 ms; ResNet-18 and MiniLM unchanged."""
TABLE_A = True
"""Module switch for A/B measurements of `GemmPlan._row_step` (2 threads, interleaved rounds: the stem
7x7/2 3->64 at 224 0.754 -> 0.679 ms, 3x3/2 64->128 at 56 0.344 -> 0.310, 3x3 512->512 at 7x7
0.658 -> 0.615, 1x1/2 64->128 at 56 0.100 -> 0.095; ResNet-18 0.868 -> 0.840 of onnxruntime)."""
L1_SETS, L1_WAYS = 64, 12
"""The L1 data cache of the Zen 5 and recent Intel cores (48 KiB, 12-way, 64-byte lines)."""
BALANCED = True
"""Module switch for A/B measurements of `GemmPlan._balanced` (3x3 512->512 at 7x7, 2 threads:
0.685 -> 0.654 ms; ResNet-18 9.75 -> 9.67 ms, where those layers wait on DRAM; 30 interleaved rounds)."""
UNIT_COST = 50_000
"""Multiply-adds a unit of work costs beyond its tiles (tables, loop set-up, claiming it): about a
microsecond on one core."""
SERIAL_FLOPS = 1_000_000
"""Contractions smaller than this run on the calling thread alone (a few microseconds). 1M, not
4M: PP-OCRv4 det has dozens of 1-4 MFLOP convolutions, and at 4M its worker idled 38% of the
run (perf): 1.046 -> 0.808 ms and 0.901 -> 0.721 ms in two 30-round A/B runs (300K: 0.829);
GPT-2 tiny 0.053 -> 0.050 ms; the MLP, Silero VAD and MiniLM unchanged within noise."""
STACK_BLOCK = 1 << 20
"""Largest B block packed at run time (on the stack of a thread with 8 MiB)."""
"""K is padded to a multiple of KU in packed operands; the FMA loop is unrolled by it."""


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def offset_table(extents: dict[str, int], names: list[str], coef: dict[str, int]) -> np.ndarray:
    """Offsets `sum(coef[v] * v)` over the row-major product of `names`' ranges."""
    table = np.zeros([extents[v] for v in names] or [1], dtype=np.int64).reshape(-1) if not names else None
    if table is not None:
        return table
    grids = np.meshgrid(*[np.arange(extents[v], dtype=np.int64) for v in names], indexing="ij")
    return sum((coef.get(v, 0) * g for v, g in zip(names, grids)), np.zeros(grids[0].shape, np.int64)).reshape(-1)


@dataclass
class _Runs:
    """Constant tables of one packing by runs (`_Body.pack_runs`)."""

    offsets: ir.Value  # i32 offsets, for the gather
    split: ir.Value
    first: ir.Value
    second: ir.Value
    step: ir.Value
    strides: set[int]
    chunk: int  # offsets per chunk: a chunk of one run has split == chunk


def operand_tables(ext: dict[str, int], which: dict[str, Any], batch: list[str], rows: list[str], cols: list[str]) -> Operand:
    """An operand's offset tables (spec entry `which`: coefficients, constant) over the batch, row and column variables."""
    coef = {v: int(c) for v, c in which["coef"].items()}
    const = int(which.get("const", 0))
    return Operand(
        offset_table(ext, batch, coef) + const,
        offset_table(ext, rows, coef),
        offset_table(ext, cols, coef),
        bool(which.get("packed", False)),
    )


@dataclass
class Operand:
    """One operand's offset tables over the roles it is indexed by."""

    b: np.ndarray
    r: np.ndarray  # rows: M for A, N for B; M for C and epilogue inputs
    k: np.ndarray  # K for A and B; N for C and epilogue inputs
    packed: bool = False


class GemmPlan:
    """Everything about one contraction kernel that is known at compile time."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.name: str = spec["name"]
        ext: dict[str, int] = spec["vars"]
        t = spec["tiles"]
        self.mr, self.nr, self.kc = int(t["mr"]), int(t["nr"]), int(t["kc"])
        self.lanes = int(spec.get("lanes", 16))
        self.nv = self.nr // self.lanes
        self.nb = math.prod(ext[v] for v in spec["batch"])
        self.m = math.prod(ext[v] for v in spec["m"])
        self.n = math.prod(ext[v] for v in spec["n"])
        self.k = math.prod(ext[v] for v in spec["k"])
        self.kp = -(-self.k // KU) * KU

        def tables(which: dict[str, Any], row: str, col: str) -> Operand:
            return operand_tables(ext, which, spec["batch"], spec[row], spec[col])

        self.a = tables(spec["a"], "m", "k")
        # An activation A with K contiguous is read in place (rows are streams the
        # prefetcher follows): packing it cost ~10% of a 64-row layer.
        # Not when more than half an L1 set's ways hold its rows (a row stride near a multiple
        # of 4 KiB): 14 rows in one 12-way set thrash, and packing wins (sgemm 1024: 86 -> 250
        # GFLOP/s); 6 rows in one set do not (sgemm 2048 48.8 -> 43.4 ms, 1024 5.58 -> 5.38 ms).
        sets = np.bincount((self.a.r[: self.mr] * 4 // 64) % L1_SETS, minlength=1)
        self.a_direct = (
            not self.a.packed and _contiguous(self.a.k, 0, self.k) and int(sets.max()) <= L1_WAYS // 2
            and spec.get("direct_a", True)
        )
        self.b = tables(spec["b"], "n", "k")
        self.c = tables(spec["c"], "m", "n")
        # C contiguous along N, or along M in tiles of at most one vector of rows (a convolution
        # with pixels as M): then each tile is transposed in registers and stored column by column.
        self.c_transposed = not np.array_equal(self.c.k, np.arange(self.n))
        if self.c_transposed and not (np.array_equal(self.c.r, np.arange(self.m)) and self.mr <= self.lanes):
            raise ValueError("the output must be contiguous along N, or along M with MR at most one vector")
        # An A that is neither packed nor read in place, whose rows are runs of an image: packed
        # one vector of MR rows at a time.
        # C does not stay in cache: fewer, deeper K blocks (LARGE_KC).
        # Not with pixels as rows, where a unit's C block is a few rows of all channels (3x3 64->64
        # at 56x56, K = 576: one K block 0.445 ms, three 0.47 ms, 2 threads).
        if self.m > LARGE_M and self.m * self.n * 4 > SMALL_C and not self.c_transposed:
            self.kc = min(self.kc, LARGE_KC)
        self.kc = min(self.kc, self.kp)
        self.a_step = self._row_step() if TABLE_A and not self.a.packed and not self.a_direct and spec.get("direct_a", True) else None
        self.a_runs = (
            not self.a.packed and not self.a_direct and self.a_step is None and not _contiguous(self.a.k, 0, self.k) and self.mr <= self.lanes
        )
        epi = spec.get("epilogue") or {}
        self.epilogue = mapexpr.parse(epi.get("map", "$0"))
        self.extra = [tables(e, "m", "n") for e in epi.get("inputs", [])]
        self.prefetch_b = self.b.packed and self.nb * self.n_panels * self.nr * self.kp * 4 > PREFETCH_BYTES and spec.get("prefetch_b", PREFETCH)
        self.mc_inner = max(self.mr, int(t.get("mc", 8 * self.mr)) // self.mr * self.mr)
        threads = int(spec.get("threads", 1))
        self.mc_panels, self.nc_panels = self._split(int(t.get("mc", 8 * self.mr)), int(t.get("nc", 16 * self.nr)), threads)
        self.rects = self._balanced(threads)

    @property
    def a_in_place(self) -> bool:
        """A needs no packing at run time: prepacked, or read in place (by rows, or through its K table)."""
        return self.a.packed or self.a_direct or self.a_step is not None

    def _row_step(self) -> int | None:
        """The stride s with A[m0 + r, k] at offset am[m0] + r s + ak[k] in every register tile, if
        there is one (a convolution with pixels as rows, each tile within one output row): then
        the FMA loop broadcasts A from the image through its K table, one table load a step for
        all MR rows, and no packing copies it (the stem's packing was 17% of its kernel; the
        packed block was read once per N panel, the image is too, from L1 or L2).
        No edge tiles: their rows would run past the image."""
        if self.m % self.mr or len(self.a.r) < self.mr:
            return None
        tiles = self.a.r.reshape(-1, self.mr)
        step = int(tiles[0, 1] - tiles[0, 0]) if self.mr > 1 else 1
        return step if np.array_equal(tiles - tiles[:, :1], np.broadcast_to(step * np.arange(self.mr), tiles.shape)) else None

    # -- work split ------------------------------------------------------------------

    @property
    def m_panels(self) -> int:
        return -(-self.m // self.mr)

    @property
    def n_panels(self) -> int:
        return -(-self.n // self.nr)

    def _split(self, mc: int, nc: int, threads: int) -> tuple[int, int]:
        """Panels per M and N block: the split with the shortest slowest thread.

        Units (batch x N blocks x M blocks) go round-robin to threads; a unit
        costs its rows x columns plus the packing it repeats, so among blocks
        no larger than MC x NC the one whose busiest thread has least work wins.
        """
        best: tuple[float, int, int] | None = None
        max_mp, max_np = max(1, mc // self.mr), max(1, nc // self.nr)
        self.serial = 2 * self.nb * self.m * self.n * self.k < SERIAL_FLOPS or threads == 1
        if self.serial:
            threads = 1  # waking a worker costs more than it saves
        if not self.b.packed:  # the packed B block lives on the thread's stack: at most STACK_BLOCK bytes
            max_np = max(1, min(max_np, STACK_BLOCK // (self.kc * self.nr * 4)))
        # One N panel (a 7x7 map in 6 x 64 tiles) cannot feed the threads: M in one unit per thread,
        # each packing B once (units of MC rows packed B six times: 2 threads 22% slower). With
        # more N panels N is split instead (M halves at 14x14 were 3-6% slower: B packed twice).
        share = -(-self.m_panels // threads) if self.n_panels < threads else self.m_panels
        for mp in sorted({-(-self.m_panels // j) for j in range(1, self.m_panels + 1)}):
            if mp > max_mp and (self.b.packed or mp not in (self.m_panels, share)):
                continue  # a B packed at run time is packed once per unit: units then span all of M, or its share per thread
            for np_ in sorted({-(-self.n_panels // j) for j in range(1, self.n_panels + 1)}):
                if np_ > max_np:
                    continue
                loads = [0.0] * (threads * GRAIN if threads > 1 else 1)
                u = 0
                for _ in range(self.nb):
                    for jn in range(0, self.n_panels, np_):
                        cols = min(np_, self.n_panels - jn) * self.nr
                        for im in range(0, self.m_panels, mp):
                            rows = min(mp, self.m_panels - im) * self.mr
                            pack = (0 if self.a_in_place else rows) + (0 if self.b.packed else cols)
                            loads[u % len(loads)] += rows * cols + 4 * pack + 2000
                            u += 1
                key = (max(loads), -(mp * np_), mp)
                if best is None or key < best:
                    best = (key[0], mp, np_)
        assert best is not None
        return best[1], best[2]

    def _unit_load(self, rows: int, cols: int) -> float:
        """A unit's multiply-adds, the packing it repeats (4 per element) and a fixed UNIT_COST."""
        pack = (0 if self.a_in_place else rows) + (0 if self.b.packed else cols)
        return (rows * cols + 4 * pack) * self.kp + UNIT_COST

    def _balanced(self, threads: int) -> list[tuple[int, int, int, int, int]] | None:
        """Units (batch, first and last N panel, first and last M tile) that give each thread an
        equal run of register tiles, where the uniform blocks of `_split` cannot: ResNet's 512-channel
        layers in 48-column panels have 11, split 6 / 5 between two threads (the busier one has 9%
        more than half). The tiles are taken in the uniform units' order (batch, N block, panel,
        row tile) and cut into `threads` runs; each run is a few rectangles (a partial panel, whole
        panels of one N block, a partial panel), listed run by run: the pool's caller claims
        from the front and its worker from the back, so with two threads each runs its own half.
        None where the uniform split is within 2% of that, or spans several M blocks."""
        if self.serial or threads < 2 or self.blocks[0] != 1 or not BALANCED:
            return None
        mt, nt = self.m_panels, self.n_panels
        total = self.nb * nt * mt
        cuts = [round(total * t / threads) for t in range(threads + 1)]
        rects: list[tuple[int, int, int, int, int]] = []
        loads = []
        for lo, hi in zip(cuts, cuts[1:]):
            load, pos = 0.0, lo
            while pos < hi:
                bi, rest = divmod(pos, nt * mt)
                j, r = divmod(rest, mt)
                if r or hi - pos < mt:  # a partial panel
                    rows = min(mt - r, hi - pos)
                    rect = (bi, j, j + 1, r, r + rows)
                else:  # whole panels, up to the end of the N block or of the run
                    block_end = min((j // self.nc_panels + 1) * self.nc_panels, nt)
                    rect = (bi, j, j + min((hi - pos) // mt, block_end - j), 0, mt)
                rects.append(rect)
                pos += (rect[2] - rect[1]) * (rect[4] - rect[3])
                load += self._unit_load((rect[4] - rect[3]) * self.mr, (rect[2] - rect[1]) * self.nr)
            loads.append(load)
        uniform = [0.0] * threads
        mb, nb = self.blocks
        for u in range(self.nb * nb):  # one M block per unit
            cols = (min((u % nb + 1) * self.nc_panels, nt) - u % nb * self.nc_panels) * self.nr
            uniform[u % threads] += self._unit_load(mt * self.mr, cols)
        return rects if max(loads) < 0.98 * max(uniform) else None

    @property
    def blocks(self) -> tuple[int, int]:
        """(M blocks, N blocks)."""
        return -(-self.m_panels // self.mc_panels), -(-self.n_panels // self.nc_panels)

    @property
    def units(self) -> int:
        if self.rects:
            return len(self.rects)
        mb, nb = self.blocks
        return self.nb * mb * nb

    # -- compile-time packing of weights ---------------------------------------------

    def pack(self, which: str, flat: np.ndarray) -> np.ndarray:
        """A weight operand in the kernel's panel layout [batch][panel][Kp][R]."""
        op, r = (self.a, self.mr) if which == "a" else (self.b, self.nr)
        rows = len(op.r)
        panels = -(-rows // r)
        ridx = np.arange(panels * r)
        kidx = np.arange(self.kp)
        valid = (ridx[None, :, None] < rows) & (kidx[None, None, :] < self.k)
        roff = op.r[np.minimum(ridx, rows - 1)]
        koff = op.k[np.minimum(kidx, self.k - 1)]
        idx = op.b[:, None, None] + roff[None, :, None] + koff[None, None, :]
        vals = np.where(valid, flat.reshape(-1)[idx], 0).astype(np.float32)
        # [b, panel*R, K] -> [b, panel, K, R]
        return np.ascontiguousarray(vals.reshape(len(op.b), panels, r, self.kp).transpose(0, 1, 3, 2)).reshape(-1)

    # -- code --------------------------------------------------------------------------

    def emit(self, module: ir.Module) -> None:
        """Define the kernel (declared by the model's call) and its parallel body."""
        body = define_entry(module, self.name, 3 + len(self.extra), self.units, not self.serial)
        _Body(self, body, module).emit()


class _Body:
    """Emits `name.body(args, unit)`: one unit of work (batch index, N block, M block)."""

    def __init__(self, plan: GemmPlan, fn: ir.Function, module: ir.Module):
        self.p = plan
        self.fn = fn
        self.module = module
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.v = VectorEmitter(self.b, plan.lanes)
        self._tables: dict[bytes, ir.Value] = {}
        self.next_b: ir.Value | None = None
        self._firsts: dict[int, int] = {}

    # -- helpers ------------------------------------------------------------------------

    def table(self, values: np.ndarray, pad_to: int | None = None, ty: ir.IntType = I64) -> ir.Value:
        """A constant offset table, padded by repeating its last entry (clamped reads stay in bounds)."""
        values = np.asarray(values, dtype=np.int64)
        if pad_to is not None and pad_to > len(values):
            values = np.concatenate([values, np.full(pad_to - len(values), values[-1])])
        key = values.tobytes() + bytes([ty.width])
        if key not in self._tables:
            arr = ir.ArrayType(ty, len(values))
            g = ir.GlobalVariable(self.module, arr, f"{self.p.name}.t{len(self._tables)}")
            g.global_constant = True
            g.linkage = "internal"
            g.initializer = ir.Constant(arr, [int(x) for x in values])
            self._tables[key] = _opaque(g)
            self._firsts[id(self._tables[key])] = int(values[0])
        return self._tables[key]

    def at(self, table: ir.Value, index: ir.Value, ty: ir.IntType = I64) -> ir.Value:
        value = self.b.load(self.b.gep(table, [index], inbounds=True, source_etype=ty), typ=ty)
        return value if ty == I64 else self.b.sext(value, I64)

    def fptr(self, base: ir.Value, index: ir.Value) -> ir.Value:
        return self.b.gep(base, [index], inbounds=True, source_etype=F32)

    def loop(self, start: ir.Value, stop: ir.Value, step: int | ir.Value, body, name: str) -> None:
        """`for i in range(start, stop, step): body(i)` (runs at least once only if start < stop)."""
        b = self.b
        pre = b.block
        head = self.fn.append_basic_block(f"{name}.head")
        loop = self.fn.append_basic_block(f"{name}.body")
        done = self.fn.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), loop, done)
        b.position_at_end(loop)
        body(i)
        i.add_incoming(b.add(i, step if isinstance(step, ir.Value) else _c(step)), b.block)
        b.branch(head)
        b.position_at_end(done)

    def if_(self, cond: ir.Value, then, otherwise=None) -> None:
        b = self.b
        t = self.fn.append_basic_block("then")
        e = self.fn.append_basic_block("else") if otherwise else None
        done = self.fn.append_basic_block("endif")
        b.cbranch(cond, t, e or done)
        b.position_at_end(t)
        then()
        b.branch(done)
        if e is not None:
            b.position_at_end(e)
            otherwise()
            b.branch(done)
        b.position_at_end(done)

    def smin(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", a, c), a, c)

    def lane_mask(self, count: ir.Value) -> ir.Value:
        """Lanes [0, count) of a vector (count may be <= 0 or >= lanes)."""
        lanes = self.p.lanes
        iota = ir.Constant(ir.VectorType(I32, lanes), list(range(lanes)))
        return self.b.icmp_signed("<", iota, self._splat_i32(count))

    def _splat_i32(self, value: ir.Value) -> ir.Value:
        b, lanes = self.b, self.p.lanes
        vi = ir.VectorType(I32, lanes)
        vec = b.insert_element(ir.Constant(vi, ir.Undefined), b.trunc(value, I32), ir.Constant(I32, 0))
        return b.shuffle_vector(vec, ir.Constant(vi, ir.Undefined), ir.Constant(vi, [0] * lanes))

    def vload(self, ptr: ir.Value, mask: ir.Value | None, align: int = 4) -> ir.Value:
        if mask is None:
            return self.b.load(ptr, typ=self.v.vf, align=align)
        return self.masked("load", [ptr, ir.Constant(I32, align), mask, self.v.const(0.0)])

    def vstore(self, value: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        if mask is None:
            self.b.store(value, ptr, align=4)
        else:
            self.masked("store", [value, ptr, ir.Constant(I32, 4), mask])

    def masked(self, op: str, args: list[ir.Value]) -> ir.Value:
        lanes = self.p.lanes
        name = f"llvm.masked.{op}.v{lanes}f32.p0"
        try:
            fn = self.module.get_global(name)
        except KeyError:
            ret = self.v.vf if op in ("load", "gather") else ir.VoidType()
            fn = ir.Function(self.module, ir.FunctionType(ret, [a.type for a in args]), name)
        return self.b.call(fn, args)

    def gather(self, base: ir.Value, offsets: ir.Value, mask: ir.Value) -> ir.Value:
        lanes = self.p.lanes
        ptrs = self.b.gep(base, [offsets], source_etype=F32)
        ptrs.type = ir.VectorType(PTR, lanes)  # llvmlite types a vector GEP as a scalar pointer
        name = f"llvm.masked.gather.v{lanes}f32.v{lanes}p0"
        try:
            fn = self.module.get_global(name)
        except KeyError:
            fn = ir.Function(self.module, ir.FunctionType(self.v.vf, [ptrs.type, I32, mask.type, self.v.vf]), name)
        return self.b.call(fn, [ptrs, ir.Constant(I32, 4), mask, self.v.const(0.0)])

    # -- the body -------------------------------------------------------------------------

    def emit(self) -> None:
        p, b = self.p, self.b
        n_args = 3 + len(p.extra)
        argv = self.fn.args[0]
        ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR) for i in range(n_args)]
        self.A, self.B, self.C = ptrs[:3]
        self.E = ptrs[3:]
        mc, nc = p.mc_panels * p.mr, p.nc_panels * p.nr
        self.abuf = None if p.a_in_place else b.alloca(ir.ArrayType(F32, p.mc_inner * p.kc), name="apack")
        self.bbuf = None if p.b.packed else b.alloca(ir.ArrayType(F32, nc * p.kc), name="bpack")
        for buf in (self.abuf, self.bbuf):
            if buf is not None:
                buf.align = 64
        self.abuf = None if self.abuf is None else _opaque(self.abuf)
        self.bbuf = None if self.bbuf is None else _opaque(self.bbuf)
        m_blocks, n_blocks = p.blocks
        self.t_ab, self.t_bb, self.t_cb = (self.table(o.b) for o in (p.a, p.b, p.c))
        self.t_am = self.table(p.a.r, p.m_panels * p.mr)
        self.t_ak = self.table(p.a.k, p.kp)
        self.t_bn = self.table(p.b.r, p.n_panels * p.nr)
        self.t_bk = self.table(p.b.k, p.kp)
        self.t_cm = self.table(p.c.r, p.m_panels * p.mr)
        self.t_eb = [self.table(e.b) for e in p.extra]
        self.t_em = [self.table(e.r, p.m_panels * p.mr) for e in p.extra]
        self.e_kind = [_pattern(e.r if p.c_transposed else e.k) for e in p.extra]  # along a column or a row of C
        if p.c_transposed:
            self.t_cn = self.table(p.c.k, p.n_panels * p.nr)
            self.t_em32 = [self.table(e.r, p.m_panels * p.mr + p.lanes, I32) for e in p.extra]
        self.t_en = [self.table(e.k, p.n_panels * p.nr + p.lanes, I32) for e in p.extra]
        if not p.b.packed:
            contiguous = [int(_contiguous(p.b.r, j * p.nr, p.nr)) for j in range(p.n_panels)]
            self.t_bcontig = self.table(np.array(contiguous), ty=I64)

        u = self.fn.args[1]
        if p.rects:  # the unit's rectangle from a table: batch, N panels [j0, j1), M tiles [r0, r1)
            table = self.table(np.array(p.rects).reshape(-1))
            bi, j0, j1, r0, r1 = (self.at(table, b.add(b.mul(u, _c(5)), _c(i))) for i in range(5))
            n0, m_lo = b.mul(j0, _c(p.nr)), b.mul(r0, _c(p.mr))
            n1, m_hi = self.smin(b.mul(j1, _c(p.nr)), _c(p.n)), self.smin(b.mul(r1, _c(p.mr)), _c(p.m))
        else:
            im = b.urem(u, _c(m_blocks))
            rest = b.udiv(u, _c(m_blocks))
            jn = b.urem(rest, _c(n_blocks))
            bi = b.udiv(rest, _c(n_blocks))
            n0, m_lo = b.mul(jn, _c(nc)), b.mul(im, _c(mc))
            n1 = self.smin(b.add(n0, _c(nc)), _c(p.n))
            m_hi = self.smin(b.add(m_lo, _c(mc)), _c(p.m))
        self.unit(bi, n0, n1, m_lo, m_hi)
        b.ret_void()

    def unit(self, bi: ir.Value, n0: ir.Value, n1: ir.Value, m_lo: ir.Value, m_hi: ir.Value) -> None:
        p, b = self.p, self.b
        ab, bb, cb = self.at(self.t_ab, bi), self.at(self.t_bb, bi), self.at(self.t_cb, bi)

        def kblock(pc: ir.Value) -> None:
            kc = self.smin(_c(p.kc), b.sub(_c(p.kp), pc))
            first = b.icmp_signed("==", pc, _c(0))
            last = b.icmp_signed("==", b.add(pc, kc), _c(p.kp))
            self.pc, self.a_base = pc, ab
            if not p.b.packed:
                self.pack_b(bb, n0, n1, pc, kc)
            # GotoBLAS order: B's block packed once per K block, then the unit's rows in
            # blocks of MC (each A block packed once and kept in L2).
            self.loop(m_lo, m_hi, p.mc_inner, lambda mb: mblock(mb, self.smin(b.add(mb, _c(p.mc_inner)), m_hi), pc, kc, first, last), "ic")

        def mblock(m0: ir.Value, m1: ir.Value, pc: ir.Value, kc: ir.Value, first: ir.Value, last: ir.Value) -> None:
            if p.a_runs:
                self.pack_a_runs(ab, m0, m1, pc, kc)
            elif not p.a.packed and not p.a_direct and p.a_step is None:
                self.pack_a(ab, m0, m1, pc, kc)

            def col(jr: ir.Value) -> None:
                if p.b.packed:
                    panel = b.add(b.mul(bi, _c(p.n_panels)), b.udiv(jr, _c(p.nr)))
                    bptr = self.fptr(self.B, b.add(b.mul(panel, _c(p.kp * p.nr)), b.mul(pc, _c(p.nr))))
                else:
                    bptr = self.fptr(self.bbuf, b.mul(b.sub(jr, n0), kc))

                def row(ir_: ir.Value) -> None:
                    if p.a.packed:
                        panel = b.add(b.mul(bi, _c(p.m_panels)), b.udiv(ir_, _c(p.mr)))
                        aptr = self.fptr(self.A, b.add(b.mul(panel, _c(p.kp * p.mr)), b.mul(pc, _c(p.mr))))
                    elif p.a_direct or p.a_step is not None:
                        aptr = None
                    else:
                        aptr = self.fptr(self.abuf, b.mul(b.sub(ir_, m0), kc))
                    if p.prefetch_b:  # tile t >= 1 of the block fetches its share of the next panel's rows
                        t = b.udiv(b.sub(ir_, m0), _c(p.mr))
                        self.next_b = self.fptr(bptr, b.mul(b.add(b.mul(b.sub(t, _c(1)), _c(p.kc // KU)), _c(p.kp)), _c(p.nr)))
                    self.tile(aptr, bptr, kc, cb, bi, ir_, jr, first, last)

                self.loop(m0, m1, p.mr, row, "ir")

            self.loop(n0, n1, p.nr, col, "jr")

        self.loop(_c(0), _c(p.kp), p.kc, kblock, "pc")

    # -- packing at run time ------------------------------------------------------------------

    def pack_a(self, ab: ir.Value, m0: ir.Value, m1: ir.Value, pc: ir.Value, kc: ir.Value) -> None:
        """Abuf[(m - m0) * kc + k * MR + r] = A[m, pc + k] (zero outside M or K)."""
        p, b = self.p, self.b
        mr = p.mr

        def row(m: ir.Value) -> None:
            inside = b.icmp_signed("<", m, m1)
            base = b.add(ab, self.at(self.t_am, m))
            rel = b.sub(m, m0)
            dst0 = b.add(b.mul(b.sub(rel, b.urem(rel, _c(mr))), kc), b.urem(rel, _c(mr)))

            def k(kk: ir.Value) -> None:
                kg = b.add(pc, kk)
                ok = b.and_(inside, b.icmp_signed("<", kg, _c(p.k)))
                value = b.load(self.fptr(self.A, b.add(base, self.at(self.t_ak, kg))), typ=F32)
                b.store(b.select(ok, value, ir.Constant(F32, 0.0)), self.fptr(self.abuf, b.add(dst0, b.mul(kk, _c(mr)))))

            self.loop(start, kc, 1, k, "pak")

        def panel(mp: ir.Value) -> None:
            """16 k of the panel's MR rows: one load per row (K contiguous), the MR x 16 block
            transposed in registers into MR vectors of the packed [k][MR] order (scalar stores MR
            apart took 6% of sgemm 2048's time)."""
            rows = [b.add(mp, _c(r)) for r in range(mr)]
            bases = [b.add(b.add(ab, self.at(self.t_am, m)), self.at(self.t_ak, pc)) for m in rows]
            insides = [b.icmp_signed("<", m, m1) for m in rows]
            dst0 = b.mul(b.sub(mp, m0), kc)

            def k_vector(kk: ir.Value) -> None:
                values = [
                    b.select(ok, b.load(self.fptr(self.A, b.add(base, kk)), typ=self.v.vf, align=4), self.v.const(0.0))
                    for base, ok in zip(bases, insides)
                ]
                for o, vector in enumerate(self.interleave(values)):
                    b.store(vector, self.fptr(self.abuf, b.add(dst0, b.add(b.mul(kk, _c(mr)), _c(o * p.lanes)))), align=4)

            self.loop(_c(0), start, p.lanes, k_vector, "pav")

        mpad = b.add(m0, b.mul(b.udiv(b.add(b.sub(m1, m0), _c(mr - 1)), _c(mr)), _c(mr)))
        start = _c(0)
        if _contiguous(p.a.k, 0, p.k):
            start = b.and_(self.smin(kc, b.sub(_c(p.k), pc)), _c(~(p.lanes - 1)))
            self.loop(m0, mpad, mr, panel, "pap")
        self.loop(m0, mpad, 1, row, "pam")

    def interleave(self, rows: list[ir.Value]) -> list[ir.Value]:
        """MR vectors of 16 (row r, lane k) -> MR vectors of the row-major [16][MR] order."""
        b, lanes = self.b, self.p.lanes
        width = len(rows)
        joined = list(rows)  # concatenated pairwise into one vector of MR * 16
        order: list[list[int]] = [[r * lanes + k for k in range(lanes)] for r in range(width)]
        while len(joined) > 1:
            nxt, nord = [], []
            for i in range(0, len(joined), 2):
                if i + 1 == len(joined):
                    nxt.append(joined[i])
                    nord.append(order[i])
                    continue
                a_len, b_len = len(order[i]), len(order[i + 1])
                pad = max(a_len, b_len)
                left, right = joined[i], joined[i + 1]
                if a_len != b_len:  # shufflevector needs equal widths: widen the shorter one
                    short, long_ = (left, a_len) if a_len < b_len else (right, b_len)
                    wide = b.shuffle_vector(short, ir.Constant(short.type, ir.Undefined),
                                            ir.Constant(ir.VectorType(I32, pad), list(range(long_)) + [0] * (pad - long_)))
                    left, right = (wide, right) if a_len < b_len else (left, wide)
                idx = list(range(a_len)) + [pad + k for k in range(b_len)]
                nxt.append(b.shuffle_vector(left, right, ir.Constant(ir.VectorType(I32, len(idx)), idx)))
                nord.append(order[i] + order[i + 1])
            joined, order = nxt, nord
        flat = joined[0]
        where = {src: pos for pos, src in enumerate(order[0])}  # source index -> position in `flat`
        out = []
        for o in range(width):
            idx = [where[(q % width) * lanes + q // width] for q in range(o * lanes, (o + 1) * lanes)]
            out.append(b.shuffle_vector(flat, ir.Constant(flat.type, ir.Undefined), ir.Constant(ir.VectorType(I32, lanes), idx)))
        return out

    def pack_b(self, bb: ir.Value, n0: ir.Value, n1: ir.Value, pc: ir.Value, kc: ir.Value) -> None:
        """Bbuf[(n - n0) * kc + k * NR + c] = B[pc + k, n] (zero outside N or K)."""
        p, b = self.p, self.b
        lanes, nr = p.lanes, p.nr
        runs = self.runs(p.b.r, lanes, p.n_panels * nr // lanes)

        def panel(jr: ir.Value) -> None:
            dst = b.mul(b.sub(jr, n0), kc)
            contiguous = b.and_(
                b.icmp_signed("<=", b.add(jr, _c(nr)), n1),
                b.icmp_signed("!=", self.at(self.t_bcontig, b.udiv(jr, _c(nr))), _c(0)),
            )
            first_n = b.add(bb, self.at(self.t_bn, jr))

            def k_fast(kk: ir.Value) -> None:
                kg = b.add(pc, kk)
                src = self.fptr(self.B, b.add(first_n, self.at(self.t_bk, kg)))
                ok = b.icmp_signed("<", kg, _c(p.k))
                for j in range(p.nv):
                    value = self.vload(b.gep(src, [_c(j * lanes)], source_etype=F32), None)
                    value = b.select(ok, value, self.v.const(0.0))
                    b.store(value, self.fptr(self.bbuf, b.add(dst, b.add(b.mul(kk, _c(nr)), _c(j * lanes)))), align=64)

            def general() -> None:
                for j in range(p.nv):
                    col = b.add(jr, _c(j * lanes))

                    def put(kk: ir.Value, value: ir.Value, j: int = j) -> None:
                        b.store(value, self.fptr(self.bbuf, b.add(dst, b.add(b.mul(kk, _c(nr)), _c(j * lanes)))), align=64)

                    self.pack_runs(self.B, runs, col, b.udiv(col, _c(lanes)), b.sub(n1, col), kc, lambda kk: self.k_offset(bb, p.b, pc, kk), put, self.smin(kc, b.sub(_c(p.k), pc)))

            self.if_(contiguous, lambda: self.loop(_c(0), kc, 1, k_fast, "pbf"), general)

        self.loop(n0, n1, nr, panel, "pbn")

    def pack_a_runs(self, ab: ir.Value, m0: ir.Value, m1: ir.Value, pc: ir.Value, kc: ir.Value) -> None:
        """Abuf[(m - m0) * kc + k * MR + r] = A[m, pc + k] for an A whose rows are image pixels (a
        convolution with pixels as M): a panel's MR rows are one or two runs of the image at each k,
        so one masked vector load packs MR values (the row-by-row packing reads one float at a time)."""
        p, b = self.p, self.b
        runs = self.runs(p.a.r, p.mr, p.m_panels)
        lanes_mr = self.lane_mask(_c(p.mr))

        def panel(mp: ir.Value) -> None:
            dst = b.mul(b.sub(mp, m0), kc)

            def put(kk: ir.Value, value: ir.Value) -> None:
                self.vstore(value, self.fptr(self.abuf, b.add(dst, b.mul(kk, _c(p.mr)))), lanes_mr)

            self.pack_runs(self.A, runs, mp, b.udiv(mp, _c(p.mr)), b.sub(_c(p.m), mp), kc, lambda kk: self.k_offset(ab, p.a, pc, kk), put, self.smin(kc, b.sub(_c(p.k), pc)))

        self.loop(m0, m1, p.mr, panel, "pap")

    def k_offset(self, base: ir.Value, op: Operand, pc: ir.Value, kk: ir.Value) -> ir.Value:
        """The offset of the operand's k = pc + kk."""
        table = self.t_ak if op is self.p.a else self.t_bk
        return self.b.add(base, self.at(table, self.b.add(pc, kk)))

    def runs(self, offsets: np.ndarray, chunk: int, chunks: int) -> _Runs:
        """The constant tables of `pack_runs` for offsets read in chunks of `chunk` lanes."""
        split, run1, run2, step = two_runs(offsets, chunk, chunks)
        return _Runs(
            self.table(offsets, chunks * chunk + self.p.lanes, I32), self.table(split), self.table(run1), self.table(run2),
            self.table(step), set(step[split != 0].tolist()) or {1}, chunk,
        )

    def pack_runs(self, src: ir.Value, runs: _Runs, first: ir.Value, chunk: ir.Value, count: ir.Value, kc: ir.Value, k_offset, put, kreal: ir.Value) -> None:
        """For k in [0, kc): put(k, vector) whose lanes l < count hold src[k_offset(k) + offsets[first + l]]
        (0 in the other lanes, and everywhere for k >= kreal, the padding of K).
        Where the chunk's offsets are one or two runs of stride 1 or 2 (an image row's end, the next
        row's start) they are masked loads (at stride 2 an even-lane shuffle); otherwise a gather.
        The masks do not depend on k, so the loops over k hold only loads and stores (one load per
        k where the chunk is one run, as in every panel of a ResNet layer)."""
        b, v = self.b, self.v
        split = self.at(runs.split, chunk)
        run1, run2 = self.at(runs.first, chunk), self.at(runs.second, chunk)
        self.loop(kreal, kc, 1, lambda kk: put(kk, v.const(0.0)), "prz")

        def runs_of(step: int) -> None:
            def one(kk: ir.Value) -> None:
                put(kk, self.strided_run(src, b.add(k_offset(kk), run1), _c(0), count, step))

            def two(kk: ir.Value) -> None:
                base = k_offset(kk)
                v1 = self.strided_run(src, b.add(base, run1), _c(0), self.smin(split, count), step)
                v2 = self.strided_run(src, b.add(base, run2), split, count, step)
                put(kk, b.select(self.lane_mask(split), v1, v2))

            self.if_(
                b.icmp_signed(">=", split, self.smin(count, _c(runs.chunk))),
                lambda: self.loop(_c(0), kreal, 1, one, f"pr{step}"),
                lambda: self.loop(_c(0), kreal, 1, two, f"prr{step}"),
            )

        def gather() -> None:
            offs_ptr = b.gep(runs.offsets, [first], inbounds=True, source_etype=I32)
            offs = b.sext(b.load(offs_ptr, typ=ir.VectorType(I32, self.p.lanes), align=4), ir.VectorType(I64, self.p.lanes))
            mask = self.lane_mask(count)
            self.loop(_c(0), kreal, 1, lambda kk: put(kk, self.gather(self.fptr(src, k_offset(kk)), offs, mask)), "prg")

        if runs.strides == {1}:
            both = lambda: runs_of(1)  # noqa: E731
        else:  # strided convolutions: runs of stride 2 in the chunks the table marks
            both = lambda: self.if_(b.icmp_signed("==", self.at(runs.step, chunk), _c(2)), lambda: runs_of(2), lambda: runs_of(1))  # noqa: E731
        self.if_(b.icmp_signed("!=", split, _c(0)), both, gather)

    def strided_run(self, src: ir.Value, base: ir.Value, start: ir.Value, stop: ir.Value, step: int) -> ir.Value:
        """Lanes l in [start, stop) hold src[base + step * l], the others 0 (step 1 or 2)."""
        b, lanes = self.b, self.p.lanes
        if step == 1:
            return self.vload(self.fptr(src, base), b.and_(self.lane_mask(stop), b.not_(self.lane_mask(start))))
        lo, hi = b.mul(start, _c(2)), b.sub(b.mul(stop, _c(2)), _c(1))  # elements [2 start, 2 stop - 1)
        halves = [
            self.vload(self.fptr(src, b.add(base, _c(h))), b.and_(self.lane_mask(b.sub(hi, _c(h))), b.not_(self.lane_mask(b.sub(lo, _c(h))))))
            for h in (0, lanes)
        ]
        return b.shuffle_vector(halves[0], halves[1], ir.Constant(ir.VectorType(I32, lanes), list(range(0, 2 * lanes, 2))))

    def _splat_bool(self, cond: ir.Value) -> ir.Value:
        lanes = self.p.lanes
        vb = ir.VectorType(ir.IntType(1), lanes)
        vec = self.b.insert_element(ir.Constant(vb, ir.Undefined), cond, ir.Constant(I32, 0))
        return self.b.shuffle_vector(vec, ir.Constant(vb, ir.Undefined), ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))

    # -- the micro-kernel and the store -----------------------------------------------------

    def tile(self, aptr, bptr, kc, cb, bi, m0, n0, first, last) -> None:
        p, b = self.p, self.b
        if p.m % p.mr == 0 and p.n % p.nr == 0:  # no partial tiles: no edge code to compile
            self.tile_variant(aptr, bptr, kc, cb, bi, m0, n0, first, last, edge=False)
            return
        if p.m < p.mr or p.n < p.nr:  # every tile is partial
            self.tile_variant(aptr, bptr, kc, cb, bi, m0, n0, first, last, edge=True)
            return
        full = b.and_(
            b.icmp_signed("<=", b.add(m0, _c(p.mr)), _c(p.m)),
            b.icmp_signed("<=", b.add(n0, _c(p.nr)), _c(p.n)),
        )
        self.if_(
            full,
            lambda: self.tile_variant(aptr, bptr, kc, cb, bi, m0, n0, first, last, edge=False),
            lambda: self.tile_variant(aptr, bptr, kc, cb, bi, m0, n0, first, last, edge=True),
        )

    def tile_variant(self, aptr, bptr, kc, cb, bi, m0, n0, first, last, edge: bool) -> None:
        p, b, v = self.p, self.b, self.v
        lanes = p.lanes
        masks: list[list[ir.Value | None]] = []
        for r in range(p.mr):
            row = []
            for j in range(p.nv):
                if not edge:
                    row.append(None)
                    continue
                cols = self.lane_mask(b.sub(_c(p.n), b.add(n0, _c(j * lanes))))
                ok = b.icmp_signed("<", b.add(m0, _c(r)), _c(p.m))
                row.append(b.and_(cols, self._splat_bool(ok)))
            masks.append(row)
        cptrs = [
            [self.fptr(self.C, b.add(b.add(cb, self.at(self.t_cm, b.add(m0, _c(r)))), b.add(n0, _c(j * lanes)))) for j in range(p.nv)]
            for r in range(p.mr)
        ]
        # Initial accumulators: zero on the first K block, else the partial sums in C
        # (with a single K block, always zero: no code for the other case).
        single = p.kp <= p.kc
        init: list[ir.Value] = [v.const(0.0)] * (p.mr * p.nv)
        if not single and not p.c_transposed:
            pre = b.block
            load_blk = self.fn.append_basic_block("cload")
            start = self.fn.append_basic_block("kstart")
            b.cbranch(first, start, load_blk)
            b.position_at_end(load_blk)
            loaded = [[self.vload(cptrs[r][j], masks[r][j]) for j in range(p.nv)] for r in range(p.mr)]
            b.branch(start)
            b.position_at_end(start)
            init = []
            for r in range(p.mr):
                for j in range(p.nv):
                    phi = b.phi(v.vf)
                    phi.add_incoming(v.const(0.0), pre)
                    phi.add_incoming(loaded[r][j], load_blk)
                    init.append(phi)
        if not edge and not p.c_transposed:  # write-allocate C's lines while the FMAs run: rows 4 KiB apart would thrash L1 sets
            for r in range(p.mr):
                for j in range(p.nv):
                    self.prefetch(cptrs[r][j])
        if p.a_direct:  # A read in place: MR row pointers, exact K (no padding to read past)
            rows = [self.fptr(self.A, b.add(self.a_base, b.add(self.at(self.t_am, b.add(m0, _c(r))), self.at(self.t_ak, self.pc)))) for r in range(p.mr)]
            kreal = self.smin(kc, b.sub(_c(p.k), self.pc))
            main = b.and_(kreal, _c(~(KU - 1)))
            a_at = lambda r, k: self.fptr(rows[r], k)  # noqa: E731
            acc = self.fma_loop(a_at, bptr, _c(0), main, KU, init)
            acc = self.fma_loop(a_at, bptr, main, kreal, 1, acc)
        elif p.a_step is not None:  # A read in place through its K table; exact K, as above (0 x inf is no 0)
            row0 = self.fptr(self.A, b.add(self.a_base, self.at(self.t_am, m0)))
            kreal = self.smin(kc, b.sub(_c(p.k), self.pc))
            main = b.and_(kreal, _c(~(KU - 1)))
            a_at = lambda r, k: self.fptr(row0, b.add(self.at(self.t_ak, b.add(self.pc, k)), _c(r * p.a_step)))  # noqa: E731
            acc = self.fma_loop(a_at, bptr, _c(0), main, KU, init)
            acc = self.fma_loop(a_at, bptr, main, kreal, 1, acc)
        else:
            a_at = lambda r, k: self.fptr(aptr, b.add(b.mul(k, _c(p.mr)), _c(r)))  # noqa: E731
            acc = self.fma_loop(a_at, bptr, _c(0), kc, KU, init)
        # Store: raw partial sums, or on the last K block the epilogue's values.
        def store(epilogue: bool) -> None:
            for r in range(p.mr):
                for j in range(p.nv):
                    value = acc[r * p.nv + j]
                    if epilogue:
                        value = self.epilogue(value, bi, m0, n0, r, j, masks[r][j])
                    self.vstore(value, cptrs[r][j], masks[r][j])

        if p.c_transposed:
            store = self.transposed_store(acc, cb, bi, m0, n0, first, single, edge)  # noqa: F811
        if p.epilogue == mapexpr.Input(0):
            store(False)
        elif single:
            store(True)
        else:
            self.if_(last, lambda: store(True), lambda: store(False))

    def transposed_store(self, acc: list[ir.Value], cb, bi, m0, n0, first, single: bool, edge: bool):
        """The store of a tile into a C contiguous along M: each NR x lanes block of accumulators is
        transposed in registers (log2(lanes) rounds of interleaving shuffles), then every column
        n is one masked store of MR rows. Partial sums of earlier K blocks are added here (the
        accumulators start from zero), and the epilogue runs on the columns, where inputs that
        follow C are contiguous loads rather than gathers."""
        p, b, v = self.p, self.b, self.v
        rows = self.lane_mask(self.smin(_c(p.mr), b.sub(_c(p.m), m0)) if edge else _c(p.mr))
        later = self._splat_bool(b.not_(first))
        columns: list[tuple[int, ir.Value]] = []
        for j in range(p.nv):
            block = [acc[r * p.nv + j] for r in range(p.mr)] + [v.const(0.0)] * (p.lanes - p.mr)
            columns += [(j * p.lanes + lane, vec) for lane, vec in enumerate(self.transpose(block))]
        base = b.add(cb, self.at(self.t_cm, m0))

        def store(epilogue: bool) -> None:
            for col, value in columns:
                n = b.add(n0, _c(col))
                mask = b.and_(rows, self._splat_bool(b.icmp_signed("<", n, _c(p.n)))) if edge else rows
                ptr = self.fptr(self.C, b.add(base, self.at(self.t_cn, n)))
                if not single:
                    value = b.fadd(value, self.vload(ptr, b.and_(mask, later)))
                if epilogue:
                    value = self.epilogue_column(value, bi, m0, n, mask)
                self.vstore(value, ptr, mask)

        return store

    def transpose(self, vectors: list[ir.Value]) -> list[ir.Value]:
        """out[l][r] = vectors[r][l] for `lanes` vectors of `lanes` lanes: each round zips vector i
        with vector i + lanes/2 (a perfect shuffle); log2(lanes) rounds transpose."""
        b, lanes = self.b, self.p.lanes
        half = lanes // 2
        vi = ir.VectorType(I32, lanes)
        low = ir.Constant(vi, [x for i in range(half) for x in (i, i + lanes)])
        high = ir.Constant(vi, [x for i in range(half, lanes) for x in (i, i + lanes)])
        for _ in range(lanes.bit_length() - 1):
            vectors = [
                out for i in range(half)
                for out in (b.shuffle_vector(vectors[i], vectors[i + half], low), b.shuffle_vector(vectors[i], vectors[i + half], high))
            ]
        return vectors

    def epilogue_column(self, acc: ir.Value, bi, m0, n: ir.Value, mask) -> ir.Value:
        """The epilogue on one column of a transposed tile (rows m0.. of column n)."""
        p, b, v = self.p, self.b, self.v
        inputs = [acc]
        for e, kind, t_eb, t_em, t_em32, t_en in zip(self.E, self.e_kind, self.t_eb, self.t_em, self.t_em32, self.t_en):
            base = b.add(self.at(t_eb, bi), self.at(t_en, n, I32))
            if kind == "zero":
                value = v.splat(b.load(self.fptr(e, b.add(base, _c(self._first(t_em)))), typ=F32))
            elif kind == "contiguous":
                value = self.vload(self.fptr(e, b.add(base, self.at(t_em, m0))), mask)
            else:
                offs_ptr = b.gep(t_em32, [m0], inbounds=True, source_etype=I32)
                offs = b.sext(b.load(offs_ptr, typ=ir.VectorType(I32, p.lanes), align=4), ir.VectorType(I64, p.lanes))
                value = self.gather(self.fptr(e, base), offs, mask)
            inputs.append(value)
        out = v.expr(p.epilogue, inputs)
        return out if out.type == v.vf else b.uitofp(out, v.vf)

    def prefetch(self, ptr: ir.Value, write: bool = True) -> None:
        try:
            fn = self.module.get_global("llvm.prefetch.p0")
        except KeyError:
            fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR, I32, I32, I32]), "llvm.prefetch.p0")
        self.b.call(fn, [ptr, ir.Constant(I32, int(write)), ir.Constant(I32, 3 if write else 2), ir.Constant(I32, 1)])

    def fma_loop(self, a_at, bptr: ir.Value, start: ir.Value, stop: ir.Value, unroll: int, init: list[ir.Value]) -> list[ir.Value]:
        """Rank-1 updates for k in [start, stop), `unroll` per iteration; `a_at(r, k)` points at A[r, k]."""
        p, b, v = self.p, self.b, self.v
        pre = b.block
        head = self.fn.append_basic_block("k.head")
        body = self.fn.append_basic_block("k.body")
        done = self.fn.append_basic_block("k.done")
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(I64, name="k")
        k.add_incoming(start, pre)
        accs = []
        for value in init:
            phi = b.phi(v.vf)
            phi.add_incoming(value, pre)
            accs.append(phi)
        b.cbranch(b.icmp_signed("<", k, stop), body, done)
        b.position_at_end(body)
        cur: list[ir.Value] = list(accs)
        if unroll > 1 and self.next_b is not None:  # one row of the next B panel per iteration
            row = self.fptr(self.next_b, b.mul(b.udiv(k, _c(unroll)), _c(p.nr)))
            for line in range(0, p.nr, 16):
                self.prefetch(self.fptr(row, _c(line)), write=False)
        for u in range(unroll):
            ku = b.add(k, _c(u))
            bvec = [
                b.load(self.fptr(bptr, b.add(b.mul(ku, _c(p.nr)), _c(j * p.lanes))), typ=v.vf, align=64)
                for j in range(p.nv)
            ]
            for r in range(p.mr):
                s = v.splat(b.load(a_at(r, ku), typ=F32))
                for j in range(p.nv):
                    cur[r * p.nv + j] = v.fma(s, bvec[j], cur[r * p.nv + j])
        for phi, value in zip(accs, cur):
            phi.add_incoming(value, body)
        k.add_incoming(b.add(k, _c(unroll)), body)
        b.branch(head)
        b.position_at_end(done)
        return accs

    def epilogue(self, acc: ir.Value, bi, m0, n0, r: int, j: int, mask) -> ir.Value:
        p, b, v = self.p, self.b, self.v
        m = b.add(m0, _c(r))
        col = b.add(n0, _c(j * p.lanes))
        inputs = [acc]
        for e, kind, t_eb, t_em, t_en in zip(self.E, self.e_kind, self.t_eb, self.t_em, self.t_en):
            base = b.add(self.at(t_eb, bi), self.at(t_em, m))
            if kind == "zero":
                value = v.splat(b.load(self.fptr(e, b.add(base, _c(int(self._first(t_en))))), typ=F32))
            elif kind == "contiguous":
                start = b.add(base, self.at(t_en, col, I32))
                value = self.vload(self.fptr(e, start), mask)
            else:
                offs_ptr = b.gep(t_en, [col], inbounds=True, source_etype=I32)
                offs = b.sext(b.load(offs_ptr, typ=ir.VectorType(I32, p.lanes), align=4), ir.VectorType(I64, p.lanes))
                full = mask if mask is not None else ir.Constant(v.vb, [1] * p.lanes)
                value = self.gather(self.fptr(e, base), offs, full)
            inputs.append(value)
        out = v.expr(p.epilogue, inputs)
        return out if out.type == v.vf else b.uitofp(out, v.vf)

    def _first(self, table: ir.Value) -> int:
        return self._firsts[id(table)]


def two_runs(offsets: np.ndarray, lanes: int, chunks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per chunk of `lanes` columns: (split, first, second, step) when lanes [0, split) read
    first + step * l and lanes [split, lanes) read second + step * l (one or two runs of
    stride 1 or 2; columns past the end do not count), else split 0 (a gather)."""
    split = np.zeros(chunks, np.int64)
    first = np.zeros(chunks, np.int64)
    second = np.zeros(chunks, np.int64)
    steps = np.ones(chunks, np.int64)
    for c in range(chunks):
        part = offsets[c * lanes : (c + 1) * lanes]
        if not len(part):
            continue
        lane = np.arange(len(part))
        for step in (1, 2):
            breaks = np.nonzero(np.diff(part - step * lane))[0]
            if len(breaks) <= 1:
                break
        else:
            continue
        s = int(breaks[0]) + 1 if len(breaks) else lanes
        split[c], first[c], steps[c] = s, part[0], step
        second[c] = part[s] - step * s if s < len(part) else part[0]
    return split, first, second, steps


def _opaque(value: ir.Value) -> ir.Value:
    """An alloca or global as an opaque `ptr` (llvmlite types them as typed pointers)."""
    value.type = PTR
    return value


def _pattern(offsets: np.ndarray) -> str:
    """How an epilogue input varies along N: not at all, contiguously, or otherwise."""
    if np.all(offsets == offsets[0]):
        return "zero"
    if np.array_equal(offsets - offsets[0], np.arange(len(offsets))):
        return "contiguous"
    return "gather"


def _contiguous(offsets: np.ndarray, start: int, count: int) -> bool:
    part = offsets[start : start + count]
    return len(part) == count and bool(np.array_equal(part - part[0], np.arange(count)))
