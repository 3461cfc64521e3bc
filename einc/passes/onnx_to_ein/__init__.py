"""The `onnx-to-ein` pass: every ONNX node becomes a cascade of extended einsums.

Lowerings live one module per op family, each with a `LOWERINGS` table of
op type -> lowering; this module merges the tables and drives them. Before it
changes anything, the pass checks that every node has a lowering and reports all
that do not in one diagnostic, so a user sees the whole list at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp, StringAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from einc.diagnostics import EincError
from einc.passes.onnx_to_ein import attention, control, loss, math, nn, quant, recurrent, reduce, tensor
from einc.passes.onnx_to_ein.common import CascadeBuilder, Lowering, Node, Unsupported

FAMILIES: dict[str, dict[str, Lowering]] = {
    "math": math.LOWERINGS,
    "nn": nn.LOWERINGS,
    "tensor": tensor.LOWERINGS,
    "reduce": reduce.LOWERINGS,
    "quant": quant.LOWERINGS,
    "control": control.LOWERINGS,
    "attention": attention.LOWERINGS,
    "loss": loss.LOWERINGS,
    "recurrent": recurrent.LOWERINGS,
}
"""The lowering table of each op family, one module each."""

LOWERINGS: dict[str, Lowering] = {op: fn for table in FAMILIES.values() for op, fn in table.items()}
"""Every ONNX op type einc lowers, by op type (default domain)."""

_STRUCTURAL = ("onnx.none", "onnx.yield")


def _onnx_nodes(module: ModuleOp) -> list[Operation]:
    return [
        op
        for op in module.walk()
        if op.name.startswith("onnx.") and op.name not in _STRUCTURAL
    ]


def _opset(module: ModuleOp) -> int:
    opsets = module.attributes.get("onnx.opset")
    if isinstance(opsets, DictionaryAttr):
        version = opsets.data.get("ai.onnx")
        if isinstance(version, IntegerAttr):
            return version.value.data
    return 21


def _source(module: ModuleOp) -> str | None:
    attr = module.attributes.get("einc.source")
    return attr.data if isinstance(attr, StringAttr) else None


def unsupported_nodes(module: ModuleOp) -> list[Node]:
    """The nodes of a module that have no lowering, in program order."""
    opset = _opset(module)
    return [
        Node(op, opset)
        for op in _onnx_nodes(module)
        if op.name.removeprefix("onnx.") not in LOWERINGS
    ]


def check_supported(module: ModuleOp) -> None:
    """Raise one EincError listing every node without a lowering."""
    missing = unsupported_nodes(module)
    if not missing:
        return
    listing = "; ".join(f"'{n.node_name}' ({n.op_type})" for n in missing)
    ops = sorted({n.op_type for n in missing})
    raise EincError(
        f"{len(missing)} unsupported node{'s' if len(missing) > 1 else ''} "
        f"(op{'s' if len(ops) > 1 else ''} {', '.join(ops)} not supported by einc): {listing}",
        file=_source(module),
    )


@dataclass(frozen=True)
class OnnxToEin(ModulePass):
    """Lower the `onnx` dialect to `ein` einsum cascades."""

    name: ClassVar[str] = "onnx-to-ein"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_supported(op)
        opset = _opset(op)
        rewriter = Rewriter()
        for onnx_op in _onnx_nodes(op):
            if onnx_op.get_toplevel_object() is not op:
                continue  # in a branch an If with a known condition dropped
            node = Node(onnx_op, opset)
            try:
                values = LOWERINGS[node.op_type](CascadeBuilder(rewriter, onnx_op), node)
                _check_replacement(node, len(values))
            except Unsupported as err:
                raise EincError(
                    f"{err} (opset {opset})",
                    file=_source(op),
                    node=node.node_name,
                    op=node.op_type,
                ) from None
            for result, value in zip(onnx_op.results, values):
                if value.name_hint is None and result.name_hint is not None:
                    value.name_hint = result.name_hint
                result.replace_all_uses_with(value)
            rewriter.erase_op(onnx_op, safe_erase=False)
        for none in [o for o in op.walk() if o.name == "onnx.none"]:
            rewriter.erase_op(none)
        for fn in op.ops:
            if isinstance(fn, func.FuncOp):
                fn.update_function_type()


def _check_replacement(node: Node, count: int) -> None:
    unused = all(not r.uses for r in node.op.results[count:])
    if count > len(node.op.results) or not unused:
        raise Unsupported(
            f"einc computes {count} of its {len(node.op.results)} results, "
            "and a later node reads another"
        )
