"""The `defer-division` pass: divide after the contraction, not before.

FuseMax's reassociation rewrite. In attention, A[m,p] = SN[m,p] / SD[p] is read
by AV[f,p] = sum_m A[m,p] * V[f,m]; since SD does not depend on m,

    AV[f,p] = (sum_m SN[m,p] * V[f,m]) / SD[p]

does F x P divisions instead of M x P and, more importantly, drops the pass over
m that only existed to divide: the 3-pass cascade becomes a 2-pass one. The
rewrite applies to any sum-of-products einsum that reads, once, a quotient whose
divisor is indexed only by the sum's output indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from einc.ir import mapexpr
from einc.ir.ein import EinsumOp
from einc.ir.indexexpr import IndexExpr

_QUOTIENT = mapexpr.Call("div", (mapexpr.Input(0), mapexpr.Input(1)))


def _factors(expr: mapexpr.Expr) -> list[mapexpr.Expr] | None:
    """The factors of a product tree, or None if the map is not a product."""
    if isinstance(expr, mapexpr.Call) and expr.fn == "mul":
        left, right = _factors(expr.args[0]), _factors(expr.args[1])
        return None if left is None or right is None else left + right
    return [expr]


def _rename(expr: IndexExpr, names: dict[str, str]) -> IndexExpr:
    return IndexExpr(tuple((names[v], c) for v, c in expr.terms), expr.const)


class DeferDivision(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: EinsumOp, rewriter: PatternRewriter) -> None:
        if op.reduce_op != "add":
            return
        factors = _factors(op.map_expr)
        if factors is None or not all(isinstance(f, mapexpr.Input) for f in factors):
            return
        for position, value in enumerate(op.inputs):
            quotient = value.owner
            if (
                not isinstance(quotient, EinsumOp)
                or quotient.reduce_op is not None
                or quotient.map_expr != _QUOTIENT
                or not value.has_one_use()
                or [f.index for f in factors].count(position) != 1
            ):
                continue
            reads = op.input_exprs[position]
            if any(e.plain_var is None for e in reads):
                continue
            names = dict(zip(quotient.output_vars, (e.plain_var for e in reads)))
            num_exprs, den_exprs = quotient.input_exprs
            den = [_rename(e, names) for e in den_exprs]
            if not all(set(e.variables) <= set(op.output_vars) for e in den):
                continue
            num = [_rename(e, names) for e in num_exprs]
            inputs = list(op.inputs)
            inputs[position] = quotient.inputs[0]
            indices = [list(e) for e in op.input_exprs]
            indices[position] = num
            product = EinsumOp(inputs, indices, op.output_vars, op.result_type(), op.map.data, "add")
            divided = EinsumOp(
                [product.output, quotient.inputs[1]],
                [[IndexExpr.var(v) for v in op.output_vars], den],
                op.output_vars,
                op.result_type(),
                _QUOTIENT,
            )
            product.output.name_hint = op.output.name_hint
            rewriter.replace_op(op, [product, divided])
            rewriter.erase_op(quotient)
            return


@dataclass(frozen=True)
class DeferDivisionPass(ModulePass):
    """Move divisions by reduction-invariant divisors after sums of products."""

    name: ClassVar[str] = "defer-division"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(GreedyRewritePatternApplier([DeferDivision()])).rewrite_module(op)
