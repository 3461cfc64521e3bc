"""What every ONNX lowering shares: a view of the node, and a cascade builder.

A lowering is a function `(CascadeBuilder, Node) -> list[SSAValue]` that builds
the einsum cascade of one ONNX node and returns the values that replace its
results. Lowerings raise `Unsupported` for attribute values or shapes outside
what einc handles; the pass turns that into a diagnostic naming the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    NoneType,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from einc.ir import mapexpr
from einc.ir.dtypes import compute_dtype, type_to_numpy
from einc.ir.ein import ConstantOp, EinsumOp, ReshapeOp
from einc.ir.indexexpr import IndexExpr
from einc.ir.interpret import EVALUATORS, evaluate_op


class Unsupported(Exception):
    """An ONNX node (or one of its attributes) that einc cannot lower."""


@dataclass
class Node:
    """Read access to one `onnx.*` op: its inputs, attributes, results, opset."""

    op: Operation
    opset: int

    @property
    def op_type(self) -> str:
        return self.op.name.removeprefix("onnx.")

    @property
    def node_name(self) -> str:
        attr = self.op.attributes.get("onnx_node")
        return attr.data if isinstance(attr, StringAttr) else ""

    @property
    def inputs(self) -> list[SSAValue | None]:
        """Operands, with absent optional inputs (`onnx.none`) as None."""
        return [None if isinstance(v.type, NoneType) else v for v in self.op.operands]

    def input(self, n: int) -> SSAValue | None:
        ins = self.inputs
        return ins[n] if n < len(ins) else None

    @property
    def result_types(self) -> list[TensorType]:
        return [r.type for r in self.op.results]  # type: ignore[misc]

    def constant_input(self, n: int) -> np.ndarray | None:
        """The value of input `n` if it is known at compile time (an ein.constant)."""
        value = self.input(n)
        if value is None or not isinstance(value.owner, ConstantOp):
            return None
        return constant_value(value.owner)

    def attr(self, name: str) -> Attribute | None:
        return self.op.attributes.get(name)

    def int_attr(self, name: str, default: int) -> int:
        attr = self.attr(name)
        if attr is None:
            return default
        if not isinstance(attr, IntegerAttr):
            raise Unsupported(f"attribute '{name}' must be an int")
        return attr.value.data

    def float_attr(self, name: str, default: float) -> float:
        attr = self.attr(name)
        if attr is None:
            return default
        if isinstance(attr, (FloatAttr, IntegerAttr)):
            return float(attr.value.data)
        raise Unsupported(f"attribute '{name}' must be a float")

    def ints_attr(self, name: str, default: Sequence[int] | None = None) -> list[int] | None:
        attr = self.attr(name)
        if attr is None:
            return None if default is None else list(default)
        if isinstance(attr, DenseArrayBase):
            return [int(v) for v in attr.get_values()]
        if isinstance(attr, ArrayAttr):
            return [a.value.data for a in attr]  # type: ignore[union-attr]
        raise Unsupported(f"attribute '{name}' must be a list of ints")

    def string_attr(self, name: str, default: str) -> str:
        attr = self.attr(name)
        if attr is None:
            return default
        if not isinstance(attr, StringAttr):
            raise Unsupported(f"attribute '{name}' must be a string")
        return attr.data


def shape_of(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def tensor_type(shape: Sequence[int], like: SSAValue | TensorType) -> TensorType:
    """A tensor type of `shape` with the element type of `like`."""
    ty = like if isinstance(like, TensorType) else like.type
    return TensorType(ty.get_element_type(), list(shape))  # type: ignore[union-attr]


def axis_vars(rank: int, prefix: str = "i") -> list[str]:
    return [f"{prefix}{d}" for d in range(rank)]


def broadcast_indices(in_shape: Sequence[int], out_vars: Sequence[str], out_shape: Sequence[int]) -> list[str]:
    """Index expressions that read `in_shape` broadcast (numpy rules) to `out_shape`."""
    offset = len(out_shape) - len(in_shape)
    if offset < 0:
        raise Unsupported(f"cannot broadcast {list(in_shape)} to {list(out_shape)}")
    exprs = []
    for d, size in enumerate(in_shape):
        out_size = out_shape[offset + d]
        if size == out_size:
            exprs.append(out_vars[offset + d])
        elif size == 1:
            exprs.append("0")
        else:
            raise Unsupported(f"cannot broadcast {list(in_shape)} to {list(out_shape)}")
    return exprs


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def constant_value(op: ConstantOp) -> np.ndarray:
    """The numpy value of an ein.constant."""
    ty: TensorType = op.result.type  # type: ignore[assignment]
    dtype = type_to_numpy(ty.get_element_type())
    return np.array(op.value.get_values(), dtype=dtype).reshape(ty.get_shape())


def dense_attr(array: np.ndarray, ty: TensorType) -> DenseIntOrFPElementsAttr:
    array = array.astype(compute_dtype(array.dtype))  # bit formats (kind 'V') as float32 or int32
    values = array.astype(np.float64 if array.dtype.kind == "f" else np.int64).flatten().tolist()
    return DenseIntOrFPElementsAttr.from_list(ty, values)


FOLD_LIMIT = 4096
"""Largest result (in elements) computed at compile time when all inputs are constant."""


class CascadeBuilder:
    """Inserts `ein` ops before the node being lowered, folding constant ones.

    An op whose operands are all `ein.constant`s (shape arithmetic, Range,
    ConstantOfShape, ...) is evaluated by the ein interpreter as it is built
    and becomes an `ein.constant` itself, so later lowerings can read its value.
    """

    def __init__(self, rewriter: Rewriter, anchor: Operation):
        self.rewriter = rewriter
        self.anchor = anchor

    def insert(self, op: Operation) -> Operation:
        folded = self._fold(op)
        if folded is not None:
            op = folded
        self.rewriter.insert_op(op, InsertPoint.before(self.anchor))
        return op

    def _fold(self, op: Operation) -> ConstantOp | None:
        if type(op) not in EVALUATORS or isinstance(op, ConstantOp) or len(op.results) != 1:
            return None
        if not all(isinstance(v.owner, ConstantOp) for v in op.operands):
            return None
        ty: TensorType = op.results[0].type  # type: ignore[assignment]
        if int(np.prod(ty.get_shape())) > FOLD_LIMIT:
            return None
        value = evaluate_op(op, [constant_value(v.owner) for v in op.operands])  # type: ignore[arg-type]
        op.erase(safe_erase=False)
        return ConstantOp(dense_attr(np.asarray(value), ty))

    def einsum(
        self,
        inputs: Sequence[SSAValue],
        indices: Sequence[Sequence[str | IndexExpr]],
        out_indices: Sequence[str],
        result_type: TensorType,
        map: str | mapexpr.Expr | None = None,
        reduce: str | None = None,
    ) -> SSAValue:
        op = EinsumOp(inputs, indices, out_indices, result_type, map, reduce)
        return self.insert(op).results[0]

    def elementwise(
        self, inputs: Sequence[SSAValue], map: str | mapexpr.Expr, result_type: TensorType
    ) -> SSAValue:
        """`map` applied to inputs broadcast to `result_type`'s shape."""
        out_shape = tuple(result_type.get_shape())
        out_vars = axis_vars(len(out_shape))
        indices = [broadcast_indices(shape_of(v), out_vars, out_shape) for v in inputs]
        return self.einsum(inputs, indices, out_vars, result_type, map)

    def reduce(
        self, value: SSAValue, axes: Sequence[int], reduce: str, keepdims: bool, map: str = "$0"
    ) -> SSAValue:
        """`reduce` over `axes` of `value`, keeping them as size 1 if `keepdims`."""
        shape = shape_of(value)
        vars_ = axis_vars(len(shape))
        kept = [d for d in range(len(shape)) if d not in axes]
        out_vars = [vars_[d] for d in kept]
        result = self.einsum(
            [value], [vars_], out_vars, tensor_type([shape[d] for d in kept], value), map, reduce
        )
        if keepdims:
            keep_shape = [1 if d in axes else s for d, s in enumerate(shape)]
            result = self.reshape(result, keep_shape)
        return result

    def reshape(self, value: SSAValue, shape: Sequence[int]) -> SSAValue:
        if tuple(shape) == shape_of(value):
            return value
        return self.insert(ReshapeOp(value, tensor_type(shape, value))).results[0]

    def transpose(self, value: SSAValue, perm: Sequence[int]) -> SSAValue:
        shape = shape_of(value)
        if list(perm) == list(range(len(shape))):
            return value
        vars_ = axis_vars(len(shape))
        return self.einsum(
            [value], [vars_], [vars_[p] for p in perm], tensor_type([shape[p] for p in perm], value)
        )

    def constant(self, array: np.ndarray, like: SSAValue | TensorType | Attribute) -> SSAValue:
        """A small inline tensor; `like` gives its element type (or is one)."""
        if isinstance(like, (SSAValue, TensorType)):
            ty = tensor_type(array.shape, like)
        else:
            ty = TensorType(like, list(array.shape))
        return self.insert(ConstantOp(dense_attr(np.asarray(array), ty))).results[0]


Lowering = Callable[[CascadeBuilder, Node], list[SSAValue]]
"""Builds the cascade of one ONNX node; returns the values of its results."""
