"""Lowerings of the attention family: Attention (opsets 23-25) and RotaryEmbedding."""

from __future__ import annotations

from einc.passes.onnx_to_ein.common import Lowering

LOWERINGS: dict[str, Lowering] = {}
