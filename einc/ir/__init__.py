"""einc's dialects: `onnx` (the imported graph) and `ein` (einsum cascades)."""

from collections.abc import Callable

from xdsl.ir import Dialect


def _onnx() -> Dialect:
    from einc.ir.onnx import Onnx

    return Onnx


def _ein() -> Dialect:
    from einc.ir.ein import Ein

    return Ein


DIALECTS: dict[str, Callable[[], Dialect]] = {"onnx": _onnx, "ein": _ein}
"""Dialect name -> loader, imported lazily as xDSL's own registry does."""
