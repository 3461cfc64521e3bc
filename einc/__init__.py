"""einc: a tensor compiler on xDSL built around cascades of extended einsums.

    model = einc.compile("model.onnx", target="cpu", input_shapes={"x": (1, 784)})
    outputs = model.run({"x": x})
    model.save("out/"); model = einc.load("out/")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from einc.runtime import CompiledModel, load

if TYPE_CHECKING:
    import onnx

__version__ = "0.1.0"


def compile(
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: str = "cpu",
    input_shapes: dict[str, Sequence[int]] | None = None,
    cache: bool = True,
) -> CompiledModel:
    """Compile an ONNX model (a path or a ModelProto) for `target`.

    Artifacts are cached on disk (einc/cache.py: $EINC_CACHE_DIR or ~/.cache/einc,
    EINC_CACHE=0 to turn off); `cache=False` always compiles.
    """
    from einc.backends import target_compiler
    from einc.frontend.onnx import import_model

    compile_for = target_compiler(target)
    from einc.cache import cache_key, cached, model_bytes

    data = model_bytes(model) if cache else None
    if data is None:
        return compile_for(import_model(model, input_shapes))
    return cached(cache_key(data, target, input_shapes), lambda: compile_for(import_model(model, input_shapes)))


__all__ = ["CompiledModel", "compile", "load", "__version__"]


def __getattr__(name: str):
    # `einc.passes` (the compiler) loads on first use, so importing einc to run
    # an artifact stays light.
    if name == "passes":
        from importlib import import_module

        return import_module("einc.passes")
    raise AttributeError(f"module 'einc' has no attribute '{name}'")
