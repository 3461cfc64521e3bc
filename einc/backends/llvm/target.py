"""The CPU target: run the CPU pipeline, compile with LLVM, pack the artifact.

The pipeline runs in two parts so that the buffer table that `lower-ein-to-loops`
records (which argument of the entry is which input, output, weight, constant or
intermediate) can be read before the function is lowered to the llvm dialect.
"""

from __future__ import annotations

import numpy as np
import llvmlite.binding as llvm
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr

import einc
from einc.backends.llvm.translate import compile_to_object
from einc.frontend.onnx import ImportedModel
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
                "dtype": np.dtype(d["dtype"].data).str,  # type: ignore[attr-defined]
                "value": d.get("value"),
            }
        )
    return table


def pack(table: list[dict], weights: dict[str, np.ndarray]) -> tuple[list[dict], bytes, int]:
    """Lay out weights/constants in one blob and intermediates in one arena.

    Intermediates get consecutive, aligned offsets: no reuse yet (the memory
    planner of a later pass will overlap buffers whose lifetimes do not).
    """
    blob = bytearray()
    arena = 0
    out = []
    for buf in table:
        entry = {k: v for k, v in buf.items() if k != "value"}
        dtype = np.dtype(buf["dtype"])
        nbytes = int(np.prod(buf["shape"], dtype=np.int64)) * dtype.itemsize
        if buf["role"] in ("weight", "constant"):
            if buf["role"] == "weight":
                data = np.ascontiguousarray(weights[buf["name"]], dtype=dtype)
            else:
                data = np.array(buf["value"].get_values(), dtype=dtype)
            blob.extend(b"\0" * (_align(len(blob)) - len(blob)))
            entry["offset"] = len(blob)
            blob.extend(data.tobytes())
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
        "inputs": [{"name": n, "shape": list(s), "dtype": np.dtype(d).str} for n, s, d in imported.inputs],
        "outputs": [{"name": n, "shape": list(s), "dtype": np.dtype(d).str} for n, s, d in imported.outputs],
        "buffers": buffers,
        "arena_bytes": arena,
    }
    return CompiledModel(manifest, code, blob)
