"""Backends: from einsum cascades to code for one target, by target name."""

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from einc.frontend.onnx import ImportedModel
    from einc.runtime import CompiledModel

_TARGETS: dict[str, str] = {
    "cpu": "einc.backends.llvm.target:compile_for_cpu",
    "triton": "einc.backends.triton.target:compile_for_triton",
}


def target_compiler(target: str) -> "Callable[[ImportedModel], CompiledModel]":
    """The function that compiles an imported model for `target`."""
    from einc.diagnostics import EincError

    if target not in _TARGETS:
        raise EincError(f"unknown target '{target}': einc compiles for {', '.join(_TARGETS)}")
    module, fn = _TARGETS[target].split(":")
    return getattr(import_module(module), fn)


TARGETS = tuple(_TARGETS)
