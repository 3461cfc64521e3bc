"""Lowerings of ONNX math ops: elementwise maps and contractions (MatMul, Gemm, Einsum).

Elementwise ops are rows of `ELEMENTWISE`: op type -> map expression over the
broadcast inputs. Variadic ones (Sum, Max, Min, Mean) fold their map over all
inputs. Ops whose map depends on attributes (Clip, Mod, IsInf, BitShift, Swish) or
on the element type (Pow of integers) have a function each; the cosine windows
(Hann, Hamming, Blackman) are maps over a position iota.
"""

from __future__ import annotations

import itertools

import numpy as np
from xdsl.dialects.builtin import Float64Type, IntegerType, Signedness, TensorType
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
    "Tan": "tan($0)",
    "Asin": "asin($0)",
    "Acos": "acos($0)",
    "Atan": "atan($0)",
    "Sinh": "sinh($0)",
    "Cosh": "cosh($0)",
    "Asinh": "asinh($0)",
    "Acosh": "acosh($0)",
    "Atanh": "atanh($0)",
    "Sign": "sign($0)",
    "Round": "round($0)",
    "IsNaN": "isnan($0)",
    "Equal": "eq($0, $1)",
    "Greater": "gt($0, $1)",
    "Less": "lt($0, $1)",
    "GreaterOrEqual": "ge($0, $1)",
    "LessOrEqual": "le($0, $1)",
    "Not": "not($0)",
    "And": "and($0, $1)",
    "Or": "or($0, $1)",
    "Xor": "xor($0, $1)",
    "BitwiseAnd": "bitand($0, $1)",
    "BitwiseOr": "bitor($0, $1)",
    "BitwiseXor": "bitxor($0, $1)",
    "BitwiseNot": "bitnot($0)",
}
"""Elementwise ONNX ops as einsum maps over their (broadcast) inputs."""

VARIADIC: dict[str, str] = {"Sum": "$0 + $1", "Max": "max($0, $1)", "Min": "min($0, $1)"}
"""Variadic elementwise ops: the binary map folded left over all inputs."""


def _present(node: Node) -> list[SSAValue]:
    return [v for v in node.inputs if v is not None]


def convert(b: CascadeBuilder, value: SSAValue, elem: object) -> SSAValue:
    """`value` converted to element type `elem`: an identity map with a typed output."""
    ty: TensorType = value.type  # type: ignore[assignment]
    if ty.get_element_type() == elem:
        return value
    return b.elementwise([value], "$0", TensorType(elem, ty.get_shape()))  # type: ignore[arg-type]


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


def lower_pow(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Pow; an integer base is raised in f64 and truncated, as onnxruntime's std::pow."""
    base, exponent = _present(node)
    result_type = node.result_types[0]
    if isinstance(result_type.get_element_type(), IntegerType):
        base, exponent = convert(b, base, Float64Type()), convert(b, exponent, Float64Type())
    return [b.elementwise([base, exponent], "pow($0, $1)", result_type)]


def lower_mean(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    inputs = _present(node)
    total = " + ".join(f"${n}" for n in range(len(inputs)))
    return [b.elementwise(inputs, f"({total}) / {float(len(inputs))!r}", node.result_types[0])]


def lower_clip(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Clip: bounds are attributes before opset 11, optional inputs from it on."""
    x = node.input(0)
    assert x is not None
    expr = "$0"
    if node.opset < 11:
        if node.attr("min") is not None:
            expr = f"max({expr}, {node.float_attr('min', 0.0)!r})"
        if node.attr("max") is not None:
            expr = f"min({expr}, {node.float_attr('max', 0.0)!r})"
        return [b.elementwise([x], expr, node.result_types[0])]
    inputs = [x]
    for n, fn in ((1, "max"), (2, "min")):
        if (bound := node.input(n)) is not None:
            expr = f"{fn}({expr}, ${len(inputs)})"
            inputs.append(bound)
    return [b.elementwise(inputs, expr, node.result_types[0])]


def lower_mod(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Mod: fmod=0 takes the divisor's sign (floats too, as opset 28 defines), fmod=1
    the dividend's."""
    fmod = node.int_attr("fmod", 0)
    return [b.elementwise(_present(node), "fmod($0, $1)" if fmod else "mod($0, $1)", node.result_types[0])]


def lower_isinf(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    positive, negative = node.int_attr("detect_positive", 1), node.int_attr("detect_negative", 1)
    sign = {(1, 1): None, (1, 0): "gt($0, 0)", (0, 1): "lt($0, 0)", (0, 0): "0"}[(positive, negative)]
    expr = "isinf($0)" if sign is None else f"and(isinf($0), {sign})"
    return [b.elementwise(_present(node), expr, node.result_types[0])]


def lower_bitshift(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """BitShift as opset 28 defines it: a right shift of a signed type is arithmetic;
    a shift by a negative amount or by the width or more gives the sign fill
    (-1 for a right shift of a negative value, else 0)."""
    direction = node.string_attr("direction", "")
    if direction not in ("LEFT", "RIGHT"):
        raise Unsupported(f"direction '{direction}' (expected LEFT or RIGHT)")
    elem = node.result_types[0].get_element_type()
    assert isinstance(elem, IntegerType)
    bits, unsigned = elem.width.data, elem.signedness.data == Signedness.UNSIGNED
    if direction == "LEFT":
        shifted, fill = "shl($0, $1)", "0"
    elif not unsigned:
        shifted, fill = "shr($0, $1)", "select(lt($0, 0), -1, 0)"
    elif bits < 64:
        shifted, fill = "shr($0, $1)", "0"  # computed zero-extended in a wider type: logical
    else:
        # uint64 computes in i64, where values from 2^63 are negative: undo the sign fill
        logical = "select(eq($1, 0), $0, shr($0, $1) + shl(1, 64 - $1))"
        shifted, fill = f"select(lt($0, 0), {logical}, shr($0, $1))", "0"
    expr = f"select(or(lt($1, 0), ge($1, {bits})), {fill}, {shifted})"
    return [b.elementwise(_present(node), expr, node.result_types[0])]


def lower_swish(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Swish (opset 24): x * sigmoid(alpha * x)."""
    alpha = node.float_attr("alpha", 1.0)
    return [b.elementwise(_present(node), f"$0 * sigmoid({alpha!r} * $0)", node.result_types[0])]


def lower_swiglu(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """SwiGLU (opset 28): Swish_alpha(A) * B, the gate and the value of equal shape."""
    alpha = node.float_attr("alpha", 1.0)
    return [b.elementwise(_present(node), f"$0 * sigmoid({alpha!r} * $0) * $1", node.result_types[0])]


WINDOWS: dict[str, tuple[float, ...]] = {
    "HannWindow": (0.5, 0.5),
    "HammingWindow": (25 / 46, 21 / 46),
    "BlackmanWindow": (0.42, 0.5, 0.08),
}
"""Generalised cosine windows: w[n] = sum_k (-1)^k a_k cos(2 pi k n / N), by op type."""


def _window(coefficients: tuple[float, ...]) -> Lowering:
    """A window of the result's length over a float64 iota (folded to a constant when
    small); N is the length if `periodic`, else the length - 1."""

    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        ty = node.result_types[0]
        size = ty.get_shape()[0]
        period = size if node.int_attr("periodic", 1) else size - 1
        step = 2 * np.pi / period if period else np.nan  # a symmetric window of 1: 0/0, as onnxruntime
        terms = [f"{(-1) ** k * a!r} * cos($0 * {k * step!r})" if k else repr(a) for k, a in enumerate(coefficients)]
        iota = b.constant(np.arange(size, dtype=np.float64), Float64Type())
        return [b.elementwise([iota], " + ".join(terms), ty)]

    return lower


def parse_einsum(equation: str, shapes: list[tuple[int, ...]]) -> tuple[list[list[str]], list[str]]:
    """ONNX/numpy einsum equation -> index lists of the inputs and the output.

    Letters are index variables; `...` stands for the leading dims not named,
    broadcast across inputs (right-aligned, numpy rules) and written `e0, e1, ...`.
    Without `->` the output is the ellipsis followed by the letters used once,
    in alphabetical order.
    """
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise Unsupported(f"equation '{equation}' names {len(terms)} inputs, the node has {len(shapes)}")
    ell_rank = max([len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t] + [0])
    ell_vars = axis_vars(ell_rank, "e")

    def expand(term: str, rank: int) -> list[str]:
        head, dots, tail = term.partition("...")
        if (head + tail) and not (head + tail).isalpha():
            raise Unsupported(f"einsum term '{term}' has characters other than letters and '...'")
        n_ell = rank - len(head) - len(tail) if dots else 0
        if n_ell < 0 or (not dots and len(term) != rank):
            raise Unsupported(f"einsum term '{term}' does not fit an input of rank {rank}")
        return [*head, *ell_vars[ell_rank - n_ell :], *tail]

    indices = [expand(t, len(s)) for t, s in zip(terms, shapes)]
    if arrow:
        out = expand(rhs, len(rhs) - 3 + ell_rank if "..." in rhs else len(rhs))
    else:
        letters = [v for t in terms for v in t.replace("...", "")]
        out = [*ell_vars, *sorted(v for v in set(letters) if letters.count(v) == 1)]
    return indices, out


def lower_einsum(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """ONNX Einsum: one einsum, map the product of the inputs, reduce add."""
    inputs = _present(node)
    shapes = [shape_of(v) for v in inputs]
    indices, out = parse_einsum(node.string_attr("equation", ""), shapes)
    extents: dict[str, int] = {}
    for idx, shape in zip(indices, shapes):
        for var, size in zip(idx, shape):
            extents[var] = max(extents.get(var, 1), size)
    # a size-1 dim broadcast against a larger one reads element 0
    indices = [[v if size == extents[v] else "0" for v, size in zip(idx, shape)] for idx, shape in zip(indices, shapes)]
    result_type = node.result_types[0]
    if len(out) != len(result_type.get_shape()):
        raise Unsupported(f"einsum output {out} does not match the result rank {len(result_type.get_shape())}")
    product = " * ".join(f"${n}" for n in range(len(inputs)))
    reduced = {v for idx in indices for v in idx} - set(out) - {"0"}
    return [b.einsum(inputs, indices, out, result_type, product, "add" if reduced else None)]


DET_MAX = 4
"""The largest matrix Det expands: the Leibniz sum has n^n terms (256 at n = 4)."""


def levi_civita(n: int) -> np.ndarray:
    """eps[j0, ..., jn-1]: the sign of the permutation (j0, ..., jn-1), 0 where an index repeats."""
    eps = np.zeros([n] * n, dtype=np.int64)
    for perm in itertools.permutations(range(n)):
        inversions = sum(perm[i] > perm[j] for i in range(n) for j in range(i + 1, n))
        eps[perm] = -1 if inversions % 2 else 1
    return eps


def lower_det(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Det as one einsum, the Leibniz formula: det A = eps[j0..jn-1] * A[0, j0] * ... * A[n-1, jn-1],
    reduce add over the j; batch dims lead. Exact in structure, meant for small n."""
    x = node.input(0)
    assert x is not None
    shape = shape_of(x)
    n = shape[-1]
    if n > DET_MAX:
        raise Unsupported(f"Det of {n}x{n} matrices: einc expands the Leibniz sum only up to {DET_MAX}x{DET_MAX}")
    batch = axis_vars(len(shape) - 2, "b")
    cols = axis_vars(n, "j")
    eps = b.constant(levi_civita(n), x)
    indices = [cols, *[[*batch, str(row), col] for row, col in enumerate(cols)]]
    product = " * ".join(f"${k}" for k in range(n + 1))
    return [b.einsum([eps, *[x] * n], indices, batch, node.result_types[0], product, "add")]


def matmul_indices(
    a_shape: tuple[int, ...], w_shape: tuple[int, ...], out_rank: int
) -> tuple[list[str], list[str], list[str]]:
    """Index lists of numpy matmul's operands and result (batch dims broadcast,
    1-D operands promoted and squeezed): shared by MatMul and the integer matmuls."""
    if not a_shape or not w_shape:
        raise Unsupported("MatMul of a scalar")
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
    if len(out_vars) != out_rank:
        raise Unsupported(f"MatMul of {list(a_shape)} and {list(w_shape)}")
    return a_idx, w_idx, out_vars


def lower_matmul(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    a, w = node.input(0), node.input(1)
    assert a is not None and w is not None
    result_type = node.result_types[0]
    a_idx, w_idx, out_vars = matmul_indices(shape_of(a), shape_of(w), len(result_type.get_shape()))
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
    "Pow": lower_pow,
    "Mean": lower_mean,
    "Clip": lower_clip,
    "Mod": lower_mod,
    "IsInf": lower_isinf,
    "BitShift": lower_bitshift,
    "Swish": lower_swish,
    "SwiGLU": lower_swiglu,
    **{op: _window(row) for op, row in WINDOWS.items()},
    "Einsum": lower_einsum,
    "Det": lower_det,
    "MatMul": lower_matmul,
    "Gemm": lower_gemm,
}
