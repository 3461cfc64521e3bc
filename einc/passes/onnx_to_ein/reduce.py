"""Lowerings of ONNX reduce ops: ReduceX as an einsum's reduce, ArgMax/ArgMin as a
two-einsum cascade.

Every ReduceX is a row of `REDUCTIONS`: a map applied to each element before the
reduce (abs, square), the reduce operator, and a map applied to each reduced
value (sqrt, log, division by the count). ReduceLogSumExp subtracts the max
first (a 3-einsum cascade) so exp never overflows. ArgMax finds the max, then
the smallest index (an `ein.constant` arange) at which the input equals it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.ir import SSAValue

from einc.passes.onnx_to_ein.common import (
    CascadeBuilder,
    Lowering,
    Node,
    Unsupported,
    axis_vars,
    normalize_axis,
    shape_of,
    tensor_type,
)


@dataclass(frozen=True)
class Reduction:
    """An ONNX ReduceX: `post(reduce(pre(x)))`; `{n}` in `post` is the reduced count."""

    reduce: str
    pre: str = "$0"
    post: str | None = None


REDUCTIONS: dict[str, Reduction] = {
    "ReduceSum": Reduction("add"),
    "ReduceMax": Reduction("max"),
    "ReduceMin": Reduction("min"),
    "ReduceProd": Reduction("mul"),
    "ReduceMean": Reduction("add", post="$0 / {n}"),
    "ReduceL1": Reduction("add", pre="abs($0)"),
    "ReduceL2": Reduction("add", pre="$0 * $0", post="sqrt($0)"),
    "ReduceSumSquare": Reduction("add", pre="$0 * $0"),
    "ReduceLogSum": Reduction("add", post="log($0)"),
}
"""ONNX reduce ops that are one reducing einsum and an optional map after it."""


def reduce_axes(node: Node, rank: int) -> list[int] | None:
    """The axes a ReduceX node reduces, sorted; None when it is the identity.

    Axes are an attribute before opset 18 (13 for ReduceSum), an optional input
    after; an empty list means all axes, or none with `noop_with_empty_axes`.
    """
    axes = node.ints_attr("axes")
    if axes is None and node.input(1) is not None:
        value = node.constant_input(1)
        if value is None:
            raise Unsupported("the axes input must be known at compile time")
        axes = [int(a) for a in value.reshape(-1)]
    if not axes:
        return None if node.int_attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({normalize_axis(a, rank) for a in axes})


def _keep(b: CascadeBuilder, value: SSAValue, shape: tuple[int, ...], axes: list[int], keepdims: bool) -> SSAValue:
    """Reshape a reduced value to size-1 dims at `axes` when `keepdims`."""
    if not keepdims:
        return value
    return b.reshape(value, [1 if d in axes else s for d, s in enumerate(shape)])


def _reduction(row: Reduction) -> Lowering:
    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        x = node.input(0)
        assert x is not None
        shape = shape_of(x)
        axes = reduce_axes(node, len(shape))
        if axes is None:
            return [x]
        y = b.reduce(x, axes, row.reduce, keepdims=False, map=row.pre)
        if row.post is not None:
            count = math.prod(shape[d] for d in axes)
            y = b.elementwise([y], row.post.format(n=float(count)), tensor_type(shape_of(y), x))
        return [_keep(b, y, shape, axes, bool(node.int_attr("keepdims", 1)))]

    return lower


def lower_reduce_log_sum_exp(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """log(sum(exp(x - m))) + m with m the max: GM, SD = sum exp(X - GM), log(SD) + GM."""
    x = node.input(0)
    assert x is not None
    shape = shape_of(x)
    axes = reduce_axes(node, len(shape))
    if axes is None:
        return [x]
    vars_ = axis_vars(len(shape))
    kept = [v for d, v in enumerate(vars_) if d not in axes]
    reduced_type = tensor_type([s for d, s in enumerate(shape) if d not in axes], x)
    gm = b.einsum([x], [vars_], kept, reduced_type, reduce="max")
    sd = b.einsum([x, gm], [vars_, kept], kept, reduced_type, "exp($0 - $1)", "add")
    y = b.einsum([sd, gm], [kept, kept], kept, reduced_type, "log($0) + $1")
    return [_keep(b, y, shape, axes, bool(node.int_attr("keepdims", 1)))]


def _arg_reduction(extreme: str) -> Lowering:
    """ArgMax (extreme "max") or ArgMin ("min"): the first (or last) index of the extreme.

    M = extreme of X over the axis; then over the same axis, the min (or max) of
    select(X == M, index, sentinel), with the index read from an arange constant.
    """

    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        x = node.input(0)
        assert x is not None
        shape = shape_of(x)
        axis = normalize_axis(node.int_attr("axis", 0), len(shape))
        vars_ = axis_vars(len(shape))
        kept = [v for d, v in enumerate(vars_) if d != axis]
        out_shape = [s for d, s in enumerate(shape) if d != axis]
        m = b.einsum([x], [vars_], kept, tensor_type(out_shape, x), reduce=extreme)
        result_type = node.result_types[0]
        index = b.constant(np.arange(shape[axis], dtype=np.int64), result_type.get_element_type())
        last = node.int_attr("select_last_index", 0)
        sentinel, pick = (-1, "max") if last else (shape[axis], "min")
        y = b.einsum(
            [x, m, index],
            [vars_, kept, [vars_[axis]]],
            kept,
            tensor_type(out_shape, result_type),
            f"select(eq($0, $1), $2, {sentinel})",
            pick,
        )
        return [_keep(b, y, shape, [axis], bool(node.int_attr("keepdims", 1)))]

    return lower


LOWERINGS: dict[str, Lowering] = {
    **{op: _reduction(row) for op, row in REDUCTIONS.items()},
    "ReduceLogSumExp": lower_reduce_log_sum_exp,
    "ArgMax": _arg_reduction("max"),
    "ArgMin": _arg_reduction("min"),
}
