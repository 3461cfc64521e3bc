"""A direct kernel for contractions with one output row per batch index: depthwise convolutions.

A depthwise convolution as a GEMM has M = 1 (one output channel per group) and
K = the taps (9 or 25): the packed GEMM then spends its time packing B and
running a 1 x NR register tile through a K of 9. Here each batch index (a
channel) keeps its K weights in registers as splats, and every vector of 16
output pixels along the image row is `sum_k w[k] * I[row + tap k, q .. q + 15]`:
contiguous loads at stride 1, two loads and an even-lane shuffle at stride 2, a
gather otherwise; the epilogue (bias, activation) is applied before the one store.
The spec is the GEMM's (calls.py), with kind "depthwise"; `fits` says when it applies.

The same kernel runs "window" groups (`fuse.fuse_windows`): a reduction over a small
window of an image with a constant per tap, such as MaxPool (`max` over taps of
image + 0, the padding -inf), with the group's combine and reduce in place of
multiply and add (`WindowCall`); the loop nest it replaces was scalar.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir

from einc.backends.llvm.ukernels.declare import call_kernel
from einc.backends.llvm.ukernels.gemm import (
    GemmPlan,
    _Body,
    _c,
    _pattern,
    offset_table,
)
from einc.backends.llvm.ukernels.pool import define_entry, thread_count
from einc.backends.llvm.ukernels.vector import F32, I32
from einc.ir import mapexpr
from einc.ir.ein import EinsumOp, GroupOp
from einc.ir.indexexpr import IndexExpr, flat_offset

if TYPE_CHECKING:
    from einc.passes.lower_ein_to_loops import _Emitter, _FunctionLowering

MAX_TAPS = 64
"""Taps kept in registers as splats (a 7x7 kernel is 49); beyond this the GEMM is no worse."""
MAX_STEP = 4
"""Largest stride along the output row read by the kernel (beyond 2 by gathers)."""
SERIAL_TAPS = 250_000
"""Tap operations (multiply-add, or add and max) below which the kernel runs on the calling thread.
A tap here costs far more than a GEMM's multiply-add (loads and shuffles per vector), so this is
lower than the 2M (the GEMM's SERIAL_FLOPS / 2 of then) it was: PP-OCRv4 det 0.716 -> 0.688 and 0.711 -> 0.701 of
onnxruntime, ResNet-18 (its MaxPool, 1.8M taps, now threaded) 0.866 -> 0.861; 50K was worse (0.767)."""
UNIT_OUTPUTS = 4096
"""Output pixels per unit of work at least (a unit re-loads its channel's weights)."""


def _row_layout(offsets: np.ndarray, width: int) -> tuple[np.ndarray, int] | None:
    """B's N offsets as (start of each output row, stride along the row), if they are affine in q."""
    grid = offsets.reshape(-1, width)
    step = int(grid[0, 1] - grid[0, 0]) if width > 1 else 1
    if not np.array_equal(grid, grid[:, :1] + step * np.arange(width)):
        return None
    return grid[:, 0].copy(), step


def fits(spec: dict[str, Any]) -> bool:
    """Batch indices (channels) with one output row each, few taps, B affine with a small stride along the row."""
    ext = spec["vars"]
    if math.prod(ext[v] for v in spec["m"]) != 1 or math.prod(ext[v] for v in spec["k"]) > MAX_TAPS:
        return False
    if spec["a"].get("packed") or spec["b"].get("packed"):
        return False
    if math.prod(ext[v] for v in spec["batch"]) == 1:
        return False  # no channels: a vector-matrix product, where the GEMM's prepacked weight wins
    coef = {v: int(c) for v, c in spec["b"]["coef"].items()}
    layout = _row_layout(offset_table(ext, spec["n"], coef), ext[spec["n"][-1]])
    return layout is not None and 0 < layout[1] <= MAX_STEP


IDENTITY = {"add": 0.0, "max": float("-inf"), "min": float("inf")}
"""The reductions a window group may take, with the value a reduction over no tap gives."""


class WindowCall:
    """The handler of "window" groups: one einsum `Y[b.., p, q] = reduce_k(I[..] (op) W[k])` with
    W indexed by the taps alone, run by the depthwise kernel (batch = the output's leading indices)."""

    @staticmethod
    def spec(group: GroupOp) -> dict[str, Any] | None:
        ops = [op for op in group.body.block.ops if op.name != "ein.yield"]
        if len(ops) != 1 or not isinstance(ops[0], EinsumOp) or ops[0].reduce_op not in IDENTITY or len(ops[0].inputs) != 2:
            return None
        from einc.passes.fuse import window_operand  # fuse -> ukernels (calls)

        op = ops[0]
        window, outs = window_operand(op), op.output_vars
        if window is None or len(outs) < 3:
            return None
        args = list(group.body.block.args)
        image = 1 - window

        def operand(i: int) -> dict[str, Any]:
            value = op.inputs[i]
            coef, const = flat_offset(op.input_exprs[i], tuple(value.type.get_shape()))  # type: ignore[attr-defined]
            return {"coef": coef, "const": const, "input": args.index(value)}  # type: ignore[arg-type]

        from einc.backends.llvm.ukernels.calls import DEFAULT_TILES  # calls -> passes.fuse -> ukernels

        spec: dict[str, Any] = {
            "kind": "depthwise", "vars": op.extents(), "batch": outs[:-2], "m": [], "n": outs[-2:], "k": op.reduction_vars(),
            "a": operand(window), "b": operand(image),
            "c": dict(zip(("coef", "const"), flat_offset([IndexExpr.var(v) for v in outs], tuple(op.output.type.get_shape())))),  # type: ignore[attr-defined]
            "epilogue": {"map": "$0", "inputs": []}, "tiles": dict(DEFAULT_TILES), "lanes": 16,
            # the combine over (image, window) whatever their order in the einsum
            "combine": mapexpr.render(mapexpr.substitute(op.map_expr, [mapexpr.Input(0 if i == image else 1) for i in range(2)])),
            "reduce": op.reduce_op, "threads": thread_count(),
        }
        return spec if fits(spec) else None

    @staticmethod
    def accepts(group: GroupOp) -> bool:
        return WindowCall.spec(group) is not None

    @staticmethod
    def lower(lowering: _FunctionLowering, e: _Emitter, group: GroupOp) -> None:
        spec = WindowCall.spec(group)
        assert spec is not None
        buffers = [lowering.buffers[v] for v in group.inputs]
        args = [buffers[spec["a"]["input"]].ref, buffers[spec["b"]["input"]].ref, lowering.buffers[group.outputs[0]].ref]
        call_kernel(lowering, e, spec, args, "einc_window")


class DepthwisePlan(GemmPlan):
    """The GEMM plan's tables, with rows of the output as the units of work."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__({**spec, "tiles": {**spec["tiles"], "mr": 1, "mc": 1}})
        self.width = spec["vars"][spec["n"][-1]]
        layout = _row_layout(self.b.r, self.width)
        if layout is None or self.m != 1:
            raise ValueError("not a depthwise contraction")
        self.row_starts, self.step = layout
        self.combine = mapexpr.parse(spec.get("combine", "$0 * $1"))  # over (image value, tap constant)
        self.reduce = spec.get("reduce", "add")
        self.reduction = mapexpr.parse("$0 + $1" if self.reduce == "add" else f"{self.reduce}($0, $1)")
        self.fused = mapexpr.render(self.combine) == "$0 * $1" and self.reduce == "add"  # one FMA a tap
        self.rows = len(self.row_starts)
        threads = 1 if self.nb * self.n * self.k < SERIAL_TAPS else int(spec.get("threads", 1))
        self.serial = threads == 1
        per_unit = max(1, UNIT_OUTPUTS // self.width)
        if self.nb < 4 * threads:  # few channels: split their rows so every thread has work
            per_unit = min(per_unit, max(1, -(-self.rows * self.nb // (4 * threads))))
        self.rows_per_unit = min(per_unit, self.rows)
        self.row_blocks = -(-self.rows // self.rows_per_unit)

    @property
    def units(self) -> int:  # type: ignore[override]
        return self.nb * self.row_blocks

    def pack(self, which: str, flat: np.ndarray) -> np.ndarray:
        raise ValueError("the depthwise kernel reads its operands in place")

    def emit(self, module: ir.Module) -> None:
        body = define_entry(module, self.name, 3 + len(self.extra), self.units, not self.serial)
        _DepthwiseBody(self, body, module).emit()


class _DepthwiseBody(_Body):
    """`name.body(args, unit)`: output rows [r0, r1) of one batch index."""

    p: DepthwisePlan

    def emit(self) -> None:
        p, b, v = self.p, self.b, self.v
        argv = self.fn.args[0]
        ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=ir.PointerType()), typ=ir.PointerType()) for i in range(3 + len(p.extra))]
        self.A, self.B, self.C = ptrs[:3]
        self.E = ptrs[3:]
        self.t_eb = [self.table(e.b) for e in p.extra]
        self.t_em = [self.table(e.r) for e in p.extra]
        self.e_kind = [_pattern(e.k) for e in p.extra]
        self.t_en = [self.table(e.k, p.n + p.lanes, I32) for e in p.extra]
        t_ab, t_bb, t_cb = (self.table(o.b) for o in (p.a, p.b, p.c))
        t_rows = self.table(p.row_starts)
        u = self.fn.args[1]
        bi = b.udiv(u, _c(p.row_blocks))
        r0 = b.mul(b.urem(u, _c(p.row_blocks)), _c(p.rows_per_unit))
        r1 = self.smin(b.add(r0, _c(p.rows_per_unit)), _c(p.rows))
        ab, bb = self.at(t_ab, bi), self.at(t_bb, bi)
        cb = b.add(self.at(t_cb, bi), _c(int(p.c.r[0])))
        weights = [v.splat(b.load(self.fptr(self.A, b.add(ab, _c(int(off)))), typ=F32)) for off in p.a.k]
        width, lanes = p.width, p.lanes
        full = width // lanes * lanes

        def row(r: ir.Value) -> None:
            src = b.add(bb, self.at(t_rows, r))
            col0 = b.mul(r, _c(width))

            def vector(q: ir.Value, count: int | None) -> None:
                mask = None if count is None else self.lane_mask(_c(count))
                base = b.add(src, b.mul(q, _c(p.step)))
                acc = v.const(IDENTITY[p.reduce])
                for w, off in zip(weights, p.b.k):
                    x = self.load_b(b.add(base, _c(int(off))), count)
                    acc = v.fma(w, x, acc) if p.fused else v.expr(p.reduction, [acc, v.expr(p.combine, [x, w])])
                col = b.add(col0, q)
                out = self.epilogue(acc, bi, _c(0), col, 0, 0, mask)
                self.vstore(out, self.fptr(self.C, b.add(cb, col)), mask)

            if full:
                self.loop(_c(0), _c(full), lanes, lambda q: vector(q, None), "dwq")
            if width > full:
                vector(_c(full), width - full)

        self.loop(r0, r1, 1, row, "dwr")
        b.ret_void()

    def load_b(self, offset: ir.Value, count: int | None) -> ir.Value:
        """B[offset + step * l] for lanes l < count (all lanes if None)."""
        p, b = self.p, self.b
        lanes, step = p.lanes, p.step
        n = lanes if count is None else count
        if step == 1:
            return self.vload(self.fptr(self.B, offset), None if count is None else self.lane_mask(_c(count)))
        if step == 2:  # the even lanes of 2n - 1 contiguous values
            lo = self.vload(self.fptr(self.B, offset), self.lane_mask(_c(2 * n - 1)))
            hi = self.vload(self.fptr(self.B, b.add(offset, _c(lanes))), self.lane_mask(_c(2 * n - 1 - lanes)))
            return b.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(I32, lanes), list(range(0, 2 * lanes, 2))))
        offs = ir.Constant(ir.VectorType(ir.IntType(64), lanes), [step * l for l in range(lanes)])
        return self.gather(self.fptr(self.B, offset), offs, self.lane_mask(_c(n)))
