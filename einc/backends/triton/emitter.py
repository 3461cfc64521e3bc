"""Writing Triton source: an indented buffer, CSE into named temporaries, map functions.

The pieces every kernel template shares, in the manner of TorchInductor's code
generation: `IndentedBuffer` collects lines at the current indentation, `CSE`
names each distinct expression once (`v3 = tl.exp(v1 - v2)`), `TritonOps` has one
method per function of the map language returning a source fragment, and `Tile`
evaluates einsums element by element over a tile of their iteration space:
loads through each operand's strided view, maps, and casts to the stored type.
Addresses are affine: a tensor lives in a buffer at an offset with one stride per
dimension (`View`), so slices, transposes and broadcasts never need a copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
from xdsl.ir import SSAValue

from einc.diagnostics import EincError
from einc.ir import mapexpr
from einc.ir.ein import EinsumOp
from einc.ir.indexexpr import IndexExpr

TL_TYPES: dict[np.dtype, str] = {
    np.dtype(np.float32): "tl.float32",
    np.dtype(np.float64): "tl.float64",
    np.dtype(np.float16): "tl.float16",
    np.dtype(ml_dtypes.bfloat16): "tl.bfloat16",
    np.dtype(np.int8): "tl.int8",
    np.dtype(np.int16): "tl.int16",
    np.dtype(np.int32): "tl.int32",
    np.dtype(np.int64): "tl.int64",
    np.dtype(np.uint8): "tl.uint8",
    np.dtype(np.uint16): "tl.uint16",
    np.dtype(np.uint32): "tl.uint32",
    np.dtype(np.uint64): "tl.uint64",
    np.dtype(np.bool_): "tl.int1",
}
"""Storage dtype -> Triton element type of its pointers. The other bit formats
(float8, float4, 4- and 2-bit integers) have none here: `compute_type` refuses them."""

FLOATS = ("tl.float64", "tl.float32", "tl.float16", "tl.bfloat16")
BOOL = "tl.int1"


def compute_type(dtype: np.dtype) -> str:
    """The type elements of `dtype` are computed in: 16-bit floats widen to fp32."""
    ty = TL_TYPES.get(np.dtype(dtype))
    if ty is None:
        raise EincError(f"the triton target cannot emit this: element type {np.dtype(dtype).name} has no Triton "
                        "type here (float8, float4, 4- and 2-bit integers compile for the CPU target)")
    return "tl.float32" if ty in ("tl.float16", "tl.bfloat16") else ty


def _rank(ty: str) -> tuple[int, int]:
    """Promotion order, numpy-like: bool < ints (by width) < floats (by width)."""
    if ty == BOOL:
        return (0, 1)
    if ty in FLOATS:
        return (2, {"tl.float64": 64}.get(ty, 32))
    return (1, int("".join(c for c in ty if c.isdigit())))


def common_type(types: Sequence[str]) -> str:
    return max(types, key=_rank) if types else "tl.float32"


class IndentedBuffer:
    """Lines of source at a current indentation (`with buf.indent(): ...`)."""

    def __init__(self, indent: int = 0):
        self.lines: list[str] = []
        self.level = indent

    def writeline(self, line: str = "") -> None:
        self.lines.append("    " * self.level + line if line else "")

    def writelines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.writeline(line)

    @contextmanager
    def indent(self, levels: int = 1) -> Iterator[None]:
        self.level += levels
        try:
            yield
        finally:
            self.level -= levels

    def getvalue(self) -> str:
        return "\n".join(self.lines) + "\n"


class CSE:
    """Names each distinct expression once per scope; names and literals pass through.

    A child scope (`CSE.child`) sees its parent's names but adds its own, so a loop
    body reuses values computed before the loop without leaking its own out.
    """

    def __init__(self, prefix: str = "v", parent: CSE | None = None):
        self.prefix = prefix
        self.cache: dict[str, str] = dict(parent.cache) if parent else {}
        self.counter: list[int] = parent.counter if parent else [0]

    def child(self) -> CSE:
        return CSE(self.prefix, self)

    def __call__(self, buf: IndentedBuffer, expr: str, name: str | None = None) -> str:
        if expr.isidentifier() or _is_literal(expr):
            return expr
        if expr in self.cache:
            return self.cache[expr]
        if name is None:
            name = f"{self.prefix}{self.counter[0]}"
            self.counter[0] += 1
        buf.writeline(f"{name} = {expr}")
        self.cache[expr] = name
        return name


def _is_literal(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def literal(value: float, ty: str) -> str:
    """A scalar literal that takes the type of the values beside it."""
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else '-float("inf")'
    if ty in FLOATS:
        return repr(float(value))
    if ty == BOOL:
        return "True" if value else "False"
    return str(int(value))


@dataclass(frozen=True)
class Value:
    """A typed fragment of source: a name, a literal or an expression."""

    text: str
    ty: str


class TritonOps:
    """One method per map-language function: the Triton source that computes it.

    Functions Triton's `tl` lacks are written with ones it has, so the same kernel
    runs on the GPU and in Triton's CPU interpreter (which has no libdevice); only
    asin, acos and atan use libdevice, and so run on the GPU alone.
    """

    def add(self, a: str, b: str) -> str:
        return f"{a} + {b}"

    def sub(self, a: str, b: str) -> str:
        return f"{a} - {b}"

    def mul(self, a: str, b: str) -> str:
        return f"{a} * {b}"

    def div(self, a: str, b: str, ty: str) -> str:
        # Triton's integer `//` truncates, as C and the map language do.
        return f"{a} / {b}" if ty in FLOATS else f"{a} // {b}"

    def max(self, a: str, b: str) -> str:
        return f"tl.maximum({a}, {b})"

    def min(self, a: str, b: str) -> str:
        return f"tl.minimum({a}, {b})"

    def pow(self, a: str, b: str, ty: str) -> str:
        # exp(b log|a|), signed for negative bases: odd integral b flips it, fractional b is nan.
        mag = f"tl.exp({b} * tl.log(tl.abs({a})))"
        odd = f"({b} - 2.0 * tl.floor({b} * 0.5) == 1.0)"
        neg = f'tl.where(tl.floor({b}) == {b}, tl.where({odd}, -{mag}, {mag}), float("nan"))'
        return f"tl.where({a} < 0, {neg}, tl.where({b} == 0, 1.0, {mag}))"

    def fmod(self, a: str, b: str, ty: str) -> str:
        if ty not in FLOATS:
            return f"{a} % {b}"  # C remainder: the sign of the dividend
        q = f"({a} / {b})"
        return f"{a} - {b} * tl.where({q} < 0, tl.ceil({q}), tl.floor({q}))"

    def mod(self, a: str, b: str, ty: str) -> str:
        r = f"({self.fmod(a, b, ty)})"
        return f"tl.where(({r} != 0) & (({r} < 0) != ({b} < 0)), {r} + {b}, {r})"

    def neg(self, a: str) -> str:
        return f"-{a}"

    def abs(self, a: str) -> str:
        return f"tl.abs({a})"

    def sign(self, a: str, ty: str) -> str:
        one, zero = literal(1, ty), literal(0, ty)
        return f"tl.where({a} > {zero}, {one}, tl.where({a} < {zero}, -{one}, {zero}))"

    def exp(self, a: str) -> str:
        return f"tl.exp({a})"

    def log(self, a: str) -> str:
        return f"tl.log({a})"

    def sqrt(self, a: str) -> str:
        return f"tl.sqrt({a})"

    def tanh(self, a: str) -> str:
        return f"2.0 * tl.sigmoid(2.0 * {a}) - 1.0"

    def sigmoid(self, a: str) -> str:
        return f"tl.sigmoid({a})"

    def erf(self, a: str) -> str:
        return f"tl.erf({a})"

    def softplus(self, a: str) -> str:
        return f"tl.maximum({a}, 0.0) + tl.log(1.0 + tl.exp(-tl.abs({a})))"

    def floor(self, a: str, ty: str) -> str:
        return f"tl.floor({a})" if ty in FLOATS else a

    def ceil(self, a: str, ty: str) -> str:
        return f"tl.ceil({a})" if ty in FLOATS else a

    def round(self, a: str, ty: str) -> str:
        if ty not in FLOATS:
            return a
        f = f"tl.floor({a})"
        odd = f"({f} - 2.0 * tl.floor({f} * 0.5))"
        return f"tl.where({a} - {f} == 0.5, {f} + {odd}, tl.floor({a} + 0.5))"

    def sin(self, a: str) -> str:
        return f"tl.sin({a})"

    def cos(self, a: str) -> str:
        return f"tl.cos({a})"

    def tan(self, a: str) -> str:
        return f"tl.sin({a}) / tl.cos({a})"

    def asin(self, a: str) -> str:
        return f"libdevice.asin({a})"

    def acos(self, a: str) -> str:
        return f"libdevice.acos({a})"

    def atan(self, a: str) -> str:
        return f"libdevice.atan({a})"

    def sinh(self, a: str) -> str:
        return f"0.5 * (tl.exp({a}) - tl.exp(-{a}))"

    def cosh(self, a: str) -> str:
        return f"0.5 * (tl.exp({a}) + tl.exp(-{a}))"

    def asinh(self, a: str) -> str:
        return f"tl.where({a} < 0, -1.0, 1.0) * tl.log(tl.abs({a}) + tl.sqrt({a} * {a} + 1.0))"

    def acosh(self, a: str) -> str:
        return f"tl.log({a} + tl.sqrt({a} * {a} - 1.0))"

    def atanh(self, a: str) -> str:
        return f"0.5 * tl.log((1.0 + {a}) / (1.0 - {a}))"

    def shl(self, a: str, b: str) -> str:
        return f"{a} << {b}"

    def shr(self, a: str, b: str) -> str:
        return f"{a} >> {b}"

    def bitand(self, a: str, b: str) -> str:
        return f"{a} & {b}"

    def bitor(self, a: str, b: str) -> str:
        return f"{a} | {b}"

    def bitxor(self, a: str, b: str) -> str:
        return f"{a} ^ {b}"

    def bitnot(self, a: str) -> str:
        return f"~{a}"

    def lt(self, a: str, b: str) -> str:
        return f"{a} < {b}"

    def le(self, a: str, b: str) -> str:
        return f"{a} <= {b}"

    def gt(self, a: str, b: str) -> str:
        return f"{a} > {b}"

    def ge(self, a: str, b: str) -> str:
        return f"{a} >= {b}"

    def eq(self, a: str, b: str) -> str:
        return f"{a} == {b}"

    def ne(self, a: str, b: str) -> str:
        return f"{a} != {b}"

    def isnan(self, a: str) -> str:
        return f"{a} != {a}"

    def isinf(self, a: str) -> str:
        return f'tl.abs({a}) == float("inf")'

    def and_(self, a: str, b: str) -> str:
        return f"{a} & {b}"

    def or_(self, a: str, b: str) -> str:
        return f"{a} | {b}"

    def xor(self, a: str, b: str) -> str:
        return f"{a} ^ {b}"

    def not_(self, a: str) -> str:
        return f"{a} == 0"

    def select(self, c: str, a: str, b: str) -> str:
        return f"tl.where({c}, {a}, {b})"


OPS = TritonOps()
TYPED = {"div", "pow", "fmod", "mod", "sign", "floor", "ceil", "round"}
"""Functions whose Triton form depends on the operands' type (float or integer)."""
FLOAT_ONLY = {
    "exp", "log", "sqrt", "tanh", "sigmoid", "erf", "softplus", "sin", "cos", "tan", "asin", "acos",
    "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "pow",
}
"""Functions that compute in floats whatever their operands are."""


def has_triton_form(fn: str) -> bool:
    return hasattr(OPS, fn if hasattr(OPS, fn) else f"{fn}_")


def _method(fn: str):
    return getattr(OPS, fn) if hasattr(OPS, fn) else getattr(OPS, f"{fn}_")


def emit_map(
    expr: mapexpr.Expr, inputs: Sequence[Value], buf: IndentedBuffer, cse: CSE, hint: str | None = None
) -> Value:
    """The source of a map expression over typed inputs; every call gets a temporary."""
    match expr:
        case mapexpr.Input(index):
            return inputs[index]
        case mapexpr.Const(value):
            ty = hint or "tl.float32"
            return Value(literal(value, ty), ty)
        case mapexpr.Call(fn, args):
            kind = mapexpr.FUNCTIONS[fn].kind
            # Literals adopt the type of their siblings: type the non-literals first.
            typed = [None if isinstance(a, mapexpr.Const) else emit_map(a, inputs, buf, cse) for a in args]
            operand_types = [v.ty for v in typed if v is not None]
            if kind == "select":
                operand_types = [v.ty for v in typed[1:] if v is not None]
            common = common_type(operand_types) if operand_types else (hint or "tl.float32")
            if fn in FLOAT_ONLY and common not in FLOATS:
                common = "tl.float32"
            values = []
            for n, (a, v) in enumerate(zip(args, typed)):
                want = BOOL if (kind == "logical" or (kind == "select" and n == 0)) else common
                if v is None:
                    v = emit_map(a, inputs, buf, cse, want)
                elif v.ty != want and kind != "test":
                    v = Value(cse(buf, f"{v.text}.to({want})"), want)
                values.append(v.text)
            result_ty = BOOL if kind in ("compare", "test", "logical") else common
            text = _method(fn)(*values, common) if fn in TYPED else _method(fn)(*values)
            return Value(cse(buf, text), result_ty)
    raise AssertionError(expr)


@dataclass(frozen=True)
class Linear:
    """An affine address: `const + sum(coef * var)` in elements."""

    const: int
    coefs: tuple[tuple[str, int], ...]

    def rename(self, names: Mapping[str, str]) -> Linear:
        merged: dict[str, int] = {}
        for var, c in self.coefs:
            merged[names[var]] = merged.get(names[var], 0) + c
        return Linear(self.const, tuple((v, c) for v, c in merged.items() if c))


@dataclass(frozen=True)
class View:
    """Where a tensor lives: a buffer, an element offset, and one stride per dimension.

    Views of one buffer share its storage: a reshape that keeps the element
    order, a transpose, a slice and a broadcast (stride 0) are all views.
    """

    buffer: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    dtype: np.dtype

    @staticmethod
    def contiguous(buffer: str, shape: Sequence[int], dtype: np.dtype, offset: int = 0) -> View:
        strides, acc = [], 1
        for size in reversed(shape):
            strides.append(acc)
            acc *= size
        return View(buffer, tuple(shape), tuple(reversed(strides)), offset, np.dtype(dtype))

    @property
    def is_contiguous(self) -> bool:
        dense = View.contiguous(self.buffer, self.shape, self.dtype, self.offset)
        return all(s == d for s, d, n in zip(self.strides, dense.strides, self.shape) if n != 1)

    def address(self, exprs: Sequence[IndexExpr]) -> Linear:
        """The element address of `self[exprs]` as an affine form of the index variables."""
        const = self.offset
        coefs: dict[str, int] = {}
        for stride, expr in zip(self.strides, exprs):
            const += stride * expr.const
            for var, c in expr.terms:
                coefs[var] = coefs.get(var, 0) + stride * c
        return Linear(const, tuple((v, c) for v, c in coefs.items() if c))

    def select(self, exprs: Sequence[IndexExpr], out_vars: Sequence[str], out_shape: Sequence[int]) -> View:
        """The view `out[out_vars] = self[exprs]`: a transpose, slice or broadcast."""
        form = self.address(exprs)
        coefs = dict(form.coefs)
        return View(self.buffer, tuple(out_shape), tuple(coefs.get(v, 0) for v in out_vars), form.const, self.dtype)

    def reshape(self, shape: Sequence[int]) -> View | None:
        """The same elements in row-major order with a new shape, if strides can say so.

        PyTorch's rule (`computeStride`): each run of source dims that are
        contiguous with each other may be split or merged freely.
        """
        old, old_strides, new = list(self.shape), list(self.strides), list(shape)
        if not old or math.prod(new) <= 1:
            return View(self.buffer, tuple(new), (0,) * len(new), self.offset, self.dtype)
        strides = [0] * len(new)
        view_d = len(new) - 1
        base = old_strides[-1]
        tensor_numel = view_numel = 1
        for d in reversed(range(len(old))):
            tensor_numel *= old[d]
            if d == 0 or (old[d - 1] != 1 and old_strides[d - 1] != tensor_numel * base):
                while view_d >= 0 and (view_numel < tensor_numel or new[view_d] == 1):
                    strides[view_d] = view_numel * base
                    view_numel *= new[view_d]
                    view_d -= 1
                if view_numel != tensor_numel:
                    return None
                if d > 0:
                    base = old_strides[d - 1]
                    tensor_numel = view_numel = 1
        if view_d != -1:
            return None
        return View(self.buffer, tuple(new), tuple(strides), self.offset, self.dtype)


@dataclass
class Axis:
    """A group of canonical dims flattened into one tile axis: rows, columns or the grid."""

    dims: list[str]
    offsets: str
    """Source of the flat index along the axis: `offs_m[:, None]`, a scalar, ..."""
    mask: str | None
    """Source of the bound check along the axis, or None where the tile fits exactly."""


@dataclass
class Tile:
    """Evaluates einsums over a tile: canonical dims -> source of their index values.

    `extents` gives each canonical dim's range, `axes` how dims are laid on the
    tile; `views` the buffers of values read from memory; `values` the in-kernel
    values computed so far (tile sources). `var_map` maps each einsum's own index
    variables to canonical dims (see analysis.cascades.Space).
    """

    buf: IndentedBuffer
    cse: CSE
    extents: dict[str, int]
    axes: list[Axis]
    views: dict[SSAValue, View]
    values: dict[SSAValue, Value] = field(default_factory=dict)
    overrides: dict[SSAValue, tuple[str, dict[str, str]]] = field(default_factory=dict)
    """Kernel inputs computed from indices rather than loaded (a causal mask): a
    format template and the canonical dim of each of its fields."""

    def child(self, buf: IndentedBuffer | None = None) -> Tile:
        return Tile(buf or self.buf, self.cse.child(), self.extents, self.axes, self.views, dict(self.values), self.overrides)

    def axis_of(self, dim: str) -> Axis:
        return next(a for a in self.axes if dim in a.dims)

    def dim_value(self, dim: str) -> str:
        """The index of canonical dim `dim` over the tile (unflattened from its axis)."""
        axis = self.axis_of(dim)
        inner = math.prod(self.extents[d] for d in axis.dims[axis.dims.index(dim) + 1 :])
        text = axis.offsets if inner == 1 else f"{axis.offsets} // {inner}"
        if axis.dims[0] != dim:
            text = f"({text}) % {self.extents[dim]}" if inner != 1 else f"{text} % {self.extents[dim]}"
        return self.cse(self.buf, text, None)

    def offset(self, form: Linear) -> str:
        """Source of an affine address over canonical dims, flat where the layout allows."""
        coefs = dict(form.coefs)
        terms: list[str] = []
        for axis in self.axes:
            used = [d for d in axis.dims if coefs.get(d)]
            if not used:
                continue
            live = [d for d in axis.dims if self.extents[d] != 1]
            step = coefs.get(live[-1], 0) if live else 0
            dense = step != 0 and all(
                coefs.get(d, 0) == step * math.prod(self.extents[e] for e in live[i + 1 :])
                for i, d in enumerate(live)
            )
            if dense:
                terms.append(axis.offsets if step == 1 else f"{axis.offsets} * {step}")
                for d in axis.dims:
                    coefs.pop(d, None)
                continue
            for d in used:
                c = coefs.pop(d)
                terms.append(self.dim_value(d) if c == 1 else f"{self.dim_value(d)} * {c}")
        assert not coefs, f"dims {list(coefs)} are on no tile axis"
        if form.const or not terms:
            terms.append(str(form.const))
        return " + ".join(terms)

    def mask(self, form: Linear | Sequence[str]) -> str | None:
        dims = [d for d, _ in form.coefs] if isinstance(form, Linear) else list(form)
        masks = []
        for axis in self.axes:
            if axis.mask and any(d in axis.dims for d in dims) and axis.mask not in masks:
                masks.append(axis.mask)
        if len(masks) > 1:
            masks = [f"({m})" if " " in m else m for m in masks]
        return " & ".join(masks) if masks else None

    def load(
        self, value: SSAValue, exprs: Sequence[IndexExpr], names: Mapping[str, str], raw: bool = False,
        name: str | None = None,
    ) -> Value:
        """A kernel input read at affine `exprs` (einsum vars renamed to canonical dims),
        in its compute type (or as stored, `raw`, for `tl.dot` operands)."""
        view = self.views[value]
        ty = TL_TYPES[view.dtype] if raw else compute_type(view.dtype)
        if value in self.overrides:
            template, dims = self.overrides[value]
            text = template.format(**{key: self.dim_value(dim) for key, dim in dims.items()})
            return Value(self.cse(self.buf, text), TL_TYPES[view.dtype])
        form = view.address(exprs).rename(names)
        mask = self.mask(form)
        args = f"{view.buffer} + {self.offset(form)}"
        if mask:
            args += f", mask={mask}, other={literal(0, TL_TYPES[view.dtype])}"
        text = f"tl.load({args})"
        if TL_TYPES[view.dtype] != ty:
            text += f".to({ty})"
        return Value(self.cse(self.buf, text, name), ty)

    def operands(self, op: EinsumOp, names: Mapping[str, str]) -> list[Value]:
        """The typed tile of each operand of `op`: computed in the kernel, or loaded."""
        values = []
        for value, exprs in zip(op.inputs, op.input_exprs):
            values.append(self.values[value] if value in self.values else self.load(value, exprs, names))
        return values

    def einsum(self, op: EinsumOp, names: Mapping[str, str]) -> Value:
        """The map of an einsum without reduce over the tile, in its compute type."""
        out_ty = compute_type(_dtype_of(op.output))
        result = emit_map(op.map_expr, self.operands(op, names), self.buf, self.cse, out_ty)
        if result.ty != out_ty:
            result = Value(self.cse(self.buf, f"{result.text}.to({out_ty})"), out_ty)
        self.values[op.output] = result
        return result

    def store(self, view: View, dims: Sequence[str], value: Value) -> None:
        """Store `value` (a tile over canonical `dims`, in order) through `view`."""
        form = Linear(view.offset, tuple((d, s) for d, s in zip(dims, view.strides) if s))
        text = value.text
        if TL_TYPES[view.dtype] != value.ty:
            text = f"{text}.to({TL_TYPES[view.dtype]})"
        offset, mask = self.offset(form), self.mask(list(dims))
        if not form.coefs:
            # One element (a 0-d result, or a view of one with stride 0): the value
            # may still be a block ([rows, 1] after a reduction), and Triton stores a
            # block only through a block of pointers. The flat index of the tile's
            # extent-1 axes is that block: 0 on every lane in bounds.
            single = [a for a in self.axes if all(self.extents[d] == 1 for d in a.dims)]
            offset = " + ".join([a.offsets for a in single] + ([offset] if form.const else [])) or offset
            masks = list(dict.fromkeys(m for m in [*(a.mask for a in single), mask] if m))
            mask = " & ".join(f"({m})" if " " in m and len(masks) > 1 else m for m in masks) or None
        self.buf.writeline(f"tl.store({view.buffer} + {offset}, {text}" + (f", mask={mask})" if mask else ")"))


def _dtype_of(value: SSAValue) -> np.dtype:
    from einc.ir.dtypes import type_to_numpy

    return type_to_numpy(value.type.get_element_type())  # type: ignore[attr-defined]


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())
