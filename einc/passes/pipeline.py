"""Pass pipelines: the named pipeline of each target, and `Pipeline` to run one.

`Pipeline` takes the same text as `einc opt -p` (and `xdsl-opt -p`), so a
pipeline found at the command line pastes into Python unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline

CASCADE = "onnx-to-ein"
"""ONNX graph -> einsum cascades, as the ops' definitions give them."""

REWRITES = "defer-division"
"""The rewrites einc applies to cascades to cut passes (what `einc explain` compares)."""

FOLD = "fold-weights"
"""Ops on weights and constants only, computed once at compile time (every target runs it)."""

CPU_LOOPS = f"{CASCADE},{REWRITES},{FOLD},fuse,winograd,tile,memplan,lower-ein-to-loops"
"""ONNX graph -> rewritten einsum cascades -> weight-only ops folded -> fused groups with
tile sizes -> arena plan -> loop nests on flat buffers and kernel calls."""

CPU_LLVM = ",".join(
    [
        "outline-loop-nests",
        "parallel-nests",
        "convert-memref-to-ptr{lower_func=true}",
        "convert-ptr-type-offsets",
        "convert-ptr-to-llvm",
        "convert-scf-to-cf",
        "convert-math-to-llvm",
        "convert-arith-to-llvm",
        "convert-cf-to-llvm",
        "convert-func-to-llvm",
        "reconcile-unrealized-casts",
        "add-entry-point",
    ]
)
"""Loop nests -> the llvm dialect, with the one entry point the runtime calls."""

CPU_PIPELINE = f"{CPU_LOOPS},{CPU_LLVM}"
"""The whole CPU pipeline, as `einc opt -p` takes it."""

PIPELINES: dict[str, str] = {"cpu": CPU_PIPELINE}
"""The pipeline each target runs, by target name."""


def all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """xDSL's passes and einc's, by name (einc's win on a clash)."""
    from xdsl.transforms import get_all_passes

    from einc.passes import PASSES

    return {**get_all_passes(), **PASSES}


def make_context() -> Context:
    """A context with xDSL's dialects and einc's loaded lazily."""
    from xdsl.dialects import get_all_dialects

    from einc.ir import DIALECTS

    ctx = Context()
    for name, loader in {**get_all_dialects(), **DIALECTS}.items():
        ctx.register_dialect(name, loader)
    return ctx


class Pipeline:
    """A pass pipeline built from `einc opt -p` text, applied to a module in place.

    >>> Pipeline("onnx-to-ein,lower-ein-to-loops").apply(module)
    """

    def __init__(
        self,
        spec: str,
        verify_each: bool = False,
        callback: Callable[[ModulePass, ModuleOp], None] | None = None,
    ):
        self.spec = spec
        self.verify_each = verify_each
        self._after = callback

        def between(prev: ModulePass | None, module: ModuleOp, _next: ModulePass | None):
            if prev is None:
                return
            if self.verify_each:
                module.verify()
            if self._after is not None:
                self._after(prev, module)

        self._pipeline = PassPipeline.parse_spec(all_passes(), spec, between)

    @property
    def passes(self) -> tuple[ModulePass, ...]:
        return self._pipeline.passes

    def apply(self, module: ModuleOp, ctx: Context | None = None) -> ModuleOp:
        self._pipeline.apply(ctx or make_context(), module)
        return module
