"""Micro-kernels the CPU backend links into a model: kernel kind -> generator.

A model's loop code calls a kernel through a declared function whose
`einc.ukernel` attribute holds the kernel's spec (JSON); `translate.py` defines
each declared kernel with the generator of its kind before LLVM compiles the
module, so kernels are specialised to their shapes and inlined tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from llvmlite import ir

from einc.backends.llvm.ukernels.attention import AttentionPlan
from einc.backends.llvm.ukernels.depthwise import DepthwisePlan
from einc.backends.llvm.ukernels.gemm import GemmPlan
from einc.backends.llvm.ukernels.parallel import ParallelPlan
from einc.backends.llvm.ukernels.rows import RowsPlan
from einc.backends.llvm.ukernels.winograd import WinogradFusedPlan, WinogradInputPlan, WinogradOutputPlan

KERNELS: dict[str, Callable[[dict[str, Any]], Any]] = {"gemm": GemmPlan, "depthwise": DepthwisePlan, "rows": RowsPlan, "attention": AttentionPlan,
                                                        "parallel": ParallelPlan, "winograd_input": WinogradInputPlan,
                                                        "winograd_output": WinogradOutputPlan, "winograd_fused": WinogradFusedPlan}
"""Kernel kind -> plan class (with `emit(module)` and, for weights, `pack`)."""

from einc.backends.llvm.ukernels.declare import SPEC_ATTR  # noqa: F401  (the declarations' attribute)


def plan(spec: str | dict[str, Any]) -> Any:
    data = json.loads(spec) if isinstance(spec, str) else spec
    return KERNELS[data["kind"]](data)


def define(module: ir.Module, spec: str | dict[str, Any]) -> None:
    """Define the kernel a spec describes in `module`."""
    plan(spec).emit(module)


def pack_weight(pack: str, data: Any) -> Any:
    """A weight in the panel layout of the kernel operand `pack` names ("a:SPEC" or "b:SPEC")."""
    which, _, spec = pack.partition(":")
    return plan(spec).pack(which, data)
