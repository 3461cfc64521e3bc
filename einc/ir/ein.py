"""The `ein` dialect: tensor programs as cascades of extended einsums.

`ein.einsum` is one extended einsum (FuseMax/TeAAL): an output index list,
one affine index expression per dimension of each input, a scalar *map* that
combines the input elements, and an optional *reduce* (with its identity) over
every index that appears on the right but not on the left:

    %z = ein.einsum (%a[m, k], %b[k, n]) -> [m, n] map "$0 * $1" reduce add
         : (tensor<64x784xf32>, tensor<784x1024xf32>) -> tensor<64x1024xf32>

reads as Z[m,n] = sum_k A[m,k] * B[k,n]. A cascade is a sequence of these ops in
a function body. Beside it live the few ops that are not einsums: references to
out-of-line weights, small inline constants and views (reshape) that move no data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseIntOrFPElementsAttr,
    StringAttr,
    SymbolRefAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    result_def,
    operand_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from einc.ir import mapexpr
from einc.ir.indexexpr import IndexExpr

REDUCTIONS: dict[str, float] = {
    "add": 0.0,
    "mul": 1.0,
    "max": -math.inf,
    "min": math.inf,
}
"""Reduce operators of an einsum and their identities."""

REDUCE_AS_MAP: dict[str, str] = {"add": "add", "mul": "mul", "max": "max", "min": "min"}
"""The scalar function of the map language that each reduce operator folds with."""


@irdl_op_definition
class EinsumOp(IRDLOperation):
    """One extended einsum: map over the inputs, reduce over the dropped indices."""

    name = "ein.einsum"

    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)

    indices = prop_def(ArrayAttr[ArrayAttr[StringAttr]])
    """One affine index expression per dimension of each input."""
    out_indices = prop_def(ArrayAttr[StringAttr])
    """The index variables of the output, one per dimension."""
    map = prop_def(StringAttr)
    """The scalar map over the inputs, in the language of `einc.ir.mapexpr`."""
    reduce = opt_prop_def(StringAttr)
    """The reduce operator over indices absent from the output, if any."""

    traits = traits_def(Pure())

    def __init__(
        self,
        inputs: Sequence[SSAValue],
        indices: Sequence[Sequence[str | IndexExpr]],
        out_indices: Sequence[str],
        result_type: TensorType,
        map: str | mapexpr.Expr | None = None,
        reduce: str | None = None,
    ):
        if map is None:
            map = "$0"
        if not isinstance(map, str):
            map = mapexpr.render(map)
        props: dict[str, Attribute] = {
            "indices": ArrayAttr(
                [ArrayAttr([StringAttr(str(e)) for e in dims]) for dims in indices]
            ),
            "out_indices": ArrayAttr([StringAttr(i) for i in out_indices]),
            "map": StringAttr(map),
        }
        if reduce is not None:
            props["reduce"] = StringAttr(reduce)
        super().__init__(operands=[inputs], result_types=[result_type], properties=props)

    # -- views of the properties ---------------------------------------------

    @property
    def input_exprs(self) -> list[list[IndexExpr]]:
        return [[IndexExpr.parse(e.data) for e in dims] for dims in self.indices]

    @property
    def output_vars(self) -> list[str]:
        return [i.data for i in self.out_indices]

    @property
    def map_expr(self) -> mapexpr.Expr:
        return mapexpr.parse(self.map.data)

    @property
    def reduce_op(self) -> str | None:
        return self.reduce.data if self.reduce else None

    def extents(self) -> dict[str, int]:
        """The range of every index variable, from its plain occurrences."""
        extents: dict[str, int] = {}
        shapes = [t.get_shape() for t in self.input_types()]
        for exprs, shape in zip(self.input_exprs, shapes):
            for expr, size in zip(exprs, shape):
                if (var := expr.plain_var) is not None:
                    extents.setdefault(var, size)
        out_shape = self.result_type().get_shape()
        for var, size in zip(self.output_vars, out_shape):
            extents.setdefault(var, size)
        return extents

    def reduction_vars(self) -> list[str]:
        """Index variables that appear in the inputs but not in the output."""
        out = set(self.output_vars)
        seen: list[str] = []
        for exprs in self.input_exprs:
            for expr in exprs:
                for var in expr.variables:
                    if var not in out and var not in seen:
                        seen.append(var)
        return seen

    def input_types(self) -> list[TensorType]:
        return [v.type for v in self.inputs]  # type: ignore[misc]

    def result_type(self) -> TensorType:
        return self.output.type  # type: ignore[return-value]

    # -- verification ----------------------------------------------------------

    def verify_(self) -> None:
        if len(self.indices) != len(self.inputs):
            raise VerifyException(
                f"einsum has {len(self.inputs)} inputs but {len(self.indices)} index lists"
            )
        try:
            exprs = self.input_exprs
            expr = self.map_expr
        except ValueError as err:
            raise VerifyException(str(err)) from err
        used = mapexpr.inputs_used(expr)
        if used and max(used) >= len(self.inputs):
            raise VerifyException(
                f"map '{self.map.data}' reads ${max(used)} but the einsum has "
                f"{len(self.inputs)} inputs"
            )
        for n, (dims, ty) in enumerate(zip(exprs, self.input_types())):
            if len(dims) != len(ty.get_shape()):
                raise VerifyException(
                    f"input {n} has rank {len(ty.get_shape())} but {len(dims)} index expressions"
                )
        outs = self.output_vars
        if len(set(outs)) != len(outs):
            raise VerifyException(f"output indices {outs} repeat a variable")
        if len(outs) != len(self.result_type().get_shape()):
            raise VerifyException(
                f"output has rank {len(self.result_type().get_shape())} "
                f"but {len(outs)} indices"
            )
        extents = self.extents()
        shapes = [t.get_shape() for t in self.input_types()]
        for n, (dims, shape) in enumerate(zip(exprs, shapes)):
            for expr, size in zip(dims, shape):
                missing = [v for v in expr.variables if v not in extents]
                if missing:
                    raise VerifyException(
                        f"index '{missing[0]}' of input {n} has no range: it must appear "
                        "alone in some dimension"
                    )
                if (var := expr.plain_var) is not None and extents[var] != size:
                    raise VerifyException(
                        f"index '{var}' has extent {extents[var]} and {size} in input {n}"
                    )
                if expr.max_value(extents) >= size:
                    raise VerifyException(
                        f"index '{expr}' of input {n} reaches {expr.max_value(extents)} "
                        f"in a dimension of size {size}"
                    )
        for var, size in zip(outs, self.result_type().get_shape()):
            if extents[var] != size:
                raise VerifyException(
                    f"output index '{var}' has extent {size} but {extents[var]} in an input"
                )
        red = self.reduce_op
        if red is not None and red not in REDUCTIONS:
            raise VerifyException(
                f"unknown reduce '{red}', expected one of {', '.join(REDUCTIONS)}"
            )
        if self.reduction_vars() and red is None:
            raise VerifyException(
                f"indices {self.reduction_vars()} are dropped from the output "
                "but the einsum has no reduce"
            )

    # -- text form ---------------------------------------------------------------

    def print(self, printer: Printer) -> None:
        printer.print_string(" (")
        for n, (value, dims) in enumerate(zip(self.inputs, self.indices)):
            if n:
                printer.print_string(", ")
            printer.print_operand(value)
            printer.print_string("[" + ", ".join(d.data for d in dims) + "]")
        printer.print_string(") -> [" + ", ".join(self.output_vars) + "]")
        if not (self.map.data == "$0" and len(self.inputs) == 1):
            printer.print_string(" map ")
            printer.print_string_literal(self.map.data)
        if self.reduce is not None:
            printer.print_string(f" reduce {self.reduce.data}")
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_function_type(
            [v.type for v in self.inputs], [self.output.type]
        )

    @classmethod
    def parse(cls, parser: Parser) -> EinsumOp:
        operands = []
        indices: list[list[str]] = []

        def parse_operand() -> None:
            operands.append(parser.parse_unresolved_operand())
            dims = parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE, lambda: _parse_index_expr(parser)
            )
            indices.append(dims)

        parser.parse_comma_separated_list(parser.Delimiter.PAREN, parse_operand)
        parser.parse_punctuation("->")
        outs = parser.parse_comma_separated_list(
            parser.Delimiter.SQUARE, parser.parse_identifier
        )
        map_text = "$0"
        if parser.parse_optional_keyword("map"):
            map_text = parser.parse_str_literal("map expression")
        reduce = None
        if parser.parse_optional_keyword("reduce"):
            reduce = parser.parse_identifier("reduce operator")
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        fn_type = parser.parse_function_type()
        if len(fn_type.inputs) != len(operands) or len(fn_type.outputs) != 1:
            parser.raise_error("einsum type must list every input and one result")
        resolved = [
            parser.resolve_operand(o, t) for o, t in zip(operands, fn_type.inputs.data)
        ]
        op = cls(resolved, indices, outs, fn_type.outputs.data[0], map_text, reduce)  # type: ignore[arg-type]
        op.attributes.update(attrs)
        return op


def _parse_index_expr(parser: Parser) -> str:
    """Read `m`, `0`, `p * 2 + r` as the text of an `IndexExpr`."""

    def term() -> str:
        first = parser.parse_optional_integer(allow_boolean=False, allow_negative=False)
        text = str(first) if first is not None else parser.parse_identifier("index")
        if parser.parse_optional_punctuation("*"):
            other = parser.parse_optional_integer(allow_boolean=False, allow_negative=False)
            text += " * " + (str(other) if other is not None else parser.parse_identifier())
        return text

    parts = [term()]
    while parser.parse_optional_punctuation("+"):
        parts.append(term())
    return str(IndexExpr.parse(" + ".join(parts)))


@irdl_op_definition
class WeightOp(IRDLOperation):
    """A tensor held out of line in the weight table, referenced by symbol."""

    name = "ein.weight"
    sym = prop_def(SymbolRefAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$sym attr-dict `:` type($result)"

    def __init__(self, sym: str, result_type: TensorType):
        super().__init__(properties={"sym": SymbolRefAttr(sym)}, result_types=[result_type])


@irdl_op_definition
class ConstantOp(IRDLOperation):
    """A small tensor written inline (shapes, scalars); large data are weights."""

    name = "ein.constant"
    value = prop_def(DenseIntOrFPElementsAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, value: DenseIntOrFPElementsAttr):
        super().__init__(properties={"value": value}, result_types=[value.type])

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_attribute(self.value)
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> ConstantOp:
        value = parser.parse_attribute()
        if not isinstance(value, DenseIntOrFPElementsAttr):
            parser.raise_error("ein.constant expects a dense elements attribute")
        op = cls(value)
        op.attributes.update(parser.parse_optional_attr_dict())
        return op


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """A view with a new shape over the same row-major elements: moves no data."""

    name = "ein.reshape"
    source = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$source attr-dict `:` type($source) `->` type($result)"

    def __init__(self, source: SSAValue, result_type: TensorType):
        super().__init__(operands=[source], result_types=[result_type])

    def verify_(self) -> None:
        src: TensorType = self.source.type  # type: ignore[assignment]
        dst: TensorType = self.result.type  # type: ignore[assignment]
        if src.get_element_type() != dst.get_element_type():
            raise VerifyException("reshape must keep the element type")
        if math.prod(src.get_shape()) != math.prod(dst.get_shape()):
            raise VerifyException(
                f"reshape from {list(src.get_shape())} to {list(dst.get_shape())} "
                "changes the number of elements"
            )


Ein = Dialect("ein", [EinsumOp, WeightOp, ConstantOp, ReshapeOp], [])
