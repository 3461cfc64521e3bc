"""Lowerings of ONNX ops that make, move, view or select data (Reshape, Slice, Gather, Resize, ...).

Shapes are static after import, so every lowering takes its output shape from
the inferred result type, and inputs that only steer shapes (a Reshape's shape,
Tile's repeats) are not read at all. Inputs that steer *values* at compile time
(Slice's starts, Pad's pads, Resize's scales) must be constants; a runtime one
is refused with the reason.

The data movement is einsums wherever an affine index says it: a slice is
`X[start + step * i]` (a reversed one has a negative step), Tile reads
`X[b]` into an output viewed as `[r, b]`, DepthToSpace is a view, a transpose
and a view. Where an index is data (Gather, GatherElements, GatherND,
ReverseSequence) it is `ein.gather`, with the indices linearised by an einsum
when the gather is not along one axis. Values that depend on an index's
position (Trilu's mask, OneHot, EyeLike, Range) read small `arange` constants
(iotas) so the map can compare positions. Resize computes its per-axis tap
indices and weights with numpy at compile time: a gather of the taps and a
weighted-sum einsum per resized axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float8E8M0FNUType,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    TensorType,
    i64,
)
from xdsl.ir import SSAValue

from einc.ir.dtypes import numpy_to_type, type_to_numpy
from einc.ir.ein import (
    SCATTER_REDUCTIONS,
    ConcatOp,
    ConstantOp,
    GatherOp,
    PadOp,
    ScatterOp,
    TopKOp,
)
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
from einc.passes.onnx_to_ein.quant import SATURATING, saturate

# -- shared pieces ----------------------------------------------------------------------------


def _input(node: Node, n: int) -> SSAValue:
    value = node.input(n)
    if value is None:
        raise Unsupported(f"input {n} is missing")
    return value


def _known(node: Node, n: int, what: str) -> np.ndarray | None:
    """A compile-time input, None if absent; a runtime one is refused."""
    if node.input(n) is None:
        return None
    value = node.constant_input(n)
    if value is None:
        raise Unsupported(f"'{what}' (input {n}) must be a constant: einc needs it at compile time")
    return value


def _known_ints(node: Node, n: int, what: str) -> list[int] | None:
    value = _known(node, n, what)
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _scalar_input(node: Node, n: int, default: float) -> float | None:
    """Scalar input `n` as a float: `default` if absent (or empty), None if known only at run time."""
    if node.input(n) is None:
        return default
    known = node.constant_input(n)
    if known is None:
        return None
    return float(known.reshape(-1)[0]) if known.size else default


def _scalar(value: SSAValue) -> list[str]:
    """Index expressions reading the one element of a scalar (of any rank: the
    importer gives scalar initializers rank 1)."""
    return ["0"] * len(shape_of(value))


def _elem_dtype(value: SSAValue | TensorType) -> np.dtype:
    ty = value if isinstance(value, TensorType) else value.type
    return type_to_numpy(ty.get_element_type())  # type: ignore[union-attr]


def _iota(b: CascadeBuilder, n: int, dtype: np.dtype | type = np.int64) -> SSAValue:
    """`[0, 1, ..., n-1]`: lets a map compare or compute with an index's position."""
    array = np.arange(n).astype(dtype)
    return b.constant(array, numpy_to_type(array.dtype))


def _empty(b: CascadeBuilder, ty: TensorType) -> SSAValue:
    """A tensor with no elements: there is nothing to compute."""
    return b.constant(np.zeros(ty.get_shape(), _elem_dtype(ty)), ty)


def _window(
    b: CascadeBuilder, x: SSAValue, starts: Sequence[int], steps: Sequence[int], out_shape: Sequence[int]
) -> SSAValue:
    """`out[i] = x[start + step * i]` per dimension: a slice as an einsum.

    An einsum takes the range of a plain index from the input it reads, so a
    dimension that keeps start 0 and step 1 but shrinks is cropped first
    (`ein.pad` with a negative high amount).
    """
    ty = tensor_type(out_shape, x)
    if math.prod(out_shape) == 0:
        return _empty(b, ty)
    shape = shape_of(x)
    cut = [s == 0 and t == 1 and o != n for s, t, o, n in zip(starts, steps, out_shape, shape)]
    if any(cut):
        cropped = [o if c else n for c, o, n in zip(cut, out_shape, shape)]
        high = [c - n for c, n in zip(cropped, shape)]
        x = b.insert(PadOp(x, [0] * len(shape), high, tensor_type(cropped, x))).results[0]
        shape = tuple(cropped)
    if all(s == 0 and t == 1 for s, t in zip(starts, steps)) and tuple(out_shape) == shape:
        return x
    vars_ = axis_vars(len(shape))
    exprs = [IndexExpr.affine({v: t}, s) for v, s, t in zip(vars_, starts, steps)]
    return b.einsum([x], [exprs], vars_, ty)


def _take(b: CascadeBuilder, x: SSAValue, indices: np.ndarray, axis: int) -> SSAValue:
    """`x` gathered along `axis` by compile-time indices (negatives count from the end).

    A single index or an arithmetic progression is an affine einsum index; each
    index repeated r times in order (nearest upsampling by r) is an einsum into
    a [.., n, r, ..] view; anything else is `ein.gather` of a constant.
    """
    shape = shape_of(x)
    n = shape[axis]
    idx = np.where(indices < 0, indices + n, indices).astype(np.int64)
    outside = (idx < 0) | (idx >= n)
    if outside.any():
        bad = int(indices[outside].reshape(-1)[0])
        raise Unsupported(f"index {bad} is out of range for a dimension of size {n}")
    out_shape = [*shape[:axis], *idx.shape, *shape[axis + 1 :]]
    if idx.ndim == 0:
        vars_ = axis_vars(len(shape))
        exprs: list[str | IndexExpr] = [*vars_[:axis], IndexExpr.constant(int(idx)), *vars_[axis + 1 :]]
        return b.einsum([x], [exprs], [v for d, v in enumerate(vars_) if d != axis], tensor_type(out_shape, x))
    if idx.ndim == 1 and idx.size and len(set(np.diff(idx).tolist())) <= 1:
        step = int(idx[1] - idx[0]) if idx.size > 1 else 1
        starts = [0] * len(shape)
        steps = [1] * len(shape)
        starts[axis], steps[axis] = int(idx[0]), step
        return _window(b, x, starts, steps, out_shape)
    repeat = idx.size // n if idx.ndim == 1 and n else 0
    if repeat > 1 and np.array_equal(idx, np.arange(idx.size) // repeat):
        vars_ = axis_vars(len(shape))
        view = [*shape[: axis + 1], repeat, *shape[axis + 1 :]]
        spread = b.einsum([x], [vars_], [*vars_[: axis + 1], "r", *vars_[axis + 1 :]], tensor_type(view, x))
        return b.reshape(spread, out_shape)
    indices_value = b.constant(idx, i64)
    return b.insert(GatherOp(x, indices_value, axis, tensor_type(out_shape, x))).results[0]


def _gather_elements(b: CascadeBuilder, data: SSAValue, indices: SSAValue, axis: int, ty: TensorType) -> SSAValue:
    """`out[i] = data[i with i[axis] = indices[i]]`: a gather from the flattened data.

    The flat position `indices[i] * stride[axis] + sum_d i[d] * stride[d]` is one
    einsum over the indices and one iota per other dimension.
    """
    shape = shape_of(data)
    flat = _element_positions(b, shape, indices, axis)
    source = b.reshape(data, [math.prod(shape)])
    return b.insert(GatherOp(source, flat, 0, ty)).results[0]


def _check_shape(node: Node, shape: Sequence[int], n: int = 0) -> None:
    expected = list(node.result_types[n].get_shape())
    if list(shape) != expected:
        raise Unsupported(f"computed result shape {list(shape)} differs from the inferred {expected}")


# -- types and constants ----------------------------------------------------------------------


def lower_cast(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Cast and CastLike: the identity map into the result's element type.

    Floats become integers by truncation, anything becomes a bool by `!= 0`
    and bools become 1 or 0, as in ONNX. Bit formats round to nearest even
    when stored (4- and 2-bit integers wrap); float8 results are clamped to
    their finite range first unless `saturate` is 0. E8M0 stores round up and
    saturate, its only mode here. (String types are refused at import.)
    """
    x = _input(node, 0)
    ty = node.result_types[0]
    if x.type == ty:
        return [x]
    elem, saturating = ty.get_element_type(), node.int_attr("saturate", 1)
    if elem == Float8E8M0FNUType() and (not saturating or node.string_attr("round_mode", "up") != "up"):
        raise Unsupported("casting to FLOAT8E8M0 other than rounding up with saturation")
    vars_ = axis_vars(len(shape_of(x)))
    return [b.einsum([x], [vars_], vars_, ty, saturate("$0", elem) if saturating and elem in SATURATING else "$0")]


def lower_constant(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """The importer turns Constant nodes into data; this handles an `onnx.Constant` written in IR."""
    ty = node.result_types[0]
    value = node.attr("value")
    if isinstance(value, DenseIntOrFPElementsAttr):
        return [b.insert(ConstantOp(value)).results[0]]
    for name in ("value_float", "value_int", "value_floats", "value_ints"):
        if isinstance(attr := node.attr(name), DenseArrayBase):
            return [b.constant(np.array(attr.get_values(), _elem_dtype(ty)), ty)]
        if isinstance(attr, (FloatAttr, IntegerAttr)):
            return [b.constant(np.array(attr.value.data, _elem_dtype(ty)), ty)]
    raise Unsupported("a Constant needs a 'value' tensor or a numeric value_* attribute")


def lower_constant_of_shape(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """A broadcast of the one-element `value` (0.0 by default): folded when small."""
    ty = node.result_types[0]
    value = node.attr("value")
    scalar = value.get_values()[0] if isinstance(value, DenseIntOrFPElementsAttr) else 0  # type: ignore[index]
    dtype = _elem_dtype(ty)
    source = b.constant(np.array(bool(scalar) if dtype == np.bool_ else scalar, dtype), ty)
    return [b.einsum([source], [[]], axis_vars(len(ty.get_shape())), ty)]


def lower_shape(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """The static dims (from `start` to `end`, clamped, as Python slices do)."""
    shape = shape_of(_input(node, 0))
    start = node.int_attr("start", 0)
    end = node.int_attr("end", len(shape))
    return [b.constant(np.array(shape[start:end], np.int64), i64)]


def lower_size(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    return [b.constant(np.array(math.prod(shape_of(_input(node, 0))), np.int64), i64)]


def lower_range(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """`out[i] = start + i * delta`; folded to a constant when start and delta are.

    The length comes from the inferred type (onnx computes it from constant
    inputs). 16-bit floats are computed in f32, as `stash_type` asks by default.
    """
    start, delta = _input(node, 0), _input(node, 2)
    ty = node.result_types[0]
    (n,) = ty.get_shape()
    if n == 0:
        return [_empty(b, ty)]
    dtype = _elem_dtype(ty)
    position = _iota(b, n, np.float32 if dtype in (np.float16,) or dtype.name == "bfloat16" else dtype)
    exprs = [_scalar(start), _scalar(delta), ["i0"]]
    return [b.einsum([start, delta, position], exprs, ["i0"], ty, "$0 + $2 * $1")]


def lower_eye_like(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Ones where `column == row + k`: a comparison of two iotas, folded when small."""
    ty = node.result_types[0]
    rows, cols = ty.get_shape()
    k = node.int_attr("k", 0)
    if math.prod((rows, cols)) == 0:
        return [_empty(b, ty)]
    diagonal = f"select(eq($0 + {k}, $1), 1, 0)"
    return [b.einsum([_iota(b, rows), _iota(b, cols)], [["i0"], ["i1"]], ["i0", "i1"], ty, diagonal)]


# -- views and permutations ------------------------------------------------------------------


def lower_view(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Reshape, Flatten, Squeeze, Unsqueeze: a view with the inferred result shape."""
    x = _input(node, 0)
    return [b.reshape(x, node.result_types[0].get_shape())]


def lower_identity(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    return [_input(node, 0)]


DROPOUT_DRAWS_LIMIT = 1 << 16
"""Most elements a seeded training-mode Dropout draws its uniforms for at compile time."""


def lower_dropout(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Dropout: the identity (and a mask of ones) in inference mode.

    Training mode (`is_test=0` before opset 7, the `training_mode` input since
    opset 12) with a nonzero ratio draws a random mask. With a `seed` (opset 12
    on), einc draws it as onnx's reference does, numpy's legacy MT19937 stream
    from the seed (`uniform(0, 1) >= ratio` keeps), once at compile time: every
    run uses the same mask. training_mode and ratio may then be runtime inputs
    (a select picks the identity where training is off or the ratio is 0).
    Without a seed, or with a runtime training_mode or ratio and no seed, it is
    refused.
    """
    x = _input(node, 0)
    training: bool | None = False
    ratio: float | None = 0.0
    if node.opset < 7:
        training, ratio = not node.int_attr("is_test", 0), node.float_attr("ratio", 0.5)
    elif node.opset >= 12:
        mode = _scalar_input(node, 2, 0.0)
        training, ratio = None if mode is None else bool(mode), _scalar_input(node, 1, 0.5)
    results = [x]
    mask_ty = node.result_types[1] if len(node.result_types) > 1 else None
    if training is not False and ratio != 0.0:
        shown = "a runtime ratio" if ratio is None else f"ratio {ratio}"
        if node.attr("seed") is not None and node.opset >= 12 and math.prod(shape_of(x)) <= DROPOUT_DRAWS_LIMIT:
            return _seeded_dropout(b, node, x, mask_ty if isinstance(mask_ty, TensorType) else None)
        if training is None:
            raise Unsupported(f"Dropout with a runtime training_mode and {shown} may draw a random mask")
        raise Unsupported(f"training-mode Dropout ({shown}) draws a random mask")
    if isinstance(mask_ty, TensorType):
        one = b.constant(np.array(1, _elem_dtype(mask_ty)), mask_ty)
        results.append(b.einsum([one], [[]], axis_vars(len(mask_ty.get_shape())), mask_ty))
    return results


def _seeded_dropout(b: CascadeBuilder, node: Node, x: SSAValue, mask_ty: TensorType | None) -> list[SSAValue]:
    """y = x / (1 - r) where u >= r, else 0, with u the seed's uniforms (f64, as numpy
    compares them); the identity where training_mode is off or r is 0."""
    shape = shape_of(x)
    draws = np.random.RandomState(node.int_attr("seed", 0)).uniform(0.0, 1.0, shape)
    vars_ = axis_vars(len(shape))
    inputs, indices = [x, b.constant(draws, numpy_to_type(draws.dtype))], [vars_, vars_]
    ratio = "0.5"
    for n, name in ((1, "ratio"), (2, "mode")):
        if (value := node.input(n)) is not None:
            inputs.append(value)
            indices.append(_scalar(value))
            ratio = f"${len(inputs) - 1}" if name == "ratio" else ratio
    active = f"and(${len(inputs) - 1}, ne({ratio}, 0))"
    scaled = f"select(ge($1, {ratio}), $0 * (1.0 / (1.0 - {ratio})), 0)"
    results = [b.einsum(inputs, indices, vars_, node.result_types[0], f"select({active}, {scaled}, $0)")]
    if mask_ty is not None:
        results.append(b.einsum(inputs, indices, vars_, mask_ty, f"or(not({active}), ge($1, {ratio}))"))
    return results


def lower_transpose(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x = _input(node, 0)
    rank = len(shape_of(x))
    perm = node.ints_attr("perm", list(reversed(range(rank))))
    assert perm is not None
    if sorted(perm) != list(range(rank)):
        raise Unsupported(f"perm {perm} is not a permutation of {rank} dims")
    return [b.transpose(x, perm)]


DEPTH_TO_SPACE: dict[str, tuple[Callable[[int, int, int, int, int], list[int]], list[int]]] = {
    "DCR": (lambda n, c, h, w, s: [n, s, s, c // (s * s), h, w], [0, 3, 4, 1, 5, 2]),
    "CRD": (lambda n, c, h, w, s: [n, c // (s * s), s, s, h, w], [0, 1, 4, 2, 5, 3]),
}
"""DepthToSpace mode -> (the 6-D view of the input, the permutation of that view)."""

SPACE_TO_DEPTH: dict[str, list[int]] = {"DCR": [0, 3, 5, 1, 2, 4], "CRD": [0, 1, 3, 5, 2, 4]}
"""SpaceToDepth mode -> the permutation of the input viewed as [n, c, h/s, s, w/s, s]."""


def lower_depth_to_space(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """A view, a transpose and a view (the mode picks the view and the permutation)."""
    x = _input(node, 0)
    n, c, h, w = shape_of(x)
    s = node.int_attr("blocksize", 1)
    mode = node.string_attr("mode", "DCR")
    if mode not in DEPTH_TO_SPACE or c % (s * s):
        raise Unsupported(f"mode '{mode}' with blocksize {s} on {c} channels")
    view, perm = DEPTH_TO_SPACE[mode]
    moved = b.transpose(b.reshape(x, view(n, c, h, w, s)), perm)
    return [b.reshape(moved, node.result_types[0].get_shape())]


def lower_space_to_depth(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x = _input(node, 0)
    n, c, h, w = shape_of(x)
    s = node.int_attr("blocksize", 1)
    mode = node.string_attr("mode", "DCR")
    if mode not in SPACE_TO_DEPTH or h % s or w % s:
        raise Unsupported(f"mode '{mode}' with blocksize {s} on {h}x{w}")
    moved = b.transpose(b.reshape(x, [n, c, h // s, s, w // s, s]), SPACE_TO_DEPTH[mode])
    return [b.reshape(moved, node.result_types[0].get_shape())]


# -- broadcasting, selecting, repeating --------------------------------------------------------


def lower_expand(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x = _input(node, 0)
    ty = node.result_types[0]
    if shape_of(x) == tuple(ty.get_shape()):
        return [x]
    if math.prod(ty.get_shape()) == 0:
        return [_empty(b, ty)]
    return [b.elementwise([x], "$0", ty)]


def lower_where(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """A select map over the three broadcast inputs."""
    ty = node.result_types[0]
    if math.prod(ty.get_shape()) == 0:
        return [_empty(b, ty)]
    return [b.elementwise([_input(node, n) for n in range(3)], "select($0, $1, $2)", ty)]


def lower_tile(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """`out` viewed as [r0, n0, r1, n1, ...] reads `x[b0, b1, ...]`; repeats from the shapes."""
    x = _input(node, 0)
    ty = node.result_types[0]
    shape = shape_of(x)
    if math.prod(ty.get_shape()) == 0:
        return [_empty(b, ty)]
    reps = [o // n for o, n in zip(ty.get_shape(), shape)]
    in_vars = axis_vars(len(shape), "b")
    out_vars, view = [], []
    for d, (r, n) in enumerate(zip(reps, shape)):
        if r > 1:
            out_vars.append(f"r{d}")
            view.append(r)
        out_vars.append(in_vars[d])
        view.append(n)
    tiled = b.einsum([x], [in_vars], out_vars, tensor_type(view, x))
    return [b.reshape(tiled, ty.get_shape())]


def lower_trilu(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Keep `x[.., i, j]` where `j - i >= k` (upper) or `<= k` (lower), else 0.

    The positions come from two iotas; a runtime `k` is read as a scalar input.
    """
    x = _input(node, 0)
    ty = node.result_types[0]
    shape = shape_of(x)
    if math.prod(shape) == 0:
        return [x]
    vars_ = axis_vars(len(shape))
    compare = "ge" if node.int_attr("upper", 1) else "le"
    inputs, exprs = [x, _iota(b, shape[-2]), _iota(b, shape[-1])], [vars_, [vars_[-2]], [vars_[-1]]]
    k_value = node.input(1)
    known = node.constant_input(1)
    if k_value is None or known is not None:
        k = str(int(known.reshape(-1)[0])) if known is not None else "0"
    else:
        inputs.append(k_value)
        exprs.append(_scalar(k_value))
        k = "$3"
    return [b.einsum(inputs, exprs, vars_, ty, f"select({compare}($2 - $1, {k}), $0, 0)")]


def lower_one_hot(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """`out[.., j, ..] = on if wrap(indices[..]) == j else off`, j from an iota.

    The depth is the inferred size of the new axis; negative indices count from
    it and out-of-range ones match no position, as in ONNX. Float indices are
    cast to integers first, as the operator's definition says (truncated toward
    zero: 2.7 is 2, -1.5 is -1; onnxruntime does so from 1.32, earlier versions
    compared the floats).
    """
    indices, values = _input(node, 0), _input(node, 2)
    ty = node.result_types[0]
    out_shape = list(ty.get_shape())
    axis = normalize_axis(node.int_attr("axis", -1), len(out_shape))
    depth = out_shape[axis]
    if math.prod(out_shape) == 0:
        return [_empty(b, ty)]
    vars_ = axis_vars(len(out_shape))
    index_vars = [v for d, v in enumerate(vars_) if d != axis]
    index = "$0"
    if _elem_dtype(indices).kind == "f":
        index = "select(lt($0, 0.0), ceil($0), floor($0))"  # the cast to int64: toward zero
    wrapped = f"select(lt({index}, 0), {index} + {depth}, {index})"
    return [
        b.einsum(
            [indices, _iota(b, depth), values, values],
            [index_vars, [vars_[axis]], ["0"], ["1"]],
            vars_,
            ty,
            f"select(eq({wrapped}, $1), $3, $2)",
        )
    ]


# -- joining and cutting -----------------------------------------------------------------------


def lower_concat(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    ty = node.result_types[0]
    axis = normalize_axis(node.int_attr("axis", 0), len(ty.get_shape()))
    inputs = [v for v in node.inputs if v is not None and math.prod(shape_of(v))]
    if math.prod(ty.get_shape()) == 0 or not inputs:
        return [_empty(b, ty)]
    if len(inputs) == 1:
        return inputs
    return [b.insert(ConcatOp(inputs, axis, ty)).results[0]]


def lower_slice(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """A strided window (clamped as ONNX says, steps may be negative) as an einsum.

    Opset 1 gives starts/ends/axes as attributes, later opsets as (constant) inputs.
    """
    x = _input(node, 0)
    shape = shape_of(x)
    if node.opset < 10:
        starts, ends = node.ints_attr("starts", []), node.ints_attr("ends", [])
        axes, steps = node.ints_attr("axes"), None
    else:
        starts, ends = _known_ints(node, 1, "starts"), _known_ints(node, 2, "ends")
        axes, steps = _known_ints(node, 3, "axes"), _known_ints(node, 4, "steps")
    assert starts is not None and ends is not None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    first, stride, out_shape = [0] * len(shape), [1] * len(shape), list(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise Unsupported("a slice step of 0")
        d = normalize_axis(axis, len(shape))
        lo, hi, st = slice(start, end, step).indices(shape[d])
        first[d], stride[d], out_shape[d] = lo, st, len(range(lo, hi, st))
    _check_shape(node, out_shape)
    return [_window(b, x, first, stride, out_shape)]


def lower_split(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Consecutive windows along the axis; sizes from `split` (attribute before
    opset 13, input since), else equal parts (the last smaller with num_outputs)."""
    x = _input(node, 0)
    shape = shape_of(x)
    axis = normalize_axis(node.int_attr("axis", 0), len(shape))
    split = node.ints_attr("split") if node.opset < 13 else _known_ints(node, 1, "split")
    count = node.int_attr("num_outputs", len(node.op.results))
    if split is None:
        part = -(-shape[axis] // count)
        split = [part] * (count - 1) + [shape[axis] - part * (count - 1)]
    if sum(split) != shape[axis] or min(split) < 0:
        raise Unsupported(f"split sizes {split} do not cover the {shape[axis]} elements of axis {axis}")
    results, offset = [], 0
    for size in split:
        starts = [offset if d == axis else 0 for d in range(len(shape))]
        out_shape = [size if d == axis else s for d, s in enumerate(shape)]
        results.append(_window(b, x, starts, [1] * len(shape), out_shape))
        offset += size
    return results


def lower_pad(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """`ein.pad` (constant, edge, reflect; negative amounts crop); wrap is a gather
    (negative amounts crop first, as in onnxruntime).

    Before opset 11 pads and value are attributes (`paddings` in opset 1); since,
    inputs: pads and axes (opset 18) must be constants, a runtime constant_value
    fills what a constant mask of the padded border selects.
    """
    x = _input(node, 0)
    ty = node.result_types[0]
    rank = len(shape_of(x))
    mode = node.string_attr("mode", "constant")
    fill: SSAValue | None = None
    if node.opset < 11:
        pads = node.ints_attr("pads") or node.ints_attr("paddings") or [0] * 2 * rank
        value = node.float_attr("value", 0.0)
        axes = list(range(rank))
    else:
        pads = _known_ints(node, 1, "pads") or []
        known = _scalar_input(node, 2, 0.0)
        value = 0.0 if known is None else known
        fill = node.input(2) if known is None and mode == "constant" else None
        axes = [normalize_axis(a, rank) for a in _known_ints(node, 3, "axes") or range(rank)]
    if len(pads) != 2 * len(axes):
        raise Unsupported(f"{len(pads)} pads for {len(axes)} axes")
    low, high = [0] * rank, [0] * rank
    for n, axis in enumerate(axes):
        low[axis], high[axis] = pads[n], pads[n + len(axes)]
    _check_shape(node, [lo + s + hi for lo, s, hi in zip(low, shape_of(x), high)])
    if math.prod(ty.get_shape()) == 0:
        return [_empty(b, ty)]
    if mode == "wrap":
        for axis in range(rank):
            if low[axis] or high[axis]:
                lo, hi = low[axis], high[axis]
                start, kept = max(-lo, 0), shape_of(x)[axis] - max(-lo, 0) - max(-hi, 0)
                wrapped = (np.arange(max(lo, 0) + kept + max(hi, 0)) - max(lo, 0)) % kept + start
                x = _take(b, x, wrapped, axis)
        return [x]
    if mode not in ("constant", "edge", "reflect"):
        raise Unsupported(f"pad mode '{mode}'")
    if not any(low) and not any(high):
        return [x]
    padded = b.insert(PadOp(x, low, high, ty, mode=mode, value=value)).results[0]
    return [padded if fill is None else _fill_border(b, padded, fill, shape_of(x), low, high)]


def _fill_border(
    b: CascadeBuilder, padded: SSAValue, fill: SSAValue, shape: Sequence[int], low: list[int], high: list[int]
) -> SSAValue:
    """`padded` where it holds the input, the runtime scalar `fill` on the padded border.

    The input's region is the product of one bool range per padded dim, so the
    mask is a few 1-D constants, not one of the output's size.
    """
    vars_ = axis_vars(len(shape))
    inputs, exprs, inside = [padded], [vars_], []
    for d, (n, lo, hi) in enumerate(zip(shape, low, high)):
        if lo > 0 or hi > 0:
            kept = n - max(-lo, 0) - max(-hi, 0)
            mask = np.zeros(max(lo, 0) + kept + max(hi, 0), bool)
            mask[max(lo, 0) : max(lo, 0) + kept] = True
            inside.append(f"${len(inputs)}")
            inputs.append(b.constant(mask, TensorType(IntegerType(1), [mask.size])))
            exprs.append([vars_[d]])
    condition = inside[0]
    for term in inside[1:]:
        condition = f"and({condition}, {term})"
    inputs.append(fill)
    exprs.append(_scalar(fill))
    return b.einsum(inputs, exprs, vars_, padded.type, f"select({condition}, $0, ${len(inputs) - 1})")  # type: ignore[arg-type]


# -- indexing by data ----------------------------------------------------------------------------


def lower_gather(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """`ein.gather`; compile-time indices that step evenly become an affine einsum."""
    data, indices = _input(node, 0), _input(node, 1)
    axis = normalize_axis(node.int_attr("axis", 0), len(shape_of(data)))
    ty = node.result_types[0]
    if math.prod(ty.get_shape()) == 0:
        return [_empty(b, ty)]
    rank = len(shape_of(data))
    index_shape = list(ty.get_shape())[axis : axis + len(ty.get_shape()) - rank + 1]
    known = node.constant_input(1)
    if known is not None:
        return [_take(b, data, known.reshape(index_shape), axis)]
    return [b.insert(GatherOp(data, b.reshape(indices, index_shape), axis, ty)).results[0]]


def lower_gather_elements(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    data, indices = _input(node, 0), _input(node, 1)
    ty = node.result_types[0]
    if math.prod(ty.get_shape()) == 0:
        return [_empty(b, ty)]
    axis = normalize_axis(node.int_attr("axis", 0), len(shape_of(data)))
    return [_gather_elements(b, data, indices, axis, ty)]


def lower_gather_nd(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Rows of the data viewed as [batch * indexed, rest], picked by a linearised index.

    `flat[q] = sum_j wrap(indices[q, j]) * stride[j]` (one contraction over the
    index tuple), plus the batch offset of `q`'s leading `batch_dims` dims.
    """
    data, indices = _input(node, 0), _input(node, 1)
    ty = node.result_types[0]
    shape, idx_shape = shape_of(data), shape_of(indices)
    nb = node.int_attr("batch_dims", 0)
    k = idx_shape[-1]
    if math.prod(ty.get_shape()) == 0:
        return [_empty(b, ty)]
    indexed, rest = shape[nb : nb + k], shape[nb + k :]
    q_shape, q_vars = idx_shape[:-1], axis_vars(len(idx_shape) - 1)
    strides = np.array([math.prod(indexed[j + 1 :]) for j in range(k)], np.int64)
    flat = b.einsum(
        [indices, b.constant(strides, i64), b.constant(np.array(indexed, np.int64), i64)],
        [[*q_vars, "j"], ["j"], ["j"]],
        q_vars,
        TensorType(i64, q_shape),
        "select(lt($0, 0), $0 + $2, $0) * $1",
        "add",
    )
    if nb:
        inputs, exprs, terms = [flat], [q_vars], ["$0"]
        batch_strides = [math.prod(shape[d + 1 : nb]) * math.prod(indexed) for d in range(nb)]
        for d in range(nb):
            if shape[d] > 1:
                terms.append(f"${len(inputs)}")
                inputs.append(b.constant(np.arange(shape[d], dtype=np.int64) * batch_strides[d], i64))
                exprs.append([q_vars[d]])
        flat = b.einsum(inputs, exprs, q_vars, TensorType(i64, q_shape), " + ".join(terms))
    rows = b.reshape(data, [math.prod(shape[: nb + k]), math.prod(rest)])
    picked = b.insert(GatherOp(rows, flat, 0, tensor_type([*q_shape, math.prod(rest)], data))).results[0]
    return [b.reshape(picked, ty.get_shape())]


def lower_reverse_sequence(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Per batch entry, time index `t < len ? len - 1 - t : t`, then a gather along time."""
    x, lens = _input(node, 0), _input(node, 1)
    ty = node.result_types[0]
    shape = shape_of(x)
    time_axis, batch_axis = node.int_attr("time_axis", 0), node.int_attr("batch_axis", 1)
    if {time_axis, batch_axis} != {0, 1}:
        raise Unsupported(f"time_axis {time_axis} and batch_axis {batch_axis} must be 0 and 1")
    if math.prod(shape) == 0:
        return [x]
    vars_ = axis_vars(len(shape))
    source = b.einsum(
        [_iota(b, shape[time_axis]), lens],
        [[vars_[time_axis]], [vars_[batch_axis]]],
        vars_,
        TensorType(i64, shape),
        "select(lt($0, $1), $1 - 1 - $0, $0)",
    )
    return [_gather_elements(b, x, source, time_axis, ty)]


# -- scatters and selections ------------------------------------------------------------------------


def _element_positions(b: CascadeBuilder, shape: Sequence[int], indices: SSAValue, axis: int) -> SSAValue:
    """Flat positions in a tensor of `shape` of `i with i[axis] = indices[i]` (negatives wrap):
    `wrap(indices[i]) * stride[axis] + sum_d i[d] * stride[d]`, one einsum over the indices
    and one iota per other dimension (GatherElements, ScatterElements)."""
    idx_shape = shape_of(indices)
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    vars_ = axis_vars(len(idx_shape))
    inputs, exprs = [indices], [vars_]
    terms = [f"select(lt($0, 0), $0 + {shape[axis]}, $0) * {strides[axis]}"]
    for d, size in enumerate(idx_shape):
        if d != axis and size > 1 and strides[d]:
            terms.append(f"${len(inputs)}")
            inputs.append(b.constant(np.arange(size, dtype=np.int64) * strides[d], i64))
            exprs.append([vars_[d]])
    return b.einsum(inputs, exprs, vars_, TensorType(i64, idx_shape), " + ".join(terms))


def scatter_flat(b: CascadeBuilder, data: SSAValue, positions: SSAValue, updates: SSAValue, reduction: str = "none") -> SSAValue:
    """`data` with `updates` stored at flat element `positions` (same shape as the updates)."""
    flat = b.reshape(data, [math.prod(shape_of(data))])
    n = math.prod(shape_of(positions))
    op = ScatterOp(flat, b.reshape(positions, [n]), b.reshape(updates, [n]), 0, reduction)
    return b.reshape(b.insert(op).results[0], shape_of(data))


def _reduction(node: Node) -> str:
    reduction = node.string_attr("reduction", "none")
    if reduction not in SCATTER_REDUCTIONS:
        raise Unsupported(f"reduction '{reduction}'")
    return reduction


def lower_scatter_elements(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """ScatterElements (and Scatter, its old name): `ein.scatter` into the flattened
    data at the flat positions GatherElements would read."""
    data, indices, updates = _input(node, 0), _input(node, 1), _input(node, 2)
    if math.prod(shape_of(updates)) == 0:
        return [data]
    axis = normalize_axis(node.int_attr("axis", 0), len(shape_of(data)))
    return [scatter_flat(b, data, _element_positions(b, shape_of(data), indices, axis), updates, _reduction(node))]


def lower_scatter_nd(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Rows of the data viewed as [indexed, rest], replaced (or folded into) by rows of
    the updates: `ein.scatter` on axis 0 at the linearised index tuples."""
    data, indices, updates = _input(node, 0), _input(node, 1), _input(node, 2)
    shape, idx_shape = shape_of(data), shape_of(indices)
    k = idx_shape[-1]
    q, rest = math.prod(idx_shape[:-1]), math.prod(shape[k:])
    if q == 0 or rest == 0:
        return [data]
    q_vars = axis_vars(len(idx_shape) - 1)
    strides = np.array([math.prod(shape[j + 1 : k]) for j in range(k)], np.int64)
    flat = b.einsum(
        [indices, b.constant(strides, i64), b.constant(np.array(shape[:k], np.int64), i64)],
        [[*q_vars, "j"], ["j"], ["j"]],
        q_vars,
        TensorType(i64, idx_shape[:-1]),
        "select(lt($0, 0), $0 + $2, $0) * $1",
        "add",
    )
    rows = b.reshape(data, [math.prod(shape[:k]), rest])
    op = ScatterOp(rows, b.reshape(flat, [q]), b.reshape(updates, [q, rest]), 0, _reduction(node))
    return [b.reshape(b.insert(op).results[0], shape)]


def lower_tensor_scatter(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """The cache viewed as rows [batch * middle * max_seq, rest]; update row
    (b, m, s) goes to row `(b * M + m) * L + write_indices[b] + s` (mod L if circular)."""
    cache, update, write = _input(node, 0), _input(node, 1), node.input(2)
    shape, up_shape = shape_of(cache), shape_of(update)
    axis = normalize_axis(node.int_attr("axis", -2), len(shape))
    mode = node.string_attr("mode", "linear")
    if axis == 0 or mode not in ("linear", "circular"):
        raise Unsupported(f"axis {axis} (the batch axis) or mode '{mode}'")
    batch, middle, length, seq = shape[0], math.prod(shape[1:axis]), shape[axis], up_shape[axis]
    rest = math.prod(shape[axis + 1 :])
    if math.prod(up_shape) == 0:
        return [cache]
    starts = np.arange(batch * middle, dtype=np.int64).reshape(batch, middle) * length
    inputs, exprs = [b.constant(starts, i64), _iota(b, seq)], [["b", "m"], ["s"]]
    position = "$1"
    if write is not None:
        inputs.append(write)
        exprs.append(["b"])
        position = "$2 + $1"
    if mode == "circular":
        position = f"mod({position}, {length})"
    rows = b.einsum(inputs, exprs, ["b", "m", "s"], TensorType(i64, [batch, middle, seq]), f"$0 + {position}")
    n = batch * middle * seq
    op = ScatterOp(b.reshape(cache, [batch * middle * length, rest]), b.reshape(rows, [n]), b.reshape(update, [n, rest]))
    return [b.reshape(b.insert(op).results[0], shape)]


TOPK_RANK_LIMIT = 256
"""Longest TopK axis lowered to a rank-counting einsum (n^2 compares per row)."""


def lower_top_k(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """TopK along an axis of up to TOPK_RANK_LIMIT elements as einsums, with no
    sort: rank[i] counts the elements that beat x[i] (larger, or smaller if
    `largest` is 0; an equal one beats it when it comes first, so ties keep index
    order as the spec says), then output slot r selects the element whose rank is r
    (a one-hot contraction over the axis). That is O(n^2 + n k) compares per row
    with no data-dependent control flow: an einsum cascade every backend runs.
    Longer axes, where n^2 dominates, are `ein.topk` (an insertion per row that
    rejects most elements with one compare; CPU only) and a gather of the values:
    n = 25,200, k = 100 ran in 0.2 s as einsums, 0.1 ms so (onnxruntime 0.02 ms).

    Outputs are always sorted (valid for `sorted` 0 too). NaNs compare false, so a
    row with NaNs is not ordered as onnxruntime orders it.
    """
    x = _input(node, 0)
    shape = shape_of(x)
    axis = normalize_axis(node.int_attr("axis", -1), len(shape))
    values_ty, indices_ty = node.result_types
    n, k = shape[axis], values_ty.get_shape()[axis]
    vars_ = axis_vars(len(shape))
    others = [*vars_[:axis], "j", *vars_[axis + 1 :]]
    slots = [*vars_[:axis], "r", *vars_[axis + 1 :]]
    if k == 0 or math.prod(shape) == 0:
        return [_empty(b, values_ty), _empty(b, indices_ty)]
    largest = bool(node.int_attr("largest", 1))
    if n > TOPK_RANK_LIMIT:
        indices = b.insert(TopKOp(x, k, axis, largest)).results[0]
        return [_gather_elements(b, x, indices, axis, values_ty), indices]
    beats = "gt" if largest else "lt"
    position = _iota(b, n)
    rank = b.einsum(
        [x, x, position, position], [vars_, others, [vars_[axis]], ["j"]], vars_, TensorType(i64, shape),
        f"select(or({beats}($1, $0), and(eq($1, $0), lt($3, $2))), 1, 0)", "add",
    )
    slot = _iota(b, k)
    pick = [[vars_[axis]], vars_, ["r"]]
    floats = type_to_numpy(values_ty.get_element_type()).kind == "f"
    fill, fold = ("-inf", "max") if floats else ("0", "add")  # max keeps -0.0 and infinities exact
    values = b.einsum([x, rank, slot], pick[1:2] + pick[1:], slots, values_ty, f"select(eq($1, $2), $0, {fill})", fold)
    indices = b.einsum([position, rank, slot], pick, slots, indices_ty, "select(eq($1, $2), $0, 0)", "add")
    return [values, indices]


# -- scans -----------------------------------------------------------------------------------------

SCAN_LIMIT = 32
"""Longest axis CumSum/CumProd scans as one triangular contraction (n² work); longer
axes use a log-step scan (log2 n shifted combines, n log n work)."""

_CUMSUM_ORDER = {(False, False): "le", (True, False): "lt", (False, True): "ge", (True, True): "gt"}
"""(exclusive, reverse) -> how a scanned position j compares with the output position i."""

SCANS: dict[str, tuple[str, int]] = {"CumSum": ("add", 0), "CumProd": ("mul", 1)}
"""Running scans: op type -> (the einsum reduction and map function, its identity)."""


def lower_scan(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Running sum or product along an axis (a filtered rank `j <= i` written with iotas).

    Short axes: `out[.., i, ..] = reduce_j select(j <= i, x[.., j, ..], identity)`.
    Long axes: Hillis-Steele, `y = y (op) shift(y, s)` for s = 1, 2, 4, ... with the
    shift an `ein.pad` that crops one end and fills the other with the identity.
    """
    combine, identity = SCANS[node.op_type]
    x = _input(node, 0)
    ty = node.result_types[0]
    shape = shape_of(x)
    axis_value = _known_ints(node, 1, "axis")
    if not axis_value:
        raise Unsupported(f"{node.op_type} needs its axis")
    axis = normalize_axis(axis_value[0], len(shape))
    exclusive, reverse = bool(node.int_attr("exclusive", 0)), bool(node.int_attr("reverse", 0))
    n = shape[axis]
    if math.prod(shape) == 0:
        return [x]
    vars_ = axis_vars(len(shape))
    if n <= SCAN_LIMIT:
        scanned = [*vars_[:axis], "j", *vars_[axis + 1 :]]
        order = _CUMSUM_ORDER[exclusive, reverse]
        iota = _iota(b, n)
        masked = f"select({order}($1, $2), $0, {identity})"
        return [b.einsum([x, iota, iota], [scanned, ["j"], [vars_[axis]]], vars_, ty, masked, combine)]

    def shift(value: SSAValue, s: int) -> SSAValue:
        low = [0] * len(shape)
        high = [0] * len(shape)
        low[axis], high[axis] = (-s, s) if reverse else (s, -s)
        return b.insert(PadOp(value, low, high, ty, value=float(identity))).results[0]

    y = shift(x, 1) if exclusive else x
    s = 1
    while s < n:
        y = b.elementwise([y, shift(y, s)], f"{combine}($0, $1)", ty)
        s *= 2
    return [y]


# -- Resize ----------------------------------------------------------------------------------------


def _source_coordinates(
    mode: str, n_in: int, n_out: int, scale: np.float32, roi: tuple[float, float]
) -> np.ndarray:
    """The input coordinate of each output position, in float32 as onnxruntime computes it."""
    f = np.float32
    y = np.arange(n_out, dtype=f)
    half = f(0.5)
    if mode == "half_pixel":
        return (y + half) / scale - half
    if mode == "half_pixel_symmetric":
        adjustment = f(n_out) / (scale * f(n_in))
        offset = f(n_in) / f(2) * (f(1) - adjustment)
        return (offset + (y.astype(np.float64) + 0.5) / scale - 0.5).astype(f)
    if mode == "pytorch_half_pixel":
        return (y + half) / scale - half if n_out > 1 else np.zeros(n_out, f)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_half_pixel_for_nn":
        return (y + half) / scale
    if mode == "align_corners":
        return y * f(n_in - 1) / f(n_out - 1) if n_out > 1 else np.zeros(n_out, f)
    if mode == "tf_crop_and_resize":
        start, end = f(roi[0]), f(roi[1])
        if n_out > 1:
            return start * f(n_in - 1) + y * (end - start) * f(n_in - 1) / f(n_out - 1)
        return np.full(n_out, 0.5 * float(start + end) * (n_in - 1), f)
    raise Unsupported(f"coordinate_transformation_mode '{mode}'")


NEAREST: dict[str, Callable[[np.ndarray, bool], np.ndarray]] = {
    "round_prefer_floor": lambda x, down: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x, down: np.floor(x + 0.5),
    "floor": lambda x, down: np.floor(x),
    "ceil": lambda x, down: np.ceil(x),
    "simple": lambda x, down: np.ceil(x) if down else np.trunc(x),
}
"""nearest_mode -> the input index of a source coordinate ("simple" is Resize-10's:
truncate when upsampling, ceil when downsampling)."""


def _linear_filter(x: np.ndarray, a: float) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _cubic_filter(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient `a`."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


FILTERS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], float]] = {
    "linear": (_linear_filter, 2.0),
    "cubic": (_cubic_filter, 4.0),
}
"""Resize mode -> (its filter, the filter's support width in input samples)."""


Taps = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One resized axis: input indices [n_out, K], weights [n_out, K], outside [n_out]."""


def resize_taps(
    mode: str,
    n_in: int,
    n_out: int,
    scale: float,
    coordinates: str = "half_pixel",
    roi: tuple[float, float] = (0.0, 1.0),
    nearest_mode: str = "round_prefer_floor",
    cubic_a: float = -0.75,
    exclude_outside: bool = False,
    antialias: bool = False,
) -> Taps:
    """One axis of a resize as taps: (indices [n_out, K], weights [n_out, K], outside [n_out]).

    `out[o] = sum_t weights[o, t] * x[indices[o, t]]`, except where `outside`
    (tf_crop_and_resize beyond the input), which takes the extrapolation value.
    Windows follow onnxruntime (Pillow's for antialias): taps are the input
    positions within half the filter's support of the source coordinate; the
    support widens by 1/scale when antialiasing a downsample; taps beyond the
    input are clamped to the edge, or dropped with `exclude_outside`.
    """
    f32 = np.float32
    x = _source_coordinates(coordinates, n_in, n_out, f32(scale), roi)
    outside = (x < 0) | (x > n_in - 1) if coordinates == "tf_crop_and_resize" else np.zeros(n_out, bool)
    if mode == "nearest":
        picked = NEAREST[nearest_mode](x, scale < 1).astype(np.int64)
        return np.clip(picked, 0, n_in - 1)[:, None], np.ones((n_out, 1)), outside
    filt, support = FILTERS[mode]
    stretch = 1.0 / scale if antialias and scale < 1 else 1.0
    half_width = support / 2 * stretch
    center = x.astype(np.float64) + 0.5
    first = np.floor(center - half_width + 0.5).astype(np.int64)
    last = np.floor(center + half_width + 0.5).astype(np.int64)
    taps = int((last - first).max())
    positions = first[:, None] + np.arange(taps)[None, :]
    weights = filt((positions - center[:, None] + 0.5) / stretch, cubic_a)
    weights = np.where(positions < last[:, None], weights, 0.0)
    if exclude_outside:
        weights = np.where((positions < 0) | (positions >= n_in), 0.0, weights)
    if exclude_outside or antialias:
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(positions, 0, n_in - 1), weights, outside


def _resize_axis(b: CascadeBuilder, x: SSAValue, axis: int, taps: Taps, extrapolation: float) -> SSAValue:
    """Gather the taps along `axis`, sum them weighted, fill what lies outside."""
    indices, weights, outside = taps
    shape = shape_of(x)
    n_out, k = indices.shape
    out_ty = tensor_type([*shape[:axis], n_out, *shape[axis + 1 :]], x)
    vars_ = axis_vars(len(shape))
    if k == 1:
        y = _take(b, x, indices[:, 0], axis)
    else:
        gathered = _take(b, x, indices, axis)
        dtype = _elem_dtype(x)
        w = b.constant(weights.astype(dtype), x)
        tapped = [*vars_[: axis + 1], "t", *vars_[axis + 1 :]]
        y = b.einsum([gathered, w], [tapped, [vars_[axis], "t"]], vars_, out_ty, "$0 * $1", "add")
    if outside.any():
        mask = b.constant(outside, TensorType(IntegerType(1), [n_out]))
        y = b.einsum([y, mask], [vars_, [vars_[axis]]], vars_, out_ty, f"select($1, {extrapolation!r}, $0)")
    return y


def lower_resize(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Separable resize: one gather-and-weigh per resized axis, tables from numpy.

    Scales, sizes (for keep_aspect_ratio_policy) and roi must be constants; the
    output shape is the inferred one. Integer data resize in nearest mode only:
    onnxruntime rounds interpolated integers in ways einc does not model.

    Where onnxruntime departs from the ONNX spec, einc follows the spec (and
    onnx's reference): onnxruntime copies the input when the output shape equals
    it (or, with antialias, an axis keeps its size) whatever the scales, and
    ignores tf_crop_and_resize's roi on axes of scale 1. Coordinates are float32
    as onnxruntime computes them, so a source coordinate within an ulp of a
    rounding tie may pick the other neighbour in nearest mode.
    """
    x = _input(node, 0)
    ty = node.result_types[0]
    shape, out_shape = shape_of(x), list(ty.get_shape())
    rank = len(shape)
    mode = node.string_attr("mode", "nearest")
    if mode not in ("nearest", *FILTERS):
        raise Unsupported(f"mode '{mode}'")
    if mode != "nearest" and _elem_dtype(x).kind not in "f":
        raise Unsupported(f"{mode} resize of integers: einc does not model how onnxruntime rounds them")
    if math.prod(out_shape) == 0:
        return [_empty(b, ty)]
    if node.opset < 11:
        coordinates, nearest_mode, roi_given = "asymmetric", "simple", None
        scales_given, sizes_given = _known(node, 1, "scales"), None
        if node.op_type == "Upsample" and node.attr("scales") is not None:  # Upsample-7: an attribute
            scales_given = np.array(node.attr("scales").get_values(), np.float32)  # type: ignore[union-attr]
        axes = list(range(rank))
    else:
        coordinates = node.string_attr("coordinate_transformation_mode", "half_pixel")
        nearest_mode = node.string_attr("nearest_mode", "round_prefer_floor")
        roi_given = _known(node, 1, "roi") if coordinates == "tf_crop_and_resize" else None
        scales_given = _known(node, 2, "scales")
        sizes_given = node.constant_input(3)
        axes = [normalize_axis(a, rank) for a in node.ints_attr("axes", list(range(rank))) or []]
    if nearest_mode not in NEAREST:
        raise Unsupported(f"nearest_mode '{nearest_mode}'")
    policy = node.string_attr("keep_aspect_ratio_policy", "stretch")
    scales = [1.0] * rank
    if scales_given is not None and scales_given.size:
        for axis, s in zip(axes, scales_given.reshape(-1).astype(np.float32)):
            scales[axis] = float(s)
    elif policy != "stretch":
        if sizes_given is None:
            raise Unsupported(f"keep_aspect_ratio_policy '{policy}' needs constant sizes")
        ratios = [np.float32(s) / np.float32(shape[a]) for a, s in zip(axes, sizes_given.reshape(-1))]
        pick = {"not_larger": min, "not_smaller": max}.get(policy)
        if pick is None:
            raise Unsupported(f"keep_aspect_ratio_policy '{policy}'")
        for axis in axes:
            scales[axis] = float(pick(ratios))
    else:
        for axis in axes:
            scales[axis] = float(np.float32(out_shape[axis]) / np.float32(shape[axis]))
    rois = [(0.0, 1.0)] * rank
    if roi_given is not None and roi_given.size:
        flat = roi_given.reshape(-1).astype(np.float64)
        for n, axis in enumerate(axes):
            rois[axis] = (float(flat[n]), float(flat[n + len(axes)]))
    extrapolation = node.float_attr("extrapolation_value", 0.0)
    y = x
    for axis in range(rank):
        if out_shape[axis] == shape[axis] and scales[axis] == 1.0 and coordinates != "tf_crop_and_resize":
            continue
        taps = resize_taps(
            mode,
            shape[axis],
            out_shape[axis],
            scales[axis],
            coordinates,
            rois[axis],
            nearest_mode,
            node.float_attr("cubic_coeff_a", -0.75),
            bool(node.int_attr("exclude_outside", 0)),
            bool(node.int_attr("antialias", 0)),
        )
        y = _resize_axis(b, y, axis, taps, extrapolation)
    return [y]


# -- crops, selections and folds with compile-time extents ------------------------------------------


def _pad_or_crop(b: CascadeBuilder, x: SSAValue, low: Sequence[int], high: Sequence[int],
                 interior: Sequence[int] | None = None) -> SSAValue:
    """One `ein.pad` with zero fill (negative amounts crop), or `x` if it changes nothing."""
    interior = list(interior or [0] * len(low))
    if not any(low) and not any(high) and not any(interior):
        return x
    shape = [lo + n + max(n - 1, 0) * i + hi for n, lo, hi, i in zip(shape_of(x), low, high, interior)]
    return b.insert(PadOp(x, low, high, tensor_type(shape, x), interior)).results[0]


def lower_center_crop_pad(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """CenterCropPad: one `ein.pad` that crops (start rounded down) or zero-pads (the
    odd element behind) each axis to the inferred result size."""
    x = _input(node, 0)
    shape, out = shape_of(x), list(node.result_types[0].get_shape())
    low = [(m - n) // 2 if m >= n else -((n - m) // 2) for n, m in zip(shape, out)]
    high = [m - n - lo for n, m, lo in zip(shape, out, low)]
    return [_pad_or_crop(b, x, low, high)]


def lower_compress(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Compress with a compile-time condition: a take of the selected positions
    (numpy.compress; a condition shorter than the axis selects nothing past its end).
    A runtime condition would make the result's shape data-dependent: refused."""
    x = _input(node, 0)
    condition = node.constant_input(1)
    if condition is None:
        raise Unsupported("a runtime 'condition' (input 1): the result's shape would depend on its values")
    axis_attr = node.attr("axis")
    if axis_attr is None:
        x, axis = b.reshape(x, [math.prod(shape_of(x))]), 0
    else:
        axis = normalize_axis(node.int_attr("axis", 0), len(shape_of(x)))
    keep = np.nonzero(condition.reshape(-1)[: shape_of(x)[axis]])[0]
    ty = node.result_types[0]
    if keep.size == 0:
        return [_empty(b, ty)]
    return [b.reshape(_take(b, x, keep, axis), ty.get_shape())]


def lower_col2im(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Col2Im (torch's fold): the transpose of im2col, summed where blocks overlap.

    The columns [N, C*K, L] are viewed as [N, C, k.., l..]; the block positions l
    are spread to the image grid as ConvTranspose does (stride - 1 zeros between,
    padded by span - 1 - begin pad), then out[n, c, p..] = sum_r X'[n, c, r.., p + (k-1-r)*d..]:
    one einsum with affine indices and no weight.
    """
    x = _input(node, 0)
    image = _known_ints(node, 1, "image_shape")
    block = _known_ints(node, 2, "block_shape")
    assert image is not None and block is not None
    k = len(block)
    strides = node.ints_attr("strides", [1] * k) or [1] * k
    dilations = node.ints_attr("dilations", [1] * k) or [1] * k
    pads = node.ints_attr("pads", [0] * 2 * k) or [0] * 2 * k
    spans = [(kk - 1) * d + 1 for kk, d in zip(block, dilations)]
    blocks = [(i + pads[d] + pads[k + d] - span) // s + 1 for d, (i, span, s) in enumerate(zip(image, spans, strides))]
    n, ck, length = shape_of(x)
    if ck % math.prod(block) or length != math.prod(blocks):
        raise Unsupported(f"input {[n, ck, length]} is not the columns of blocks {block} over an image {image}")
    c = ck // math.prod(block)
    view = b.reshape(x, [n, c, *block, *blocks])
    low = [span - 1 - pb for span, pb in zip(spans, pads[:k])]
    high = [o + span - 1 - lo - (nb - 1) * s - 1 for o, span, lo, nb, s in zip(image, spans, low, blocks, strides)]
    spread = _pad_or_crop(b, view, [0] * (2 + k) + low, [0] * (2 + k) + high, [0] * (2 + k) + [s - 1 for s in strides])
    ps, rs = axis_vars(k, "p"), axis_vars(k, "r")
    taps = [IndexExpr.affine({p: 1, r: -d}, (kk - 1) * d) for p, r, d, kk in zip(ps, rs, dilations, block)]
    return [b.einsum([spread], [["n", "c", *rs, *taps]], ["n", "c", *ps], node.result_types[0], "$0", "add")]


LOWERINGS: dict[str, Lowering] = {
    "Cast": lower_cast,
    "CastLike": lower_cast,
    "Constant": lower_constant,
    "ConstantOfShape": lower_constant_of_shape,
    "Shape": lower_shape,
    "Size": lower_size,
    "Range": lower_range,
    "EyeLike": lower_eye_like,
    "Reshape": lower_view,
    "Flatten": lower_view,
    "Squeeze": lower_view,
    "Unsqueeze": lower_view,
    "Identity": lower_identity,
    "Dropout": lower_dropout,
    "Transpose": lower_transpose,
    "DepthToSpace": lower_depth_to_space,
    "SpaceToDepth": lower_space_to_depth,
    "Expand": lower_expand,
    "Where": lower_where,
    "Tile": lower_tile,
    "Trilu": lower_trilu,
    "OneHot": lower_one_hot,
    "Concat": lower_concat,
    "Slice": lower_slice,
    "Split": lower_split,
    "Pad": lower_pad,
    "Gather": lower_gather,
    "GatherElements": lower_gather_elements,
    "GatherND": lower_gather_nd,
    "ReverseSequence": lower_reverse_sequence,
    "ScatterElements": lower_scatter_elements,
    "Scatter": lower_scatter_elements,
    "ScatterND": lower_scatter_nd,
    "TensorScatter": lower_tensor_scatter,
    "TopK": lower_top_k,
    **{op: lower_scan for op in SCANS},
    "Resize": lower_resize,
    "Upsample": lower_resize,
    "CenterCropPad": lower_center_crop_pad,
    "Compress": lower_compress,
    "Col2Im": lower_col2im,
}
