"""Contraction groups -> calls of generated GEMM kernels, in `lower-ein-to-loops`.

`lower-ein-to-loops` keeps a group whose kind has a handler here and asks it
to lower the group; the handler classifies the contraction's index variables
(batch: in A, B and C; M: in A and C; N: in B and C; K: in A and B only),
records each operand's offset coefficients in a kernel spec (see gemm.py),
declares the kernel (`func.func private @einc_gemm_N` with the spec in its
`einc.ukernel` attribute) and emits one `func.call`. Weights read only by this
group are marked to be packed into the kernel's panel layout when the CPU
target writes weights.bin, so the packing costs nothing at run time.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import SSAValue

from einc.backends.llvm.ukernels import depthwise
from einc.backends.llvm.ukernels.declare import call_kernel
from einc.backends.llvm.ukernels.gemm import KU
from einc.ir import mapexpr
from einc.ir.ein import EinsumOp, GroupOp, ReshapeOp, WeightOp
from einc.ir.indexexpr import IndexExpr, flat_offset
from einc.passes.fuse import contraction_scale, epilogue_step, is_contraction

if TYPE_CHECKING:
    from einc.passes.lower_ein_to_loops import Buffer, _Emitter, _FunctionLowering

DEFAULT_TILES = {"mr": 14, "nr": 32, "kc": 256, "mc": 112, "nc": 512, "lanes": 16}


def _chain(group: GroupOp) -> list[EinsumOp] | None:
    """The contraction and its epilogue einsums, or None if the body is not that shape."""
    ops = [op for op in group.body.block.ops if not op.name == "ein.yield"]
    if not ops or not is_contraction(ops[0]) or len(group.outputs) != 1:
        return None
    members = {ops[0].results[0]}
    for op in ops[1:]:
        if epilogue_step(op, members, ops[0].results[0].type) is not None:
            return None
        members.add(op.results[0])
    if group.yielded[0] is not ops[-1].results[0]:
        return None
    return ops  # type: ignore[return-value]


def plan_spec(group: GroupOp, shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """The kernel spec of a contraction group, or None if the GEMM kernel does not fit it."""
    chain = _chain(group)
    if chain is None:
        return None
    con = chain[0]
    extents = con.extents()
    (ea, eb), outs = con.input_exprs, con.output_vars
    va = {v for e in ea for v in e.variables}
    vb = {v for e in eb for v in e.variables}
    if not outs or any(v not in va and v not in vb for v in outs):
        return None
    args = list(group.body.block.args)
    a_arg, b_arg = con.inputs
    last = next((v for v in reversed(outs) if extents[v] > 1), outs[-1])
    if last in va and last not in vb:  # the output's contiguous index must be in B
        ea, eb, va, vb, a_arg, b_arg = eb, ea, vb, va, b_arg, a_arg
    # N: the longest run of B-only variables ending the output (contiguous in C);
    # M: A-only variables; batch: the rest (in both, or B-only but outside the run,
    # like the image index of an NCHW convolution). Size-1 variables play no role.
    wide = [v for v in outs if extents[v] > 1]
    n: list[str] = []
    for v in reversed(wide):
        if v in va or v not in vb:
            break
        n.insert(0, v)
    m = [v for v in wide if v in va and v not in vb]
    batch = [v for v in wide if v not in m and v not in n]
    k = [v for v in con.reduction_vars() if v in va and v in vb]
    if set(con.reduction_vars()) != set(k) or not k or not n:
        return None
    if not all(isinstance(x, type(args[0])) for x in (a_arg, b_arg)):
        return None

    def operand(value: SSAValue, exprs: list[IndexExpr]) -> dict[str, Any]:
        coef, const = flat_offset(exprs, shapes[args.index(value)])  # type: ignore[arg-type]
        return {"coef": coef, "const": const, "input": args.index(value)}  # type: ignore[arg-type]

    spec: dict[str, Any] = {
        "kind": "gemm",
        "vars": {v: extents[v] for v in batch + m + n + k},
        "batch": batch, "m": m, "n": n, "k": k,
        "a": operand(a_arg, ea),
        "b": operand(b_arg, eb),
        "c": dict(zip(("coef", "const"), flat_offset([IndexExpr.var(v) for v in outs], out_shape))),
    }
    # Compose the epilogue: $0 is the accumulator, $1.. the extra inputs.
    scale = contraction_scale(con)
    head: mapexpr.Expr = mapexpr.Input(0) if scale == 1.0 else mapexpr.Call("mul", (mapexpr.Input(0), mapexpr.Const(scale)))  # type: ignore[arg-type]
    epilogue = compose_epilogue(chain, head, outs, args, shapes)
    if epilogue is None:
        return None
    spec["epilogue"] = epilogue
    return spec


def compose_epilogue(
    chain: list[EinsumOp], head: mapexpr.Expr, outs: list[str], args: list[SSAValue], shapes: list[tuple[int, ...]]
) -> dict[str, Any] | None:
    """The epilogue of a kernel whose accumulator is `chain[0]`'s result (`head`, over `$0`)
    and that applies the elementwise einsums `chain[1:]` before it stores: their map over
    `$0` and the extra inputs `$1..`, each with its offset coefficients over the kernel's
    output variables `outs`; None if an input is neither the group's nor the chain's."""
    expr = head
    extras: list[dict[str, Any]] = []
    keys: list[tuple[int, tuple[str, ...]]] = []
    values: dict[SSAValue, mapexpr.Expr] = {chain[0].output: expr}
    for op in chain[1:]:
        names = dict(zip(op.output_vars, outs))
        subst: list[mapexpr.Expr] = []
        for value, exprs in zip(op.inputs, op.input_exprs):
            if value in values:
                subst.append(values[value])
                continue
            if value not in args:
                return None
            renamed = [IndexExpr(tuple((names[v], c) for v, c in e.terms), e.const) for e in exprs]
            key = (args.index(value), tuple(str(e) for e in renamed))
            if key not in keys:
                keys.append(key)
                coef, const = flat_offset(renamed, shapes[args.index(value)])
                extras.append({"coef": coef, "const": const, "input": args.index(value)})
            subst.append(mapexpr.Input(1 + keys.index(key)))
        values[op.output] = expr = mapexpr.substitute(op.map_expr, subst)
    return {"map": mapexpr.render(expr), "inputs": extras}


def _weight_only_here(lowering: _FunctionLowering, value: SSAValue, group: GroupOp) -> str | None:
    """The symbol of the weight behind `value` if this group is its only reader."""
    owner = value.owner
    while isinstance(owner, ReshapeOp):
        if len({u.operation for u in owner.result.uses}) != 1:
            return None
        owner = owner.source.owner
    if not isinstance(owner, WeightOp):
        return None
    sym = owner.sym.string_value()
    readers = set()
    for op in lowering.fn.body.block.ops:
        if isinstance(op, WeightOp) and op.sym.string_value() == sym:
            stack = [op.result]
            while stack:
                for use in stack.pop().uses:
                    if isinstance(use.operation, ReshapeOp):
                        stack.append(use.operation.result)
                    else:
                        readers.add(use.operation)
    return sym if readers == {group} else None


REGISTER_TILES = {(14, 32, 16): [(14, 32), (8, 48), (6, 64)]}
"""(MR, NR, lanes) the tile pass chose -> register tiles of about as many accumulators (28, 24, 24)
that fit the 32 vector registers. Edge tiles compute their padding: M = 128 rows waste 9% in
14-row tiles and none in 8-row ones (ResNet's 128-channel convolutions, 1 thread: 6-7% faster
in 8 x 48). A 7x7 map (N = 49) fits one 64-column panel, so the 512-channel weights (9 MB)
stream from L3 once, not once per 32-column panel (1 thread: 10-26% faster in 6 x 64).
Not below ALT_TILE_ROWS: at M = 64 (N = 3136) 8 x 48 and 6 x 64 were 2% slower all the same."""
ALT_TILE_ROWS = 128
MATMUL_SAVING = 0.03
MATMUL_TILES = True
MATMUL_TILE = (6, 64)
"""Other contractions take MATMUL_TILE, or another register tile where that pads at least 3% less.
6 x 64 (4 B vectors and 6 broadcasts per 24 FMAs) beats 14 x 32 (2 and 14 per 28) on sgemm:
2048^3 453 -> 477 and 434 -> 455 GFLOP/s, 1024^3 393 -> 423 (6 paired rounds each, 2 threads).
By padding alone, M = 64 (the MLP) or 128 (an encoder's tokens) pad to 70 or 140 rows in 14 x 32
and to 66 or 132 in 6 x 64: MLP 0.476 -> 0.448 ms, encoder block 0.502 -> 0.460, all-MiniLM-L6-v2
1.46 -> 1.11, GPT-2 tiny 0.042 -> 0.033 (10 paired rounds); those models take the same tiles with
6 x 64 as the usual tile (within 1%)."""


def fit_register_tile(tiles: dict[str, int], m: int, n: int, conv: bool) -> dict[str, int]:
    """The register tile of the least padded work among REGISTER_TILES (first wins ties) for
    convolutions from ALT_TILE_ROWS rows on; for other contractions MATMUL_TILE, or the least
    padded where it saves MATMUL_SAVING of MATMUL_TILE's work.
    Fewer rows than MR (a depthwise convolution has one per channel): MR = M and the
    accumulators go to more columns instead, rather than computing 13 of 14 rows for nothing."""
    tiles = dict(tiles)
    choices = REGISTER_TILES.get((tiles["mr"], tiles["nr"], tiles.get("lanes", 16)), [])

    def padded(t: tuple[int, int]) -> int:
        return -(-m // t[0]) * t[0] * -(-n // t[1]) * t[1]

    best = min(choices, key=padded) if choices and n else None
    if best and not conv and MATMUL_TILES:
        usual = MATMUL_TILE if MATMUL_TILE in choices else (tiles["mr"], tiles["nr"])
        best = best if padded(best) < (1 - MATMUL_SAVING) * padded(usual) else usual
    if best and (m >= ALT_TILE_ROWS if conv else MATMUL_TILES):
        mr, nr = best
        tiles["mc"] = max(mr, tiles["mc"] // mr * mr)
        tiles["nc"] = max(nr, tiles["nc"] // nr * nr)
        tiles["mr"], tiles["nr"] = mr, nr
    if m < tiles["mr"]:
        lanes = tiles.get("lanes", 16)
        accumulators = tiles["mr"] * (tiles["nr"] // lanes)
        tiles["nr"] = lanes * max(tiles["nr"] // lanes, min(8, accumulators // m))
        tiles["mr"] = m
        tiles["mc"] = m
    return tiles


PIXEL_TILES = {(14, 32, 16): [(14, 32), (8, 48), (7, 48), (6, 64)]}
"""(MR, NR, lanes) the tile pass chose -> register tiles for a convolution with pixels as rows (MR at
most one vector: each tile is transposed in registers for the store). 7 x 48 covers a 7x7 map in 21
accumulators; 7 x 64 (28, with 4 B vectors and a broadcast: 33 registers) spilled accumulators to the
stack in the FMA loop (3x3 512->512 at 7x7: 0.98 -> 0.88 ms; ResNet-18 12.17 -> 11.58 ms, 12 paired rounds)."""
TRANSPOSE_STEPS = 8
"""The in-register transpose and column stores of a pixels-as-rows tile cost about as much as this
many more steps of K (1x1/2 64->128 at 56x56, K = 64: 0.078 ms with pixels as rows, 0.054 ms without;
3x3 layers, K >= 576: pixels as rows 4-27% faster, 2 threads, Zen 5)."""
ORIENTATION = "auto"
"""Convolutions: "auto" (least padded work), "weights" (output channels as M) or "pixels" (pixels as M)."""


def _padded(m: int, n: int, tile: tuple[int, int]) -> int:
    return -(-m // tile[0]) * tile[0] * -(-n // tile[1]) * tile[1]


def pixels_as_rows(spec: dict[str, Any], tiles: dict[str, int], choices: list[tuple[int, int]] | None = None) -> dict[str, Any] | None:
    """A convolution's spec with A and B (and M and N) exchanged, so that the pixels are the rows of
    the register tile and the weights the prepacked B, with the register tile of least padded work;
    None where the tile pass left no choice of tile with at most one vector of rows.
    Pixels as rows leave no padding where the channels do (64 channels in 14-row tiles compute 70;
    a 7x7 map in 32-column tiles computes 64 pixels for 49), and the packed image rows are runs."""
    if choices is None:
        choices = PIXEL_TILES.get((tiles["mr"], tiles["nr"], tiles.get("lanes", 16)), [])
    if not choices:
        return None
    swapped = dict(spec, a=spec["b"], b=spec["a"], m=spec["n"], n=spec["m"])
    m, n = (math.prod(spec["vars"][v] for v in swapped[r]) for r in ("m", "n"))
    mr, nr = min(choices, key=lambda t: _padded(m, n, t))
    swapped["tiles"] = dict(tiles, mr=mr, nr=nr, mc=max(mr, tiles["mc"] // mr * mr), nc=max(nr, tiles["nc"] // nr * nr))
    return swapped


def _orient(spec: dict[str, Any], tiles: dict[str, int]) -> dict[str, Any]:
    """The orientation of a convolution (ORIENTATION): as planned, or pixels as rows where that pads less."""
    swapped = pixels_as_rows(spec, tiles) if ORIENTATION != "weights" else None
    if swapped is None:
        return spec
    if ORIENTATION == "pixels":
        return swapped
    k = math.prod(spec["vars"][v] for v in spec["k"])
    cost = {}
    for which, s, steps in (("weights", spec, k), ("pixels", swapped, k + TRANSPOSE_STEPS)):
        m, n = (math.prod(s["vars"][v] for v in s[r]) for r in ("m", "n"))
        cost[which] = _padded(m, n, (s["tiles"]["mr"], s["tiles"]["nr"])) * steps
    return swapped if cost["pixels"] < cost["weights"] else spec


class ContractionCall:
    """The handler of "contraction" groups (see GROUP_KERNELS in lower_ein_to_loops)."""

    @staticmethod
    def accepts(group: GroupOp) -> bool:
        shapes = [tuple(v.type.get_shape()) for v in group.inputs]  # type: ignore[attr-defined]
        out = tuple(group.outputs[0].type.get_shape())  # type: ignore[attr-defined]
        return plan_spec(group, shapes, out) is not None

    @staticmethod
    def lower(lowering: _FunctionLowering, e: _Emitter, group: GroupOp) -> None:
        out = lowering.buffers[group.outputs[0]]
        spec = kernel_spec(group)
        assert spec is not None
        module = lowering.fn.parent_op()
        assert isinstance(module, ModuleOp)
        taken = {op.sym_name.data for op in module.ops if isinstance(op, func.FuncOp)}
        spec["name"] = next(f"einc_gemm_{i}" for i in range(len(taken) + 1) if f"einc_gemm_{i}" not in taken)
        buffers: list[Buffer] = [lowering.buffers[v] for v in group.inputs]
        if spec["kind"] == "gemm" and spec["a"]["input"] != spec["b"]["input"]:
            for which in ("a", "b"):
                if not spec[which].get("packed") and _weight_only_here(lowering, group.inputs[spec[which]["input"]], group) is not None:
                    spec[which]["packed"] = True
        args = [buffers[spec["a"]["input"]].ref, buffers[spec["b"]["input"]].ref, out.ref]
        args += [buffers[x["input"]].ref for x in spec["epilogue"]["inputs"]]
        text = json.dumps(spec, sort_keys=True)
        for which in ("a", "b"):
            if spec[which].get("packed") and not spec[which].get("packed_by"):
                index = buffers[spec[which]["input"]].ref.index  # type: ignore[attr-defined]
                old = lowering.roles[index].data
                lowering.roles[index] = DictionaryAttr({**old, "pack": StringAttr(f"{which}:{text}")})
        call_kernel(lowering, e, spec, args, "einc_gemm")


def kernel_spec(group: GroupOp) -> dict[str, Any] | None:
    """The kernel spec of a contraction group as it will be lowered (tiles, threads, kind,
    orientation), or None if the GEMM kernel does not fit it; weights are marked packed later."""
    shapes = [tuple(v.type.get_shape()) for v in group.inputs]  # type: ignore[attr-defined]
    spec = plan_spec(group, shapes, tuple(group.outputs[0].type.get_shape()))  # type: ignore[attr-defined]
    if spec is None:
        return None
    tiles = group.attributes.get("einc.tile")
    spec["tiles"] = (
        {k: v.value.data for k, v in tiles.data.items()} if isinstance(tiles, DictionaryAttr) else dict(DEFAULT_TILES)  # type: ignore[attr-defined]
    )
    spec["lanes"] = spec["tiles"].get("lanes", 16)
    m, n = (math.prod(spec["vars"][v] for v in spec[r]) for r in ("m", "n"))
    base = spec["tiles"]
    conv = len(spec["n"]) > 1 or "einc.winograd" in group.attributes  # image columns, or image tiles
    spec["tiles"] = fit_register_tile(base, m, n, conv=conv)
    from einc.backends.llvm.ukernels.pool import thread_count

    spec["threads"] = thread_count()
    if depthwise.fits(spec):  # one output row per channel: the direct kernel, operands in place
        spec["kind"] = "depthwise"
    elif "einc.winograd" in group.attributes and (packed := _transformed_in_packs(spec, base, group)) is not None:
        spec = packed
    elif conv and m > 1:
        spec = _orient(spec, base)
    return spec


PACKED_TRANSFORM = True
"""Module switch for A/B measurements of `_transformed_in_packs` (2 threads, 30 interleaved rounds:
3x3 64->64 at 56x56 0.556 -> 0.498 ms, 128 at 28x28 0.341 -> 0.319, 256 at 14x14 0.352 -> 0.332)."""


def _transformed_in_packs(spec: dict[str, Any], tiles: dict[str, int], group: GroupOp) -> dict[str, Any] | None:
    """The Winograd GEMM with the image tiles as rows and A written by the input transform in the
    kernel's packed panel layout [x, y][panel][channel][MR] (`winograd.py`), so that no packing
    pass copies the transformed image again (it was a tenth of a 64-channel layer at 56x56);
    None where that layout does not fit: a panel of MR tiles must lie in one row of tiles (MR
    divides the row), the channels must fill K without padding, one image."""
    from einc.backends.llvm.ukernels.winograd import WinogradInputCall

    source = winograd_source(group.inputs[spec["b"]["input"]])
    if source is None or not PACKED_TRANSFORM or not WinogradInputCall.accepts(source) or _only_reader(source) is not group:
        return None
    _, _, n, c, _, tw = tuple(source.outputs[0].type.get_shape())  # type: ignore[attr-defined]
    choices = [t for t in PIXEL_TILES.get((tiles["mr"], tiles["nr"], tiles.get("lanes", 16)), []) if tw % t[0] == 0]
    swapped = pixels_as_rows(spec, tiles, choices)
    if n != 1 or c % KU or swapped is None or swapped["k"] != ["c"]:
        return None
    swapped["a"] = dict(swapped["a"], packed=True, packed_by="winograd-input")
    return swapped


def winograd_source(value: SSAValue) -> GroupOp | None:
    """The "winograd-input" group whose result `value` is, through reshapes."""
    owner = value.owner
    while isinstance(owner, ReshapeOp):
        owner = owner.source.owner
    return owner if isinstance(owner, GroupOp) and owner.kind.data == "winograd-input" else None


def _only_reader(group: GroupOp) -> GroupOp | None:
    """The one group that reads `group`'s result (through reshapes), if only one does."""
    readers = [use.operation for use in group.outputs[0].uses]
    while len(readers) == 1 and isinstance(readers[0], ReshapeOp):
        readers = [use.operation for use in readers[0].result.uses]
    return readers[0] if len(readers) == 1 and isinstance(readers[0], GroupOp) else None


def transform_packing(group: GroupOp) -> dict[str, int] | None:
    """For a "winograd-input" group: the packed layout its GEMM reads (MR, K padded), or None
    for the plain [x, y, n, c, t, u] layout. Both groups' handlers decide with this one rule."""
    reader = _only_reader(group)
    if reader is None or reader.kind.data != "contraction":
        return None
    spec = kernel_spec(reader)
    if spec is None or not spec["a"].get("packed_by"):
        return None
    return {"mr": int(spec["tiles"]["mr"]), "kp": -(-math.prod(spec["vars"][v] for v in spec["k"]) // KU) * KU}
