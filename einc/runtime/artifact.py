"""Compiled models: the artifact directory, loading it, and running it.

An artifact is a directory with
  manifest.json  what the code expects: inputs, outputs, every buffer's role,
                 shape, dtype and offset (weights in weights.bin, intermediates
                 in the arena), the entry symbol and the target it was built for;
  model.o        the compiled code as an object file;
  model.so       the same code linked as a shared library (where the compiling
                 host had a linker): loading it needs only the C loader, so a
                 process that runs a model never loads LLVM (it links model.o
                 with llvmlite's MCJIT only where model.so is missing);
  weights.bin    every weight and constant, each 64-byte aligned.
The compiled entry takes one argument, a table of buffer pointers in manifest
order; the runtime fills the table once at load and per run only swaps the
input and output slots, so a run is one call into native code.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
from pathlib import Path
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16, float8_*, int4, ... as numpy dtype names)
import numpy as np

from einc.diagnostics import EincError

ALIGNMENT = 64
MANIFEST = "manifest.json"
CODE = "model.o"
LIBRARY = "model.so"
WEIGHTS = "weights.bin"
FORMAT = "einc-artifact/1"
HUGE_PAGE = 2 << 20


def _aligned_empty(nbytes: int) -> np.ndarray:
    """A byte array whose data starts on an ALIGNMENT boundary.

    From HUGE_PAGE bytes on (weights, the arena) it is a private mapping of its own, marked for
    transparent huge pages: a ResNet-18 streams its 54 MB of weights every run, one TLB miss
    per 4 KiB page otherwise (8.89 -> 8.39 ms and 8.38 -> 8.26 ms in two 30-round A/B runs).
    Where the kernel has THP only on madvise (the common default), numpy's arrays get none.
    EINC_HUGE_PAGES=0 turns this off, for measurements.
    """
    if nbytes >= HUGE_PAGE and os.environ.get("EINC_HUGE_PAGES", "1") != "0" and hasattr(mmap, "MADV_HUGEPAGE"):
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        region.madvise(mmap.MADV_HUGEPAGE)
        return np.frombuffer(region, dtype=np.uint8)
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + nbytes]


class SharedLibrary:
    """A model's shared library, opened by the C loader from a file of its own.

    The loader hands back an already-open library for a name it has seen, so
    every load writes the bytes under a name new to this process, opens it and
    removes the file at once. Libraries stay mapped until the process exits:
    closing one from a garbage collector can deadlock inside the C loader.
    """

    _loaded = 0

    def __init__(self, data: bytes):
        import tempfile

        SharedLibrary._loaded += 1
        fd, path = tempfile.mkstemp(prefix=f"einc-{os.getpid()}-{SharedLibrary._loaded}-", suffix=".so")
        try:
            os.write(fd, data)
            os.close(fd)
            self._lib = ctypes.CDLL(path)
        finally:
            os.unlink(path)

    def function(self, name: str, restype: type | None, *argtypes: type) -> Any:
        return ctypes.CFUNCTYPE(restype, *argtypes)(ctypes.cast(getattr(self._lib, name), ctypes.c_void_p).value)


class CompiledModel:
    """A model compiled by einc, ready to run: `run(feeds) -> outputs`."""

    def __init__(self, manifest: dict[str, Any], code: bytes, weights: bytes | np.ndarray, library: bytes | None = None):
        self.manifest = manifest
        self._code_bytes = code
        self._library_bytes = library
        self.inputs: list[dict[str, Any]] = manifest["inputs"]
        self.outputs: list[dict[str, Any]] = manifest["outputs"]
        if library is not None:
            self._code: Any = SharedLibrary(library)
        else:
            from einc.runtime.jit import load_object  # LLVM, only where no library was linked

            self._code = load_object(code)
        self._entry = self._code.function(manifest["entry"], None, ctypes.c_void_p)
        try:  # code with a thread pool exports einc_release: its workers stop before the code goes
            self._release = self._code.function("einc_release", None)
        except (KeyError, AttributeError):
            self._release = None
        if isinstance(weights, np.ndarray) and weights.ctypes.data % ALIGNMENT == 0:
            self._weights = weights  # read straight into place by load(): held once
        else:
            self._weights = _aligned_empty(len(weights))
            self._weights[:] = np.frombuffer(weights, dtype=np.uint8)
        self._arena = _aligned_empty(max(1, manifest["arena_bytes"]))
        buffers = manifest["buffers"]
        self._table = (ctypes.c_void_p * max(1, len(buffers)))()
        self._slots: dict[tuple[str, str], int] = {}
        for slot, buf in enumerate(buffers):
            role = buf["role"]
            if role in ("weight", "constant"):
                self._table[slot] = self._weights.ctypes.data + buf["offset"]
            elif role == "temp":
                self._table[slot] = self._arena.ctypes.data + buf["offset"]
            else:
                self._slots[(role, buf["name"])] = slot

    def __del__(self) -> None:
        if getattr(self, "_release", None) is not None:
            self._release()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; outputs are keyed by the model's output names."""
        names = [i["name"] for i in self.inputs]
        missing = [n for n in names if n not in feeds]
        extra = [n for n in feeds if n not in names]
        if missing or extra:
            raise EincError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}; "
                f"the model takes {names}"
            )
        keep: list[np.ndarray] = []
        seen: set[int] = set()
        for spec in self.inputs:
            array = self._check_input(spec, feeds[spec["name"]])
            if array.ctypes.data in seen:
                array = array.copy()  # compiled code assumes distinct buffers
            seen.add(array.ctypes.data)
            keep.append(array)
            self._table[self._slots[("input", spec["name"])]] = array.ctypes.data
        results: dict[str, np.ndarray] = {}
        for spec in self.outputs:
            out = np.empty(spec["shape"], dtype=spec["dtype"])
            results[spec["name"]] = out
            self._table[self._slots[("output", spec["name"])]] = out.ctypes.data
        self._entry(ctypes.addressof(self._table))
        return results

    @staticmethod
    def _check_input(spec: dict[str, Any], value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype != np.dtype(spec["dtype"]):
            raise EincError(
                f"input '{spec['name']}' has dtype {array.dtype}, the model expects {spec['dtype']}"
            )
        if tuple(array.shape) != tuple(spec["shape"]):
            raise EincError(
                f"input '{spec['name']}' has shape {list(array.shape)}, the model was "
                f"compiled for {list(spec['shape'])}"
            )
        return np.ascontiguousarray(array)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the artifact directory: same model and options, same bytes."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        (root / MANIFEST).write_text(json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")
        (root / CODE).write_bytes(self._code_bytes)
        if self._library_bytes is not None:
            (root / LIBRARY).write_bytes(self._library_bytes)
        (root / WEIGHTS).write_bytes(memoryview(self._weights))


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load an artifact directory written by `CompiledModel.save` / `einc compile`."""
    root = Path(path)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        code = (root / CODE).read_bytes()
        weights = _aligned_empty((root / WEIGHTS).stat().st_size)
        with open(root / WEIGHTS, "rb") as f:
            f.readinto(memoryview(weights))
        library = (root / LIBRARY).read_bytes() if (root / LIBRARY).exists() else None
    except FileNotFoundError as err:
        raise EincError(f"not an einc artifact: {err.filename} is missing", file=str(root)) from None
    except (OSError, json.JSONDecodeError) as err:
        raise EincError(f"cannot read artifact: {err}", file=str(root)) from None
    if manifest.get("format") != FORMAT:
        raise EincError(
            f"artifact format '{manifest.get('format')}' is not {FORMAT}: recompile the model",
            file=str(root),
        )
    return CompiledModel(manifest, code, weights, library)
