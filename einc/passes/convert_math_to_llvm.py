"""convert-math-to-llvm: math ops -> LLVM intrinsics where LLVM has one, else libm calls.

xDSL 0.74 has no such conversion. An intrinsic lets LLVM pick an instruction
(sqrt, floor, fma, round) or its own libcall, and keeps the loop vectorisable
where the target can; the transcendental functions LLVM has no intrinsic for
(tanh, erf, atan, ...) become `llvm.call @tanhf` with one external `llvm.func`
declaration per function in the module, resolved against the process's libm at
load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import llvm, math
from xdsl.dialects.builtin import Float32Type, Float64Type, FloatAttr, ModuleOp
from xdsl.ir import Attribute, Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint
from xdsl.traits import SymbolTable

from einc.passes.convert_arith_to_llvm import call_intrinsic

_LLVM_OP: dict[type[Operation], type[Operation]] = {
    math.ExpOp: llvm.FExpOp,
    math.Exp2Op: llvm.FExp2Op,
    math.LogOp: llvm.FLogOp,
    math.Log2Op: llvm.FLog2Op,
    math.SqrtOp: llvm.FSqrtOp,
    math.AbsFOp: llvm.FAbsOp,
    math.FloorOp: llvm.FFloorOp,
    math.CeilOp: llvm.FCeilOp,
    math.SinOp: llvm.FSinOp,
    math.CosOp: llvm.FCosOp,
    math.PowFOp: llvm.FPowOp,
    math.CopySignOp: llvm.FCopySignOp,
    math.FmaOp: llvm.FMAOp,
}
"""math op -> the llvm dialect's intrinsic op (same operands, same result type)."""

_INTRINSIC: dict[type[Operation], str] = {
    math.Log10Op: "llvm.log10",
    math.RoundOp: "llvm.round",
    math.RoundEvenOp: "llvm.roundeven",
    math.TruncOp: "llvm.trunc",
}
"""math op -> an LLVM intrinsic the llvm dialect has no op for."""

_LIBM: dict[type[Operation], str] = {
    math.TanhOp: "tanh",
    math.ErfOp: "erf",
    math.Log1pOp: "log1p",
    math.ExpM1Op: "expm1",
    math.TanOp: "tan",
    math.AtanOp: "atan",
    math.Atan2Op: "atan2",
    math.AsinOp: "asin",
    math.AcosOp: "acos",
    math.SinhOp: "sinh",
    math.CoshOp: "cosh",
    math.AsinhOp: "asinh",
    math.AcoshOp: "acosh",
    math.AtanhOp: "atanh",
    math.CbrtOp: "cbrt",
}
"""math op -> the C libm function computing it in double; `f` appended for float."""


class MathToIntrinsic(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter):
        result_type = op.results[0].type if op.results else None
        if (llvm_op := _LLVM_OP.get(type(op))) is not None:
            new = llvm_op.create(
                operands=list(op.operands),
                result_types=[result_type],
                properties={"fastmathFlags": llvm.FastMathAttr(None)},
            )
            rewriter.replace(op, new)
        elif (intrinsic := _INTRINSIC.get(type(op))) is not None:
            rewriter.replace(op, call_intrinsic(intrinsic, list(op.operands), result_type))


class RsqrtToLLVM(RewritePattern):
    """rsqrt(x) = 1 / sqrt(x); LLVM forms a fast reciprocal square root under fast-math."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: math.RsqrtOp, rewriter: PatternRewriter):
        type = op.result.type
        if not isinstance(type, Float32Type | Float64Type):
            return
        one = llvm.ConstantOp(FloatAttr(1.0, type), type)
        root = llvm.FSqrtOp(op.operand)
        rewriter.replace(op, [one, root, llvm.FDivOp(one.result, root.res)])


def _libm_name(base: str, type: Attribute) -> str | None:
    return {Float32Type: f"{base}f", Float64Type: base}.get(type.__class__)


class MathToLibmCall(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter):
        if (base := _LIBM.get(type(op))) is None:
            return
        result_type = op.results[0].type
        if (callee := _libm_name(base, result_type)) is None:
            return  # no scalar libm function for this type (f16, vectors)
        module = op.get_toplevel_object()
        assert isinstance(module, ModuleOp)
        if SymbolTable.lookup_symbol(module, callee) is None:
            signature = llvm.LLVMFunctionType([result_type] * len(op.operands), result_type)
            declaration = llvm.FuncOp(callee, signature, linkage=llvm.LinkageAttr("external"))
            rewriter.insert(declaration, InsertPoint.at_end(module.body.block))
        rewriter.replace(op, llvm.CallOp(callee, *op.operands, return_type=result_type))


@dataclass(frozen=True)
class ConvertMathToLLVM(ModulePass):
    """Lower math to LLVM intrinsics and libm calls."""

    name: ClassVar[str] = "convert-math-to-llvm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns = [MathToIntrinsic(), RsqrtToLLVM(), MathToLibmCall()]
        applier = GreedyRewritePatternApplier(patterns, dce_enabled=False)
        PatternRewriteWalker(applier, apply_recursively=False).rewrite_module(op)
