"""convert-func-to-llvm: func.func, func.return and func.call -> llvm.func, llvm.return, llvm.call.

xDSL 0.74 has no such conversion. Argument types are final by now (pointers from
convert-memref-to-ptr, i64 from convert-arith-to-llvm). A public function becomes
external, a private one internal so LLVM may inline it away. A function marked
`einc.noalias_args` gets `llvm.noalias` on its pointer arguments (all of them for
a unit attribute, those listed for an array of indices): without that promise
LLVM must assume stores to one buffer may change another and will not vectorise
the loops that read them. Arena buffers that share bytes (memplan) go unlisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func, llvm
from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, DictionaryAttr, ModuleOp, UnitAttr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.utils.exceptions import PassFailedException

NOALIAS_ARGS = "einc.noalias_args"
"""On a func.func: its pointer arguments (unit) or those listed (array<i64>) alias no other."""


def _arg_attrs(op: func.FuncOp) -> ArrayAttr[DictionaryAttr] | None:
    marked = op.attributes.get(NOALIAS_ARGS)
    inputs = op.function_type.inputs.data
    listed = set(marked.get_values()) if isinstance(marked, DenseArrayBase) else set()
    noalias = [isinstance(marked, UnitAttr) or n in listed for n in range(len(inputs))]
    given = op.arg_attrs.data if op.arg_attrs else [DictionaryAttr({})] * len(inputs)
    attrs = [
        DictionaryAttr({**d.data, "llvm.noalias": UnitAttr()})
        if alias_free and isinstance(t, llvm.LLVMPointerType)
        else d
        for d, t, alias_free in zip(given, inputs, noalias, strict=True)
    ]
    return ArrayAttr(attrs) if any(d.data for d in attrs) else None


class FuncToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: func.FuncOp, rewriter: PatternRewriter):
        outputs = op.function_type.outputs.data
        if len(outputs) > 1:
            raise PassFailedException(f"@{op.sym_name.data}: llvm.func returns at most one value")
        signature = llvm.LLVMFunctionType(
            op.function_type.inputs.data, outputs[0] if outputs else llvm.LLVMVoidType()
        )
        private = op.sym_visibility is not None and op.sym_visibility.data == "private"
        linkage = "internal" if private and not op.is_declaration else "external"
        attributes = {k: v for k, v in op.attributes.items() if k != NOALIAS_ARGS}
        new = llvm.FuncOp(
            op.sym_name,
            signature,
            linkage=llvm.LinkageAttr(linkage),
            body=rewriter.move_region_contents_to_new_regions(op.body),
            other_props={"arg_attrs": _arg_attrs(op)},
            extra_attrs=attributes,
        )
        rewriter.replace(op, new)


class ReturnToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: func.ReturnOp, rewriter: PatternRewriter):
        rewriter.replace(op, llvm.ReturnOp(op.arguments[0] if op.arguments else None))


class CallToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: func.CallOp, rewriter: PatternRewriter):
        if len(op.res) > 1:
            raise PassFailedException(f"call of @{op.callee.string_value()}: at most one result")
        result_type = op.res[0].type if op.res else None
        rewriter.replace(op, llvm.CallOp(op.callee, *op.arguments, return_type=result_type))


@dataclass(frozen=True)
class ConvertFuncToLLVM(ModulePass):
    """Lower func to llvm functions, returns and calls."""

    name: ClassVar[str] = "convert-func-to-llvm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        applier = GreedyRewritePatternApplier([FuncToLLVM(), ReturnToLLVM(), CallToLLVM()])
        PatternRewriteWalker(applier, apply_recursively=False).rewrite_module(op)
