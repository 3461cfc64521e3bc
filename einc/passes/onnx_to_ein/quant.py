"""Lowerings of ONNX quantisation ops: (de)quantise maps and integer contractions.

All logic stays in einsum maps (no special ops), so quantised element types can
later replace the explicit maps. Quantise is `saturate(round(x / scale) + zp)`
with round half to even; dequantise is `(x - zp) * scale`. Integer inputs are
subtracted from zero points widened to int32 or float (folded when constant),
so a map's common type is wide and zero-point differences never wrap in 8
bits. MatMulInteger and ConvInteger accumulate `(a - a_zp) * (b - b_zp)` in
int32; the QLinear ops requantise that sum with one more map. Per-tensor
parameters are single values, per-axis ones 1-D tensors indexed by the axis'
variable.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import (
    Float4E2M1FNType,
    Float8E4M3FNType,
    Float8E4M3FNUZType,
    Float8E5M2FNUZType,
    Float8E5M2Type,
    IntegerType,
    TensorType,
    i32,
)
from xdsl.ir import Attribute, SSAValue

from einc.ir.dtypes import value_range
from einc.ir.ein import PadOp
from einc.ir.indexexpr import IndexExpr
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
from einc.passes.onnx_to_ein.math import convert, matmul_indices

SATURATING: frozenset[Attribute] = frozenset(
    {Float8E4M3FNType(), Float8E4M3FNUZType(), Float8E5M2Type(), Float8E5M2FNUZType()}
)
"""Float formats that Cast and QuantizeLinear clamp to their largest finite value when
`saturate` is 1 (the default); without it, stores round past it to inf or NaN."""


def saturate(expr: str, elem: Attribute) -> str:
    """`expr` clamped to the finite range of `elem`, an integer or a float8 type
    (NaN stays NaN: the map's min and max propagate it)."""
    low, high = value_range(elem)
    return f"min(max({expr}, {low!r}), {high!r})"


def param_indices(param: SSAValue, out_vars: list[str], axis: int | None) -> list[str]:
    """Indices reading a quantisation parameter: one value, or one per `axis`."""
    shape = shape_of(param)
    if math.prod(shape) == 1:
        return ["0"] * len(shape)
    if len(shape) == 1 and axis is not None:
        return [out_vars[axis]]
    if len(shape) == 1:
        raise Unsupported(f"per-axis parameters of shape {list(shape)} need an axis in range")
    raise Unsupported(f"quantisation parameters of shape {list(shape)} (blocked quantisation)")


def _quant_params(node: Node, x: SSAValue) -> tuple[list[str], int | None]:
    """The index variables of x, and the axis of per-axis parameters (None where the
    axis is out of range for x, which only per-tensor parameters allow)."""
    if node.int_attr("block_size", 0):
        raise Unsupported("blocked quantisation (block_size > 0)")
    rank, axis = len(shape_of(x)), node.int_attr("axis", 1)
    return axis_vars(rank), normalize_axis(axis, rank) if -rank <= axis < rank else None


def lower_quantize_linear(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Integers: y = saturate(round(x / scale) + zero_point), round half to even.
    Float8: y = x / scale (the spec's zero point is 0), clamped unless `saturate`
    is 0, rounded by the store. Float4: y = x / scale + zero_point (its store
    saturates: the format has no inf or NaN)."""
    x, scale, zp = node.input(0), node.input(1), node.input(2)
    assert x is not None and scale is not None
    vars_, axis = _quant_params(node, x)
    result_type = node.result_types[0]
    elem = result_type.get_element_type()
    integer = isinstance(elem, IntegerType)
    if not integer and elem not in SATURATING and elem != Float4E2M1FNType():
        raise Unsupported(f"quantising to {elem}")
    inputs, indices = [x, scale], [vars_, param_indices(scale, vars_, axis)]
    expr = "round($0 / $1)" if integer else "$0 / $1"
    if zp is not None and elem not in SATURATING:
        inputs.append(zp)
        indices.append(param_indices(zp, vars_, axis))
        expr += " + $2"
    if integer or (elem in SATURATING and node.int_attr("saturate", 1)):
        expr = saturate(expr, elem)
    return [b.einsum(inputs, indices, vars_, result_type, expr)]


def lower_dequantize_linear(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """y = (x - zero_point) * scale; the zero point is widened to the float type
    first, so the difference is taken in float and never wraps."""
    x, scale, zp = node.input(0), node.input(1), node.input(2)
    assert x is not None and scale is not None
    vars_, axis = _quant_params(node, x)
    result_type = node.result_types[0]
    elem = result_type.get_element_type()
    inputs, indices = [x, scale], [vars_, param_indices(scale, vars_, axis)]
    expr = "$0 * $1"
    if zp is not None:
        inputs.append(convert(b, zp, elem))
        indices.append(param_indices(zp, vars_, axis))
        expr = "($0 - $2) * $1"
    return [b.einsum(inputs, indices, vars_, result_type, expr)]


def lower_dynamic_quantize_linear(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """The uint8 range of x (widened to include 0) gives scale and zero point:

    MN = min(x), MX = max(x); scale = (max(MX, 0) - min(MN, 0)) / 255 (1 if the
    range is empty, as onnxruntime); zp = saturate(round(-min(MN, 0) / scale));
    y as QuantizeLinear.
    """
    x = node.input(0)
    assert x is not None
    y_type, scale_type, zp_type = node.result_types
    vars_ = axis_vars(len(shape_of(x)))
    scalar = tensor_type([], x)
    mn = b.einsum([x], [vars_], [], scalar, reduce="min")
    mx = b.einsum([x], [vars_], [], scalar, reduce="max")
    low, high = "min($0, 0.0)", "max($1, 0.0)"
    scale = b.einsum([mn, mx], [[], []], [], scale_type, f"select(eq({high}, {low}), 1.0, ({high} - {low}) / 255.0)")
    zp_elem = zp_type.get_element_type()
    zp = b.einsum([mn, scale], [[], []], [], zp_type, saturate("round(0.0 - min($0, 0.0) / $1)", zp_elem))
    y = b.einsum([x, scale, zp], [vars_, [], []], vars_, y_type, saturate("round($0 / $1) + $2", y_type.get_element_type()))
    return [y, scale, zp]


def _shifted(b: CascadeBuilder, value: SSAValue, zp: SSAValue | None, zp_indices: list[str] | None = None,
             vars_: list[str] | None = None) -> SSAValue:
    """`value - zp` in int32: the zero-point-shifted operand of an integer contraction.

    With the zero point widened to int32 first, the difference of an 8-bit input
    and it is computed in int32 (the common type of the operands) and never wraps.
    """
    if zp is None:
        return convert(b, value, i32)
    shape = shape_of(value)
    vars_ = vars_ or axis_vars(len(shape))
    indices = zp_indices if zp_indices is not None else ["0"] * len(shape_of(zp))
    result_type = TensorType(i32, shape)
    return b.einsum([value, convert(b, zp, i32)], [vars_, indices], vars_, result_type, "$0 - $1")


def matmul_integer(b: CascadeBuilder, node: Node, a_zp: SSAValue | None, b_zp: SSAValue | None,
                   result_type: TensorType) -> SSAValue:
    """sum_k (A - a_zp) * (B - b_zp) in int32; zero points per tensor, per row of A
    or per column of B."""
    a, w = node.input(0), node.input(3 if node.op_type == "QLinearMatMul" else 1)
    assert a is not None and w is not None
    a_shape, w_shape = shape_of(a), shape_of(w)
    acc_type = TensorType(i32, result_type.get_shape())
    a_idx, w_idx, out_vars = matmul_indices(a_shape, w_shape, len(result_type.get_shape()))
    a_vars, w_vars = axis_vars(len(a_shape), "a"), axis_vars(len(w_shape), "w")
    a_s = _shifted(b, a, a_zp, _zp_indices(a_zp, a_vars, -2), a_vars)
    w_s = _shifted(b, w, b_zp, _zp_indices(b_zp, w_vars, -1), w_vars)
    return b.einsum([a_s, w_s], [a_idx, w_idx], out_vars, acc_type, "$0 * $1", "add")


def _zp_indices(zp: SSAValue | None, vars_: list[str], axis: int) -> list[str] | None:
    if zp is None:
        return None
    shape = shape_of(zp)
    if math.prod(shape) == 1:
        return ["0"] * len(shape)
    if len(shape) == 1 and len(vars_) >= 2:
        return [vars_[axis]]
    raise Unsupported(f"zero points of shape {list(shape)}")


def lower_matmul_integer(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    return [matmul_integer(b, node, node.input(2), node.input(3), node.result_types[0])]


def requantize(b: CascadeBuilder, acc: SSAValue, params: list[tuple[SSAValue, list[str]]], out_vars: list[str],
               result_type: TensorType, bias: tuple[SSAValue, list[str]] | None = None) -> SSAValue:
    """y = saturate(round((acc [+ bias]) * (in_scale * w_scale / y_scale)) + y_zp).

    `params` are (value, indices) of in_scale, w_scale, y_scale, y_zero_point;
    the multiplier is formed in float as onnxruntime forms it.
    """
    inputs, indices = [acc], [out_vars]
    for value, idx in [*params, *([bias] if bias else [])]:
        inputs.append(value)
        indices.append(idx)
    total = "($0 + $5)" if bias else "$0"
    expr = saturate(f"round({total} * ($1 * $2 / $3)) + $4", result_type.get_element_type())
    return b.einsum(inputs, indices, out_vars, result_type, expr)


def lower_qlinear_matmul(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """QLinearMatMul: MatMulInteger's int32 sum, requantised."""
    a_scale, a_zp, w_scale, w_zp, y_scale, y_zp = (node.input(n) for n in (1, 2, 4, 5, 6, 7))
    assert a_scale is not None and w_scale is not None and y_scale is not None and y_zp is not None
    result_type = node.result_types[0]
    acc = matmul_integer(b, node, a_zp, w_zp, result_type)
    out_vars = axis_vars(len(result_type.get_shape()))
    params = [
        (a_scale, _param(a_scale, out_vars, len(out_vars) - 2)),
        (w_scale, _param(w_scale, out_vars, len(out_vars) - 1)),
        (y_scale, _param(y_scale, out_vars, None)),
        (y_zp, _param(y_zp, out_vars, None)),
    ]
    return [requantize(b, acc, params, out_vars, result_type)]


def _param(value: SSAValue, out_vars: list[str], axis: int | None) -> list[str]:
    return param_indices(value, out_vars, axis if axis is not None and axis >= 0 else None)


# -- integer convolutions ------------------------------------------------------------------


def conv_pads(node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: tuple[int, ...],
              strides: list[int], dilations: list[int]) -> tuple[list[int], list[int]]:
    """(low, high) padding of each spatial dim from `pads` or `auto_pad`."""
    n = len(kernel)
    auto = node.string_attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = [max((o - 1) * s + (k - 1) * d + 1 - i, 0) for i, o, k, s, d in zip(in_shape, out_shape, kernel, strides, dilations)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        return (small, big) if auto == "SAME_UPPER" else (big, small)
    if auto == "VALID":
        return [0] * n, [0] * n
    if auto != "NOTSET":
        raise Unsupported(f"auto_pad '{auto}'")
    pads = node.ints_attr("pads", [0] * 2 * n)
    assert pads is not None
    return pads[:n], pads[n:]


def conv_integer(b: CascadeBuilder, node: Node, x: SSAValue, w: SSAValue, x_zp: SSAValue | None,
                 w_zp: SSAValue | None, out_shape: tuple[int, ...]) -> SSAValue:
    """The int32 convolution of zero-point-shifted x and w (N, C, spatial... layout).

    Padding is applied after the shift, so padded positions contribute 0 (as the
    x zero point would before it). Groups read channel `g * C/G + c`.
    """
    x_shape, w_shape = shape_of(x), shape_of(w)
    spatial = len(x_shape) - 2
    kernel = tuple(w_shape[2:])
    strides = node.ints_attr("strides", [1] * spatial) or [1] * spatial
    dilations = node.ints_attr("dilations", [1] * spatial) or [1] * spatial
    group = node.int_attr("group", 1)
    low, high = conv_pads(node, x_shape[2:], out_shape[2:], kernel, strides, dilations)
    xs = _shifted(b, x, x_zp)
    if any(low) or any(high):
        padded = [d + lo + hi for d, lo, hi in zip(x_shape, [0, 0, *low], [0, 0, *high])]
        xs = b.insert(PadOp(xs, [0, 0, *low], [0, 0, *high], tensor_type(padded, xs))).results[0]
    m = w_shape[0]
    wz_idx = None if w_zp is None else (["0"] * len(shape_of(w_zp)) if math.prod(shape_of(w_zp)) == 1 else ["w0"])
    ws = _shifted(b, w, w_zp, wz_idx, axis_vars(len(w_shape), "w"))
    c_per_group, m_per_group = x_shape[1] // group, m // group
    pos, ker = axis_vars(spatial, "p"), axis_vars(spatial, "r")
    window = [IndexExpr.affine({p: s, r: d}) for p, r, s, d in zip(pos, ker, strides, dilations)]
    acc_shape = [out_shape[0], group, m_per_group, *out_shape[2:]]
    channel = IndexExpr.affine({"g": c_per_group, "c": 1}) if group > 1 else IndexExpr.var("c")
    if group > 1:
        ws = b.reshape(ws, [group, m_per_group, *w_shape[1:]])
        w_idx = ["g", "m", "c", *ker]
    else:
        w_idx = ["m", "c", *ker]
        acc_shape = [out_shape[0], m, *out_shape[2:]]
    out_vars = ["n", *(["g"] if group > 1 else []), "m", *pos]
    acc = b.einsum([xs, ws], [["n", channel, *window], w_idx], out_vars, TensorType(i32, acc_shape), "$0 * $1", "add")
    return b.reshape(acc, out_shape)


def lower_conv_integer(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x, w = node.input(0), node.input(1)
    assert x is not None and w is not None
    return [conv_integer(b, node, x, w, node.input(2), node.input(3), tuple(node.result_types[0].get_shape()))]


def lower_qlinear_conv(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """QLinearConv: ConvInteger's int32 sum plus the int32 bias, requantised per channel."""
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = (node.input(n) for n in range(9))
    assert x is not None and w is not None and x_scale is not None and w_scale is not None
    assert y_scale is not None and y_zp is not None
    result_type = node.result_types[0]
    out_shape = tuple(result_type.get_shape())
    acc = conv_integer(b, node, x, w, x_zp, w_zp, out_shape)
    out_vars = axis_vars(len(out_shape))
    params = [(x_scale, _param(x_scale, out_vars, None)), (w_scale, _param(w_scale, out_vars, 1)),
              (y_scale, _param(y_scale, out_vars, None)), (y_zp, _param(y_zp, out_vars, None))]
    bias_in = None if bias is None else (bias, [out_vars[1]])
    return [requantize(b, acc, params, out_vars, result_type, bias_in)]


LOWERINGS: dict[str, Lowering] = {
    "QuantizeLinear": lower_quantize_linear,
    "DequantizeLinear": lower_dequantize_linear,
    "DynamicQuantizeLinear": lower_dynamic_quantize_linear,
    "MatMulInteger": lower_matmul_integer,
    "QLinearMatMul": lower_qlinear_matmul,
    "ConvInteger": lower_conv_integer,
    "QLinearConv": lower_qlinear_conv,
}
