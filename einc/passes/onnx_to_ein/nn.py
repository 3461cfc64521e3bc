"""Lowerings of ONNX neural-network ops into their cascades (Softmax, ...)."""

from __future__ import annotations

import math

from xdsl.ir import SSAValue

from einc.passes.onnx_to_ein.common import (
    CascadeBuilder,
    Lowering,
    Node,
    axis_vars,
    normalize_axis,
    shape_of,
    tensor_type,
)


def softmax_cascade(b: CascadeBuilder, x: SSAValue, axis: int) -> SSAValue:
    """The 3-pass softmax cascade over `axis` (einsum-cascades.md):

    GM = max over the axis; SN = exp(X - GM); SD = sum of SN; A = SN / SD.
    """
    shape = shape_of(x)
    vars_ = axis_vars(len(shape))
    kept = [v for d, v in enumerate(vars_) if d != axis]
    reduced_type = tensor_type([s for d, s in enumerate(shape) if d != axis], x)
    full_type = tensor_type(shape, x)
    gm = b.einsum([x], [vars_], kept, reduced_type, reduce="max")
    sn = b.einsum([x, gm], [vars_, kept], vars_, full_type, "exp($0 - $1)")
    sd = b.einsum([sn], [vars_], kept, reduced_type, reduce="add")
    return b.einsum([sn, sd], [vars_, kept], vars_, full_type, "$0 / $1")


def lower_softmax(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Softmax; before opset 13 it normalises over all dims from `axis` on."""
    x = node.input(0)
    assert x is not None
    shape = shape_of(x)
    if node.opset >= 13:
        axis = normalize_axis(node.int_attr("axis", -1), len(shape))
        return [softmax_cascade(b, x, axis)]
    axis = normalize_axis(node.int_attr("axis", 1), len(shape))
    flat = b.reshape(x, [math.prod(shape[:axis]), math.prod(shape[axis:])])
    return [b.reshape(softmax_cascade(b, flat, 1), shape)]


LOWERINGS: dict[str, Lowering] = {"Softmax": lower_softmax}
