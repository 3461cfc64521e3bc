"""convert-cf-to-llvm: cf.br and cf.cond_br -> llvm.br and llvm.cond_br.

xDSL 0.74 has no such conversion. The branches keep their successors and block
arguments unchanged; xDSL's LLVM translation turns the block arguments into phis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import cf, llvm
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)


class BranchToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: cf.BranchOp, rewriter: PatternRewriter):
        rewriter.replace(op, llvm.BrOp(op.successor, *op.arguments))


class CondBranchToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: cf.ConditionalBranchOp, rewriter: PatternRewriter):
        rewriter.replace(
            op,
            llvm.CondBrOp(
                op.cond, op.then_block, op.then_arguments, op.else_block, op.else_arguments
            ),
        )


@dataclass(frozen=True)
class ConvertCfToLLVM(ModulePass):
    """Lower cf branches to llvm branches."""

    name: ClassVar[str] = "convert-cf-to-llvm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        applier = GreedyRewritePatternApplier([BranchToLLVM(), CondBranchToLLVM()])
        PatternRewriteWalker(applier, apply_recursively=False).rewrite_module(op)
