"""How loop code calls a micro-kernel: a declared function that carries the kernel's spec.

`translate.py` defines each declaration with the generator of its kind
(`ukernels.KERNELS`). Groups with the same spec and argument types (a
transformer's identical layers) call one kernel: compile time is per kernel.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import SSAValue

if TYPE_CHECKING:
    from einc.passes.lower_ein_to_loops import _Emitter, _FunctionLowering

SPEC_ATTR = "einc.ukernel"
"""The attribute of a kernel's declaration that holds its spec (JSON)."""


def _identity(spec: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k != "name"}, sort_keys=True)


def call_kernel(lowering: _FunctionLowering, e: _Emitter, spec: dict[str, Any], args: list[SSAValue], prefix: str) -> None:
    """Emit a call of the kernel `spec` describes: an existing declaration with the same spec
    (but its name) and argument types, or a new one named `spec["name"]` or `<prefix>_<n>`."""
    module = lowering.fn.parent_op()
    assert isinstance(module, ModuleOp)
    types = [a.type for a in args]
    identity = _identity(spec)
    for op in module.ops:
        if (
            isinstance(op, func.FuncOp)
            and SPEC_ATTR in op.attributes
            and list(op.function_type.inputs) == types
            and _identity(json.loads(op.attributes[SPEC_ATTR].data)) == identity  # type: ignore[attr-defined]
        ):
            e.emit(func.CallOp(op.sym_name.data, args, []))
            return
    if "name" not in spec:
        taken = {op.sym_name.data for op in module.ops if isinstance(op, func.FuncOp)}
        spec["name"] = next(f"{prefix}_{i}" for i in range(len(taken) + 1) if f"{prefix}_{i}" not in taken)
    decl = func.FuncOp.external(spec["name"], types, [])
    decl.attributes[SPEC_ATTR] = StringAttr(json.dumps(spec, sort_keys=True))
    module.body.block.insert_op_before(decl, lowering.fn)
    e.emit(func.CallOp(spec["name"], args, []))
