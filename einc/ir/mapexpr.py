"""The scalar language of an einsum's map: a small expression over its inputs.

An extended einsum combines the elements of its inputs with a *map* before it
reduces; the map is a scalar expression over the inputs `$0`, `$1`, ... written
in infix form, e.g. `$0 * $1`, `exp($0 - $1)`, `max($0, 0.0)`. It is stored as a
string on `ein.einsum` so the IR reads like the einsum it is, and parsed here into
a tree that every backend walks with a table of its own (scalar function ->
code). Keeping one tree type for all backends means a new function is a row in
`FUNCTIONS` and a row in each backend's table, nothing else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Input:
    """The element of input number `index` at the current point."""

    index: int


@dataclass(frozen=True)
class Const:
    """A scalar literal (inf and nan included)."""

    value: float


@dataclass(frozen=True)
class Call:
    """A scalar function applied to argument expressions."""

    fn: str
    args: tuple[Expr, ...]


Expr = Input | Const | Call


@dataclass(frozen=True)
class Function:
    """A scalar function of the map language: arity, numpy meaning, typing kind.

    `kind` says how the function types its result: "arith" computes in the
    common type of its operands, "compare" and "test" give a bool from
    operands of any type, "logical" takes and gives bools, "select" picks
    between two operands of a common type by a bool.
    """

    arity: int
    numpy: Callable[..., np.ndarray]
    infix: str | None = None
    kind: str = "arith"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return np.vectorize(math.erf, otypes=[x.dtype if x.dtype.kind == "f" else np.float64])(x)


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow for large x."""
    return np.logaddexp(0.0, x)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True division on floats; on integers, truncating division (C, onnxruntime)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        q = np.floor_divide(a, b)
        return np.where((q * b != a) & ((a < 0) != (b < 0)), q + 1, q)
    return np.divide(a, b)


def _mod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Remainder with the sign of the divisor (ONNX Mod, fmod=0; Python's %)."""
    return np.mod(a, b)


FUNCTIONS: dict[str, Function] = {
    "add": Function(2, np.add, "+"),
    "sub": Function(2, np.subtract, "-"),
    "mul": Function(2, np.multiply, "*"),
    "div": Function(2, _div, "/"),
    "max": Function(2, np.maximum),
    "min": Function(2, np.minimum),
    "pow": Function(2, np.power),
    "mod": Function(2, _mod),
    "fmod": Function(2, np.fmod),
    "neg": Function(1, np.negative),
    "abs": Function(1, np.abs),
    "sign": Function(1, np.sign),
    "exp": Function(1, np.exp),
    "log": Function(1, np.log),
    "sqrt": Function(1, np.sqrt),
    "tanh": Function(1, np.tanh),
    "sigmoid": Function(1, _sigmoid),
    "erf": Function(1, _erf),
    "softplus": Function(1, _softplus),
    "floor": Function(1, np.floor),
    "ceil": Function(1, np.ceil),
    "round": Function(1, np.rint),
    "sin": Function(1, np.sin),
    "cos": Function(1, np.cos),
    "tan": Function(1, np.tan),
    "asin": Function(1, np.arcsin),
    "acos": Function(1, np.arccos),
    "atan": Function(1, np.arctan),
    "sinh": Function(1, np.sinh),
    "cosh": Function(1, np.cosh),
    "asinh": Function(1, np.arcsinh),
    "acosh": Function(1, np.arccosh),
    "atanh": Function(1, np.arctanh),
    "shl": Function(2, np.left_shift),
    "shr": Function(2, np.right_shift),
    "bitand": Function(2, np.bitwise_and),
    "bitor": Function(2, np.bitwise_or),
    "bitxor": Function(2, np.bitwise_xor),
    "bitnot": Function(1, np.invert),
    "lt": Function(2, np.less, kind="compare"),
    "le": Function(2, np.less_equal, kind="compare"),
    "gt": Function(2, np.greater, kind="compare"),
    "ge": Function(2, np.greater_equal, kind="compare"),
    "eq": Function(2, np.equal, kind="compare"),
    "ne": Function(2, np.not_equal, kind="compare"),
    "isnan": Function(1, np.isnan, kind="test"),
    "isinf": Function(1, np.isinf, kind="test"),
    "and": Function(2, np.logical_and, kind="logical"),
    "or": Function(2, np.logical_or, kind="logical"),
    "xor": Function(2, np.logical_xor, kind="logical"),
    "not": Function(1, np.logical_not, kind="logical"),
    "select": Function(3, np.where, kind="select"),
}
"""Every function the map language knows. Binary operators are written infix.
`round` rounds half to even (ONNX Round); `mod` takes the divisor's sign; `div`
truncates on integers; `shr` is numpy's right_shift (arithmetic on signed values); `bitand`, `bitor`,
`bitxor`, `bitnot` work on the bits of integers (`and`, `or`, `xor`, `not` on bools)."""

_INFIX = {f.infix: name for name, f in FUNCTIONS.items() if f.infix}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<input>\$\d+)|(?P<name>[A-Za-z_]\w*)|(?P<op>[-+*/(),]))"
)


class MapExprError(ValueError):
    """A map expression that does not parse or names an unknown function."""


def parse(text: str) -> Expr:
    """Parse an infix map expression such as `exp($0 - $1)`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise MapExprError(f"unexpected character at {pos} in map '{text}'")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    parser = _Parser(tokens, text)
    expr = parser.expr(0)
    if parser.pos != len(tokens):
        raise MapExprError(f"trailing input in map '{text}'")
    return expr


class _Parser:
    """Precedence climbing over the token list."""

    def __init__(self, tokens: list[tuple[str, str]], text: str):
        self.tokens, self.text, self.pos = tokens, text, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise MapExprError(f"expected '{value or 'a term'}' in map '{self.text}'")
        self.pos += 1
        return tok

    def expr(self, min_prec: int) -> Expr:
        lhs = self.unary()
        while (tok := self.peek()) and tok[0] == "op" and tok[1] in _PRECEDENCE:
            prec = _PRECEDENCE[tok[1]]
            if prec < min_prec:
                break
            self.take()
            rhs = self.expr(prec + 1)
            lhs = Call(_INFIX[tok[1]], (lhs, rhs))
        return lhs

    def unary(self) -> Expr:
        tok = self.peek()
        if tok == ("op", "-"):
            self.take()
            operand = self.unary()
            if isinstance(operand, Const):
                return Const(-operand.value)
            return Call("neg", (operand,))
        return self.atom()

    def atom(self) -> Expr:
        kind, value = self.take()
        if kind == "num":
            return Const(float(value))
        if kind == "input":
            return Input(int(value[1:]))
        if kind == "op" and value == "(":
            inner = self.expr(0)
            self.take(")")
            return inner
        if kind == "name":
            if value in ("inf", "nan"):
                return Const(float(value))
            if value not in FUNCTIONS:
                raise MapExprError(f"unknown function '{value}' in map '{self.text}'")
            self.take("(")
            args = [self.expr(0)]
            while self.peek() == ("op", ","):
                self.take()
                args.append(self.expr(0))
            self.take(")")
            if len(args) != FUNCTIONS[value].arity:
                raise MapExprError(
                    f"'{value}' takes {FUNCTIONS[value].arity} arguments, "
                    f"got {len(args)} in map '{self.text}'"
                )
            return Call(value, tuple(args))
        raise MapExprError(f"unexpected '{value}' in map '{self.text}'")


def render(expr: Expr, parent_prec: int = 0) -> str:
    """Print an expression in the infix form that `parse` reads back."""
    match expr:
        case Input(index):
            return f"${index}"
        case Const(value):
            if math.isinf(value):
                return "inf" if value > 0 else "-inf"
            if math.isnan(value):
                return "nan"
            return repr(float(value))
        case Call(fn, args):
            infix = FUNCTIONS[fn].infix
            if infix is None:
                return f"{fn}({', '.join(render(a) for a in args)})"
            prec = _PRECEDENCE[infix]
            text = f"{render(args[0], prec)} {infix} {render(args[1], prec + 1)}"
            return f"({text})" if prec < parent_prec else text


def inputs_used(expr: Expr) -> set[int]:
    """The input numbers an expression reads."""
    match expr:
        case Input(index):
            return {index}
        case Const():
            return set()
        case Call(_, args):
            return set().union(*(inputs_used(a) for a in args))


def substitute(expr: Expr, inputs: Sequence[Expr]) -> Expr:
    """Replace each `$i` by `inputs[i]`: composes the maps of fused einsums."""
    match expr:
        case Input(index):
            return inputs[index]
        case Const():
            return expr
        case Call(fn, args):
            return Call(fn, tuple(substitute(a, inputs) for a in args))


def evaluate(expr: Expr, inputs: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """The numpy meaning of an expression, converted to `dtype` at the end.

    Typing follows the backends exactly (see `common_dtype`): each call computes
    in the common type of its operands, literals take that type, comparisons
    give bools. `dtype` is the hint for literals with no typed sibling.
    """
    hint = np.dtype(dtype)
    with np.errstate(all="ignore"):
        return np.asarray(_evaluate(expr, inputs, hint)).astype(dtype)


def common_dtype(dtypes: Sequence[np.dtype], fractional: bool, hint: np.dtype, keep_bool: bool = False) -> np.dtype:
    """The type a call's operands are computed in, numpy-style promotion made explicit.

    Any float operand makes it the widest float; a fractional literal among
    integers makes it the hint if that is a float, else float32; otherwise the
    widest integer, bools counting as integers unless `keep_bool` (select,
    comparisons of bools). With no typed operand: the hint.
    """
    floats = [d for d in dtypes if d.kind == "f"]
    if floats:
        return max(floats, key=lambda d: d.itemsize)
    if fractional:
        return hint if hint.kind == "f" else np.dtype(np.float32)
    if not dtypes:
        return hint if hint.kind != "b" or keep_bool else np.dtype(np.float32)
    if keep_bool and all(d.kind == "b" for d in dtypes):
        return np.dtype(bool)
    ints = [d for d in dtypes if d.kind in "iu"]
    if not ints:
        return hint if hint.kind in "iu" else np.dtype(np.int64)
    return max(ints, key=lambda d: d.itemsize)


def _operands(args: Sequence[Expr], inputs: Sequence[np.ndarray], hint: np.dtype, keep_bool: bool = False) -> list[np.ndarray]:
    values = [None if isinstance(a, Const) else np.asarray(_evaluate(a, inputs, hint)) for a in args]
    fractional = any(isinstance(a, Const) and not float(a.value).is_integer() for a in args)
    ty = common_dtype([v.dtype for v in values if v is not None], fractional, hint, keep_bool)
    return [
        v.astype(ty) if v is not None else np.asarray(a.value).astype(ty)  # type: ignore[union-attr]
        for v, a in zip(values, args)
    ]


def _evaluate(expr: Expr, inputs: Sequence[np.ndarray], hint: np.dtype) -> np.ndarray:
    match expr:
        case Input(index):
            return np.asarray(inputs[index])
        case Const(value):
            return np.asarray(value).astype(hint)
        case Call(fn, args):
            kind = FUNCTIONS[fn].kind
            boolean = np.dtype(bool)
            if kind == "select":
                cond = np.asarray(_evaluate(args[0], inputs, boolean)).astype(bool)
                a, b = _operands(args[1:], inputs, hint, keep_bool=True)
                return np.where(cond, a, b)
            if kind == "logical":
                values = [np.asarray(_evaluate(a, inputs, boolean)).astype(bool) for a in args]
                return FUNCTIONS[fn].numpy(*values)
            operand_hint = hint if hint.kind != "b" else np.dtype(np.float32)
            values = _operands(args, inputs, operand_hint, keep_bool=kind == "compare")
            result = np.asarray(FUNCTIONS[fn].numpy(*values))
            if kind == "arith" and result.dtype != values[0].dtype and values[0].dtype.kind in "iuf":
                result = result.astype(values[0].dtype)
            return result
    raise AssertionError(expr)
