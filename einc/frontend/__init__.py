"""Frontends: models from other frameworks become einc IR (`onnx` dialect ops)."""

from einc.frontend.onnx import ImportedModel, import_model

__all__ = ["ImportedModel", "import_model"]
