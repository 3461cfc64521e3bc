"""convert-arith-to-llvm: arith ops -> the llvm dialect, and `index` -> i64 everywhere.

xDSL 0.74 has no such conversion. `index` is the host's pointer width, so every
`index` value (op results, block arguments, func.func signatures) becomes i64
first, before any op is rewritten: the rewrites then see final operand types and
never meet a half-converted value. This retyping walks values, not attributes,
which keeps clear of `TypeConversionPattern`'s endless loop on
`arith.constant 0 : index`. Ops the llvm dialect lacks become an intrinsic call
(integer min/max, NaN-propagating float min/max), an `llvmx` instruction
(fptosi/fptoui/uitofp) or a short expansion (floordivsi).

convert-ptr-to-llvm moves pointers as `inttoptr(ptrtoint(p) + offset)`; such a
pointer has lost p's provenance, so LLVM can no longer use the `noalias` of p nor
vectorise the loop. The `arith.addi` of that chain becomes a byte-wise
`getelementptr inbounds` on p instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import arith, func, llvm
from xdsl.dialects.builtin import (
    AnyFloat,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    FunctionType,
    IndexType,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    VectorType,
    i1,
    i8,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import Rewriter

from einc.backends.llvm import extra_ops as llvmx

_BINARY: dict[type[Operation], type[Operation]] = {
    arith.AddfOp: llvm.FAddOp,
    arith.SubfOp: llvm.FSubOp,
    arith.MulfOp: llvm.FMulOp,
    arith.DivfOp: llvm.FDivOp,
    arith.MaxnumfOp: llvm.VectorFMaxOp,
    arith.MinnumfOp: llvm.VectorFMinOp,
    arith.AddiOp: llvm.AddOp,
    arith.SubiOp: llvm.SubOp,
    arith.MuliOp: llvm.MulOp,
    arith.DivSIOp: llvm.SDivOp,
    arith.DivUIOp: llvm.UDivOp,
    arith.RemSIOp: llvm.SRemOp,
    arith.RemUIOp: llvm.URemOp,
    arith.AndIOp: llvm.AndOp,
    arith.OrIOp: llvm.OrOp,
    arith.XOrIOp: llvm.XOrOp,
    arith.ShLIOp: llvm.ShlOp,
    arith.ShRSIOp: llvm.AShrOp,
    arith.ShRUIOp: llvm.LShrOp,
}
"""arith binary op -> the llvm op with the same semantics."""

_BINARY_INTRINSIC: dict[type[Operation], str] = {
    arith.MaxSIOp: "llvm.smax",
    arith.MinSIOp: "llvm.smin",
    arith.MaxUIOp: "llvm.umax",
    arith.MinUIOp: "llvm.umin",
    arith.MaximumfOp: "llvm.maximum",
    arith.MinimumfOp: "llvm.minimum",
}
"""arith binary op -> the LLVM intrinsic that computes it (the llvm dialect has no op)."""

_CAST: dict[type[Operation], type[Operation]] = {
    arith.ExtFOp: llvm.FPExtOp,
    arith.TruncFOp: llvm.FPTruncOp,
    arith.ExtSIOp: llvm.SExtOp,
    arith.ExtUIOp: llvm.ZExtOp,
    arith.TruncIOp: llvm.TruncOp,
    arith.SIToFPOp: llvm.SIToFPOp,
    arith.BitcastOp: llvm.BitcastOp,
    arith.FPToSIOp: llvmx.FPToSIOp,
    arith.FPToUIOp: llvmx.FPToUIOp,
    arith.UIToFPOp: llvmx.UIToFPOp,
}
"""arith cast -> llvm cast; index_cast is width-dependent and handled apart."""

_CMPI = ("eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge")
"""arith.cmpi predicates in the order of their integer encoding."""

_CMPF = (
    "false", "oeq", "ogt", "oge", "olt", "ole", "one", "ord",
    "ueq", "ugt", "uge", "ult", "ule", "une", "uno", "true",
)  # fmt: skip
"""arith.cmpf predicates in the order of their integer encoding."""


def intrinsic_suffix(type: Attribute) -> str:
    """The type part of an overloaded intrinsic's name: i32, f32, v16f32."""
    if isinstance(type, VectorType):
        return f"v{type.element_count()}{intrinsic_suffix(type.element_type)}"
    if isinstance(type, IntegerType):
        return f"i{type.width.data}"
    assert isinstance(type, AnyFloat), f"no intrinsic suffix for {type}"
    return "bf16" if type.name == "bf16" else f"f{type.bitwidth}"


def call_intrinsic(name: str, args: list[SSAValue], result_type: Attribute) -> llvm.CallIntrinsicOp:
    """`llvm.call_intrinsic` of `name` overloaded on `result_type` (llvm.smax -> llvm.smax.i32)."""
    return llvm.CallIntrinsicOp(f"{name}.{intrinsic_suffix(result_type)}", args, [result_type])


def _fastmath(op: Operation) -> llvm.FastMathAttr:
    flags = op.properties.get("fastmath")
    return llvm.FastMathAttr(flags.data if isinstance(flags, arith.FastMathFlagsAttr) else None)


class ConstantToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.ConstantOp, rewriter: PatternRewriter):
        value = op.value
        if not isinstance(value, IntegerAttr | FloatAttr | DenseIntOrFPElementsAttr):
            return  # a dense resource has no llvm.mlir.constant form
        if isinstance(value, IntegerAttr) and isinstance(value.type, IndexType):
            value = IntegerAttr(value.value.data, i64)
        rewriter.replace(op, llvm.ConstantOp(value, op.result.type))


class PointerOffsetToGEP(RewritePattern):
    """inttoptr(ptrtoint(p) + offset) -> getelementptr inbounds i8, p[offset]."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.AddiOp, rewriter: PatternRewriter):
        users = [use.operation for use in op.result.uses]
        if not users or not all(isinstance(user, llvm.IntToPtrOp) for user in users):
            return
        if isinstance(to_int := op.lhs.owner, llvm.PtrToIntOp):
            offset = op.rhs
        elif isinstance(to_int := op.rhs.owner, llvm.PtrToIntOp):
            offset = op.lhs
        else:
            return
        for user in users:
            gep = llvm.GEPOp(to_int.input, [llvm.GEP_USE_SSA_VAL], i8, [offset], inbounds=True)
            rewriter.replace(user, gep)
        rewriter.erase(op)
        if not to_int.output.uses:
            rewriter.erase(to_int)


class BinaryToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(
        self,
        op: arith.SignlessIntegerBinaryOperation | arith.FloatingPointLikeBinaryOperation,
        rewriter: PatternRewriter,
    ):
        lhs, rhs = op.operands
        if (intrinsic := _BINARY_INTRINSIC.get(type(op))) is not None:
            rewriter.replace(op, call_intrinsic(intrinsic, [lhs, rhs], lhs.type))
            return
        if (llvm_op := _BINARY.get(type(op))) is None:
            return
        new = llvm_op(lhs, rhs)
        if "fastmathFlags" in new.properties:
            new.properties["fastmathFlags"] = _fastmath(op)
        flags = op.properties.get("overflowFlags")
        if isinstance(flags, arith.IntegerOverflowAttr) and flags.data:
            overflow = llvm.OverflowAttr([llvm.OverflowFlag(f.value) for f in flags.data])
            new.properties["overflowFlags"] = IntegerAttr(overflow.to_int(), 32)
        rewriter.replace(op, new)


class FloorDivSIToLLVM(RewritePattern):
    """a floordiv b = a sdiv b, minus one when the remainder is nonzero and of b's opposite sign."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.FloorDivSIOp, rewriter: PatternRewriter):
        a, b = op.lhs, op.rhs
        if not isinstance(a.type, IntegerType):
            return
        zero = llvm.ConstantOp(IntegerAttr(0, a.type), a.type)
        one = llvm.ConstantOp(IntegerAttr(1, a.type), a.type)
        quotient, remainder = llvm.SDivOp(a, b), llvm.SRemOp(a, b)
        inexact = llvm.ICmpOp(remainder.res, zero.result, _icmp("ne"))
        signs = llvm.XOrOp(remainder.res, b)
        opposite = llvm.ICmpOp(signs.res, zero.result, _icmp("slt"))
        adjust = llvm.AndOp(inexact.res, opposite.res)
        lower = llvm.SubOp(quotient.res, one.result)
        result = llvm.SelectOp(adjust.res, lower.res, quotient.res)
        rewriter.replace(
            op, [zero, one, quotient, remainder, inexact, signs, opposite, adjust, lower, result]
        )


class CastToLLVM(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter):
        if isinstance(op, arith.IndexCastOp):
            # `index` is already i64, so an index_cast is a sext, a trunc or nothing.
            src, dst = op.input.type, op.result.type
            assert isinstance(src, IntegerType) and isinstance(dst, IntegerType)
            if src == dst:
                rewriter.replace(op, [], [op.input])
            else:
                cast = llvm.SExtOp if src.width.data < dst.width.data else llvm.TruncOp
                rewriter.replace(op, cast(op.input, dst))
        elif (llvm_op := _CAST.get(type(op))) is not None:
            rewriter.replace(op, llvm_op(op.operands[0], op.results[0].type))


def _icmp(predicate: str) -> IntegerAttr:
    return IntegerAttr(llvm.ICmpPredicateFlag(predicate).to_int(), i64)


class CmpiToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.CmpiOp, rewriter: PatternRewriter):
        predicate = _icmp(_CMPI[op.predicate.value.data])
        rewriter.replace(op, llvm.ICmpOp(op.lhs, op.rhs, predicate))


class CmpfToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.CmpfOp, rewriter: PatternRewriter):
        predicate = _CMPF[op.predicate.value.data]
        if predicate in ("false", "true"):
            # xDSL's translation has no constant fcmp; the answer is known anyway.
            bit = IntegerAttr(-1 if predicate == "true" else 0, i1)
            rewriter.replace(op, llvm.ConstantOp(bit, i1))
            return
        new = llvm.FCmpOp(op.lhs, op.rhs, predicate)
        new.properties["fastmathFlags"] = _fastmath(op)
        rewriter.replace(op, new)


class SelectToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.SelectOp, rewriter: PatternRewriter):
        rewriter.replace(op, llvm.SelectOp(op.cond, op.lhs, op.rhs))


class NegfToLLVM(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: arith.NegfOp, rewriter: PatternRewriter):
        rewriter.replace(op, llvm.FNegOp(op.operand, _fastmath(op)))


def _retype(value: SSAValue) -> None:
    if isinstance(value.type, IndexType):
        Rewriter.replace_value_with_new_type(value, i64)


def _index_to_i64(type: Attribute) -> Attribute:
    return i64 if isinstance(type, IndexType) else type


def lower_index_to_i64(module: ModuleOp) -> None:
    """Give every `index` value, block argument and func signature the type i64."""
    for op in module.walk():
        for result in op.results:
            _retype(result)
        for region in op.regions:
            for block in region.blocks:
                for arg in block.args:
                    _retype(arg)
        if isinstance(op, func.FuncOp):
            inputs, outputs = op.function_type.inputs.data, op.function_type.outputs.data
            op.function_type = FunctionType.from_lists(
                [_index_to_i64(t) for t in inputs], [_index_to_i64(t) for t in outputs]
            )


@dataclass(frozen=True)
class ConvertArithToLLVM(ModulePass):
    """Lower arith to the llvm dialect and `index` to i64."""

    name: ClassVar[str] = "convert-arith-to-llvm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lower_index_to_i64(op)
        patterns: list[RewritePattern] = [
            ConstantToLLVM(),
            PointerOffsetToGEP(),
            BinaryToLLVM(),
            FloorDivSIToLLVM(),
            CastToLLVM(),
            CmpiToLLVM(),
            CmpfToLLVM(),
            SelectToLLVM(),
            NegfToLLVM(),
        ]
        applier = GreedyRewritePatternApplier(patterns, dce_enabled=False)
        PatternRewriteWalker(applier, apply_recursively=False).rewrite_module(op)
