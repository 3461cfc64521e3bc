"""Vector code for map expressions: the fused epilogues of micro-kernels.

`VectorEmitter.expr` turns a map-language expression over f32 vectors into
llvmlite instructions. Cheap functions are one instruction or intrinsic;
`exp` (and `sigmoid`, `tanh`, `erf` built on it) is a polynomial in vector
registers, because LLVM would otherwise scalarise `llvm.exp.v16f32` into 16
libm calls, which costs more than the matmul it follows. Functions with no row
here fall back to LLVM's vector intrinsic of the same name (scalarised by the
backend where the CPU has no instruction): correct, not fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import llvmlite.ir as ir

from einc.ir import mapexpr

F32 = ir.FloatType()
I32 = ir.IntType(32)
I1 = ir.IntType(1)
_FCMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_INTRINSIC = {"sqrt": "sqrt", "abs": "fabs", "floor": "floor", "ceil": "ceil", "round": "roundeven",
              "log": "log", "sin": "sin", "cos": "cos", "pow": "pow", "max": "maximum", "min": "minimum"}
"""Map functions computed by an LLVM intrinsic on the whole vector."""

EPILOGUE_FUNCTIONS = frozenset(
    {"add", "sub", "mul", "div", "neg", "exp", "tanh", "erf", "sigmoid", "softplus", "select", "not", "and", "or"}
    | set(_FCMP) | set(_INTRINSIC)
)
"""The map functions fused epilogues compute in vector registers."""


class VectorEmitter:
    """Emits vector f32 code for map expressions at a builder's position."""

    def __init__(self, builder: ir.IRBuilder, lanes: int):
        self.b = builder
        self.lanes = lanes
        self.vf = ir.VectorType(F32, lanes)
        self.vi = ir.VectorType(I32, lanes)
        self.vb = ir.VectorType(I1, lanes)

    def const(self, value: float) -> ir.Constant:
        return ir.Constant(self.vf, [ir.Constant(F32, value)] * self.lanes)

    def splat(self, scalar: ir.Value) -> ir.Value:
        vec = self.b.insert_element(ir.Constant(self.vf, ir.Undefined), scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(vec, ir.Constant(self.vf, ir.Undefined), ir.Constant(self.vi, [0] * self.lanes))

    def intrinsic(self, name: str, args: Sequence[ir.Value], ty: ir.Type | None = None) -> ir.Value:
        ty = ty or self.vf
        module = self.b.module
        full = f"llvm.{name}.v{self.lanes}f32"
        try:
            fn = module.get_global(full)
        except KeyError:
            fn = ir.Function(module, ir.FunctionType(ty, [a.type for a in args]), full)
        return self.b.call(fn, list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.intrinsic("fma", [a, b, c])

    # -- map expressions -----------------------------------------------------------

    def expr(self, expr: mapexpr.Expr, inputs: Sequence[ir.Value], cache: dict | None = None) -> ir.Value:
        """Vector code for `expr`; shared subexpressions (GELU reads x twice) are emitted once."""
        cache = {} if cache is None else cache
        if expr not in cache:
            cache[expr] = self._expr(expr, inputs, cache)
        return cache[expr]

    def _expr(self, expr: mapexpr.Expr, inputs: Sequence[ir.Value], cache: dict) -> ir.Value:
        match expr:
            case mapexpr.Input(index):
                return inputs[index]
            case mapexpr.Const(value):
                return self.const(value)
            case mapexpr.Call("pow", (base, mapexpr.Const(n))) if float(n).is_integer() and 1 <= n <= 16:
                return self.power(self.expr(base, inputs, cache), int(n))
            case mapexpr.Call(fn, args):
                if fn in ("not", "and", "or", "select"):
                    conds = [self.expr(a, inputs, cache) for a in args]
                    return _LOGIC[fn](self, conds)
                values = [self.expr(a, inputs, cache) for a in args]
                return self.call(fn, values)
        raise AssertionError(expr)

    def call(self, fn: str, values: Sequence[ir.Value]) -> ir.Value:
        b = self.b
        if fn in _ARITH:
            return _ARITH[fn](b, *values)
        if fn in _FCMP:
            return b.fcmp_ordered(_FCMP[fn], *values) if fn != "ne" else b.fcmp_unordered("!=", *values)
        if fn in _SPECIAL:
            return _SPECIAL[fn](self, *values)
        return self.intrinsic(_INTRINSIC.get(fn, fn), values)

    def power(self, x: ir.Value, n: int) -> ir.Value:
        """x^n for a literal integer n by squaring (GELU's x^3): LLVM scalarises `pow` into libm calls."""
        result: ir.Value | None = None
        while n:
            if n & 1:
                result = x if result is None else self.b.fmul(result, x)
            n >>= 1
            if n:
                x = self.b.fmul(x, x)
        assert result is not None
        return result

    # -- transcendental functions ----------------------------------------------

    def exp(self, x: ir.Value) -> ir.Value:
        """exp(x) = 2^n * p(r), x = n ln2 + r, |r| <= ln2/2; max rel. error ~2 ulp."""
        b = self.b
        x = self.intrinsic("minimum", [self.intrinsic("maximum", [x, self.const(-88.0)]), self.const(88.7)])
        n = self.intrinsic("roundeven", [b.fmul(x, self.const(1 / math.log(2)))])
        r = self.fma(n, self.const(-0.693145751953125), x)
        r = self.fma(n, self.const(-1.428606765330187e-06), r)
        p = self.const(1.9875691500e-4)
        for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
            p = self.fma(p, r, self.const(c))
        p = self.fma(p, b.fmul(r, r), b.fadd(r, self.const(1.0)))
        bits = b.shl(b.add(b.fptosi(n, self.vi), ir.Constant(self.vi, [127] * self.lanes)), ir.Constant(self.vi, [23] * self.lanes))
        return b.fmul(p, b.bitcast(bits, self.vf))

    def sigmoid(self, x: ir.Value) -> ir.Value:
        b = self.b
        return b.fdiv(self.const(1.0), b.fadd(self.const(1.0), self.exp(b.fneg(x))))

    def tanh(self, x: ir.Value) -> ir.Value:
        """tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)); x*(1 - x^2/3) near 0 keeps relative accuracy."""
        b = self.b
        ax = self.intrinsic("fabs", [x])
        big = b.fsub(self.const(1.0), b.fdiv(self.const(2.0), b.fadd(self.exp(b.fmul(ax, self.const(2.0))), self.const(1.0))))
        x2 = b.fmul(x, x)
        small = b.fmul(ax, self.fma(x2, self.fma(x2, self.const(2 / 15), self.const(-1 / 3)), self.const(1.0)))
        t = b.select(b.fcmp_ordered("<", ax, self.const(0.0625)), small, big)
        return self.intrinsic("copysign", [t, x])

    def erf(self, x: ir.Value) -> ir.Value:
        """erf via erfc(|x|) = t exp(-x^2 + poly(t)), t = 1/(1 + |x|/2) (Numerical Recipes erfcc, ~1.2e-7)."""
        b = self.b
        ax = self.intrinsic("fabs", [x])
        t = b.fdiv(self.const(1.0), self.fma(ax, self.const(0.5), self.const(1.0)))
        coeffs = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
                  0.09678418, 0.37409196, 1.00002368, -1.26551223)
        p = self.const(coeffs[0])
        for c in coeffs[1:]:
            p = self.fma(p, t, self.const(c))
        erfc = b.fmul(t, self.exp(b.fsub(p, b.fmul(ax, ax))))
        return self.intrinsic("copysign", [b.fsub(self.const(1.0), erfc), x])

    def softplus(self, x: ir.Value) -> ir.Value:
        b = self.b
        tail = b.fadd(self.const(1.0), self.exp(b.fneg(self.intrinsic("fabs", [x]))))
        return b.fadd(self.intrinsic("maximum", [x, self.const(0.0)]), self.intrinsic("log", [tail]))


_ARITH: dict[str, Callable[..., ir.Value]] = {
    "add": ir.IRBuilder.fadd,
    "sub": ir.IRBuilder.fsub,
    "mul": ir.IRBuilder.fmul,
    "div": ir.IRBuilder.fdiv,
    "neg": ir.IRBuilder.fneg,
}
_SPECIAL: dict[str, Callable[..., ir.Value]] = {
    "exp": VectorEmitter.exp,
    "sigmoid": VectorEmitter.sigmoid,
    "tanh": VectorEmitter.tanh,
    "erf": VectorEmitter.erf,
    "softplus": VectorEmitter.softplus,
}


def _as_bool(e: VectorEmitter, v: ir.Value) -> ir.Value:
    return v if v.type == e.vb else e.b.fcmp_unordered("!=", v, e.const(0.0))


def _as_float(e: VectorEmitter, v: ir.Value) -> ir.Value:
    return v if v.type == e.vf else e.b.uitofp(v, e.vf)


_LOGIC: dict[str, Callable[[VectorEmitter, list[ir.Value]], ir.Value]] = {
    "not": lambda e, v: e.b.not_(_as_bool(e, v[0])),
    "and": lambda e, v: e.b.and_(_as_bool(e, v[0]), _as_bool(e, v[1])),
    "or": lambda e, v: e.b.or_(_as_bool(e, v[0]), _as_bool(e, v[1])),
    "select": lambda e, v: e.b.select(_as_bool(e, v[0]), _as_float(e, v[1]), _as_float(e, v[2])),
}
