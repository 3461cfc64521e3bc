"""Lowerings of ONNX neural-network ops into einsum cascades.

Convolution and pooling are einsums with affine index expressions,

    O[n,m,p,q] = sum_{c,r,t} I[n,c,p*s+r*d,q*s+t*d] * W[m,c,r,t]

over an input padded explicitly by `ein.pad` first. Groups view the channels as
(group, channel in group) with `ein.reshape`, so every index stays affine;
ConvTranspose is a stride-1 convolution over the input dilated by interior
padding, with the kernel flipped by reading each window backwards. Pooling reads a small
*window* operand of the kernel's shape, which gives the window indices their
range: average pooling multiplies by a ones window (a depthwise convolution),
max pooling adds a zero window (a flat structuring element). Normalisations are
their textbook cascades (sum, centred sum of squares, normalise), activations
are rows of one table of maps, and LSTM, GRU and RNN are unrolled over their
static sequence length into a few einsums per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    Float64Type,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import SSAValue

from einc.ir.dtypes import numpy_to_type, type_to_numpy
from einc.ir.ein import ConcatOp, GatherOp, PadOp, ScatterOp
from einc.ir.indexexpr import IndexExpr
from einc.passes.onnx_to_ein.common import (
    CascadeBuilder,
    Lowering,
    Node,
    Unsupported,
    axis_vars,
    broadcast_indices,
    normalize_axis,
    shape_of,
    tensor_type,
)

Index = str | int | IndexExpr


# -- shared helpers -------------------------------------------------------------


def _input(node: Node, n: int) -> SSAValue:
    value = node.input(n)
    if value is None:
        raise Unsupported(f"input {n} is required")
    return value


def _used(node: Node, n: int) -> bool:
    """Whether result `n` exists and a later node (or the graph) reads it."""
    results = node.op.results
    return n < len(results) and bool(results[n].uses)


def _results(values: Sequence[SSAValue | None]) -> list[SSAValue]:
    """Result values up to the last one built; results nobody reads (None) get a
    stand-in, which replaces no use."""
    last = max(n for n, v in enumerate(values) if v is not None)
    stand_in = next(v for v in values if v is not None)
    return [stand_in if v is None else v for v in values[: last + 1]]


def _floats(node: Node, name: str) -> list[float]:
    attr = node.attr(name)
    return [] if not isinstance(attr, DenseArrayBase) else [float(v) for v in attr.get_values()]


def _strings(node: Node, name: str) -> list[str] | None:
    attr = node.attr(name)
    return [s.data for s in attr if isinstance(s, StringAttr)] if isinstance(attr, ArrayAttr) else None


def _lit(value: float) -> str:
    """A float literal of the map language."""
    return repr(float(value))


def _pad(
    b: CascadeBuilder,
    x: SSAValue,
    low: Sequence[int],
    high: Sequence[int],
    value: float = 0.0,
    interior: Sequence[int] | None = None,
) -> SSAValue:
    """`ein.pad` in constant mode (negative amounts crop), or `x` if it pads nothing."""
    interior = list(interior or [0] * len(low))
    if not any(low) and not any(high) and not any(interior):
        return x
    shape = [lo + n + max(n - 1, 0) * i + hi for n, lo, hi, i in zip(shape_of(x), low, high, interior)]
    return b.insert(PadOp(x, low, high, tensor_type(shape, x), interior, "constant", value)).results[0]


def _concat(b: CascadeBuilder, parts: Sequence[SSAValue], axis: int) -> SSAValue:
    if len(parts) == 1:
        return parts[0]
    shape = list(shape_of(parts[0]))
    shape[axis] = sum(shape_of(p)[axis] for p in parts)
    return b.insert(ConcatOp(parts, axis, tensor_type(shape, parts[0]))).results[0]


def _dtype(x: SSAValue) -> np.dtype:
    return type_to_numpy(x.type.get_element_type())  # type: ignore[attr-defined]


def _lowest(x: SSAValue) -> float:
    """The identity of max over `x`'s element type: -inf, or an integer type's minimum."""
    dtype = _dtype(x)
    return float(np.iinfo(dtype).min) if dtype.kind in "iu" else -math.inf


# -- activations: rows of maps ---------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: a map over `$0` with `{name}` attribute slots."""

    map: str
    defaults: dict[str, float] = field(default_factory=dict)

    def render(self, params: dict[str, float] | None = None) -> str:
        values = {**self.defaults, **(params or {})}
        return self.map.format(**{k: _lit(v) for k, v in values.items()})


ACTIVATIONS: dict[str, Activation] = {
    "LeakyRelu": Activation("select(lt($0, 0.0), $0 * {alpha}, $0)", {"alpha": 0.01}),
    "Elu": Activation("select(lt($0, 0.0), {alpha} * (exp($0) - 1.0), $0)", {"alpha": 1.0}),
    "Selu": Activation(
        "{gamma} * select(le($0, 0.0), {alpha} * exp($0) - {alpha}, $0)",
        {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
    ),
    "Celu": Activation("max($0, 0.0) + min(0.0, {alpha} * (exp($0 / {alpha}) - 1.0))", {"alpha": 1.0}),
    "ThresholdedRelu": Activation("select(gt($0, {alpha}), $0, 0.0)", {"alpha": 1.0}),
    "HardSigmoid": Activation("max(0.0, min(1.0, {alpha} * $0 + {beta}))", {"alpha": 0.2, "beta": 0.5}),
    "HardSwish": Activation("$0 * max(0.0, min(1.0, $0 / 6.0 + 0.5))"),
    "Softplus": Activation("softplus($0)"),
    "Softsign": Activation("$0 / (1.0 + abs($0))"),
    "Mish": Activation("$0 * tanh(softplus($0))"),
    "Shrink": Activation(
        "select(lt($0, -{lambd}), $0 + {bias}, select(gt($0, {lambd}), $0 - {bias}, 0.0))",
        {"bias": 0.0, "lambd": 0.5},
    ),
}
"""ONNX activation ops as maps; their float attributes fill the slots."""

GELU: dict[str, str] = {
    "none": "0.5 * $0 * (1.0 + erf($0 * 0.7071067811865476))",
    "tanh": "0.5 * $0 * (1.0 + tanh(0.7978845608028654 * ($0 + 0.044715 * $0 * $0 * $0)))",
}
"""Gelu by its `approximate` attribute: exact (erf) or the tanh approximation."""


def _activation(row: Activation) -> Lowering:
    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        params = {name: node.float_attr(name, default) for name, default in row.defaults.items()}
        return [b.elementwise([_input(node, 0)], row.render(params), node.result_types[0])]

    return lower


def lower_gelu(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    approximate = node.string_attr("approximate", "none")
    if approximate not in GELU:
        raise Unsupported(f"approximate '{approximate}'")
    return [b.elementwise([_input(node, 0)], GELU[approximate], node.result_types[0])]


def lower_prelu(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """PRelu: the slope broadcasts to X (numpy rules, as ONNX's unidirectional)."""
    x, slope = _input(node, 0), _input(node, 1)
    return [b.elementwise([x, slope], "select(lt($0, 0.0), $0 * $1, $0)", node.result_types[0])]


# -- softmax family ----------------------------------------------------------------


def softmax_cascade(b: CascadeBuilder, x: SSAValue, axis: int) -> SSAValue:
    """The 3-pass softmax cascade over `axis` (einsum-cascades.md):

    GM = max over the axis; SN = exp(X - GM); SD = sum of SN; A = SN / SD.
    """
    vars_, kept, full, reduced = _axis_types(x, axis)
    gm = b.einsum([x], [vars_], kept, reduced, reduce="max")
    sn = b.einsum([x, gm], [vars_, kept], vars_, full, "exp($0 - $1)")
    sd = b.einsum([sn], [vars_], kept, reduced, reduce="add")
    return b.einsum([sn, sd], [vars_, kept], vars_, full, "$0 / $1")


def log_softmax_cascade(b: CascadeBuilder, x: SSAValue, axis: int) -> SSAValue:
    """GM = max; SD = sum exp(X - GM); Y = X - GM - log(SD): two passes over X."""
    vars_, kept, full, reduced = _axis_types(x, axis)
    gm = b.einsum([x], [vars_], kept, reduced, reduce="max")
    sd = b.einsum([x, gm], [vars_, kept], kept, reduced, "exp($0 - $1)", "add")
    return b.einsum([x, gm, sd], [vars_, kept, kept], vars_, full, "$0 - $1 - log($2)")


def hardmax_cascade(b: CascadeBuilder, x: SSAValue, axis: int) -> SSAValue:
    """One-hot of the first maximum: GM = max; FI = min index k where X = GM (an
    arange constant holds the indices); Y = (k == FI)."""
    vars_, kept, full, reduced = _axis_types(x, axis)
    size = shape_of(x)[axis]
    iota = b.constant(np.arange(size), x)
    gm = b.einsum([x], [vars_], kept, reduced, reduce="max")
    first = b.einsum(
        [x, gm, iota], [vars_, kept, [vars_[axis]]], kept, reduced, f"select(eq($0, $1), $2, {_lit(size)})", "min"
    )
    return b.einsum([iota, first], [[vars_[axis]], kept], vars_, full, "select(eq($0, $1), 1.0, 0.0)")


def _axis_types(x: SSAValue, axis: int) -> tuple[list[str], list[str], TensorType, TensorType]:
    """Index variables of `x`, those kept by a reduction over `axis`, and both types."""
    shape = shape_of(x)
    vars_ = axis_vars(len(shape))
    kept = [v for d, v in enumerate(vars_) if d != axis]
    return vars_, kept, tensor_type(shape, x), tensor_type([s for d, s in enumerate(shape) if d != axis], x)


def _along_axis(cascade: Callable[[CascadeBuilder, SSAValue, int], SSAValue]) -> Lowering:
    """Softmax-like ops; before opset 13 they act on X flattened to 2-D at `axis`."""

    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        x = _input(node, 0)
        shape = shape_of(x)
        if node.opset >= 13:
            return [cascade(b, x, normalize_axis(node.int_attr("axis", -1), len(shape)))]
        axis = normalize_axis(node.int_attr("axis", 1), len(shape))
        flat = b.reshape(x, [math.prod(shape[:axis]), math.prod(shape[axis:])])
        return [b.reshape(cascade(b, flat, 1), shape)]

    return lower


# -- convolution -------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A sliding window per spatial dim: kernel, strides, dilations, begin/end pads."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begin: list[int]
    end: list[int]

    def spans(self) -> list[int]:
        """How many input positions each window covers, dilation included."""
        return [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]

    def indices(self, out_vars: Sequence[str], tap_vars: Sequence[str]) -> list[IndexExpr]:
        """`p*s + r*d` per spatial dim: the input position of tap r of window p."""
        return [
            IndexExpr.affine({p: s, r: d})
            for p, r, s, d in zip(out_vars, tap_vars, self.strides, self.dilations)
        ]


def window_of(node: Node, spatial: Sequence[int], kernel: Sequence[int], auto_pad: str | None = None) -> Window:
    """Strides, dilations and pads of a Conv or pooling node, auto_pad resolved
    (`auto_pad` overrides the node's: ConvTranspose resolves its own)."""
    k = len(spatial)
    strides = node.ints_attr("strides", [1] * k) or [1] * k
    dilations = node.ints_attr("dilations", [1] * k) or [1] * k
    if len(strides) != k or len(dilations) != k or len(kernel) != k:
        raise Unsupported(f"strides {strides}, dilations {dilations} or kernel {list(kernel)} for {k} spatial dims")
    auto_pad = auto_pad or node.string_attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [
            max(0, (-(-n // s) - 1) * s + (kk - 1) * d + 1 - n)
            for n, s, kk, d in zip(spatial, strides, kernel, dilations)
        ]
        small, large = [t // 2 for t in total], [t - t // 2 for t in total]
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        begin, end = [0] * k, [0] * k
    elif auto_pad == "NOTSET":
        pads = node.ints_attr("pads", [0] * 2 * k) or [0] * 2 * k
        if len(pads) != 2 * k or min(pads) < 0:
            raise Unsupported(f"pads {pads}")
        begin, end = pads[:k], pads[k:]
    else:
        raise Unsupported(f"auto_pad '{auto_pad}'")
    return Window(list(kernel), strides, dilations, begin, end)


def _pad_for_window(b: CascadeBuilder, x: SSAValue, win: Window, out: Sequence[int], fill: float) -> SSAValue:
    """X padded so every window of the `out` positions lies inside: the begin pads
    in front, and behind whatever the last window reaches (end pads, ceil_mode)."""
    spatial = shape_of(x)[2:]
    high = [
        max(0, (o - 1) * s + span - n - lo)
        for o, s, span, n, lo in zip(out, win.strides, win.spans(), spatial, win.begin)
    ]
    return _pad(b, x, [0, 0, *win.begin], [0, 0, *high], fill)


def _convolution(
    b: CascadeBuilder,
    x: SSAValue,
    w: SSAValue,
    groups: int,
    win: Window,
    result_type: TensorType,
    transposed: bool = False,
) -> SSAValue:
    """O[n,g,m,p..] = sum_{c,r..} X[n,g,c,p*s+r*d..] * W[g,m,c,r..] over a padded X.

    Channels are viewed as (group, channel in group); with one group the group
    index is left out. A transposed kernel (ConvTranspose) is laid out
    [c, m, r..] and flipped: tap r meets X[p + (k-1-r)*d], the window read
    backwards, which keeps every kernel index plain.
    """
    xs, ws, out = shape_of(x), shape_of(w), list(result_type.get_shape())
    k = len(xs) - 2
    if xs[1] % groups or out[1] % groups:
        raise Unsupported(f"{xs[1]} input or {out[1]} output channels in {groups} groups")
    cg, mg, kernel = xs[1] // groups, out[1] // groups, list(ws[2:])
    ps, rs = axis_vars(k, "p"), axis_vars(k, "r")
    g, gs = (["g"], [groups]) if groups > 1 else ([], [])
    if transposed:
        spans = zip(ps, rs, win.strides, win.dilations, kernel)
        taps = [IndexExpr.affine({p: s, r: -d}, (n - 1) * d) for p, r, s, d, n in spans]
        w_idx, w_shape = [*g, "c", "m", *rs], [*gs, cg, mg, *kernel]
    else:
        taps = win.indices(ps, rs)
        w_idx, w_shape = [*g, "m", "c", *rs], [*gs, mg, cg, *kernel]
    if math.prod(w_shape) != math.prod(ws):
        raise Unsupported(f"weight of shape {list(ws)} for {xs[1]} channels in {groups} groups")
    xv = b.reshape(x, [xs[0], *gs, cg, *xs[2:]])
    if groups > 1 and mg == 1:
        # One output channel per group (depthwise): the output is [n, g, p..] itself, with no
        # reshape after it to end the contraction's group before its bias and activation.
        w_idx, w_shape = [v for v in w_idx if v != "m"], [d for v, d in zip(w_idx, w_shape) if v != "m"]
        return b.einsum([xv, b.reshape(w, w_shape)], [["n", *g, "c", *taps], w_idx], ["n", *g, *ps], result_type, "$0 * $1", "add")
    o = b.einsum(
        [xv, b.reshape(w, w_shape)],
        [["n", *g, "c", *taps], w_idx],
        ["n", *g, "m", *ps],
        tensor_type([out[0], *gs, mg, *out[2:]], result_type),
        "$0 * $1",
        "add",
    )
    return b.reshape(o, out)


def _channel_bias(b: CascadeBuilder, y: SSAValue, bias: SSAValue | None) -> SSAValue:
    """The bias epilogue: Y[n,m,..] + B[m]."""
    if bias is None:
        return y
    vars_ = axis_vars(len(shape_of(y)))
    return b.einsum([y, bias], [vars_, [vars_[1]]], vars_, tensor_type(shape_of(y), y), "$0 + $1")


def _check_kernel(node: Node, kernel: Sequence[int]) -> None:
    given = node.ints_attr("kernel_shape")
    if given is not None and list(given) != list(kernel):
        raise Unsupported(f"kernel_shape {given} differs from the weight's {list(kernel)}")


def lower_conv(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x, w = _input(node, 0), _input(node, 1)
    kernel = list(shape_of(w)[2:])
    _check_kernel(node, kernel)
    result_type = node.result_types[0]
    win = window_of(node, shape_of(x)[2:], kernel)
    padded = _pad_for_window(b, x, win, result_type.get_shape()[2:], 0.0)
    y = _convolution(b, padded, w, node.int_attr("group", 1), win, result_type)
    return [_channel_bias(b, y, node.input(2))]


def _transpose_begin_pads(node: Node, win: Window, spatial: Sequence[int], adjust: Sequence[int]) -> list[int]:
    """The begin pads of a ConvTranspose: the `pads` given, or (with `output_shape`
    or SAME auto_pad) the total padding the output size implies, split with the
    odd one behind for SAME_UPPER and in front otherwise (ONNX and onnxruntime)."""
    auto_pad = node.string_attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad '{auto_pad}'")
    if node.attr("output_shape") is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return [0] * len(spatial) if auto_pad == "VALID" else win.begin
    targets = node.ints_attr("output_shape") or [n * s for n, s in zip(spatial, win.strides)]
    targets = targets[-len(spatial) :]
    total = [
        max(0, s * (n - 1) + a + span - o)
        for s, n, a, span, o in zip(win.strides, spatial, adjust, win.spans(), targets)
    ]
    return [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]


def lower_conv_transpose(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """ConvTranspose as a stride-1 convolution with the flipped kernel over X
    dilated by stride - 1 zeros between elements and padded by (kernel span - 1
    - begin pad) in front; the back pad makes the output the inferred size
    (end pads, output_padding and output_shape all land there)."""
    x, w = _input(node, 0), _input(node, 1)
    spatial, kernel = shape_of(x)[2:], list(shape_of(w)[2:])
    _check_kernel(node, kernel)
    k = len(spatial)
    result_type = node.result_types[0]
    out = result_type.get_shape()[2:]
    win = window_of(node, spatial, kernel, auto_pad="NOTSET")
    adjust = node.ints_attr("output_padding", [0] * k) or [0] * k
    begin = _transpose_begin_pads(node, win, spatial, adjust)
    low = [span - 1 - pb for span, pb in zip(win.spans(), begin)]
    high = [o + span - 1 - lo - (n - 1) * s - 1 for o, span, lo, n, s in zip(out, win.spans(), low, spatial, win.strides)]
    dilated = _pad(b, x, [0, 0, *low], [0, 0, *high], 0.0, [0, 0, *[s - 1 for s in win.strides]])
    unit = Window(kernel, [1] * k, win.dilations, [0] * k, [0] * k)
    y = _convolution(b, dilated, w, node.int_attr("group", 1), unit, result_type, transposed=True)
    return [_channel_bias(b, y, node.input(2))]


# -- pooling -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pooling:
    """A pooling op: the map of input and window element, its reduce, the window's
    fill value, and what follows the reduce: a map (`{p}` is LpPool's p, `{root}`
    1/p) or the division by each window's element count."""

    map: str
    reduce: str
    window: float
    post: str | None = None
    average: bool = False


POOLINGS: dict[str, Pooling] = {
    "MaxPool": Pooling("$0 + $1", "max", 0.0),
    "AveragePool": Pooling("$0 * $1", "add", 1.0, average=True),
    "LpPool": Pooling("pow(abs($0), {p}) * $1", "add", 1.0, "pow($0, {root})"),
}


def _pool(row: Pooling) -> Lowering:
    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        x = _input(node, 0)
        if _used(node, 1):
            raise Unsupported("the Indices output of MaxPool")
        kernel = node.ints_attr("kernel_shape")
        if kernel is None:
            raise Unsupported("kernel_shape is required")
        xs, result_type = shape_of(x), node.result_types[0]
        out = list(result_type.get_shape()[2:])
        win = window_of(node, xs[2:], kernel)
        fill = _lowest(x) if row.reduce == "max" else 0.0
        padded = _pad_for_window(b, x, win, out, fill)
        ps, rs = axis_vars(len(out), "p"), axis_vars(len(out), "r")
        window = b.constant(np.full(kernel, row.window, _dtype(x)), x)
        p, root = _lit(node.int_attr("p", 2)), _lit(1.0 / node.int_attr("p", 2))
        y = b.einsum(
            [padded, window],
            [["n", "c", *win.indices(ps, rs)], rs],
            ["n", "c", *ps],
            result_type,
            row.map.format(p=p),
            row.reduce,
        )
        if row.average:
            return [_divide_by_counts(b, y, win, xs[2:], out, bool(node.int_attr("count_include_pad", 0)))]
        if row.post is not None:
            y = b.elementwise([y], row.post.format(root=root), result_type)
        return [y]

    return lower


def _divide_by_counts(
    b: CascadeBuilder, y: SSAValue, win: Window, spatial: Sequence[int], out: Sequence[int], include_pad: bool
) -> SSAValue:
    """Window sums divided by how many elements each window counts, known at
    compile time: per spatial dim, taps inside the input (or inside the input
    and its explicit pads); a dim where every window counts the same folds
    into one literal, the others are constant vectors."""
    vars_ = axis_vars(len(shape_of(y)))
    operands, indices, factors, scalar = [y], [vars_], [], 1
    for d, (o, n, s, dil, k, lo, hi) in enumerate(
        zip(out, spatial, win.strides, win.dilations, win.kernel, win.begin, win.end)
    ):
        taps = (np.arange(o) * s - lo)[:, None] + np.arange(k) * dil
        first, last = (-lo, n + hi) if include_pad else (0, n)
        counts = ((taps >= first) & (taps < last)).sum(axis=1)
        if (counts == counts[0]).all():
            scalar *= int(counts[0])
            continue
        factors.append(f"${len(operands)}")
        operands.append(b.constant(counts.astype(np.float64), y))
        indices.append([vars_[2 + d]])
    if scalar != 1:
        factors.append(_lit(scalar))
    if not factors:
        return y
    divisor = factors[0] if len(factors) == 1 else f"({' * '.join(factors)})"
    return b.einsum(operands, indices, vars_, tensor_type(shape_of(y), y), f"$0 / {divisor}")


GLOBAL_POOLINGS: dict[str, tuple[str, str, str | None]] = {
    "GlobalMaxPool": ("$0", "max", None),
    "GlobalAveragePool": ("$0", "add", "$0 / {n}"),
    "GlobalLpPool": ("pow(abs($0), {p})", "add", "pow($0, {root})"),
}
"""Global pools: map, reduce over all spatial dims, and the map after it."""


def _global_pool(pre: str, reduce: str, post: str | None) -> Lowering:
    def lower(b: CascadeBuilder, node: Node) -> list[SSAValue]:
        x = _input(node, 0)
        shape = shape_of(x)
        axes = list(range(2, len(shape)))
        p, root = _lit(node.int_attr("p", 2)), _lit(1.0 / node.int_attr("p", 2))
        y = b.reduce(x, axes, reduce, keepdims=False, map=pre.format(p=p))
        if post is not None:
            count = _lit(math.prod(shape[2:]))
            y = b.elementwise([y], post.format(root=root, n=count), tensor_type(shape_of(y), y))
        return [b.reshape(y, node.result_types[0].get_shape())]

    return lower


# -- normalisation -------------------------------------------------------------------


@dataclass
class Moments:
    """The reductions a normaliser starts with over `axes` of X:

        S[o] = sum X;   V[o] = sum (X - S/N)^2;   R[o] = spread(V / N)

    where o are the kept indices and `spread` maps the variance to the factor
    that normalises (1/sqrt(var + eps) for most). Three passes over X.
    """

    x: SSAValue
    vars: list[str]
    kept: list[str]
    count: int
    total: SSAValue
    factor: SSAValue

    @property
    def centred(self) -> str:
        """X - mean, in a map whose $0 is X and $1 is S."""
        return f"($0 - $1 / {_lit(self.count)})"

    def normalised(
        self, b: CascadeBuilder, result_type: TensorType, params: Sequence[tuple[SSAValue | None, list[str]]] = ()
    ) -> SSAValue:
        """Y = (X - mean) * R, times a scale and plus a bias when given."""
        operands, indices = [self.x, self.total, self.factor], [self.vars, self.kept, self.kept]
        text = f"{self.centred} * $2"
        for (value, index), op in zip(params, ("*", "+")):
            if value is not None:
                text += f" {op} ${len(operands)}"
                operands.append(value)
                indices.append(index)
        return b.einsum(operands, indices, self.vars, result_type, text)


def moments(b: CascadeBuilder, x: SSAValue, axes: Sequence[int], spread: str) -> Moments:
    """Sum, centred sum of squares and normalising factor over `axes`; `spread`
    is a map of `{var}`, the variance."""
    shape = shape_of(x)
    vars_ = axis_vars(len(shape))
    kept = [v for d, v in enumerate(vars_) if d not in axes]
    reduced = tensor_type([s for d, s in enumerate(shape) if d not in axes], x)
    count = math.prod(shape[d] for d in axes)
    total = b.einsum([x], [vars_], kept, reduced, reduce="add")
    m = Moments(x, vars_, kept, count, total, total)
    squares = b.einsum([x, total], [vars_, kept], kept, reduced, f"{m.centred} * {m.centred}", "add")
    m.factor = b.einsum([squares], [kept], kept, reduced, spread.format(var=f"$0 / {_lit(count)}"))
    return m


def _inverse_std(eps: float) -> str:
    return f"1.0 / sqrt({{var}} + {_lit(eps)})"


def lower_batch_norm(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Inference BatchNormalization: per channel A = scale / sqrt(var + eps) and
    B' = bias - mean * A (folded when the statistics are constants), then X * A + B'."""
    if node.int_attr("training_mode", 0) or any(_used(node, n) for n in range(1, 5)):
        raise Unsupported("training mode (running statistics outputs)")
    if node.opset < 9 and not node.int_attr("spatial", 1):
        raise Unsupported("spatial=0 (statistics per element)")
    x, scale, bias, mean, var = (_input(node, n) for n in range(5))
    eps = node.float_attr("epsilon", 1e-5)
    channel = tensor_type(shape_of(scale), scale)
    factor = b.einsum([scale, var], [["c"], ["c"]], ["c"], channel, f"$0 / sqrt($1 + {_lit(eps)})")
    shift = b.einsum([bias, mean, factor], [["c"], ["c"], ["c"]], ["c"], channel, "$0 - $1 * $2")
    vars_ = axis_vars(len(shape_of(x)))
    c = [vars_[1]]
    return [b.einsum([x, factor, shift], [vars_, c, c], vars_, node.result_types[0], "$0 * $1 + $2")]


def lower_instance_norm(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x, scale, bias = (_input(node, n) for n in range(3))
    rank = len(shape_of(x))
    m = moments(b, x, range(2, rank), _inverse_std(node.float_attr("epsilon", 1e-5)))
    c = [m.vars[1]]
    return [m.normalised(b, node.result_types[0], [(scale, c), (bias, c)])]


def lower_layer_norm(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """LayerNormalization over the dims from `axis` on; Mean and InvStdDev (kept
    dims of size 1) are built only when read."""
    x, scale, bias = _input(node, 0), _input(node, 1), node.input(2)
    shape = shape_of(x)
    axis = normalize_axis(node.int_attr("axis", -1), len(shape))
    m = moments(b, x, range(axis, len(shape)), _inverse_std(node.float_attr("epsilon", 1e-5)))
    params = [(scale, broadcast_indices(shape_of(scale), m.vars, shape))]
    if bias is not None:
        params.append((bias, broadcast_indices(shape_of(bias), m.vars, shape)))
    values: list[SSAValue | None] = [m.normalised(b, node.result_types[0], params), None, None]
    if _used(node, 1):
        mean = b.elementwise([m.total], f"$0 / {_lit(m.count)}", tensor_type(shape_of(m.total), m.total))
        values[1] = b.reshape(mean, node.result_types[1].get_shape())
    if _used(node, 2):
        values[2] = b.reshape(m.factor, node.result_types[2].get_shape())
    return _results(values)


def lower_group_norm(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """GroupNormalization: X viewed as [N, G, C/G, spatial] and normalised over the
    last two; scale and bias per channel (opset 21) or per group (opset 18)."""
    x, scale, bias = (_input(node, n) for n in range(3))
    shape = shape_of(x)
    groups = node.int_attr("num_groups", 1)
    if shape[1] % groups:
        raise Unsupported(f"{shape[1]} channels in {groups} groups")
    view = b.reshape(x, [shape[0], groups, shape[1] // groups, math.prod(shape[2:])])
    m = moments(b, view, [2, 3], _inverse_std(node.float_attr("epsilon", 1e-5)))
    params = []
    for value in (scale, bias):
        if shape_of(value)[0] == groups:
            params.append((value, [m.vars[1]]))
        else:
            params.append((b.reshape(value, [groups, shape[1] // groups]), m.vars[1:3]))
    y = m.normalised(b, tensor_type(shape_of(view), x), params)
    return [b.reshape(y, shape)]


def lower_mvn(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """MeanVarianceNormalization: (X - mean) / (sqrt(var) + 1e-9) over `axes`."""
    x = _input(node, 0)
    rank = len(shape_of(x))
    axes = sorted({normalize_axis(a, rank) for a in node.ints_attr("axes", [0, 2, 3]) or []})
    m = moments(b, x, axes, "1.0 / (sqrt({var}) + 1e-09)")
    return [m.normalised(b, node.result_types[0])]


def lower_rms_norm(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """RMSNormalization: SS = sum X^2 over the dims from `axis` on; Y = X * R * scale
    with R = 1/sqrt(SS/N + eps)."""
    x, scale = _input(node, 0), _input(node, 1)
    shape = shape_of(x)
    axis = normalize_axis(node.int_attr("axis", -1), len(shape))
    vars_ = axis_vars(len(shape))
    kept = vars_[:axis]
    reduced = tensor_type(shape[:axis], x)
    count = _lit(math.prod(shape[axis:]))
    squares = b.einsum([x], [vars_], kept, reduced, "$0 * $0", "add")
    eps = _lit(node.float_attr("epsilon", 1e-5))
    factor = b.einsum([squares], [kept], kept, reduced, f"1.0 / sqrt($0 / {count} + {eps})")
    indices = [vars_, kept, broadcast_indices(shape_of(scale), vars_, shape)]
    return [b.einsum([x, factor, scale], indices, vars_, node.result_types[0], "$0 * $1 * $2")]


def lower_lp_norm(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """LpNormalization: X divided by its L1 or L2 norm along `axis`."""
    x = _input(node, 0)
    shape = shape_of(x)
    axis = normalize_axis(node.int_attr("axis", -1), len(shape))
    p = node.int_attr("p", 2)
    if p not in (1, 2):
        raise Unsupported(f"p={p} (ONNX allows 1 and 2)")
    vars_, kept, full, reduced = _axis_types(x, axis)
    norm = b.einsum([x], [vars_], kept, reduced, "abs($0)" if p == 1 else "$0 * $0", "add")
    divisor = "$1" if p == 1 else "sqrt($1)"
    return [b.einsum([x, norm], [vars_, kept], vars_, full, f"$0 / {divisor}")]


def lower_lrn(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """LRN: SQ[n,c,..] = sum_r Xp[n,c+r,..]^2 over a window of `size` channels (X
    zero-padded along C), then Y = X / (bias + alpha/size * SQ)^beta."""
    x = _input(node, 0)
    shape = shape_of(x)
    size = node.int_attr("size", 1)
    alpha, beta, bias = (node.float_attr(n, d) for n, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    front = (size - 1) // 2
    padded = _pad(b, x, [0, front] + [0] * (len(shape) - 2), [0, size - 1 - front] + [0] * (len(shape) - 2))
    vars_ = axis_vars(len(shape))
    window = b.constant(np.ones(size), x)
    channel = IndexExpr.affine({vars_[1]: 1, "r": 1})
    squares = b.einsum(
        [padded, window], [[vars_[0], channel, *vars_[2:]], ["r"]], vars_, tensor_type(shape, x), "$0 * $0 * $1", "add"
    )
    text = f"$0 / pow({_lit(bias)} + {_lit(alpha / size)} * $1, {_lit(beta)})"
    return [b.einsum([x, squares], [vars_, vars_], vars_, node.result_types[0], text)]


# -- recurrent layers ---------------------------------------------------------------


RNN_ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("max($0, 0.0)"),
    "tanh": Activation("tanh($0)"),
    "sigmoid": Activation("sigmoid($0)"),
    "affine": Activation("{alpha} * $0 + {beta}", {"alpha": 1.0, "beta": 0.0}),
    "scaledtanh": Activation("{alpha} * tanh({beta} * $0)", {"alpha": 1.0, "beta": 1.0}),
    **{
        op.lower(): ACTIVATIONS[op]
        for op in ("LeakyRelu", "ThresholdedRelu", "HardSigmoid", "Elu", "Softsign", "Softplus")
    },
}
"""Activations of LSTM/GRU/RNN gates, by lower-case name; `activation_alpha` and
`activation_beta` fill the slots of those that have them, in order."""


@dataclass(frozen=True)
class Recurrence:
    """One ONNX recurrent op: gate count, default activations, and its step."""

    gates: int
    activations: tuple[str, ...]
    step: Callable[[RecurrentLayer, int, int, State | None, State | None], tuple[SSAValue, SSAValue | None]]


@dataclass
class Operands:
    """The operands of one einsum being built; `ref` names each `$n` in its map
    (the same value at the same indices is one operand)."""

    values: list[SSAValue] = field(default_factory=list)
    indices: list[list[str]] = field(default_factory=list)

    def ref(self, value: SSAValue, *index: Index) -> str:
        idx = [str(i) for i in index]
        for n, (v, seen) in enumerate(zip(self.values, self.indices)):
            if v is value and seen == idx:
                return f"${n}"
        self.values.append(value)
        self.indices.append(idx)
        return f"${len(self.values) - 1}"

    def einsum(self, b: CascadeBuilder, out: Sequence[str], ty: TensorType, text: str, reduce: str | None = None) -> SSAValue:
        return b.einsum(self.values, self.indices, out, ty, text, reduce)


@dataclass(frozen=True)
class State:
    """A [batch, hidden] recurrent state: a step's result, or one direction of an
    initial-state input ([dirs, batch, hidden], or [batch, dirs, hidden] in layout 1)."""

    value: SSAValue
    direction: int | None = None
    batch_first: bool = False

    def at(self, batch: str, hidden: str) -> list[str]:
        if self.direction is None:
            return [batch, hidden]
        d = str(self.direction)
        return [batch, d, hidden] if self.batch_first else [d, batch, hidden]


@dataclass
class RecurrentLayer:
    """An LSTM, GRU or RNN node being unrolled: the views every step reads.

    XW[d,t,b,q,h] = sum_i X[t,b,i] * W[d,q,h,i] is computed once for all steps,
    gates q and directions d; each step adds HR[b,q,h] = sum_k H[b,k] * R[d,q,h,k]
    and the biases inside its gate maps, which read gate q at a constant index.
    """

    b: CascadeBuilder
    node: Node
    row: Recurrence
    xw: SSAValue
    r: SSAValue
    bias: SSAValue | None
    lens: SSAValue | None
    clip: float | None
    acts: list[list[str]]
    state_type: TensorType
    extras: dict[str, SSAValue] = field(default_factory=dict)

    def hidden_product(self, d: int, h: State, r: SSAValue | None = None) -> SSAValue:
        """HR[b,q,j] = sum_k H[b,k] * R[d,q,j,k] for the gates `r` holds."""
        r = r if r is not None else self.r
        batch, hidden = self.state_type.get_shape()
        gates = shape_of(r)[1]
        ty = tensor_type([batch, gates, hidden], self.state_type)
        return self.b.einsum([h.value, r], [h.at("b", "k"), [str(d), "q", "h", "k"]], ["b", "q", "h"], ty, "$0 * $1", "add")

    def pre(self, ops: Operands, d: int, t: int, q: int, hr: SSAValue | None, with_rb: bool = True) -> str:
        """The pre-activation of gate q: XW + HR + Wb + Rb (terms that exist)."""
        terms = [ops.ref(self.xw, d, t, "b", q, "h")]
        if hr is not None:
            terms.append(ops.ref(hr, "b", q, "h"))
        if self.bias is not None:
            terms.append(ops.ref(self.bias, d, q, "h"))
            if with_rb:
                terms.append(ops.ref(self.bias, d, self.row.gates + q, "h"))
        return " + ".join(terms)

    def act(self, d: int, n: int, text: str) -> str:
        """Activation n of direction d applied to `text`, clipped first if `clip`."""
        if self.clip is not None:
            text = f"min(max({text}, {_lit(-self.clip)}), {_lit(self.clip)})"
        return self.acts[d][n].replace("$0", f"({text})")

    def masked(self, ops: Operands, t: int, new: str, old: str) -> str:
        """`new` for batch entries whose sequence is longer than t, else `old`."""
        if self.lens is None:
            return new
        return f"select(lt({t}, {ops.ref(self.lens, 'b')}), {new}, {old})"

    def state(self, ops: Operands, s: State | None) -> str:
        return ops.ref(s.value, *s.at("b", "h")) if s is not None else "0.0"


def _lstm_step(layer: RecurrentLayer, d: int, t: int, h: State | None, c: State | None) -> tuple[SSAValue, SSAValue | None]:
    """C' = f*C + i*g, H' = o*h(C') with gates (i, o, f, c) and optional peepholes."""
    b, peep = layer.b, layer.extras.get("peepholes")
    hr = layer.hidden_product(d, h) if h is not None else None
    ops = Operands()
    old_c = layer.state(ops, c)

    def gate(q: int, n: int, cell: str, p: int | None) -> str:
        text = layer.pre(ops, d, t, q, hr)
        if peep is not None and p is not None and cell != "0.0":
            text += f" + {ops.ref(peep, d, p, 'h')} * {cell}"
        return layer.act(d, n, text)

    i = gate(0, 0, old_c, 0)
    f = "(1.0 - " + i + ")" if layer.node.int_attr("input_forget", 0) else gate(2, 0, old_c, 2)
    new_c = f"{i} * {gate(3, 1, old_c, None)}"
    if c is not None:
        new_c = f"{f} * {old_c} + {new_c}"
    cell = ops.einsum(b, ["b", "h"], layer.state_type, layer.masked(ops, t, new_c, old_c))
    ops = Operands()
    cell_ref = ops.ref(cell, "b", "h")
    new_h = f"{gate(1, 0, cell_ref, 1)} * {layer.acts[d][2].replace('$0', cell_ref)}"
    return ops.einsum(b, ["b", "h"], layer.state_type, layer.masked(ops, t, new_h, layer.state(ops, h))), cell


def _gru_step(layer: RecurrentLayer, d: int, t: int, h: State | None, c: State | None) -> tuple[SSAValue, SSAValue | None]:
    """H' = (1 - z)*h~ + z*H with gates (z, r, h). With linear_before_reset, r
    scales (H R_h + Rb_h) inside one step einsum; without, r scales H before
    R_h: an einsum for r and one for (r*H) R_h come first."""
    b = layer.b
    ops = Operands()
    before_reset = bool(layer.node.int_attr("linear_before_reset", 0))
    if h is None:
        hr = None
        reset = layer.act(d, 0, layer.pre(ops, d, t, 1, None))
        candidate = layer.pre(ops, d, t, 2, None, with_rb=not before_reset)
        if before_reset and layer.bias is not None:
            candidate += f" + {reset} * {ops.ref(layer.bias, d, 5, 'h')}"
    elif before_reset:
        hr = layer.hidden_product(d, h)
        reset = layer.act(d, 0, layer.pre(ops, d, t, 1, hr))
        recurrent = ops.ref(hr, "b", 2, "h")
        if layer.bias is not None:
            recurrent = f"({recurrent} + {ops.ref(layer.bias, d, 5, 'h')})"
        candidate = f"{layer.pre(ops, d, t, 2, None, with_rb=False)} + {reset} * {recurrent}"
    else:
        if "zr" not in layer.extras:
            layer.extras["zr"] = _pad(b, layer.r, [0, 0, 0, 0], [0, -1, 0, 0])
        hr = layer.hidden_product(d, h, layer.extras["zr"])
        gate_ops = Operands()
        reset_gate = gate_ops.einsum(b, ["b", "h"], layer.state_type, layer.act(d, 0, layer.pre(gate_ops, d, t, 1, hr)))
        reset_h = b.einsum(
            [reset_gate, h.value, layer.r],
            [["b", "k"], h.at("b", "k"), [str(d), "2", "h", "k"]],
            ["b", "h"],
            layer.state_type,
            "$0 * $1 * $2",
            "add",
        )
        candidate = f"{layer.pre(ops, d, t, 2, None)} + {ops.ref(reset_h, 'b', 'h')}"
    z = layer.act(d, 0, layer.pre(ops, d, t, 0, hr))
    new_h = f"(1.0 - {z}) * {layer.act(d, 1, candidate)}"
    old_h = layer.state(ops, h)
    if h is not None:
        new_h += f" + {z} * {old_h}"
    return ops.einsum(b, ["b", "h"], layer.state_type, layer.masked(ops, t, new_h, old_h)), None


def _rnn_step(layer: RecurrentLayer, d: int, t: int, h: State | None, c: State | None) -> tuple[SSAValue, SSAValue | None]:
    """H' = f(XW + HR + Wb + Rb)."""
    hr = layer.hidden_product(d, h) if h is not None else None
    ops = Operands()
    new_h = layer.act(d, 0, layer.pre(ops, d, t, 0, hr))
    return ops.einsum(layer.b, ["b", "h"], layer.state_type, layer.masked(ops, t, new_h, layer.state(ops, h))), None


RECURRENCES: dict[str, Recurrence] = {
    "LSTM": Recurrence(4, ("sigmoid", "tanh", "tanh"), _lstm_step),
    "GRU": Recurrence(3, ("sigmoid", "tanh"), _gru_step),
    "RNN": Recurrence(1, ("tanh",), _rnn_step),
}

DIRECTIONS: dict[str, tuple[bool, ...]] = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}
"""Each direction of a recurrent op: whether it runs backwards in time."""


def _rnn_activations(node: Node, row: Recurrence, directions: int) -> list[list[str]]:
    names = _strings(node, "activations") or list(row.activations) * directions
    per = len(row.activations)
    if len(names) != per * directions:
        raise Unsupported(f"{len(names)} activations for {directions} direction(s) of {per}")
    alphas, betas = _floats(node, "activation_alpha"), _floats(node, "activation_beta")
    maps = []
    for name in names:
        if name.lower() not in RNN_ACTIVATIONS:
            raise Unsupported(f"activation '{name}'")
        act = RNN_ACTIVATIONS[name.lower()]
        params = {}
        if "alpha" in act.defaults and alphas:
            params["alpha"] = alphas.pop(0)
        if "beta" in act.defaults and betas:
            params["beta"] = betas.pop(0)
        maps.append(act.render(params))
    return [maps[n * per : (n + 1) * per] for n in range(directions)]


def lower_recurrent(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """LSTM, GRU, RNN unrolled over the sequence: XW for all steps at once, then
    per step and direction HR and the gate maps (2 to 4 einsums). sequence_lens
    masks steps past each sequence's end (state kept, Y zero); the reverse
    direction runs t = T-1..0, so masked steps come first and keep the initial
    state, as if each sequence started at its own end."""
    row = RECURRENCES[node.op_type]
    layout = node.int_attr("layout", 0)
    if layout not in (0, 1):
        raise Unsupported(f"layout {layout}")
    batch_first = layout == 1
    direction = node.string_attr("direction", "forward")
    if direction not in DIRECTIONS:
        raise Unsupported(f"direction '{direction}'")
    reverse = DIRECTIONS[direction]
    x, w, r = (_input(node, n) for n in range(3))
    seq, batch = (shape_of(x)[1], shape_of(x)[0]) if batch_first else shape_of(x)[:2]
    dirs, _, hidden = shape_of(r)
    gates, size = row.gates, shape_of(x)[2]
    xw = b.einsum(
        [x, b.reshape(w, [dirs, gates, hidden, size])],
        [["b", "t", "i"] if batch_first else ["t", "b", "i"], ["d", "q", "h", "i"]],
        ["d", "t", "b", "q", "h"],
        tensor_type([dirs, seq, batch, gates, hidden], x),
        "$0 * $1",
        "add",
    )
    bias = node.input(3)
    lens = node.input(4)
    known = node.constant_input(4)
    if known is not None and (known == seq).all():
        lens = None
    clip = node.float_attr("clip", 0.0) if node.attr("clip") is not None else None
    layer = RecurrentLayer(
        b,
        node,
        row,
        xw,
        b.reshape(r, [dirs, gates, hidden, hidden]),
        b.reshape(bias, [dirs, 2 * gates, hidden]) if bias is not None else None,
        lens,
        clip,
        _rnn_activations(node, row, len(reverse)),
        tensor_type([batch, hidden], x),
    )
    if node.op_type == "LSTM" and node.input(7) is not None:
        layer.extras["peepholes"] = b.reshape(_input(node, 7), [dirs, 3, hidden])
    if node.op_type == "LSTM" and node.int_attr("input_forget", 0) and node.input(7) is not None:
        raise Unsupported("input_forget with peepholes")
    initial = [node.input(5), node.input(6) if node.op_type == "LSTM" else None]
    ys: dict[tuple[int, int], SSAValue] = {}
    finals: list[tuple[SSAValue, SSAValue | None]] = []
    for d, backwards in enumerate(reverse):
        h, c = (State(v, d, batch_first) if v is not None else None for v in initial)
        for t in reversed(range(seq)) if backwards else range(seq):
            new_h, new_c = row.step(layer, d, t, h, c)
            ys[t, d] = new_h
            if layer.lens is not None and _used(node, 0):
                ops = Operands()
                ys[t, d] = ops.einsum(b, ["b", "h"], layer.state_type, layer.masked(ops, t, ops.ref(new_h, "b", "h"), "0.0"))
            h, c = State(new_h), (State(new_c) if new_c is not None else None)
        finals.append((h.value, c.value if c is not None else None))  # type: ignore[union-attr]
    axis = 1 if batch_first else 0
    one = [batch, 1, hidden] if batch_first else [1, batch, hidden]
    values: list[SSAValue | None] = [None, None, None]
    if _used(node, 0):
        parts = [b.reshape(ys[t, d], one) for t in range(seq) for d in range(dirs)]
        values[0] = b.reshape(_concat(b, parts, axis), node.result_types[0].get_shape())
    for n in (1, 2):
        if _used(node, n):
            values[n] = _concat(b, [b.reshape(f[n - 1], one) for f in finals], axis)  # type: ignore[arg-type]
    if all(v is None for v in values):
        values[1] = _concat(b, [b.reshape(f[0], one) for f in finals], axis)
    return _results(values)


# -- spectral ops: DFT, STFT, MelWeightMatrix ---------------------------------------


def _known_int(node: Node, n: int, default: int | None) -> int | None:
    """A scalar integer input known at compile time; `default` if absent."""
    if node.input(n) is None:
        return default
    value = node.constant_input(n)
    if value is None:
        raise Unsupported(f"input {n} must be a constant: it sets the result's shape")
    return int(value.reshape(-1)[0])


def _arange(b: CascadeBuilder, n: int, dtype: type = np.int64) -> SSAValue:
    array = np.arange(n, dtype=dtype)
    return b.constant(array, numpy_to_type(array.dtype))


def _twiddles(
    b: CascadeBuilder, extents: Sequence[int], length: int, inverse: bool, half: bool, like: SSAValue
) -> SSAValue:
    """T[n, c, k, o]: the DFT of length L as a contraction over input position n and
    component c (real, imaginary) to output position k and component o.

    (c, o) = (0, 0), (1, 1): cos a; (1, 0), (0, 1): +-sin a, a = 2 pi (n k mod L) / L
    (the product reduced exactly in integers), sign by direction; inverse scales by
    1/L. Input positions past L (a truncated signal) get zeros. `half` is the
    inverse of a one-sided spectrum (irfft): bins up to L/2, the ones that stand for
    a conjugate pair counted twice. Computed in f64 over iotas (folded to a
    constant when small) and converted to the signal's type.
    """
    sign = -1 if inverse else 1
    angle = f"mod($0 * $1, {length}) * {2 * np.pi / length!r}"
    value = f"select(eq($2, $3), cos({angle}), {sign} * ($2 - $3) * sin({angle}))"
    if half:
        value = f"select(or(eq($0, 0), eq($0 * 2, {length})), 1.0, 2.0) * {value}"
    if inverse:
        value = f"{value} * {1 / length!r}"
    keep = f"le($0, {length // 2})" if half else f"lt($0, {length})"
    iotas = [_arange(b, extents[d]) for d in (0, 2, 1, 3)]  # n, k, c, o as the map reads them
    ty = TensorType(Float64Type(), list(extents))
    table = b.einsum(iotas, [["n"], ["k"], ["c"], ["o"]], ["n", "c", "k", "o"], ty, f"select({keep}, {value}, 0.0)")
    if _dtype(like) == np.float64:
        return table
    return b.elementwise([table], "$0", tensor_type(extents, like))


def lower_dft(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """DFT along one axis as one contraction with a twiddle table:
    Y[.., k, .., o] = sum_{n,c} X[.., n, .., c] * T[n, c, k, o].

    The last dim holds (real) or (real, imaginary); dft_length zero-pads or
    truncates; onesided keeps bins 0..L/2 (forward) or reads them (inverse: a
    real signal, irfft). The length and axis must be constants. Work is n * k
    (no FFT), which suits the short transforms of feature extractors.
    """
    x = _input(node, 0)
    shape = shape_of(x)
    ty = node.result_types[0]
    out = list(ty.get_shape())
    rank = len(shape)
    axis = node.int_attr("axis", 1) if node.opset < 20 else _known_int(node, 2, -2)
    axis = normalize_axis(axis, rank)  # type: ignore[arg-type]
    if axis == rank - 1 or shape[-1] not in (1, 2):
        raise Unsupported(f"DFT along axis {axis} of a signal of shape {list(shape)}")
    inverse, onesided = bool(node.int_attr("inverse", 0)), bool(node.int_attr("onesided", 0))
    half = inverse and onesided
    length = _known_int(node, 1, 2 * (shape[axis] - 1) if half else shape[axis])
    assert length is not None
    if length < 1:
        raise Unsupported(f"dft_length {length}")
    extents = [shape[axis], shape[-1], out[axis], out[-1]]
    table = _twiddles(b, extents, length, inverse, half, x)
    vars_ = axis_vars(rank)
    x_idx = [*vars_[:axis], "n", *vars_[axis + 1 : -1], "c"]
    y_idx = [*vars_[:axis], "k", *vars_[axis + 1 : -1], "o"]
    return [b.einsum([x, table], [x_idx, ["n", "c", "k", "o"]], y_idx, ty, "$0 * $1", "add")]


def lower_stft(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """STFT: frames read with an affine index, the window folded into the twiddles:
    Y[b, f, k, o] = sum_{n,c} X[b, f * step + n, c] * (W[n] * T[n, c, k, o]).

    frame_step and frame_length must be constants; the window may be a runtime input.
    """
    x = _input(node, 0)
    batch, signal, parts = shape_of(x)
    ty = node.result_types[0]
    step = _known_int(node, 1, None)
    window = node.input(2)
    length = _known_int(node, 3, shape_of(window)[0] if window is not None else signal)
    assert step is not None and length is not None
    onesided = bool(node.int_attr("onesided", 1))
    frames, bins = (signal - length) // step + 1, length // 2 + 1 if onesided else length
    if list(ty.get_shape()) != [batch, frames, bins, 2]:
        raise Unsupported(
            f"result shape {list(ty.get_shape())}, expected {[batch, frames, bins, 2]} from the signal, "
            f"frame_step, frame_length and onesided={int(onesided)}"
        )
    table = _twiddles(b, [length, parts, bins, 2], length, False, False, x)
    if window is not None:
        table = b.einsum([table, window], [["n", "c", "k", "o"], ["n"]], ["n", "c", "k", "o"],
                         tensor_type(shape_of(table), x), "$0 * $1")
    frame = IndexExpr.affine({"f": step, "n": 1})
    return [b.einsum([x, table], [["b", frame, "c"], ["n", "c", "k", "o"]], ["b", "f", "k", "o"], ty, "$0 * $1", "add")]


def lower_mel_weight_matrix(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """MelWeightMatrix [dft_length / 2 + 1, bins] as onnx's reference builds it:
    M + 2 band edges equally spaced in mel (2595 log10(1 + f / 700)) mapped to FFT
    bins (floor((L + 1) f / rate)), then one triangle per band rising from edge i
    to i + 1 and falling to i + 2. Sample rate and band limits may be runtime
    scalars: the edges are one einsum of them (in f64), the triangles another.
    """
    ty = node.result_types[0]
    spectrum, bins = ty.get_shape()
    length = _known_int(node, 1, None)
    assert length is not None
    scalars = [
        b.einsum([v], [["0"] * len(shape_of(v))], [], TensorType(Float64Type(), []))
        for v in (_input(node, n) for n in (2, 3, 4))
    ]
    ln10 = float(np.log(10))
    mel = "2595.0 * log(1.0 + ${} / 700.0) * {!r}".format
    low, high = mel(2, 1 / ln10), mel(3, 1 / ln10)
    hertz = f"700.0 * (exp(($0 * (({high}) - ({low})) * {1 / (bins + 2)!r} + ({low})) * {ln10 / 2595!r}) - 1.0)"
    edges = b.einsum(
        [_arange(b, bins + 2, np.float64), *scalars], [["i"], [], [], []], ["i"], TensorType(Float64Type(), [bins + 2]),
        f"floor({length + 1}.0 * ({hertz}) / $1)",
    )
    rise = "select(eq($1, $0), 1.0, ($3 - $0) / ($1 - $0))"
    triangle = f"select(and(ge($3, $1), lt($3, $2)), ($2 - $3) / ($2 - $1), select(and(ge($3, $0), le($3, $1)), {rise}, 0.0))"
    left = _pad(b, edges, [0], [-2])  # a plain index takes its range from what it reads
    return [b.einsum([left, edges, edges, _arange(b, spectrum, np.float64)],
                     [["i"], [IndexExpr.affine({"i": 1}, 1)], [IndexExpr.affine({"i": 1}, 2)], ["j"]], ["j", "i"], ty, triangle)]



# -- sampling at computed places: GridSample, AffineGrid, RoiAlign, MaxUnpool ----------------------
#
# A sample of an image at a computed (fractional) place is a few taps. Per spatial
# dimension, einsums make a table of tap indices and one of tap weights from the
# coordinates (padding folded in: a tap outside reads a clamped index with weight
# 0, or a clamped or mirrored index); one einsum joins the per-dimension indices
# into flat rows of the image viewed channels-last as [N * pixels, C];
# `ein.gather` reads those rows and one contraction sums (or maxes) the taps
# weighted.


def _lit(value: float) -> str:
    """A float literal of the map language (negatives in parentheses)."""
    return f"({value!r})" if value < 0 else repr(float(value))


def _sample_taps(
    b: CascadeBuilder,
    x: SSAValue,
    batch: SSAValue,
    indices: Sequence[SSAValue],
    weights: Sequence[SSAValue],
    keep: int,
    fold: str = "add",
) -> SSAValue:
    """out[L[:keep]..., c] = fold over taps (and L[keep:]) of x[batch, index_0, ..., c] * prod weights.

    `indices[d]` and `weights[d]` are [L..., T_d] tables over the lead positions L
    (size 1 where a table does not vary), `batch` is [L...] with the image number.
    """
    shape = shape_of(x)
    spatial, channels = shape[2:], shape[1]
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    tables = [batch, *indices, *weights]
    lead = len(shape_of(batch))
    lead_shape = [max(shape_of(t)[n] for t in tables) for n in range(lead)]
    lv = axis_vars(lead, "l")
    taps = [f"t{d}" for d in range(len(indices))]
    tap_sizes = [shape_of(t)[-1] for t in indices]

    def read(table: SSAValue, d: int | None) -> list[str]:
        exprs = [v if shape_of(table)[n] > 1 else "0" for n, v in enumerate(lv)]
        return exprs if d is None else [*exprs, taps[d]]

    terms = [f"$0 * {math.prod(spatial)}", *[f"${d + 1} * {s}" for d, s in enumerate(strides)]]
    flat = b.einsum(
        [batch, *indices], [read(batch, None), *[read(t, d) for d, t in enumerate(indices)]],
        [*lv, *taps], TensorType(i64, [*lead_shape, *tap_sizes]), " + ".join(terms),
    )
    n_rows = math.prod(lead_shape) * math.prod(tap_sizes)
    rows = b.reshape(b.transpose(x, [0, *range(2, len(shape)), 1]), [shape[0] * math.prod(spatial), channels])
    picked = b.insert(GatherOp(rows, b.reshape(flat, [n_rows]), 0, tensor_type([n_rows, channels], x))).results[0]
    picked = b.reshape(picked, [*lead_shape, *tap_sizes, channels])
    product = " * ".join(f"${n + 1}" for n in range(len(weights)))
    return b.einsum(
        [picked, *weights], [[*lv, *taps, "c"], *[read(w, d) for d, w in enumerate(weights)]],
        [*lv[:keep], "c"], tensor_type([*lead_shape[:keep], channels], x), f"$0 * ({product})", fold,
    )


def _reflect(v: str, low: float, high: float) -> str:
    """`v` mirrored at `low` and `high` until it lies between them (however far out)."""
    span = high - low
    return f"{_lit(low)} + ({_lit(span)} - abs(mod({v} - {_lit(low)}, {_lit(2 * span)}) - {_lit(span)}))"


def _keys(s: str, a: float = -0.75) -> str:
    """Keys' cubic convolution kernel at distance `s` in [0, 2] (GridSample's a = -0.75)."""
    near = f"(({_lit(a + 2)} * {s} - {_lit(a + 3)}) * {s} * {s} + 1.0)"
    far = f"((({_lit(a)} * {s} - {_lit(5 * a)}) * {s} + {_lit(8 * a)}) * {s} - {_lit(4 * a)})"
    return f"select(le({s}, 1.0), {near}, {far})"


GRID_SAMPLE_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}
"""GridSample's mode names (opset 16 and 20+) -> the interpolation."""
GRID_TAPS = {"nearest": [0.0], "linear": [0.0, 1.0], "cubic": [-1.0, 0.0, 1.0, 2.0]}
"""Tap offsets from floor(coordinate) per interpolation."""


def lower_grid_sample(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """GridSample in any number of spatial dims, as the spec's reference computes it.

    Per spatial dim d (read from grid[..., r-1-d]): unnormalise the coordinate, round
    it (half to even) for nearest, bring it inside by clamping or mirroring where it
    lies outside [-0.5, size-0.5] ([0, size-1] with align_corners); taps at floor +
    offsets, weighted linearly or by Keys' cubic; each tap's index padded (zeros:
    weight 0; border: clamped; reflection: mirrored).
    """
    x, grid = _input(node, 0), _input(node, 1)
    mode_name = node.string_attr("mode", "linear" if node.opset >= 20 else "bilinear")
    mode, padding = GRID_SAMPLE_MODES.get(mode_name), node.string_attr("padding_mode", "zeros")
    if mode is None or padding not in ("zeros", "border", "reflection"):
        raise Unsupported(f"mode '{mode_name}' with padding_mode '{padding}'")
    align = bool(node.int_attr("align_corners", 0))
    shape, gshape = shape_of(x), shape_of(grid)
    r, lead = len(shape) - 2, len(gshape) - 1
    lv = axis_vars(lead, "l")
    offsets = GRID_TAPS[mode]
    offset_table = b.constant(np.array(offsets, np.float32), grid)
    table_shape = [*gshape[:-1], len(offsets)]
    indices, weights = [], []
    for d, size in enumerate(shape[2:]):
        low, high, last = (0.0, size - 1.0, _lit(size - 1)) if align else (-0.5, size - 0.5, _lit(size - 1))
        c = f"($0 + 1.0) / 2.0 * {last}" if align else f"(($0 + 1.0) * {_lit(size)} - 1.0) / 2.0"
        coordinate = b.einsum([grid], [[*lv, str(r - 1 - d)]], lv, tensor_type(gshape[:-1], grid),
                              f"round({c})" if mode == "nearest" else c)
        inside_span = f"or(lt($0, {_lit(low)}), gt($0, {_lit(high)}))"
        mirror = padding == "reflection" and high > low
        if padding == "border" or mirror:
            moved = f"min(max($0, 0.0), {last})" if padding == "border" else _reflect("$0", low, high)
            coordinate = b.einsum([coordinate], [lv], lv, tensor_type(gshape[:-1], grid), f"select({inside_span}, {moved}, $0)")
        tap = "floor($0) + $1"
        index = f"min(max({tap}, 0.0), {last})"
        if mirror:
            index = f"min(max(round({_reflect(tap, low, high)}), 0.0), {last})"
        t = "($0 - floor($0))"
        weight = {"nearest": "1.0", "linear": f"select(eq($1, 0.0), 1.0 - {t}, {t})", "cubic": _keys(f"abs({t} - $1)")}[mode]
        if padding == "zeros":
            weight = f"select(and(ge({tap}, 0.0), le({tap}, {last})), {weight}, 0.0)"
        reads = [lv, ["o"]]
        indices.append(b.einsum([coordinate, offset_table], reads, [*lv, "o"], TensorType(i64, table_shape), index))
        weights.append(b.einsum([coordinate, offset_table], reads, [*lv, "o"], tensor_type(table_shape, grid), weight))
    image = b.constant(np.arange(shape[0], dtype=np.int64).reshape(shape[0], *[1] * (lead - 1)), i64)
    sampled = _sample_taps(b, x, image, indices, weights, lead)
    return [b.transpose(sampled, [0, lead, *range(1, lead)])]


def lower_affine_grid(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """grid[n, D..., k] = sum_j theta[n, k, j] * base_j, base = (x[w], y[h], (z[d]), 1):
    one einsum whose map sums the r + 1 products in the order a matmul does."""
    theta = _input(node, 0)
    ty = node.result_types[0]
    out_shape = list(ty.get_shape())
    spatial = out_shape[1:-1]
    r = len(spatial)
    align = bool(node.int_attr("align_corners", 0))
    dims = axis_vars(r, "d")
    inputs, exprs, terms = [], [], []
    for j in range(r):  # base_j runs along spatial dim r - 1 - j (x is the last)
        size = spatial[r - 1 - j]
        if align:
            # one point: -1 as ONNX's reference (onnxruntime gives 1, PyTorch 0)
            base = np.linspace(-1.0, 1.0, size) if size > 1 else np.array([-1.0])
        else:
            base = (2.0 * np.arange(size) + 1.0) / size - 1.0
        terms.append(f"${len(inputs)} * ${len(inputs) + 1}")
        inputs += [theta, b.constant(base.astype(np.float32), theta)]
        exprs += [["n", "k", str(j)], [dims[r - 1 - j]]]
    terms.append(f"${len(inputs)}")
    inputs.append(theta)
    exprs.append(["n", "k", str(r)])
    return [b.einsum(inputs, exprs, ["n", *dims, "k"], ty, " + ".join(terms))]


def lower_roi_align(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """RoiAlign: per RoI, output bin and sample point, bilinear taps (as onnxruntime:
    a sample beyond [-1, size] weighs 0, one below 0 reads 0, one past the last pixel
    reads it), averaged over the bin's samples or, for max, the largest weighted tap.

    Sample coordinates y[r, ph, iy] and x[r, pw, ix] are einsums over the RoIs; the
    taps are the shared gather and contraction. An adaptive sampling ratio (0) makes
    the sample count depend on each RoI's size: refused."""
    x, rois, batch = _input(node, 0), _input(node, 1), _input(node, 2)
    ratio = node.int_attr("sampling_ratio", 0)
    if ratio <= 0:
        raise Unsupported("sampling_ratio 0 (adaptive: the sample count depends on each RoI's size)")
    mode = node.string_attr("mode", "avg")
    transform = node.string_attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 16 else "output_half_pixel")
    if mode not in ("avg", "max") or transform not in ("half_pixel", "output_half_pixel"):
        raise Unsupported(f"mode '{mode}' with coordinate_transformation_mode '{transform}'")
    scale, offset = node.float_attr("spatial_scale", 1.0), 0.5 if transform == "half_pixel" else 0.0
    ty = node.result_types[0]
    n_rois, _, pooled_h, pooled_w = ty.get_shape()
    height, width = shape_of(x)[2:]
    tables = []
    for column, pooled, size in ((1, pooled_h, height), (0, pooled_w, width)):
        start = f"($0 * {_lit(scale)} - {_lit(offset)})"
        extent = f"(($1 * {_lit(scale)} - {_lit(offset)}) - {start})"
        if transform == "output_half_pixel":
            extent = f"max({extent}, 1.0)"
        bin_size = f"({extent} / {_lit(pooled)})"
        where = f"{start} + $2 * {bin_size} + ($3 + 0.5) * {bin_size} / {_lit(ratio)}"
        coordinate = b.einsum(
            [rois, rois, _positions(b, pooled, x), _positions(b, ratio, x)],
            [["r", str(column)], ["r", str(column + 2)], ["p"], ["s"]],
            ["r", "p", "s"], tensor_type([n_rois, pooled, ratio], x), where,
        )
        floor = "floor(max($0, 0.0))"
        frac = f"select(ge({floor}, {_lit(size - 1)}), 0.0, max($0, 0.0) - {floor})"
        weight = f"select(or(lt($0, -1.0), gt($0, {_lit(size)})), 0.0, select(eq($1, 0.0), 1.0 - {frac}, {frac}))"
        index = f"min({floor} + $1, {_lit(size - 1)})"
        reads = [["r", "p", "s"], ["o"]]
        pair = _positions(b, 2, x)
        table_shape = [n_rois, pooled, ratio, 2]
        tables.append((
            b.einsum([coordinate, pair], reads, ["r", "p", "s", "o"], TensorType(i64, table_shape), index),
            b.einsum([coordinate, pair], reads, ["r", "p", "s", "o"], tensor_type(table_shape, x), weight),
        ))
    (iy, wy), (ix, wx) = tables
    # lead positions [r, ph, pw, sy, sx]: y tables vary over (r, ph, sy), x tables over (r, pw, sx)
    spread_y = [n_rois, pooled_h, 1, ratio, 1, 2]
    spread_x = [n_rois, 1, pooled_w, 1, ratio, 2]
    images = b.reshape(batch, [n_rois, 1, 1, 1, 1])
    sampled = _sample_taps(
        b, x, images, [b.reshape(iy, spread_y), b.reshape(ix, spread_x)],
        [b.reshape(wy, spread_y), b.reshape(wx, spread_x)], 3, "add" if mode == "avg" else "max",
    )
    if mode == "avg":
        sampled = b.einsum([sampled], [["r", "p", "q", "c"]], ["r", "p", "q", "c"], sampled.type, f"$0 / {_lit(ratio * ratio)}")  # type: ignore[arg-type]
    return [b.transpose(sampled, [0, 3, 1, 2])]


def _positions(b: CascadeBuilder, n: int, like: SSAValue) -> SSAValue:
    """[0, 1, ..., n-1] in the float type of `like`."""
    return b.constant(np.arange(n, dtype=np.float32), like)


def lower_max_unpool(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Zeros with X stored at the flat positions I holds (MaxPool's Indices: row-major
    over the whole tensor): one `ein.scatter`. The positions index the shape the
    attributes infer, `(in - 1) * stride - pads + kernel`; a larger `output_shape`
    extends that at the end with zeros, as ONNX's reference and backend tests do
    (onnxruntime instead reads the positions in the larger shape)."""
    x, positions = _input(node, 0), _input(node, 1)
    ty = node.result_types[0]
    shape, out_shape = shape_of(x), list(ty.get_shape())
    kernel = node.ints_attr("kernel_shape") or []
    r = len(kernel)
    strides = node.ints_attr("strides", [1] * r) or []
    pads = node.ints_attr("pads", [0] * 2 * r) or []
    inferred = [*shape[:2], *[(shape[2 + d] - 1) * strides[d] - pads[d] - pads[r + d] + kernel[d] for d in range(r)]]
    if len(inferred) != len(out_shape) or any(o < i for o, i in zip(out_shape, inferred)):
        raise Unsupported(f"output_shape {out_shape} smaller than the unpooled shape {inferred}")
    zero = b.constant(np.zeros((), type_to_numpy(ty.get_element_type())), ty.get_element_type())
    vars_ = axis_vars(len(inferred))
    zeros = b.reshape(b.einsum([zero], [[]], vars_, tensor_type(inferred, x)), [math.prod(inferred)])
    n = math.prod(shape)
    unpooled = b.reshape(b.insert(ScatterOp(zeros, b.reshape(positions, [n]), b.reshape(x, [n]))).results[0], inferred)
    if inferred == out_shape:
        return [unpooled]
    high = [o - i for o, i in zip(out_shape, inferred)]
    return [b.insert(PadOp(unpooled, [0] * len(high), high, ty)).results[0]]


LOWERINGS: dict[str, Lowering] = {
    **{op: _activation(row) for op, row in ACTIVATIONS.items()},
    "Gelu": lower_gelu,
    "PRelu": lower_prelu,
    "Softmax": _along_axis(softmax_cascade),
    "LogSoftmax": _along_axis(log_softmax_cascade),
    "Hardmax": _along_axis(hardmax_cascade),
    "Conv": lower_conv,
    "ConvTranspose": lower_conv_transpose,
    **{op: _pool(row) for op, row in POOLINGS.items()},
    **{op: _global_pool(*row) for op, row in GLOBAL_POOLINGS.items()},
    "BatchNormalization": lower_batch_norm,
    "InstanceNormalization": lower_instance_norm,
    "LayerNormalization": lower_layer_norm,
    "GroupNormalization": lower_group_norm,
    "MeanVarianceNormalization": lower_mvn,
    "RMSNormalization": lower_rms_norm,
    "LpNormalization": lower_lp_norm,
    "LRN": lower_lrn,
    "GridSample": lower_grid_sample,
    "AffineGrid": lower_affine_grid,
    "RoiAlign": lower_roi_align,
    "MaxUnpool": lower_max_unpool,
    **{op: lower_recurrent for op in RECURRENCES},
    "DFT": lower_dft,
    "STFT": lower_stft,
    "MelWeightMatrix": lower_mel_weight_matrix,
}
