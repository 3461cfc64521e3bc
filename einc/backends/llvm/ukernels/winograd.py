"""Vector kernels of the Winograd transform groups that `passes/winograd.py` makes.

Both transforms of F(2x2, 3x3) only add and subtract, so they are memory-bound
passes: each kernel reads its operand once and writes its result once, 16
tiles (one vector) at a time along a row of tiles.

- input (`winograd-input`): for 16 tiles u0..u0+15 of tile row t, the 4x4
  windows start at columns 2u: the four vectors of one window row are the even
  and odd lanes of two pairs of loads (an even-lane shuffle as in the depthwise
  kernel), then `BT d B` is 8 + 8 vector adds per window row and column, and
  the 16 results go to V[x, y, plane, t, u] (rows of tiles contiguous, as the
  GEMM reads its B operand), or, where the GEMM takes the tiles as rows of
  MR and MR divides a row of tiles (`calls.transform_packing`), straight into
  its packed A layout [x, y][panel][channel][MR], so the GEMM packs nothing
  (ResNet-18 9.30 -> 8.80 ms, 30 interleaved rounds).
- output (`winograd-output`): the 16 GEMM results M[x, y, plane, t, u] of 16
  tiles give `AT m A`, two output rows of 32 pixels whose columns interleave
  (j = 0, 1); the convolution's epilogue (bias, activation, residual) is applied
  to each vector before its store, as the GEMM kernel does (`_Body.epilogue`).

Units of work are planes (an image's channel), split into blocks of tile rows
when there are fewer planes than 4 per thread.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir
from xdsl.dialects.builtin import DictionaryAttr, StringAttr

from einc.backends.llvm.ukernels.declare import call_kernel
from einc.backends.llvm.ukernels.gemm import PTR, GemmPlan, _Body, _c, _pattern, operand_tables
from einc.backends.llvm.ukernels.pool import BODY, define_entry, thread_count
from einc.backends.llvm.ukernels.vector import F32, I32
from einc.ir import mapexpr
from einc.ir.ein import EinsumOp, GroupOp, PadOp
from einc.ir.indexexpr import IndexExpr, flat_offset

if TYPE_CHECKING:
    from einc.passes.lower_ein_to_loops import _Emitter, _FunctionLowering

SERIAL_ELEMENTS = 1 << 16
"""Transforms writing fewer values than this run on the calling thread alone."""
ROW_VARS = ["t", "i", "u", "j"]
"""The output group's variables along an output plane: [t, i, u, j] is the row-major [2t + i, 2u + j]."""


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.type.get_shape())


def _ops(group: GroupOp) -> list[EinsumOp] | None:
    ops = [op for op in group.body.block.ops if op.name != "ein.yield"]
    if not ops or not all(isinstance(op, EinsumOp) for op in ops) or group.yielded[0] is not ops[-1].results[0]:
        return None
    return ops  # type: ignore[return-value]


def _split(planes: int, rows: int, threads: int) -> tuple[int, int]:
    """(tile rows per unit, row blocks per plane): whole planes, unless there are fewer than 4 per thread."""
    per_unit = rows if planes >= 4 * threads else max(1, -(-rows * planes // (4 * threads)))
    return per_unit, -(-rows // per_unit)


class WinogradInputCall:
    """The handler of "winograd-input" groups: V[x, y, n, c, t, u] from the padded image."""

    @staticmethod
    def accepts(group: GroupOp) -> bool:
        ops = _ops(group)
        if ops is None or len(ops) != 1 or ops[0].output_vars != ["x", "y", "n", "c", "t", "u"]:
            return False
        image = _shape(ops[0].inputs[2])
        _, _, n, c, th, tw = _shape(ops[0].output)
        return image == (n, c, 2 * th + 2, 2 * tw + 2)

    @staticmethod
    def lower(lowering: _FunctionLowering, e: _Emitter, group: GroupOp) -> None:
        (op,) = _ops(group)  # type: ignore[misc]
        _, _, n, c, th, tw = _shape(op.output)
        image = group.inputs[list(group.body.block.args).index(op.inputs[2])]  # type: ignore[arg-type]
        from einc.backends.llvm.ukernels.calls import transform_packing  # calls -> passes.fuse -> ukernels

        spec = {"kind": "winograd_input", "planes": n * c, "th": th, "tw": tw, "lanes": 16, "threads": thread_count()}
        packing = transform_packing(group)
        if packing is not None:  # V in the GEMM's packed layout [x, y][panel][c][MR]
            spec.update(packing, channels=c)
        args = [lowering.buffers[image].ref, lowering.buffers[group.outputs[0]].ref]
        call_kernel(lowering, e, spec, args, "einc_winograd")


class WinogradOutputCall:
    """The handler of "winograd-output" groups: Y[n, m, t, i, u, j] with the epilogue applied."""

    @staticmethod
    def spec(group: GroupOp) -> dict[str, Any] | None:
        ops = _ops(group)
        args = list(group.body.block.args)
        spec = None if ops is None else _output_spec(ops, args, [_shape(v) for v in group.inputs])
        if spec is None or ops[0].inputs[2] not in args:  # type: ignore[index]
            return None
        return spec | {"source": args.index(ops[0].inputs[2])}  # type: ignore[arg-type, index]

    @staticmethod
    def accepts(group: GroupOp) -> bool:
        return WinogradOutputCall.spec(group) is not None

    @staticmethod
    def lower(lowering: _FunctionLowering, e: _Emitter, group: GroupOp) -> None:
        spec = WinogradOutputCall.spec(group)
        assert spec is not None
        buffers = [lowering.buffers[v] for v in group.inputs]
        args = [buffers[spec.pop("source")].ref, lowering.buffers[group.outputs[0]].ref]
        args += [buffers[x["input"]].ref for x in spec["epilogue"]["inputs"]]
        call_kernel(lowering, e, spec, args, "einc_winograd")


def _output_spec(chain: list[EinsumOp], args: list[Any], shapes: list[tuple[int, ...]]) -> dict[str, Any] | None:
    """The output transform's spec (without its source): `chain` is the transform einsum and the
    convolution's epilogue einsums, whose other inputs are among the group's `args`."""
    from einc.backends.llvm.ukernels.calls import compose_epilogue  # calls -> passes.fuse -> ukernels

    head = chain[0]
    if head.output_vars != ["n", "m", *ROW_VARS] or len(head.inputs) != 3:
        return None
    outs = head.output_vars
    epilogue = compose_epilogue(chain, mapexpr.Input(0), outs, args, shapes)
    if epilogue is None:
        return None
    n, m, th, _, tw, _ = _shape(head.output)
    out = _shape(chain[-1].output)
    return {
        "kind": "winograd_output", "vars": dict(zip(outs, out)), "th": th, "tw": tw, "planes": n * m,
        "c": dict(zip(("coef", "const"), flat_offset([IndexExpr.var(v) for v in outs], out))),
        "epilogue": epilogue, "lanes": 16, "threads": thread_count(),
    }


class _Plan:
    """What both transform kernels know at compile time: planes, tile rows, the work split."""

    n_inputs = 2
    body: type[_TransformBody]
    """The emitter of the kernel's body (per unit: one plane, some tile rows)."""

    def __init__(self, spec: dict[str, Any]):
        self.name: str = spec["name"]
        self.lanes = int(spec.get("lanes", 16))
        self.planes, self.th, self.tw = int(spec["planes"]), int(spec["th"]), int(spec["tw"])
        threads = int(spec.get("threads", 1))
        self.serial = threads == 1 or 16 * self.planes * self.th * self.tw < SERIAL_ELEMENTS
        self.mr = int(spec.get("mr", 0))
        """Tiles per panel of the packed layout the input transform writes; 0: the plain layout."""
        self.kp, self.channels = int(spec.get("kp", 0)), int(spec.get("channels", 0))
        self.unpadded = bool(spec.get("unpadded", 0))
        """The image is not padded (the fused kernel's absorbed pad): reads are masked to it."""
        self.rows_per_unit, self.row_blocks = _split(self.planes, self.th, 1 if self.serial else threads)
        if self.mr:  # packed: units are panels (x a block of channels), written channel after channel
            self.panels = self.th * self.tw // self.mr
            self.channel_blocks = 1 if self.serial or self.panels >= 4 * threads else -(-4 * threads // self.panels)
            self.channels_per_unit = -(-self.channels // self.channel_blocks)
        self.extra: list = []

    @property
    def units(self) -> int:
        return self.panels * self.channel_blocks if self.mr else self.planes * self.row_blocks

    def pack(self, which: str, flat: np.ndarray) -> np.ndarray:
        raise ValueError("the Winograd transforms read their operands in place")

    def emit(self, module: ir.Module) -> None:
        body = define_entry(module, self.name, self.n_inputs + len(self.extra), self.units, not self.serial)
        self.body(self, body, module).emit()


class _TransformBody(_Body):
    """Shared by both kernels: the unit's plane and tile rows, the loop over vectors of tiles."""

    p: _Plan

    def emit(self) -> None:
        p, b = self.p, self.b
        argv = self.fn.args[0]
        self.ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR) for i in range(p.n_inputs + len(p.extra))]
        u = self.fn.args[1]
        if p.mr:
            self.packed_unit(u)
            return
        plane = b.udiv(u, _c(p.row_blocks))
        t0 = b.mul(b.urem(u, _c(p.row_blocks)), _c(p.rows_per_unit))
        t1 = self.smin(b.add(t0, _c(p.rows_per_unit)), _c(p.th))
        self.begin(plane)
        self.loop(t0, t1, 1, lambda t: self.row(plane, t), "wt")
        b.ret_void()

    def row(self, plane: ir.Value, t: ir.Value) -> None:
        """Row t of tiles of `plane`, a vector of tiles at a time (the last one partial)."""
        p = self.p
        full = p.tw // p.lanes * p.lanes
        if full:
            self.loop(_c(0), _c(full), p.lanes, lambda q: self.tiles(plane, t, q, p.lanes), "wq")
        if p.tw > full:
            self.tiles(plane, t, _c(full), p.tw - full)

    def packed_unit(self, u: ir.Value) -> None:
        """One panel of MR tiles for a block of channels: consecutive channels' MR values are
        adjacent in the packed layout, so each of the 16 outputs is written as one stream (plane
        after plane, each panel's MR values landed in lines already evicted, and were 5% slower
        than the plain layout and the GEMM's own packing together at 56x56)."""
        p, b = self.p, self.b
        panel = b.udiv(u, _c(p.channel_blocks))
        c0 = b.mul(b.urem(u, _c(p.channel_blocks)), _c(p.channels_per_unit))
        c1 = self.smin(b.add(c0, _c(p.channels_per_unit)), _c(p.channels))
        first = b.mul(panel, _c(p.mr))
        t, u0 = b.udiv(first, _c(p.tw)), b.urem(first, _c(p.tw))

        def channel(c: ir.Value) -> None:
            self.begin(c)
            self.tiles(c, t, u0, p.mr)

        self.loop(c0, c1, 1, channel, "wc")
        b.ret_void()

    def begin(self, plane: ir.Value) -> None:
        """Per-unit set-up (tables, base offsets)."""

    def tiles(self, plane: ir.Value, t: ir.Value, u0: ir.Value, count: int) -> None:
        raise NotImplementedError

    def mask(self, count: int) -> ir.Value | None:
        return None if count >= self.p.lanes else self.lane_mask(_c(count))

    def tile_offset(self, plane: ir.Value, x: int, y: int, t: ir.Value, u0: ir.Value) -> ir.Value:
        """Offset of [x, y, plane, t, u0] in the transformed layout [4, 4, planes, th * tw], or in
        the packed [4 * 4][panel][Kp][MR] with the plane as the channel (one image; MR divides tw)."""
        p, b = self.p, self.b
        if p.mr:
            panel = b.udiv(b.add(b.mul(t, _c(p.tw)), u0), _c(p.mr))
            first = b.add(b.mul(_c(x * 4 + y), _c(p.th * p.tw // p.mr)), panel)
            return b.mul(b.add(b.mul(first, _c(p.kp)), plane), _c(p.mr))
        first = b.add(b.mul(_c(x * 4 + y), _c(p.planes)), plane)
        return b.add(b.mul(first, _c(p.th * p.tw)), b.add(b.mul(t, _c(p.tw)), u0))


def _even_odd(b: ir.IRBuilder, lo: ir.Value, hi: ir.Value, lanes: int) -> tuple[ir.Value, ir.Value]:
    even = ir.Constant(ir.VectorType(I32, lanes), list(range(0, 2 * lanes, 2)))
    odd = ir.Constant(ir.VectorType(I32, lanes), list(range(1, 2 * lanes, 2)))
    return b.shuffle_vector(lo, hi, even), b.shuffle_vector(lo, hi, odd)


def _bt(b: ir.IRBuilder, d: list[ir.Value]) -> list[ir.Value]:
    """`BT d` along one axis of a 4-point window."""
    return [b.fsub(d[0], d[2]), b.fadd(d[1], d[2]), b.fsub(d[2], d[1]), b.fsub(d[1], d[3])]


def _at(b: ir.IRBuilder, m: list[ir.Value]) -> list[ir.Value]:
    """`AT m` along one axis: two outputs from four points."""
    return [b.fadd(b.fadd(m[0], m[1]), m[2]), b.fsub(b.fsub(m[1], m[2]), m[3])]


class _InputBody(_TransformBody):
    def begin(self, plane: ir.Value) -> None:
        p = self.p
        self.src = self.b.mul(plane, _c((2 * p.th + 2) * (2 * p.tw + 2)))

    def tiles(self, plane: ir.Value, t: ir.Value, u0: ir.Value, count: int) -> None:
        p, b, lanes = self.p, self.b, self.p.lanes
        image, out = self.ptrs
        width = 2 * p.tw + 2
        rows = []
        for a in range(4):
            base = b.add(self.src, b.add(b.mul(b.add(b.mul(t, _c(2)), _c(a)), _c(width)), b.mul(u0, _c(2))))
            loads = []
            for shift, needed in ((0, 2 * count + 2), (2, 2 * count)):  # window columns 0, 1 and 2, 3
                lo = self.vload(self.fptr(image, b.add(base, _c(shift))), self.mask(needed))
                hi = self.vload(self.fptr(image, b.add(base, _c(shift + lanes))), self.mask(needed - lanes)) if needed > lanes else self.v.const(0.0)
                loads.extend(_even_odd(b, lo, hi, lanes))
            rows.append(_bt(b, loads))
        mask = self.mask(count)
        for y in range(4):
            for x, value in enumerate(_bt(b, [rows[a][y] for a in range(4)])):
                self.vstore(value, self.fptr(out, self.tile_offset(plane, x, y, t, u0)), mask)


class _OutputBody(_TransformBody):
    p: WinogradOutputPlan

    def begin(self, plane: ir.Value) -> None:
        p, b = self.p, self.b
        self.E = self.ptrs[2:]
        self.t_eb = [self.table(e.b) for e in p.extra]
        self.t_em = [self.table(e.r) for e in p.extra]
        self.e_kind = [_pattern(e.k) for e in p.extra]
        self.t_en = [self.table(e.k, p.n + p.lanes, I32) for e in p.extra]
        self.bi, self.mi = b.udiv(plane, _c(p.m)), b.urem(plane, _c(p.m))
        self.dst = b.add(self.at(self.table(p.c.b), self.bi), self.at(self.table(p.c.r), self.mi))

    def tiles(self, plane: ir.Value, t: ir.Value, u0: ir.Value, count: int) -> None:
        p, b, lanes = self.p, self.b, self.p.lanes
        source, out = self.ptrs[:2]
        mask = self.mask(count)
        m = [[self.vload(self.fptr(source, self.tile_offset(plane, x, y, t, u0)), mask) for y in range(4)] for x in range(4)]
        s = [_at(b, m[x]) for x in range(4)]  # s[x][j]
        low = ir.Constant(ir.VectorType(I32, lanes), [k // 2 + (k % 2) * lanes for k in range(lanes)])
        high = ir.Constant(ir.VectorType(I32, lanes), [lanes // 2 + k // 2 + (k % 2) * lanes for k in range(lanes)])
        for j0, y in enumerate(zip(*[_at(b, [s[x][j] for x in range(4)]) for j in range(2)])):
            row = b.mul(b.add(b.mul(t, _c(2)), _c(j0)), _c(p.width))  # output row 2t + i, i = j0
            for half, order in enumerate((low, high)):
                cols = 2 * count - half * lanes
                if cols <= 0:
                    continue
                col = b.add(row, b.add(b.mul(u0, _c(2)), _c(half * lanes)))
                vmask = self.mask(cols)
                value = self.epilogue(b.shuffle_vector(y[0], y[1], order), self.bi, self.mi, col, 0, 0, vmask)
                self.vstore(value, self.fptr(out, b.add(self.dst, col)), vmask)


class WinogradInputPlan(_Plan):
    body = _InputBody


class WinogradOutputPlan(_Plan):
    body = _OutputBody

    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        ext = spec["vars"]
        self.m = ext["m"]
        self.width = 2 * self.tw
        self.n = math.prod(ext[v] for v in ROW_VARS)
        self.c = operand_tables(ext, spec["c"], ["n"], ["m"], ROW_VARS)
        if not np.array_equal(self.c.k, np.arange(self.n)):
            raise ValueError("the output planes must be contiguous")
        epi = spec.get("epilogue") or {}
        self.epilogue = mapexpr.parse(epi.get("map", "$0"))
        self.extra = [operand_tables(ext, x, ["n"], ["m"], ROW_VARS) for x in epi.get("inputs", [])]


# -- the fused form: one row of tiles at a time -----------------------------------------------

def _fused_parts(group: GroupOp) -> tuple[PadOp | None, EinsumOp, EinsumOp, list[EinsumOp]] | None:
    """A "winograd" group's absorbed pad (if any), input transform, GEMM and output chain
    (transform + epilogue)."""
    ops = [op for op in group.body.block.ops if op.name != "ein.yield"]
    pad = ops.pop(0) if ops and isinstance(ops[0], PadOp) else None
    if len(ops) < 3 or not all(isinstance(op, EinsumOp) for op in ops) or group.yielded[0] is not ops[-1].results[0]:
        return None
    into, gemm, chain = ops[0], ops[1], ops[2:]
    if (
        into.output_vars != ["x", "y", "n", "c", "t", "u"] or len(into.inputs) != 3
        or gemm.output_vars != ["x", "y", "n", "m", "t", "u"] or gemm.inputs[1] is not into.output
        or chain[0].inputs[2] is not gemm.output
    ):
        return None
    if pad is not None and (
        into.inputs[2] is not pad.result or pad.mode.data != "constant" or pad.value.value.data != 0.0
        or pad.amounts != ([0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0])
    ):
        return None
    return pad, into, gemm, chain  # type: ignore[return-value]


class WinogradCall:
    """The handler of "winograd" groups (`passes/winograd.py`, `fused`): one kernel runs the input
    transform, the 16 GEMMs and the output transform for one row of tiles at a time."""

    @staticmethod
    def spec(group: GroupOp) -> dict[str, Any] | None:
        from einc.backends.llvm.ukernels.calls import DEFAULT_TILES, PIXEL_TILES, _padded  # calls -> passes.fuse -> ukernels

        parts = _fused_parts(group)
        if parts is None:
            return None
        pad, into, gemm, chain = parts
        args = list(group.body.block.args)
        out = _output_spec(chain, args, [_shape(v) for v in group.inputs])
        _, _, n, c, th, tw = _shape(into.output)
        m = _shape(gemm.output)[3]
        image = into.inputs[2] if pad is None else pad.source
        if out is None or n != 1 or image not in args or gemm.inputs[0] not in args:
            return None
        if _shape(image) != (n, c, 2 * th + 2 * (pad is None), 2 * tw + 2 * (pad is None)):
            return None
        # the register tile of least padded work for a row of tiles by the output channels, among
        # the pixels-as-rows tiles of the default 14 x 32 (MR tiles of a row x NR channels)
        mr, nr = min(PIXEL_TILES[(DEFAULT_TILES["mr"], DEFAULT_TILES["nr"], 16)], key=lambda tile: _padded(tw, m, tile))
        return out | {
            "kind": "winograd_fused", "c_in": c, "m": m, "mr": mr, "nr": nr, "unpadded": int(pad is not None),
            "image": args.index(image), "weight": args.index(gemm.inputs[0]),
        }

    @staticmethod
    def accepts(group: GroupOp) -> bool:
        return WinogradCall.spec(group) is not None

    @staticmethod
    def lower(lowering: _FunctionLowering, e: _Emitter, group: GroupOp) -> None:
        from einc.backends.llvm.ukernels.calls import _weight_only_here  # calls -> passes.fuse -> ukernels

        spec = WinogradCall.spec(group)
        assert spec is not None
        buffers = [lowering.buffers[v] for v in group.inputs]
        at = spec.pop("weight")
        weight = buffers[at]
        spec["packed"] = _weight_only_here(lowering, group.inputs[at], group) is not None
        args = [buffers[spec.pop("image")].ref, weight.ref, lowering.buffers[group.outputs[0]].ref]
        args += [buffers[x["input"]].ref for x in spec["epilogue"]["inputs"]]
        call_kernel(lowering, e, spec, args, "einc_winograd")
        if spec["packed"]:  # the transformed weight in the GEMM's panel layout, packed at compile time
            index = weight.ref.index  # type: ignore[attr-defined]
            old = lowering.roles[index].data
            lowering.roles[index] = DictionaryAttr({**old, "pack": StringAttr("b:" + json.dumps(WinogradFusedPlan.gemm_spec(spec), sort_keys=True))})


class WinogradFusedPlan:
    """The fused kernel: units are rows of tiles. A unit transforms its row of the image into a
    scratch A in the GEMM's packed panel layout [x, y][panel][C][MR] (`_RowInputBody`), runs the
    16 GEMMs of the row (a serial `GemmPlan` whose C is a scratch [x, y][M][row]) and transforms
    their results into two rows of output pixels with the epilogue (`_RowOutputBody`). Scratch
    lives on the thread's stack and stays in its cache; the transformed weight is the GEMM's
    prepacked B."""

    n_inputs = 3

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.name: str = spec["name"]
        self.th, self.tw, self.c, self.m = int(spec["th"]), int(spec["tw"]), int(spec["c_in"]), int(spec["m"])
        self.mr = int(spec["mr"])
        self.gemm = GemmPlan(self.gemm_spec(spec))
        self.kp, self.panels = self.gemm.kp, -(-self.tw // self.mr)
        base = {"lanes": int(spec.get("lanes", 16)), "th": self.th, "tw": self.tw, "threads": 1}
        self.into = WinogradInputPlan(
            base | {"name": f"{self.name}.in", "planes": self.c, "mr": self.mr, "kp": self.kp, "channels": self.c, "unpadded": spec.get("unpadded", 0)}
        )
        self.out = WinogradOutputPlan({k: v for k, v in spec.items() if k in ("vars", "c", "epilogue", "planes")} | base | {"name": f"{self.name}.out"})
        self.serial = int(spec.get("threads", 1)) == 1

    @staticmethod
    def gemm_spec(spec: dict[str, Any]) -> dict[str, Any]:
        """The GEMMs of one row: batch [x, y], rows the row's tiles, columns the output channels,
        K the input channels; A the packed scratch, B the weight U[x, y, m, c], C the scratch
        [x, y, m, t] (contiguous along the tiles: the kernel stores its tiles transposed)."""
        tw, c, m = int(spec["tw"]), int(spec["c_in"]), int(spec["m"])
        mr, nr = int(spec["mr"]), int(spec["nr"])
        return {
            "name": f"{spec.get('name', 'einc_winograd')}.gemm", "kind": "gemm", "vars": {"x": 4, "y": 4, "t": tw, "c": c, "m": m},
            "batch": ["x", "y"], "m": ["t"], "n": ["m"], "k": ["c"],
            "a": {"coef": {"x": 4 * c * tw, "y": c * tw, "c": tw, "t": 1}, "const": 0, "input": 0, "packed": True},
            "b": {"coef": {"x": 4 * m * c, "y": m * c, "m": c, "c": 1}, "const": 0, "input": 1, "packed": bool(spec.get("packed", True))},
            "c": {"coef": {"x": 4 * m * tw, "y": m * tw, "m": tw, "t": 1}, "const": 0},
            "tiles": {"mr": mr, "nr": nr, "kc": 1024, "mc": -(-tw // mr) * mr, "nc": -(-m // nr) * nr},
            "lanes": int(spec.get("lanes", 16)), "threads": 1,
        }

    @property
    def units(self) -> int:
        return self.th

    def pack(self, which: str, flat: np.ndarray) -> np.ndarray:
        return self.gemm.pack(which, flat)

    def emit(self, module: ir.Module) -> None:
        extra = len(self.out.extra)
        body = define_entry(module, self.name, self.n_inputs + extra, self.units, not self.serial)
        parts = {}
        for key, plan, emitter in (("in", self.into, _RowInputBody), ("gemm", self.gemm, _Body), ("out", self.out, _RowOutputBody)):
            fn = ir.Function(module, BODY, f"{self.name}.{key}")
            fn.linkage = "internal"
            emitter(plan, fn, module).emit()  # type: ignore[arg-type]
            parts[key] = fn
        b = ir.IRBuilder(body.append_basic_block("entry"))
        argv, row = body.args

        def arg(i: int) -> ir.Value:
            return b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR)

        def scratch(floats: int) -> ir.Value:
            buf = b.alloca(ir.ArrayType(F32, floats))
            buf.align = 64
            buf.type = PTR  # an opaque pointer (llvmlite types allocas as typed pointers)
            return buf

        def call(fn: ir.Function, ptrs: list[ir.Value], unit: ir.Value) -> None:
            array = b.alloca(ir.ArrayType(PTR, len(ptrs)))
            array.type = PTR
            for i, ptr in enumerate(ptrs):
                b.store(ptr, b.gep(array, [_c(i)], source_etype=PTR))
            b.call(fn, [array, unit])

        image, weight, out = arg(0), arg(1), arg(2)
        extras = [arg(3 + i) for i in range(extra)]
        a = scratch(16 * self.panels * self.kp * self.mr)
        c = scratch(16 * self.m * self.tw)
        call(parts["in"], [image, a], row)
        for unit in range(self.gemm.units):
            call(parts["gemm"], [a, weight, c], _c(unit))
        call(parts["out"], [c, out, *extras], row)
        b.ret_void()


class _RowInputBody(_InputBody):
    """Row `unit` of tiles, every channel, into the packed scratch [x, y][panel][Kp][MR] (K
    padding zero: the GEMM reads all of Kp)."""

    def emit(self) -> None:
        p, b = self.p, self.b
        argv, t = self.fn.args
        self.ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR) for i in range(2)]
        self.panels = -(-p.tw // p.mr)

        def channel(c: ir.Value) -> None:
            self.begin(c)
            for q in range(self.panels):
                self.tiles(c, t, _c(q * p.mr), min(p.mr, p.tw - q * p.mr))

        self.loop(_c(0), _c(p.channels), 1, channel, "wc")
        zero, mask = self.v.const(0.0), self.mask(p.mr)
        for xy in range(16):
            for q in range(self.panels):
                for c in range(p.channels, p.kp):
                    self.vstore(zero, self.fptr(self.ptrs[1], _c(((xy * self.panels + q) * p.kp + c) * p.mr)), mask)
        b.ret_void()

    def begin(self, plane: ir.Value) -> None:
        p = self.p
        self.src = self.b.mul(plane, _c((2 * p.th + 2 * (not p.unpadded)) * (2 * p.tw + 2 * (not p.unpadded))))

    def tiles(self, plane: ir.Value, t: ir.Value, u0: ir.Value, count: int) -> None:
        """With the pad absorbed, window row a of tile row t is image row 2t + a - 1 and the
        window columns start at 2u0 - 1: loads masked to the image (AVX-512 and LLVM's masked
        loads touch no masked lane), a row outside it all zero."""
        if not self.p.unpadded:
            super().tiles(plane, t, u0, count)
            return
        p, b, lanes = self.p, self.b, self.p.lanes
        image, out = self.ptrs
        width, height = 2 * p.tw, 2 * p.th
        first = int(u0.constant) * 2 - 1  # type: ignore[attr-defined]
        iota = list(range(lanes))
        rows = []
        for a in range(4):
            r = b.sub(b.add(b.mul(t, _c(2)), _c(a)), _c(1))
            inside = b.and_(b.icmp_signed(">=", r, _c(0)), b.icmp_signed("<", r, _c(height)))
            base = b.add(self.src, b.mul(b.select(inside, r, _c(0)), _c(width)))
            loads = []
            for shift, needed in ((0, 2 * count + 2), (2, 2 * count)):
                halves = []
                for half in range(2 if needed > lanes else 1):
                    col = first + shift + half * lanes
                    keep = [0 <= col + i < width and half * lanes + i < needed for i in iota]
                    mask = b.select(inside, ir.Constant(ir.VectorType(ir.IntType(1), lanes), keep), ir.Constant(ir.VectorType(ir.IntType(1), lanes), [False] * lanes))
                    ptr = b.gep(image, [b.add(base, _c(col))], source_etype=F32)  # may point one before a row: only masked lanes
                    halves.append(self.vload(ptr, mask))
                if len(halves) == 1:
                    halves.append(self.v.const(0.0))
                loads.extend(_even_odd(b, halves[0], halves[1], lanes))
            rows.append(_bt(b, loads))
        mask = self.mask(count)
        for y in range(4):
            for x, value in enumerate(_bt(b, [rows[a][y] for a in range(4)])):
                self.vstore(value, self.fptr(out, self.tile_offset(plane, x, y, t, u0)), mask)

    def tile_offset(self, plane: ir.Value, x: int, y: int, t: ir.Value, u0: ir.Value) -> ir.Value:
        p, b = self.p, self.b
        first = b.add(_c((x * 4 + y) * self.panels), b.udiv(u0, _c(p.mr)))
        return b.mul(b.add(b.mul(first, _c(p.kp)), plane), _c(p.mr))


class _RowOutputBody(_OutputBody):
    """Row `unit` of tiles, every output channel, from the GEMMs' scratch [x, y][M][row]."""

    def emit(self) -> None:
        p, b = self.p, self.b
        argv, t = self.fn.args
        self.ptrs = [b.load(b.gep(argv, [_c(i)], source_etype=PTR), typ=PTR) for i in range(2 + len(p.extra))]

        def plane(m: ir.Value) -> None:
            self.begin(m)
            self.row(m, t)

        self.loop(_c(0), _c(p.planes), 1, plane, "wm")
        b.ret_void()

    def tile_offset(self, plane: ir.Value, x: int, y: int, t: ir.Value, u0: ir.Value) -> ir.Value:
        p, b = self.p, self.b
        return b.add(b.mul(b.add(_c((x * 4 + y) * p.planes), plane), _c(p.tw)), u0)
