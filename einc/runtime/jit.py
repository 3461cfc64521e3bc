"""Loads compiled object code into this process with LLVM's MCJIT linker.

The runtime imports llvmlite's binding and nothing of the compiler (no xDSL, no
onnx): an artifact is loaded by linking its object file, never by recompiling.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llvmlite.binding as llvm


def host_target_machine(opt_level: int = 3) -> llvm.TargetMachine:
    """A target machine for this CPU with all its features (AVX-512 where present).

    The JIT's code model lets MCJIT place code, constants and libm anywhere in
    the address space, so a loaded object never hits a 32-bit relocation limit.
    Code is position independent, so the same object also links into a shared
    library that the runtime loads without LLVM.
    """
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=opt_level,
        reloc="pic",
        codemodel="jitdefault",
    )


@dataclass
class LoadedCode:
    """Object code linked into the process; keeps the engine alive with it."""

    engine: llvm.ExecutionEngine

    def address(self, name: str) -> int:
        """The address of a function of the loaded code."""
        address = self.engine.get_function_address(name)
        if not address:
            raise KeyError(f"compiled code has no function '{name}'")
        return address

    def function(self, name: str, restype: type | None, *argtypes: type) -> ctypes._CFuncPtr:
        """A ctypes callable for a function of the loaded code."""
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))


def load_object(code: bytes) -> LoadedCode:
    """Link an object file (from `emit_object`) into this process."""
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), host_target_machine())
    engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    return LoadedCode(engine)
