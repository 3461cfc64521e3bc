"""The CPU target: run the CPU pipeline, compile with LLVM, pack the artifact.

The pipeline runs in two parts so that the buffer table that `lower-ein-to-loops`
records (which argument of the entry is which input, output, weight, constant or
intermediate) can be read before the function is lowered to the llvm dialect.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import llvmlite.binding as llvm
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, ModuleOp, StringAttr, i1
from xdsl.ir import Attribute

import einc
from einc.backends.llvm.translate import compile_to_object
from einc.backends.llvm.ukernels import pack_weight
from einc.frontend.onnx import ImportedModel
from einc.ir.dtypes import dtype_name
from einc.passes.pipeline import CPU_LLVM, CPU_LOOPS, Pipeline
from einc.runtime.artifact import ALIGNMENT, FORMAT, CompiledModel

ENTRY = "einc_entry"


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def buffer_table(module: ModuleOp) -> list[dict]:
    """The buffers of @main after `lower-ein-to-loops`, with their dtypes."""
    main = next(op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "main")
    roles = main.attributes["einc.buffers"]
    assert isinstance(roles, ArrayAttr)
    table = []
    for entry in roles.data:
        assert isinstance(entry, DictionaryAttr)
        d = entry.data
        table.append(
            {
                "role": d["role"].data,  # type: ignore[attr-defined]
                "name": d["name"].data,  # type: ignore[attr-defined]
                "shape": [s.value.data for s in d["shape"]],  # type: ignore[attr-defined]
                "dtype": dtype_name(d["dtype"].data),  # type: ignore[attr-defined]
                "value": d.get("value"),
                "pack": d["pack"].data if "pack" in d else None,  # type: ignore[attr-defined]
                **({"offset": d["offset"].value.data} if "offset" in d else {}),  # type: ignore[attr-defined]
            }
        )
    return table


def _nbytes(buf: dict) -> int:
    return int(np.prod(buf["shape"], dtype=np.int64)) * np.dtype(buf["dtype"]).itemsize


def memory_plan(module: ModuleOp) -> dict:
    """What `memplan` recorded on @main (arena, lower bound, algorithm), for the manifest."""
    main = next(op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "main")
    plan = main.attributes.get("einc.memplan")
    if not isinstance(plan, DictionaryAttr):
        return {}
    return {k: _plain(v) for k, v in plan.data.items()}


def _plain(attr: Attribute) -> object:
    if isinstance(attr, IntegerAttr):
        return bool(attr.value.data) if attr.type == i1 else attr.value.data
    return attr.data  # type: ignore[attr-defined]


def link_shared(code: bytes) -> bytes | None:
    """Link the object into a shared library, so loading needs only the C loader, not LLVM.

    Returns None where the host has no linker; the runtime then links the object
    itself with llvmlite's MCJIT.
    """
    linker = shutil.which("ld")
    if linker is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        obj, lib = Path(tmp) / "model.o", Path(tmp) / "model.so"
        obj.write_bytes(code)
        done = subprocess.run([linker, "-shared", "--hash-style=gnu", "-o", str(lib), str(obj), "-lm"], capture_output=True)
        return lib.read_bytes() if done.returncode == 0 else None


def pack(table: list[dict], weights: dict[str, np.ndarray]) -> tuple[list[dict], bytes, int]:
    """Lay out weights/constants in one blob and intermediates in one arena.

    Intermediates keep the offsets `memplan` gave them (buffers whose lifetimes
    do not meet share bytes); any without one (values made inside control flow,
    or a pipeline without memplan) get consecutive offsets above those.
    """
    blob = bytearray()
    planned = [b for b in table if b["role"] == "temp" and "offset" in b]
    arena = max((_align(b["offset"] + max(_nbytes(b), np.dtype(b["dtype"]).itemsize)) for b in planned), default=0)
    out = []
    for buf in table:
        entry = {k: v for k, v in buf.items() if k not in ("value", "pack")}
        dtype = np.dtype(buf["dtype"])
        nbytes = int(np.prod(buf["shape"], dtype=np.int64)) * dtype.itemsize
        if buf["role"] in ("weight", "constant"):
            if buf["role"] == "weight":
                data = np.ascontiguousarray(weights[buf["name"]], dtype=dtype)
                if buf.get("pack"):  # a kernel operand: its panel layout, packed once here
                    data = pack_weight(buf["pack"], data)
            else:
                data = np.array(buf["value"].get_values(), dtype=dtype)
            blob.extend(b"\0" * (_align(len(blob)) - len(blob)))
            entry["offset"] = len(blob)
            blob.extend(data.tobytes())
        elif buf["role"] == "temp" and "offset" in buf:
            entry["offset"] = buf["offset"]
        elif buf["role"] == "temp":
            entry["offset"] = arena
            arena = _align(arena + max(nbytes, dtype.itemsize))
        out.append(entry)
    return out, bytes(blob), arena


def compile_for_cpu(imported: ImportedModel) -> CompiledModel:
    """Compile an imported ONNX model to native code for this host's CPU."""
    module = imported.module
    module.attributes["einc.source"] = StringAttr(imported.source)
    Pipeline(CPU_LOOPS).apply(module)
    plan = memory_plan(module)
    buffers, blob, arena = pack(buffer_table(module), imported.weights)
    Pipeline(CPU_LLVM).apply(module)
    code = compile_to_object(module)
    manifest = {
        "format": FORMAT,
        "einc_version": einc.__version__,
        "target": "cpu",
        "cpu": llvm.get_host_cpu_name(),
        "triple": llvm.get_default_triple(),
        "entry": ENTRY,
        "inputs": [{"name": n, "shape": list(s), "dtype": dtype_name(d)} for n, s, d in imported.inputs],
        "outputs": [{"name": n, "shape": list(s), "dtype": dtype_name(d)} for n, s, d in imported.outputs],
        "buffers": buffers,
        "arena_bytes": arena,
        "memplan": plan,
    }
    return CompiledModel(manifest, code, blob, link_shared(code))
