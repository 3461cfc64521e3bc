"""Lowerings of ONNX math ops: elementwise maps and contractions (MatMul, Gemm).

Elementwise ops are rows of `ELEMENTWISE`: op type -> map expression over the
broadcast inputs. Variadic ones (Sum, Max, Min) fold their map over all inputs.
"""

from __future__ import annotations

from xdsl.ir import SSAValue

from einc.ir import mapexpr
from einc.passes.onnx_to_ein.common import (
    CascadeBuilder,
    Lowering,
    Node,
    Unsupported,
    axis_vars,
    shape_of,
)

ELEMENTWISE: dict[str, str] = {
    "Add": "$0 + $1",
    "Sub": "$0 - $1",
    "Mul": "$0 * $1",
    "Div": "$0 / $1",
    "Pow": "pow($0, $1)",
    "Neg": "-$0",
    "Abs": "abs($0)",
    "Reciprocal": "1.0 / $0",
    "Relu": "max($0, 0.0)",
    "Sigmoid": "sigmoid($0)",
    "Tanh": "tanh($0)",
    "Exp": "exp($0)",
    "Log": "log($0)",
    "Sqrt": "sqrt($0)",
    "Erf": "erf($0)",
    "Floor": "floor($0)",
    "Ceil": "ceil($0)",
    "Sin": "sin($0)",
    "Cos": "cos($0)",
}
"""Elementwise ONNX ops as einsum maps over their (broadcast) inputs."""

VARIADIC: dict[str, str] = {"Sum": "$0 + $1", "Max": "max($0, $1)", "Min": "min($0, $1)"}
"""Variadic elementwise ops: the binary map folded left over all inputs."""


def _elementwise(map_text: str) -> Lowering:
    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        inputs = [v for v in node.inputs if v is not None]
        return [b.elementwise(inputs, map_text, node.result_types[0])]

    return lower


def _variadic(binary: str) -> Lowering:
    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        inputs = [v for v in node.inputs if v is not None]
        fold = mapexpr.parse(binary)
        expr: mapexpr.Expr = mapexpr.Input(0)
        for n in range(1, len(inputs)):
            expr = mapexpr.substitute(fold, [expr, mapexpr.Input(n)])
        return [b.elementwise(inputs, expr, node.result_types[0])]

    return lower


def lower_matmul(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """numpy matmul: batch dims broadcast, 1-D operands promoted and squeezed."""
    a, w = node.input(0), node.input(1)
    assert a is not None and w is not None
    a_shape, w_shape = shape_of(a), shape_of(w)
    if not a_shape or not w_shape:
        raise Unsupported("MatMul of a scalar")
    result_type = node.result_types[0]
    out_shape = tuple(result_type.get_shape())
    a2 = a_shape if len(a_shape) > 1 else (1, *a_shape)
    w2 = w_shape if len(w_shape) > 1 else (*w_shape, 1)
    batch = max(len(a2), len(w2)) - 2
    full_out = [*_broadcast(a2[:-2], w2[:-2]), a2[-2], w2[-1]]
    bvars = axis_vars(batch, "b")
    out_vars = [*bvars, "m", "n"]

    def operand_indices(shape: tuple[int, ...], rows: str, cols: str) -> list[str]:
        lead = shape[:-2]
        offset = batch - len(lead)
        idx = ["0" if s == 1 and full_out[offset + d] != 1 else bvars[offset + d] for d, s in enumerate(lead)]
        return [*idx, rows, cols]

    a_idx = operand_indices(a2, "m", "k")
    w_idx = operand_indices(w2, "k", "n")
    if len(a_shape) == 1:
        a_idx = a_idx[-1:]
    if len(w_shape) == 1:
        w_idx = w_idx[:-1]
    if len(a_shape) == 1:
        out_vars.remove("m")
    if len(w_shape) == 1:
        out_vars.remove("n")
    if len(out_vars) != len(out_shape):
        raise Unsupported(f"MatMul of {list(a_shape)} and {list(w_shape)}")
    return [b.einsum([a, w], [a_idx, w_idx], out_vars, result_type, "$0 * $1", "add")]


def _broadcast(x: tuple[int, ...], y: tuple[int, ...]) -> list[int]:
    n = max(len(x), len(y))
    x = (1,) * (n - len(x)) + x
    y = (1,) * (n - len(y)) + y
    out = []
    for p, q in zip(x, y):
        if p != q and 1 not in (p, q):
            raise Unsupported(f"batch dims {list(x)} and {list(y)} do not broadcast")
        out.append(max(p, q))
    return out


def lower_gemm(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Y = alpha * A' B' + beta * C: a contraction, then a scaled bias epilogue."""
    a, w, c = node.input(0), node.input(1), node.input(2)
    assert a is not None and w is not None
    alpha = node.float_attr("alpha", 1.0)
    beta = node.float_attr("beta", 1.0)
    a_idx = ["k", "m"] if node.int_attr("transA", 0) else ["m", "k"]
    w_idx = ["n", "k"] if node.int_attr("transB", 0) else ["k", "n"]
    result_type = node.result_types[0]
    product = "$0 * $1" if alpha == 1.0 else f"$0 * $1 * {alpha!r}"
    y = b.einsum([a, w], [a_idx, w_idx], ["m", "n"], result_type, product, "add")
    if c is None or beta == 0.0:
        return [y]
    bias = "$1" if beta == 1.0 else f"$1 * {beta!r}"
    return [b.elementwise([y, c], f"$0 + {bias}", result_type)]


LOWERINGS: dict[str, Lowering] = {
    **{op: _elementwise(m) for op, m in ELEMENTWISE.items()},
    **{op: _variadic(m) for op, m in VARIADIC.items()},
    "MatMul": lower_matmul,
    "Gemm": lower_gemm,
}
