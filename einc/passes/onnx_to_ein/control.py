"""Lowerings of ONNX control ops (see the family table in onnx_to_ein/__init__.py)."""

from __future__ import annotations

from einc.passes.onnx_to_ein.common import Lowering

LOWERINGS: dict[str, Lowering] = {}
