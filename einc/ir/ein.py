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
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Attribute, Dialect, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    result_def,
    operand_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import IsolatedFromAbove, IsTerminator, Pure
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
                if expr.max_value(extents) >= size or expr.min_value(extents) < 0:
                    reach = expr.max_value(extents) if expr.min_value(extents) >= 0 else expr.min_value(extents)
                    raise VerifyException(
                        f"index '{expr}' of input {n} reaches {reach} in a dimension of size {size}"
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
    """Read `m`, `0`, `p * 2 + r`, `9 - i` as the text of an `IndexExpr`."""
    tokens: list[str] = []
    while True:
        number = parser.parse_optional_integer(allow_boolean=False, allow_negative=False)
        if number is not None:
            tokens.append(str(number))
        elif (name := parser.parse_optional_identifier()) is not None:
            tokens.append(name)
        elif (punct := parser.parse_optional_punctuation("*") or parser.parse_optional_punctuation("+")
              or parser.parse_optional_punctuation("-")) is not None:
            tokens.append(punct)
        else:
            break
    try:
        return str(IndexExpr.parse(" ".join(tokens)))
    except ValueError as err:
        parser.raise_error(str(err))


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


@irdl_op_definition
class GatherOp(IRDLOperation):
    """ONNX Gather: `out[a..., i..., b...] = data[a..., indices[i...], b...]` on `axis`.

    An indirect index is not affine, so gather is an op of its own; negative
    indices count from the end, as in ONNX.
    """

    name = "ein.gather"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.data)
        printer.print_string("[")
        printer.print_operand(self.indices)
        printer.print_string(f"] axis {self.axis.value.data}")
        _print_tail(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> GatherOp:
        data = parser.parse_unresolved_operand()
        parser.parse_punctuation("[")
        indices = parser.parse_unresolved_operand()
        parser.parse_punctuation("]")
        axis, attrs, types, result = _parse_tail(parser, 2)
        op = cls(parser.resolve_operand(data, types[0]), parser.resolve_operand(indices, types[1]), axis, result)
        op.attributes.update(attrs)
        return op

    def __init__(self, data: SSAValue, indices: SSAValue, axis: int, result_type: TensorType):
        super().__init__(
            operands=[data, indices],
            result_types=[result_type],
            properties={"axis": IntegerAttr(axis, i64)},
        )

    def verify_(self) -> None:
        data = tuple(self.data.type.get_shape())  # type: ignore[attr-defined]
        idx = tuple(self.indices.type.get_shape())  # type: ignore[attr-defined]
        axis = self.axis.value.data
        if not 0 <= axis < len(data):
            raise VerifyException(f"gather axis {axis} is out of range for rank {len(data)}")
        if not isinstance(self.indices.type.get_element_type(), IntegerType):  # type: ignore[attr-defined]
            raise VerifyException("gather indices must be integers")
        expected = data[:axis] + idx + data[axis + 1 :]
        if tuple(self.result.type.get_shape()) != expected:  # type: ignore[attr-defined]
            raise VerifyException(f"gather result must have shape {list(expected)}")


SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")
"""How `ein.scatter` combines an update with the element it lands on (none: replaces it)."""


@irdl_op_definition
class ScatterOp(IRDLOperation):
    """ONNX ScatterND/ScatterElements at their core: the inverse of `ein.gather`.

    The result is a copy of `data` where, for every position of `updates`
    (shaped like a gather's result, `data[:axis] + indices + data[axis+1:]`),
    `out[a..., indices[i...], b...] = updates[a..., i..., b...]`, or that element
    combined with the update by `reduction`. Updates apply in row-major order, so
    with `none` the last of duplicate indices wins, as in onnxruntime. Negative
    indices count from the end. A store to a computed place is no einsum (an
    einsum writes each output element once, at an affine index), hence an op.

        %r = ein.scatter %upd into %data[%idx] axis 0 reduce add
             : (tensor<8xf32>, tensor<4xi64>, tensor<4xf32>) -> tensor<8xf32>
    """

    name = "ein.scatter"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    updates = operand_def(TensorType)
    result = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    reduction = prop_def(StringAttr)
    traits = traits_def(Pure())

    def __init__(
        self, data: SSAValue, indices: SSAValue, updates: SSAValue, axis: int = 0, reduction: str = "none"
    ):
        super().__init__(
            operands=[data, indices, updates],
            result_types=[data.type],
            properties={"axis": IntegerAttr(axis, i64), "reduction": StringAttr(reduction)},
        )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.updates)
        printer.print_string(" into ")
        printer.print_operand(self.data)
        printer.print_string("[")
        printer.print_operand(self.indices)
        printer.print_string(f"] axis {self.axis.value.data}")
        if self.reduction.data != "none":
            printer.print_string(f" reduce {self.reduction.data}")
        _print_tail(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> ScatterOp:
        updates = parser.parse_unresolved_operand()
        parser.parse_keyword("into")
        data = parser.parse_unresolved_operand()
        parser.parse_punctuation("[")
        indices = parser.parse_unresolved_operand()
        parser.parse_punctuation("]")
        parser.parse_keyword("axis")
        axis = parser.parse_integer(allow_boolean=False)
        reduction = parser.parse_identifier("reduction") if parser.parse_optional_keyword("reduce") else "none"
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        fn_type = parser.parse_function_type()
        if len(fn_type.inputs) != 3 or len(fn_type.outputs) != 1:
            parser.raise_error("expected 3 operand types and one result type")
        types = fn_type.inputs.data
        op = cls(
            parser.resolve_operand(data, types[0]),
            parser.resolve_operand(indices, types[1]),
            parser.resolve_operand(updates, types[2]),
            axis,
            reduction,
        )
        op.attributes.update(attrs)
        return op

    def verify_(self) -> None:
        data = tuple(self.data.type.get_shape())  # type: ignore[attr-defined]
        idx = tuple(self.indices.type.get_shape())  # type: ignore[attr-defined]
        axis = self.axis.value.data
        if not 0 <= axis < len(data):
            raise VerifyException(f"scatter axis {axis} is out of range for rank {len(data)}")
        if not isinstance(self.indices.type.get_element_type(), IntegerType):  # type: ignore[attr-defined]
            raise VerifyException("scatter indices must be integers")
        if self.reduction.data not in SCATTER_REDUCTIONS:
            raise VerifyException(
                f"unknown scatter reduction '{self.reduction.data}', expected one of {', '.join(SCATTER_REDUCTIONS)}"
            )
        expected = data[:axis] + idx + data[axis + 1 :]
        if tuple(self.updates.type.get_shape()) != expected:  # type: ignore[attr-defined]
            raise VerifyException(f"scatter updates must have shape {list(expected)}")
        if self.updates.type.get_element_type() != self.data.type.get_element_type():  # type: ignore[attr-defined]
            raise VerifyException("scatter updates must have the element type of the data")
        if self.result.type != self.data.type:
            raise VerifyException("scatter result must have the type of the data")


@irdl_op_definition
class TopKOp(IRDLOperation):
    """The positions of the k largest (or smallest) elements along `axis`, best first.

    Equal elements keep their order (the lower position first), as ONNX TopK says.
    The result is the input's shape with k along the axis, in i64; the values are a
    gather by these positions. A selection is no einsum: it is a data-dependent
    order, hence an op (short axes lower to a rank-counting einsum instead).

        %i = ein.topk %x k 3 axis 1 largest : tensor<4x9xf32> -> tensor<4x3xi64>
    """

    name = "ein.topk"
    source = operand_def(TensorType)
    result = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    largest = prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def __init__(self, source: SSAValue, k: int, axis: int, largest: bool = True):
        shape = list(source.type.get_shape())  # type: ignore[attr-defined]
        shape[axis] = k
        super().__init__(
            operands=[source],
            result_types=[TensorType(i64, shape)],
            properties={"axis": IntegerAttr(axis, i64), "largest": IntegerAttr(int(largest), i64)},
        )

    @property
    def k(self) -> int:
        return self.result.type.get_shape()[self.axis.value.data]  # type: ignore[attr-defined]

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.source)
        order = "largest" if self.largest.value.data else "smallest"
        printer.print_string(f" k {self.k} axis {self.axis.value.data} {order}")
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.source.type)
        printer.print_string(" -> ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> TopKOp:
        source = parser.parse_unresolved_operand()
        parser.parse_keyword("k")
        k = parser.parse_integer(allow_boolean=False)
        parser.parse_keyword("axis")
        axis = parser.parse_integer(allow_boolean=False)
        largest = parser.parse_optional_keyword("largest") is not None
        if not largest:
            parser.parse_keyword("smallest")
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        src_type = parser.parse_type()
        parser.parse_punctuation("->")
        result_type = parser.parse_type()
        op = cls(parser.resolve_operand(source, src_type), k, axis, largest)
        if op.result.type != result_type:
            parser.raise_error(f"ein.topk result must be {op.result.type}")
        op.attributes.update(attrs)
        return op

    def verify_(self) -> None:
        shape = list(self.source.type.get_shape())  # type: ignore[attr-defined]
        axis = self.axis.value.data
        if not 0 <= axis < len(shape):
            raise VerifyException(f"topk axis {axis} is out of range for rank {len(shape)}")
        out = list(self.result.type.get_shape())  # type: ignore[attr-defined]
        if self.result.type.get_element_type() != i64 or len(out) != len(shape) or not 0 <= out[axis] <= shape[axis]:  # type: ignore[attr-defined]
            raise VerifyException(f"topk result must be i64 with the input's shape and at most {shape[axis] if shape else 0} along the axis")
        if out[:axis] + out[axis + 1 :] != shape[:axis] + shape[axis + 1 :]:
            raise VerifyException("topk result must keep the input's other dimensions")


@irdl_op_definition
class ConcatOp(IRDLOperation):
    """Inputs joined along `axis`: each is copied into its slice of the result."""

    name = "ein.concat"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    traits = traits_def(Pure())

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(f" axis {self.axis.value.data}")
        _print_tail(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> ConcatOp:
        operands = parser.parse_comma_separated_list(parser.Delimiter.NONE, parser.parse_unresolved_operand)
        axis, attrs, types, result = _parse_tail(parser, len(operands))
        op = cls([parser.resolve_operand(o, t) for o, t in zip(operands, types)], axis, result)
        op.attributes.update(attrs)
        return op

    def __init__(self, inputs: Sequence[SSAValue], axis: int, result_type: TensorType):
        super().__init__(
            operands=[inputs], result_types=[result_type], properties={"axis": IntegerAttr(axis, i64)}
        )

    def verify_(self) -> None:
        axis = self.axis.value.data
        shapes = [tuple(v.type.get_shape()) for v in self.inputs]  # type: ignore[attr-defined]
        out = tuple(self.result.type.get_shape())  # type: ignore[attr-defined]
        if not shapes or not 0 <= axis < len(out):
            raise VerifyException(f"concat needs inputs and an axis in range, got axis {axis}")
        for shape in shapes:
            if len(shape) != len(out) or shape[:axis] + shape[axis + 1 :] != out[:axis] + out[axis + 1 :]:
                raise VerifyException(f"concat input of shape {list(shape)} does not fit {list(out)}")
        if sum(s[axis] for s in shapes) != out[axis]:
            raise VerifyException("concat result size along the axis is not the sum of the inputs'")


def _print_tail(printer: Printer, op: IRDLOperation) -> None:
    """Attributes and `: (operand types) -> result type` of gather and concat."""
    printer.print_op_attributes(op.attributes)
    printer.print_string(" : ")
    printer.print_function_type(op.operand_types, op.result_types)


def _parse_tail(parser: Parser, n_operands: int) -> tuple[int, dict[str, Attribute], list[Attribute], TensorType]:
    """Reads `axis N {attrs} : (types) -> type` after the operands."""
    parser.parse_keyword("axis")
    axis = parser.parse_integer(allow_boolean=False)
    attrs = parser.parse_optional_attr_dict()
    parser.parse_punctuation(":")
    fn_type = parser.parse_function_type()
    if len(fn_type.inputs) != n_operands or len(fn_type.outputs) != 1:
        parser.raise_error(f"expected {n_operands} operand types and one result type")
    return axis, attrs, list(fn_type.inputs.data), fn_type.outputs.data[0]  # type: ignore[return-value]


def _parse_scalar(parser: Parser) -> float:
    """A float literal as Python's repr writes it: 0.5, -2, inf, -inf, nan."""
    sign = -1.0 if parser.parse_optional_punctuation("-") else 1.0
    if parser.parse_optional_keyword("inf"):
        return sign * float("inf")
    if parser.parse_optional_keyword("nan"):
        return float("nan")
    return sign * float(parser.parse_number())


PAD_MODES = ("constant", "edge", "reflect")


@irdl_op_definition
class PadOp(IRDLOperation):
    """Pad (or crop, with negative amounts) each dimension, and dilate it.

    Output size per dimension: low + n + (n - 1) * interior + high. Interior
    padding inserts `interior` fill elements between neighbours (how a strided
    ConvTranspose becomes a convolution). Modes: constant (fill with `value`),
    edge (repeat the border), reflect (mirror without the border).
    """

    name = "ein.pad"
    source = operand_def(TensorType)
    result = result_def(TensorType)
    low = prop_def(DenseArrayBase)
    high = prop_def(DenseArrayBase)
    interior = prop_def(DenseArrayBase)
    mode = prop_def(StringAttr)
    value = prop_def(FloatAttr)
    traits = traits_def(Pure())

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.source)
        for name, values in zip(("low", "high", "interior"), self.amounts):
            printer.print_string(f" {name} [{', '.join(map(str, values))}]")
        printer.print_string(f" {self.mode.data} ")
        printer.print_string(repr(self.value.value.data))
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.source.type)
        printer.print_string(" -> ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> PadOp:
        source = parser.parse_unresolved_operand()
        amounts = []
        for name in ("low", "high", "interior"):
            parser.parse_keyword(name)
            amounts.append(
                parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_integer)
            )
        mode = parser.parse_identifier("pad mode")
        value = _parse_scalar(parser)
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        src_type = parser.parse_type()
        parser.parse_punctuation("->")
        result_type = parser.parse_type()
        op = cls(
            parser.resolve_operand(source, src_type),
            amounts[0],
            amounts[1],
            result_type,  # type: ignore[arg-type]
            amounts[2],
            mode,
            value,
        )
        op.attributes.update(attrs)
        return op

    def __init__(
        self,
        source: SSAValue,
        low: Sequence[int],
        high: Sequence[int],
        result_type: TensorType,
        interior: Sequence[int] | None = None,
        mode: str = "constant",
        value: float = 0.0,
    ):
        interior = interior or [0] * len(low)
        super().__init__(
            operands=[source],
            result_types=[result_type],
            properties={
                "low": DenseArrayBase.from_list(i64, list(low)),
                "high": DenseArrayBase.from_list(i64, list(high)),
                "interior": DenseArrayBase.from_list(i64, list(interior)),
                "mode": StringAttr(mode),
                "value": FloatAttr(value, f64),
            },
        )

    @property
    def amounts(self) -> tuple[list[int], list[int], list[int]]:
        """(low, high, interior) as Python lists."""
        return (
            [int(v) for v in self.low.get_values()],
            [int(v) for v in self.high.get_values()],
            [int(v) for v in self.interior.get_values()],
        )

    def verify_(self) -> None:
        shape = list(self.source.type.get_shape())  # type: ignore[attr-defined]
        out = list(self.result.type.get_shape())  # type: ignore[attr-defined]
        low, high, interior = self.amounts
        if not len(low) == len(high) == len(interior) == len(shape) == len(out):
            raise VerifyException("pad amounts must give one value per dimension")
        if self.mode.data not in PAD_MODES:
            raise VerifyException(f"unknown pad mode '{self.mode.data}', expected one of {', '.join(PAD_MODES)}")
        if any(i < 0 for i in interior) or (self.mode.data != "constant" and any(interior)):
            raise VerifyException("interior padding must be non-negative and needs mode constant")
        expected = [lo + n + max(n - 1, 0) * i + hi for n, lo, hi, i in zip(shape, low, high, interior)]
        if out != expected:
            raise VerifyException(f"pad result must have shape {expected}, not {out}")


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Ends the region of an `ein.group` (or other region op), naming its results."""

    name = "ein.yield"
    values = var_operand_def()
    traits = traits_def(IsTerminator())
    assembly_format = "($values^ `:` type($values))? attr-dict"

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[values])


@irdl_op_definition
class GroupOp(IRDLOperation):
    """Einsums that run as one kernel: the unit fusion makes and backends take.

    The body is isolated from above: its block arguments are the group's inputs,
    so a backend can compile it on its own (one Triton kernel, one CPU loop nest
    with a fused epilogue, one accelerator program). `kind` names the shape of
    the group (e.g. "contraction" for a contraction with its elementwise
    epilogue) so a backend can pick its kernel from a table. Values computed
    inside never need a buffer of their own if the backend keeps them local.
    """

    name = "ein.group"
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    kind = prop_def(StringAttr)
    body = region_def("single_block")
    traits = traits_def(Pure(), IsolatedFromAbove())

    def __init__(self, inputs: Sequence[SSAValue], result_types: Sequence[Attribute], kind: str, body: Region):
        super().__init__(
            operands=[inputs], result_types=[result_types], properties={"kind": StringAttr(kind)}, regions=[body]
        )

    @property
    def yielded(self) -> Sequence[SSAValue]:
        terminator = self.body.block.last_op
        assert isinstance(terminator, YieldOp)
        return terminator.values

    def verify_(self) -> None:
        block = self.body.block
        if [a.type for a in block.args] != [v.type for v in self.inputs]:
            raise VerifyException("group block arguments must match the group's inputs")
        terminator = block.last_op
        if not isinstance(terminator, YieldOp):
            raise VerifyException("group body must end in ein.yield")
        if [v.type for v in terminator.values] != [r.type for r in self.outputs]:
            raise VerifyException("ein.yield types must match the group's results")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.kind.data)
        printer.print_string(" (")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(")")
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_function_type([v.type for v in self.inputs], [r.type for r in self.outputs])
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=True)

    @classmethod
    def parse(cls, parser: Parser) -> GroupOp:
        kind = parser.parse_str_literal("group kind")
        operands = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_unresolved_operand)
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        fn_type = parser.parse_function_type()
        inputs = [parser.resolve_operand(o, t) for o, t in zip(operands, fn_type.inputs.data)]
        body = parser.parse_region()
        op = cls(inputs, list(fn_type.outputs.data), kind, body)
        op.attributes.update(attrs)
        return op


@irdl_op_definition
class IfOp(IRDLOperation):
    """A branch on a condition known only at run time (ONNX If).

    Each region is one block without arguments ending in `ein.yield`; it reads
    values of the enclosing scope directly. The condition is a one-element i1
    tensor. A condition known at compile time never needs this op: onnx-to-ein
    inlines the taken branch instead.

        %r = ein.if %c : tensor<i1> -> (tensor<4xf32>) {
          ...
          ein.yield %a : tensor<4xf32>
        } else {
          ein.yield %b : tensor<4xf32>
        }
    """

    name = "ein.if"
    cond = operand_def(TensorType)
    outputs = var_result_def(TensorType)
    then_region = region_def("single_block")
    else_region = region_def("single_block")

    def __init__(self, cond: SSAValue, result_types: Sequence[Attribute], then_region: Region, else_region: Region):
        super().__init__(operands=[cond], result_types=[result_types], regions=[then_region, else_region])

    def verify_(self) -> None:
        ty: TensorType = self.cond.type  # type: ignore[assignment]
        if ty.get_element_type() != IntegerType(1) or math.prod(ty.get_shape()) != 1:
            raise VerifyException(f"ein.if condition must be one i1 element, not {ty}")
        if not self.outputs:
            raise VerifyException("ein.if must have results")
        for name, region in (("then", self.then_region), ("else", self.else_region)):
            block = region.block
            if block.args:
                raise VerifyException(f"ein.if {name} region must have no block arguments")
            terminator = block.last_op
            if not isinstance(terminator, YieldOp):
                raise VerifyException(f"ein.if {name} region must end in ein.yield")
            if [v.type for v in terminator.values] != [r.type for r in self.outputs]:
                raise VerifyException(f"ein.yield types of the {name} region must match the ein.if results")

    def branch(self, taken: bool) -> Region:
        return self.then_region if taken else self.else_region

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.cond)
        printer.print_string(" : ")
        printer.print_attribute(self.cond.type)
        printer.print_string(" -> (")
        printer.print_list([r.type for r in self.outputs], printer.print_attribute)
        printer.print_string(") ")
        printer.print_region(self.then_region, print_entry_block_args=False)
        printer.print_string(" else ")
        printer.print_region(self.else_region, print_entry_block_args=False)
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> IfOp:
        cond = parser.parse_unresolved_operand()
        parser.parse_punctuation(":")
        cond_type = parser.parse_type()
        parser.parse_punctuation("->")
        types = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_type)
        then_region = parser.parse_region()
        parser.parse_keyword("else")
        else_region = parser.parse_region()
        op = cls(parser.resolve_operand(cond, cond_type), types, then_region, else_region)
        op.attributes.update(parser.parse_optional_attr_dict())
        return op


def inline_group(group: GroupOp) -> None:
    """Replace a group by its body: the generic path of backends without its kernel."""
    block = group.body.block
    for arg, value in zip(block.args, group.inputs):
        arg.replace_all_uses_with(value)
    terminator = block.last_op
    assert isinstance(terminator, YieldOp)
    for result, value in zip(group.outputs, terminator.values):
        result.replace_all_uses_with(value)
    terminator.detach()
    terminator.erase()
    parent = group.parent_block()
    assert parent is not None
    for op in list(block.ops):
        op.detach()
        parent.insert_op_before(op, group)
    group.detach()
    group.erase()


Ein = Dialect(
    "ein",
    [EinsumOp, WeightOp, ConstantOp, ReshapeOp, GatherOp, ScatterOp, TopKOp, ConcatOp, PadOp, GroupOp, YieldOp, IfOp],
    [],
)
