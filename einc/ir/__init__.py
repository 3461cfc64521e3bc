"""einc's dialects: `onnx` (the imported graph), `ein` (einsum cascades), and
`llvmx` (the LLVM casts xDSL's llvm dialect lacks)."""

from collections.abc import Callable

from xdsl.ir import Dialect


def _onnx() -> Dialect:
    from einc.ir.onnx import Onnx

    return Onnx


def _ein() -> Dialect:
    from einc.ir.ein import Ein

    return Ein


def _llvmx() -> Dialect:
    from einc.backends.llvm.extra_ops import LLVMX

    return LLVMX


DIALECTS: dict[str, Callable[[], Dialect]] = {"onnx": _onnx, "ein": _ein, "llvmx": _llvmx}
"""Dialect name -> loader, imported lazily as xDSL's own registry does."""
