"""Lowerings of the loss family: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss."""

from __future__ import annotations

from einc.passes.onnx_to_ein.common import Lowering

LOWERINGS: dict[str, Lowering] = {}
