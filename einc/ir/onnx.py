"""The `onnx` dialect: an imported ONNX graph, one op per node.

The op classes are generated from the schemas of the installed onnx package, one
per op type of the default domain, so the dialect knows exactly the ops that
shape inference knows and needs no hand-kept list. Every op has the same shape:

    %y = onnx.Gemm(%a, %b, %c) {transB = 1 : i64, onnx_node = "fc1"}
         : (tensor<64x784xf32>, tensor<1024x784xf32>, tensor<1024xf32>) -> tensor<64x1024xf32>

ONNX attributes stay op attributes under their ONNX names (INT -> i64 IntegerAttr,
FLOAT -> f32 FloatAttr, STRING -> StringAttr, INTS/FLOATS -> `array<i64: ...>` /
`array<f32: ...>`, STRINGS -> ArrayAttr of StringAttr, TENSOR -> dense elements).
A GRAPH attribute becomes one of the op's regions (block arguments are the
subgraph's inputs, `onnx.yield` returns its outputs) and the attribute keeps the
region's index. `onnx_node` holds the node's name for diagnostics. Absent optional
inputs are the result of `onnx.none`; absent optional outputs have type `none`.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from xdsl.dialects.builtin import NoneType
from xdsl.ir import Attribute, Dialect, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    result_def,
    traits_def,
    var_operand_def,
    var_region_def,
    var_result_def,
)
from xdsl.traits import IsTerminator, Pure

from einc.diagnostics import EincError


class OnnxNodeOp(IRDLOperation):
    """The shape every `onnx.<OpType>` op shares; subclasses only set `name`."""

    inputs = var_operand_def()
    outputs = var_result_def()
    graphs = var_region_def()
    """The node's GRAPH attributes, in the order their attributes give."""

    assembly_format = (
        "`(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs) $graphs"
    )

    def __init__(
        self,
        inputs: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        attributes: dict[str, Attribute] | None = None,
        regions: Sequence[Region] = (),
    ):
        super().__init__(
            operands=[inputs],
            result_types=[result_types],
            attributes=attributes,
            regions=[regions],
        )

    @property
    def op_type(self) -> str:
        """The ONNX op type, such as `Gemm`."""
        return self.name.removeprefix("onnx.")


def _op_types() -> list[str]:
    schemas = onnx.defs.get_all_schemas_with_history()
    return sorted({s.name for s in schemas if s.domain in ("", "ai.onnx")})


OP_CLASSES: dict[str, type[OnnxNodeOp]] = {
    op_type: irdl_op_definition(
        type(f"{op_type}Op", (OnnxNodeOp,), {"name": f"onnx.{op_type}", "__module__": __name__})
    )
    for op_type in _op_types()
}
"""ONNX op type of the default domain -> its op class (`Gemm` -> `GemmOp`)."""


def onnx_op_class(op_type: str) -> type[OnnxNodeOp]:
    """The op class of an ONNX op type of the default domain."""
    if op_type not in OP_CLASSES:
        raise EincError(
            f"'{op_type}' is not an op of the default ONNX domain known to "
            f"onnx {onnx.__version__} (opsets up to {onnx.defs.onnx_opset_version()})",
            op=op_type,
        )
    return OP_CLASSES[op_type]


@irdl_op_definition
class NoneOp(IRDLOperation):
    """The value of an absent optional input (ONNX's empty input name)."""

    name = "onnx.none"
    result = result_def(NoneType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict"

    def __init__(self):
        super().__init__(result_types=[NoneType()])


@irdl_op_definition
class YieldOp(IRDLOperation):
    """The outputs of a subgraph: the terminator of every region of an onnx op."""

    name = "onnx.yield"
    values = var_operand_def()
    traits = traits_def(IsTerminator())
    assembly_format = "($values^ `:` type($values))? attr-dict"

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[values])


Onnx = Dialect("onnx", [*OP_CLASSES.values(), NoneOp, YieldOp], [])
