"""add-entry-point: `einc_entry(table)`, the one C function the runtime calls per inference.

The model function takes one pointer per buffer (inputs, outputs, weights, arena).
Calling it through a foreign-function interface with a signature that varies
per model is clumsy, so einc exports a fixed one instead: `void einc_entry(void
**table)` loads argument i from `table[i]` and calls the model function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import llvm
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region
from xdsl.passes import ModulePass
from xdsl.traits import SymbolTable
from xdsl.utils.exceptions import PassFailedException


@dataclass(frozen=True)
class AddEntryPoint(ModulePass):
    """Add `llvm.func @entry(!llvm.ptr)` calling `@func` with the pointers in a table."""

    name: ClassVar[str] = "add-entry-point"

    func: str = "main"
    """The model function: an llvm.func whose arguments are all !llvm.ptr."""

    entry: str = "einc_entry"
    """The name of the exported entry point."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        callee = SymbolTable.lookup_symbol(op, self.func)
        if not isinstance(callee, llvm.FuncOp):
            raise PassFailedException(f"add-entry-point: no llvm.func @{self.func} in the module")
        if SymbolTable.lookup_symbol(op, self.entry) is not None:
            raise PassFailedException(f"add-entry-point: @{self.entry} already exists")
        ptr = llvm.LLVMPointerType()
        inputs = callee.function_type.inputs.data
        if any(t != ptr for t in inputs):
            raise PassFailedException(
                f"add-entry-point: @{self.func} takes ({', '.join(map(str, inputs))}); "
                "every argument must be !llvm.ptr"
            )
        block = Block(arg_types=[ptr])
        table = block.args[0]
        ops: list[Operation] = []
        for i in range(len(inputs)):
            slot = llvm.GEPOp(table, [i], ptr, inbounds=True)
            ops += [slot, llvm.LoadOp(slot, ptr)]
        args = [load.results[0] for load in ops[1::2]]
        ops += [llvm.CallOp(self.func, *args), llvm.ReturnOp()]
        block.add_ops(ops)
        entry_type = llvm.LLVMFunctionType([ptr], llvm.LLVMVoidType())
        entry = llvm.FuncOp(
            self.entry, entry_type, linkage=llvm.LinkageAttr("external"), body=Region(block)
        )
        op.body.block.add_op(entry)
