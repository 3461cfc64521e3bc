"""The llvm dialect -> llvmlite IR -> host machine code, and loading that code in-process.

xDSL's `convert_module` translates its own `llvm` ops and raises on any other op,
with no hook for more. einc's `llvmx` ops (extra_ops.py) need one, so `to_llvmlite`
follows `convert_module` step for step, reusing xDSL's translation of globals,
declarations and every `llvm` op, and emits the `llvmx` ops itself. Declared
functions with an `einc.ukernel` spec are then defined by the micro-kernel
generators (ukernels/), in the same module, so LLVM optimises them together.
"""

from __future__ import annotations

import re

import llvmlite.binding as llvm
import llvmlite.ir as ir
from xdsl.backend.llvm.convert import _convert_global, _declare_func
from xdsl.backend.llvm.convert_op import convert_op
from xdsl.backend.llvm.convert_type import convert_type
from xdsl.dialects import llvm as xllvm
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue

from einc.backends.llvm.extra_ops import CAST_INSTRUCTIONS
from einc.backends.llvm.ukernels import SPEC_ATTR, define
from einc.backends.llvm.ukernels.vector import VectorEmitter
from einc.runtime.jit import host_target_machine

llvm.initialize_native_target()
llvm.initialize_native_asmprinter()


def _convert_extra_op(op: Operation, builder: ir.IRBuilder, values: dict[SSAValue, ir.Value]):
    cast = getattr(builder, CAST_INSTRUCTIONS[type(op)])
    values[op.results[0]] = cast(values[op.operands[0]], convert_type(op.results[0].type))


def _convert_body(op: xllvm.FuncOp, llvm_module: ir.Module) -> None:
    """One function body, as xDSL's `_convert_func` does it, plus the `llvmx` ops."""
    func = llvm_module.get_global(op.sym_name.data)
    blocks = {b: func.append_basic_block(b.name_hint or "") for b in op.body.blocks}
    values: dict[SSAValue, ir.Value] = dict(zip(op.body.blocks[0].args, func.args, strict=True))
    # Block arguments are phis; the branches into a block add their incoming values.
    for block in list(op.body.blocks)[1:]:
        builder = ir.IRBuilder(blocks[block])
        values.update((arg, builder.phi(convert_type(arg.type))) for arg in block.args)
    for block in op.body.blocks:
        builder = ir.IRBuilder(blocks[block])
        for inner in block.ops:
            if type(inner) in CAST_INSTRUCTIONS:
                _convert_extra_op(inner, builder, values)
            else:
                convert_op(inner, builder, values, blocks)


def to_llvmlite(module: ModuleOp) -> ir.Module:
    """Translate a module of `llvm` and `llvmx` ops to llvmlite IR for the host."""
    llvm_module = ir.Module()
    triple = module.attributes.get("llvm.target_triple")
    host = llvm.get_process_triple()
    llvm_module.triple = triple.data if isinstance(triple, StringAttr) else host
    funcs: list[xllvm.FuncOp] = []
    for op in module.ops:
        match op:
            case xllvm.GlobalOp():
                _convert_global(op, llvm_module)
            case xllvm.FuncOp():
                funcs.append(op)
            case _:
                raise NotImplementedError(f"cannot translate top-level op {op.name} to LLVM IR")
    for op in funcs:
        _declare_func(op, llvm_module)
    for op in funcs:
        if op.body.blocks:
            _convert_body(op, llvm_module)
    for op in funcs:  # kernels the loop code calls: generated, specialised to their spec
        spec = op.attributes.get(SPEC_ATTR)
        if not op.body.blocks and isinstance(spec, StringAttr):
            define(llvm_module, spec.data)
    return llvm_module


def compile_to_object(module: ModuleOp | ir.Module, opt_level: int = 3) -> bytes:
    """Optimise for the host CPU (vectorisers on) and emit a relocatable object file."""
    llvm_ir = to_llvmlite(module) if isinstance(module, ModuleOp) else module
    tm = host_target_machine(opt_level)
    mod = llvm.parse_assembly(str(llvm_ir))
    mod.triple = llvm.get_process_triple()
    mod.data_layout = str(tm.target_data)
    mod.verify()
    if opt_level > 0:
        _optimise(mod, tm, opt_level)
        text = str(mod)
        if "@llvm.exp.v" in text:  # vectorised exp: inline polynomials, not one libm call per lane
            mod = llvm.parse_assembly(vector_exp(text))
            mod.verify()
            _optimise(mod, tm, opt_level)
    return tm.emit_object(mod)


def _optimise(mod: llvm.ModuleRef, tm: llvm.TargetMachine, opt_level: int) -> None:
    tuning = llvm.create_pipeline_tuning_options(speed_level=opt_level)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(tm, tuning)
    builder.getModulePassManager().run(mod, builder)


_EXP_CALL = re.compile(r"@llvm\.exp\.v(\d+)f32\(")
_DECLARE = re.compile(r"^declare .*@(llvm\.[\w.]+)\(.*$", re.M)


def vector_exp(text: str) -> str:
    """Calls of `llvm.exp.vNf32` (what the loop vectoriser makes of scalar exp) replaced by
    internal polynomial functions (ukernels/vector.py): LLVM would otherwise lower each to
    N calls of libm's expf, which made softmax's exponentials most of an attention block."""
    widths = sorted({int(w) for w in _EXP_CALL.findall(text)})
    text = re.sub(r"^declare .*@llvm\.exp\.v\d+f32\(.*$", "", text, flags=re.M)
    text = _EXP_CALL.sub(lambda m: f"@einc.exp.v{m.group(1)}f32(", text)
    declared = set(_DECLARE.findall(text))
    extra = ir.Module()
    for lanes in widths:
        vf = ir.VectorType(ir.FloatType(), lanes)
        fn = ir.Function(extra, ir.FunctionType(vf, [vf]), f"einc.exp.v{lanes}f32")
        fn.linkage = "internal"
        b = ir.IRBuilder(fn.append_basic_block())
        b.ret(VectorEmitter(b, lanes).exp(fn.args[0]))
    lines = [line for line in str(extra).splitlines() if not line.startswith(("target", "; ModuleID", "source_filename"))]
    lines = [line for line in lines if not (line.startswith("declare") and any(f"@\"{d}\"" in line or f"@{d}(" in line for d in declared))]
    return text + "\n" + "\n".join(lines) + "\n"
