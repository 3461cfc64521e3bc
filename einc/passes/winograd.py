"""winograd: 3x3 stride-1 convolutions as Winograd F(2x2, 3x3) cascades of einsums.

A 3x3 convolution computes each 2x2 block of outputs from a 4x4 window of the
(padded) image with 36 multiply-adds per channel pair; Winograd's minimal
filtering (Lavin and Gray, 2015) does it with 16, all of them in one batched
GEMM. As einsums, with the constant matrices BT (4x4), G (4x3) and AT (2x4):

    U[x, y, m, c]          = sum_ab G[x, a] G[y, b] W[m, c, a, b]           (compile time)
    V[x, y, n, c, t, u]    = sum_ab BT[x, a] BT[y, b] P[n, c, 2t + a, 2u + b]  "winograd-input"
    M[x, y, n, m, t, u]    = sum_c  U[x, y, m, c] V[x, y, n, c, t, u]       "contraction" (16 GEMMs)
    Y[n, m, t, i, u, j]    = sum_xy AT[i, x] AT[j, y] M[x, y, n, m, t, u]    "winograd-output"

and `Y` viewed as [n, m, 2t + i, 2u + j] is the convolution. The conv group's
epilogue (bias, activation, residual add) moves into the output group, its
inputs indexed at [n, m, 2t + i, 2u + j]; U is a new weight, so the GEMM takes
it prepacked. Every group is plain einsums: the interpreter and the loop lowering
compute them as written, and the CPU backend gives the two transform groups
vector kernels of their own (`ukernels/winograd.py`).

Cost rule (`worth`): maps of even height and width (so the 2x2 blocks tile the
output exactly) with at least MIN_PIXELS pixels and MIN_CHANNELS channels each
way, where the GEMM's saving outweighs writing and reading the transformed
image (16/4 = 4 times the image) and the larger weight (16/9).
Numerics: F(2x2, 3x3)'s transforms only add and subtract (G halves): relative
error 5e-7 against 1.8e-7 for the direct f32 sum (numpy, 128 channels at 28x28).
F(4x4, 3x3) would need fewer multiply-adds still, at 9e-6: not used. An infinite
input gives NaN where the direct sum gives +-inf (the transforms subtract, inf - inf).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType, UnitAttr, f32
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from einc.ir.ein import ConstantOp, EinsumOp, GroupOp, PadOp, ReshapeOp, WeightOp
from einc.ir.indexexpr import IndexExpr
from einc.passes.fold_weights import new_symbol, weight_table
from einc.passes.fuse import make_group
from einc.passes.onnx_to_ein.common import constant_value, dense_attr

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)

MIN_PIXELS = 196
"""Smallest output map (pixels) that takes the Winograd form (14 x 14 and up)."""
MIN_CHANNELS = 16
"""Fewest input and output channels that take it (the GEMM's K and M)."""
ENABLED = True
"""Module switch for A/B measurements (`einc.passes.winograd.ENABLED = False`)."""
FUSED = True
"""Module switch for A/B measurements of the fused form (`fused`)."""
FUSED_MIN_ROWS = 8
"""Fewest rows of tiles for the fused form: its units are rows, a few for each core."""
ABSORB_PAD = True
"""Module switch for A/B measurements: the fused group reads the unpadded image (`_absorbed_pad`)."""
FUSED_SCRATCH = 256 << 10
"""Most bytes of one row's transformed image and GEMM result (16 x row x (C + M) floats): they
stay in a core's L2 (1 MiB) beside the transformed weight."""


@dataclass
class _Conv:
    """A matched 3x3 stride-1 convolution group."""

    group: GroupOp
    image: SSAValue  # the padded image outside the group: [N, C, OH + 2, OW + 2]
    weight: np.ndarray  # [M, C, 3, 3]
    weight_value: SSAValue  # the op outside the group that gives it
    shape: tuple[int, int, int, int, int]  # N, C, M, OH, OW


def _plain(exprs: list[IndexExpr]) -> list[str] | None:
    names = [e.plain_var for e in exprs]
    return None if None in names else names  # type: ignore[return-value]


def _value_of(value: SSAValue, table: dict[str, np.ndarray] | None) -> np.ndarray | None:
    owner = value.owner
    if isinstance(owner, WeightOp) and table is not None:
        return table.get(owner.sym.string_value())
    if isinstance(owner, ConstantOp):
        return constant_value(owner)
    return None


def match(group: GroupOp, table: dict[str, np.ndarray] | None) -> _Conv | str:
    """The convolution a contraction group computes, or why it is not a Winograd candidate."""
    ops = [op for op in group.body.block.ops if op.name != "ein.yield"]
    con = ops[0] if ops else None
    if not isinstance(con, EinsumOp) or con.map.data != "$0 * $1" or con.reduce_op != "add":
        return "not a plain sum of products"
    if any(not isinstance(op, EinsumOp) for op in ops[1:]) or group.yielded[0] is not ops[-1].results[0]:
        return "its epilogue is not einsums ending the group"
    outs = con.output_vars
    if len(outs) != 4 or con.result_type().get_element_type() != f32:
        return "not a 2-D f32 convolution"
    args = list(group.body.block.args)
    for image_at, weight_at in ((0, 1), (1, 0)):
        wvars = _plain(con.input_exprs[weight_at])
        iexprs = con.input_exprs[image_at]
        if wvars is None or len(wvars) != 4 or len(iexprs) != 4:
            continue
        n, m, p, q = outs
        _, c, r, s = wvars
        if wvars[0] != m or [e.plain_var for e in iexprs[:2]] != [n, c]:
            continue
        if iexprs[2] != IndexExpr.affine({p: 1, r: 1}) or iexprs[3] != IndexExpr.affine({q: 1, s: 1}):
            continue
        weight_value = group.inputs[args.index(con.inputs[weight_at])]  # type: ignore[arg-type]
        weight = _value_of(weight_value, table)
        if weight is None:
            return "its weight is not known at compile time"
        if weight.shape[2:] != (3, 3):
            return f"a {weight.shape[2]}x{weight.shape[3]} kernel, not 3x3"
        image = group.inputs[args.index(con.inputs[image_at])]  # type: ignore[arg-type]
        N, C = image.type.get_shape()[:2]  # type: ignore[attr-defined]
        M, OH, OW = con.result_type().get_shape()[1:]
        return _Conv(group, image, weight, weight_value, (N, C, M, OH, OW))
    return "not a stride-1 convolution (image [n, c, p + r, q + s], weight [m, c, r, s])"


def worth(conv: _Conv, min_pixels: int = MIN_PIXELS, min_channels: int = MIN_CHANNELS) -> str | None:
    """Why the Winograd form does not pay here (None: it does)."""
    _, C, M, OH, OW = conv.shape
    if OH % 2 or OW % 2:
        return f"an odd map ({OH}x{OW}): 2x2 blocks do not tile it"
    if OH * OW < min_pixels:
        return f"a small map ({OH}x{OW} < {min_pixels} pixels): the larger weight costs more than the GEMM saves"
    if min(C, M) < min_channels:
        return f"few channels ({C} -> {M}): the transforms cost more than the GEMM saves"
    return None


def fused(conv: _Conv) -> bool:
    """Whether the three steps take the fused form: one "winograd" group whose kernel runs them
    a row of tiles at a time, the transformed row and its GEMM result in the core's cache. One
    image, rows enough for the threads, a row's scratch within FUSED_SCRATCH. Otherwise three
    groups, each step over the whole map: at 56x56 with 64 channels the transformed image and
    the GEMM's result are 3.2 MB each, beyond L2, and the input transform wrote them at a fifth
    of the speed it has on data in cache (ResNet-18's four such layers: 6.5% of its time)."""
    N, C, M, OH, OW = conv.shape
    return FUSED and N == 1 and OH // 2 >= FUSED_MIN_ROWS and 16 * (OW // 2) * (C + M) * 4 <= FUSED_SCRATCH


def _absorbed_pad(conv: _Conv) -> PadOp | None:
    """The zero pad of one pixel on each side that gives the fused group its image, if the group
    is its only reader: the group then takes the pad, and its kernel reads the unpadded image
    with the border masked (no copy of every activation into a padded buffer)."""
    pad = conv.image.owner
    if not ABSORB_PAD or not isinstance(pad, PadOp) or len(list(conv.image.uses)) != 1:
        return None
    low, high, interior = pad.amounts
    if pad.mode.data != "constant" or pad.value.value.data != 0.0 or list(low) != [0, 0, 1, 1] or list(high) != [0, 0, 1, 1] or any(interior):
        return None
    return pad


def _tensor(shape: tuple[int, ...]) -> TensorType:
    return TensorType(f32, shape)


def _constant(array: np.ndarray) -> ConstantOp:
    return ConstantOp(dense_attr(array, _tensor(array.shape)))


def _einsum(inputs: list[SSAValue], indices: list[str], out: str, shape: tuple[int, ...], reduce: bool) -> EinsumOp:
    """An einsum from compact index text: one letter per variable, `2t+a` for affine terms."""
    exprs = [[IndexExpr.parse(e) for e in dims.split(",")] for dims in indices]
    maps = " * ".join(f"${i}" for i in range(len(inputs)))
    return EinsumOp(inputs, exprs, out.split(","), _tensor(shape), maps, "add" if reduce else None)


def rewrite(conv: _Conv, table: dict[str, np.ndarray] | None) -> None:
    """Replace the convolution group by the input, GEMM and output groups of its Winograd form."""
    group = conv.group
    N, C, M, OH, OW = conv.shape
    TH, TW = OH // 2, OW // 2
    block = group.parent_block()
    assert block is not None
    body_ops = [op for op in group.body.block.ops if op.name != "ein.yield"]
    con, epilogue = body_ops[0], body_ops[1:]
    hint = group.outputs[0].name_hint or "conv"

    u = np.einsum("xa,yb,mcab->xymc", G, G, conv.weight.astype(np.float32)).astype(np.float32)
    if table is None:  # IR without its weight table (`einc opt`): the weight was a constant
        new: list = [_constant(u)]
    else:
        sym = new_symbol(hint, table, "winograd")
        table[sym] = np.ascontiguousarray(u)
        new = [WeightOp(sym, _tensor(u.shape))]
    new += [_constant(BT), _constant(AT)]
    w_u, bt, at = (op.results[0] for op in new)

    one_group = fused(conv)
    pad = _absorbed_pad(conv) if one_group else None  # before the transform adds a reader
    v6 = _einsum([bt, bt, conv.image], ["x,a", "y,b", "n,c,2*t+a,2*u+b"], "x,y,n,c,t,u", (4, 4, N, C, TH, TW), True)
    if one_group:  # the GEMM indexes the 6-D transforms directly: no reshape inside the group
        gemm = _einsum([w_u, v6.output], ["x,y,m,c", "x,y,n,c,t,u"], "x,y,n,m,t,u", (4, 4, N, M, TH, TW), True)
        y6 = _einsum([at, at, gemm.output], ["i,x", "j,y", "x,y,n,m,t,u"], "n,m,t,i,u,j", (N, M, TH, 2, TW, 2), True)
        new += [v6, gemm, y6]
    else:
        v = ReshapeOp(v6.output, _tensor((4, 4, N, C, TH * TW)))
        gemm = _einsum([w_u, v.result], ["x,y,m,c", "x,y,n,c,t"], "x,y,n,m,t", (4, 4, N, M, TH * TW), True)
        m6 = ReshapeOp(gemm.output, _tensor((4, 4, N, M, TH, TW)))
        y6 = _einsum([at, at, m6.result], ["i,x", "j,y", "x,y,n,m,t,u"], "n,m,t,i,u,j", (N, M, TH, 2, TW, 2), True)
        new += [v6, v, gemm, m6, y6]

    # The epilogue, moved to [n, m, t, i, u, j]: its other inputs read at [n, m, 2t + i, 2u + j].
    outer = dict(zip(group.body.block.args, group.inputs))
    values: dict[SSAValue, SSAValue] = {con.output: y6.output}
    six = [IndexExpr.var(x) for x in ("n", "m", "t", "i", "u", "j")]
    steps: list[EinsumOp] = []
    for op in epilogue:
        assert isinstance(op, EinsumOp)
        roles = dict(zip(op.output_vars, ({"n": 1}, {"m": 1}, {"t": 2, "i": 1}, {"u": 2, "j": 1})))
        inputs, exprs = [], []
        for value, dims in zip(op.inputs, op.input_exprs):
            if value in values:
                inputs.append(values[value])
                exprs.append(six)
                continue
            inputs.append(outer[value])
            moved = []
            for e in dims:
                coeffs: dict[str, int] = {}
                for var, k in e.terms:
                    for name, scale in roles[var].items():
                        coeffs[name] = coeffs.get(name, 0) + k * scale
                moved.append(IndexExpr.affine(coeffs, e.const))
            exprs.append(moved)
        step = EinsumOp(inputs, exprs, ["n", "m", "t", "i", "u", "j"], _tensor((N, M, TH, 2, TW, 2)), op.map.data)
        values[op.output] = step.output
        steps.append(step)
    y = ReshapeOp((steps or [y6])[-1].output, _tensor((N, M, OH, OW)))
    block.insert_ops_before([*new, *steps, y], group)

    if not one_group:
        make_group("winograd-input", [v6], f"Winograd F(2x2, 3x3) input transform of a {C} -> {M} 3x3 convolution at {OH}x{OW}")
        gemm_group = make_group(
            "contraction", [gemm],
            f"the 16 GEMMs of a Winograd convolution ({M} x {C} by {C} x {TH * TW}): 2.25x fewer multiply-adds than the direct sum",
        )
        gemm_group.attributes["einc.winograd"] = UnitAttr()  # the GEMM kernel may take the tiles as its rows
        make_group(
            "winograd-output", [y6, *steps],
            f"Winograd F(2x2, 3x3) output transform with the convolution's {len(epilogue)} epilogue op(s)",
        )
    y.result.name_hint = group.outputs[0].name_hint
    group.outputs[0].replace_all_uses_with(y.result)
    group.detach()
    group.erase()
    if one_group:  # after the convolution group is gone: the pad then has the transform as its one reader
        make_group(
            "winograd", [*([pad] if pad else []), v6, gemm, y6, *steps],
            f"a {C} -> {M} 3x3 convolution at {OH}x{OW} in Winograd F(2x2, 3x3) form, one row of {TW} tiles at a "
            f"time (input transform, 16 GEMMs, output transform with {len(epilogue)} epilogue op(s))"
            + (", the image's zero pad read as a mask" if pad else ""),
        )
    owner = conv.weight_value.owner
    if isinstance(owner, (WeightOp, ConstantOp)) and not owner.results[0].uses:
        owner.detach()
        owner.erase()


@dataclass(frozen=True)
class Winograd(ModulePass):
    """Rewrite the 3x3 stride-1 convolution groups that `worth` accepts into Winograd form."""

    name: ClassVar[str] = "winograd"

    min_pixels: int | None = None
    """Smallest output map, in pixels, to rewrite (default MIN_PIXELS)."""
    min_channels: int | None = None
    """Fewest input and output channels to rewrite (default MIN_CHANNELS)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not ENABLED:
            return
        table = weight_table(op)  # None for IR text: then only weights that are constants qualify
        for fn in op.ops:
            if not isinstance(fn, func.FuncOp):
                continue
            for group in [g for g in fn.body.block.ops if isinstance(g, GroupOp) and g.kind.data == "contraction"]:
                conv = match(group, table)
                if isinstance(conv, str):
                    continue
                reason = worth(
                    conv,
                    MIN_PIXELS if self.min_pixels is None else self.min_pixels,
                    MIN_CHANNELS if self.min_channels is None else self.min_channels,
                )
                if reason is None:
                    rewrite(conv, table)
                else:
                    why = group.attributes.get("einc.why")
                    text = why.data if isinstance(why, StringAttr) else ""
                    group.attributes["einc.why"] = StringAttr(f"{text}; not in Winograd form: {reason}")
        if table is not None:  # the direct weights rewritten groups no longer read
            used = {o.sym.string_value() for o in op.walk() if isinstance(o, WeightOp)}
            for sym in [s for s in table if s not in used]:
                del table[sym]
