"""`llvmx`: the LLVM instructions that xDSL 0.74's `llvm` dialect lacks.

arith.fptosi, arith.fptoui and arith.uitofp have no `llvm` op to lower to. A
saturating intrinsic or a sign trick would stand in for them at a cost in code
and speed, so einc defines the plain instructions here, with the same text form
as MLIR's `llvm.fptosi` etc., and `einc.backends.llvm.translate` emits them.
"""

from __future__ import annotations

from abc import ABC

from xdsl.dialects.builtin import AnyFloatConstr, IntegerType, VectorType
from xdsl.ir import Attribute, Dialect, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    base,
    irdl_op_definition,
    operand_def,
    result_def,
    traits_def,
)
from xdsl.traits import NoMemoryEffect

_FLOAT = AnyFloatConstr | VectorType.constr(AnyFloatConstr)
_INT = base(IntegerType) | VectorType.constr(base(IntegerType))


class _CastOp(IRDLOperation, ABC):
    """A value cast `%r = llvmx.<op> %x : T to U`, one LLVM cast instruction."""

    traits = traits_def(NoMemoryEffect())
    assembly_format = "$arg attr-dict `:` type($arg) `to` type($res)"

    def __init__(self, arg: SSAValue | Operation, res_type: Attribute):
        super().__init__(operands=[arg], result_types=[res_type])


@irdl_op_definition
class FPToSIOp(_CastOp):
    """LLVM `fptosi`: float to signed integer, rounding toward zero."""

    name = "llvmx.fptosi"
    arg = operand_def(_FLOAT)
    res = result_def(_INT)


@irdl_op_definition
class FPToUIOp(_CastOp):
    """LLVM `fptoui`: float to unsigned integer, rounding toward zero."""

    name = "llvmx.fptoui"
    arg = operand_def(_FLOAT)
    res = result_def(_INT)


@irdl_op_definition
class UIToFPOp(_CastOp):
    """LLVM `uitofp`: unsigned integer to float."""

    name = "llvmx.uitofp"
    arg = operand_def(_INT)
    res = result_def(_FLOAT)


CAST_INSTRUCTIONS: dict[type[Operation], str] = {
    FPToSIOp: "fptosi",
    FPToUIOp: "fptoui",
    UIToFPOp: "uitofp",
}
"""Extra op -> the llvmlite `IRBuilder` cast method that emits it."""

LLVMX = Dialect("llvmx", list(CAST_INSTRUCTIONS), [])
