"""The `fuse` pass: einsums that run as one kernel become one `ein.group`.

Two kinds of group, each a unit a backend compiles on its own:

- "contraction": a sum of products (`$0 * $1` reduced by add over f32) with
  the elementwise einsums that consume it and nothing else (bias, activation,
  residual add, scaling). The CPU backend runs it as a packed, register-blocked
  GEMM whose epilogue applies the consumers' maps while the tile is in
  registers; the intermediate tensors are never written.
- "rows": a reduction with the elementwise einsums around it that share its
  output rows (softmax's max, exp, sum, divide; LayerNorm's mean, centre,
  variance, scale), when the pass-count analysis puts the whole chain in at
  most two passes over the reduced rank: the row then stays in cache between
  the passes instead of going through memory per einsum.

The cost rule: elementwise einsums after a contraction join its group when
every value they make, but the last, is read only inside the group (fusing
then removes a write and a read of the whole tensor per einsum and adds no
work); a reader outside, a reduction, a map function the vector epilogue
lacks (`EPILOGUE_FUNCTIONS`) or a non-f32 type ends the group. Each group records why in `einc.why`, which
`einc explain` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import Float32Type, ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from einc.backends.llvm.ukernels.vector import EPILOGUE_FUNCTIONS
from einc.ir import mapexpr
from einc.ir.ein import EinsumOp, GroupOp, YieldOp
from einc.ir.indexexpr import IndexExpr

def _f32(value: SSAValue) -> bool:
    ty = value.type
    return isinstance(ty, TensorType) and isinstance(ty.get_element_type(), Float32Type)


def _factors(expr: mapexpr.Expr) -> list[mapexpr.Expr]:
    if isinstance(expr, mapexpr.Call) and expr.fn == "mul":
        return _factors(expr.args[0]) + _factors(expr.args[1])
    return [expr]


def contraction_scale(op: Operation) -> float | None:
    """For a sum over some index of `$0 * $1` (times constants) of two f32 tensors, the constant factor."""
    if not (
        isinstance(op, EinsumOp)
        and len(op.inputs) == 2
        and op.reduce_op == "add"
        and bool(op.reduction_vars())
        and all(_f32(v) for v in [*op.inputs, op.output])
    ):
        return None
    factors = _factors(op.map_expr)
    inputs = sorted(f.index for f in factors if isinstance(f, mapexpr.Input))
    consts = [f.value for f in factors if isinstance(f, mapexpr.Const)]
    if inputs != [0, 1] or len(inputs) + len(consts) != len(factors):
        return None
    scale = 1.0
    for c in consts:
        scale *= c
    return scale


def is_contraction(op: Operation) -> bool:
    """A sum over some index of products of two f32 tensors (Gemm's alpha allowed)."""
    return contraction_scale(op) is not None


def _functions(expr: mapexpr.Expr) -> set[str]:
    if isinstance(expr, mapexpr.Call):
        return {expr.fn}.union(*(_functions(a) for a in expr.args))
    return set()


def epilogue_step(op: Operation, members: set[SSAValue], shape: Attribute) -> str | None:
    """Why `op` cannot join a contraction group whose values are `members` (None: it can)."""
    if not isinstance(op, EinsumOp):
        return f"read by {op.name}"
    if op.reduce_op is not None:
        return "read by a reduction (a reduce or the next contraction)"
    if op.result_type() != shape:
        return "read by an einsum of another shape"
    if not all(_f32(v) for v in [*op.inputs, op.output]):
        return "read by a non-f32 einsum"
    missing = _functions(op.map_expr) - EPILOGUE_FUNCTIONS
    if missing:
        return f"read by a map the vector epilogue lacks ({', '.join(sorted(missing))})"
    identity = [IndexExpr.var(v) for v in op.output_vars]
    for operand, exprs in zip(op.inputs, op.input_exprs):
        if operand in members and exprs != identity:
            return "read transposed or broadcast"
    return None


def closed(chain: Sequence[Operation]) -> bool:
    """Whether only the last op's result is read outside the chain."""
    inside = set(chain)
    return all(use.operation in inside for op in chain[:-1] for use in op.results[0].uses)


LOOKAHEAD = 64
"""Ops after a contraction that the pass looks at for its epilogue."""


def epilogue_chain(con: EinsumOp) -> tuple[list[EinsumOp], str]:
    """The contraction and the elementwise ops after it that form one closed group.

    Ops are taken in program order while each one that reads a group value is
    a valid epilogue step; the longest prefix in which only the last value
    escapes wins (GELU's `x * (1 + erf(x / sqrt2)) / 2` reads x twice: both
    readers join, and x stays in registers).
    """
    chain: list[EinsumOp] = [con]
    members = {con.output}
    best, stop = 1, "end of the function"
    op = con.next_op
    for _ in range(LOOKAHEAD):
        if op is None:
            break
        if any(v in members for v in op.operands):
            stop = epilogue_step(op, members, con.output.type) or ""
            if stop:
                break
            chain.append(op)  # type: ignore[arg-type]
            members.add(op.results[0])
            if closed(chain):
                best = len(chain)
        op = op.next_op
    if best < len(chain):
        readers = len({u.operation for u in chain[best - 1].results[0].uses})
        stop = f"its value is also read outside the group ({readers} readers)"
    return chain[:best], stop


def _make_group(kind: str, ops: Sequence[EinsumOp], why: str) -> GroupOp:
    """Wrap `ops` (in order, the last one's result escaping) into an isolated group."""
    inside = {op.output for op in ops}
    inputs: list[SSAValue] = []
    for op in ops:
        for v in op.inputs:
            if v not in inside and v not in inputs:
                inputs.append(v)
    last = ops[-1]
    block = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, block.args))
    for arg, v in zip(block.args, inputs):
        arg.name_hint = v.name_hint
    for op in ops:
        clone = op.clone()
        for i, v in enumerate(op.inputs):
            clone.operands[i] = mapping[v]
        mapping[op.output] = clone.output
        clone.output.name_hint = op.output.name_hint
        block.add_op(clone)
    block.add_op(YieldOp([mapping[last.output]]))
    group = GroupOp(inputs, [last.output.type], kind, Region(block))
    group.attributes["einc.why"] = StringAttr(why)
    group.outputs[0].name_hint = last.output.name_hint
    parent = last.parent_block()
    assert parent is not None
    parent.insert_op_after(group, last)
    last.output.replace_all_uses_with(group.outputs[0])
    for op in reversed(ops):
        op.detach()
        op.erase()
    return group


def fuse_contractions(fn: func.FuncOp) -> list[GroupOp]:
    groups = []
    for op in list(fn.body.block.ops):
        if not is_contraction(op):
            continue
        chain, stop = epilogue_chain(op)  # type: ignore[arg-type]
        fused = len(chain) - 1
        why = (
            f"contraction with {fused} elementwise op{'s' if fused != 1 else ''} fused as its epilogue "
            f"(their intermediate values are read only inside the group); the chain ends: {stop}"
        )
        groups.append(_make_group("contraction", chain, why))
    return groups


@dataclass(frozen=True)
class Fuse(ModulePass):
    """Group contractions with their elementwise epilogues into `ein.group`s."""

    name: ClassVar[str] = "fuse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for fn in op.ops:
            if isinstance(fn, func.FuncOp) and not fn.is_declaration:
                fuse_contractions(fn)
