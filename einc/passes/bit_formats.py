"""Loads and stores of bit-format elements in loop code: integer bits <-> f32 / i32.

Buffers of bf16, float8, float4 and 4- or 2-bit integer tensors hold each element
as a signless integer (`einc.ir.dtypes.BIT_FORMATS`: 16 bits for bf16, one byte
for the others, the value in the low bits as ml_dtypes lays it out); scalars
compute in f32 or i32. LLVM (through xDSL) has none of these types, so
`decode` and `encode` spell the conversions out in integer and f32 arithmetic,
parameterised by the format's `FloatSemantics`:

- decode is exact: exponent and mantissa fields placed into f32 bits, subnormals
  as `mantissa * 2^(1 - bias - M)`, then the format's NaN/inf patterns;
- encode rounds to nearest, ties to even, without saturating, exactly as
  ml_dtypes' `astype` (so the interpreter's numpy meaning and the compiled code
  agree bit for bit): `|x|` is rounded on the grid of its binade (`roundeven(|x|
  / q) * q`, q the spacing there, exact because q is a power of two), then its
  fields are read back; values past the largest finite become inf (IEEE formats),
  NaN (FN, FNUZ) or the largest finite (float4, which has neither). Saturation,
  where ONNX asks for it, is a clamp in the map before the store. E8M0 stores
  round up and saturate, as ONNX Cast's defaults (`dtypes.to_bit_format`);
- integers wrap to their low bits (as an int8 store truncates) and load
  sign- or zero-extended.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects import arith, math
from xdsl.dialects.builtin import (
    BFloat16Type,
    Float32Type,
    FloatAttr,
    FloatNanEncoding,
    FloatNonfiniteBehavior,
    FloatSemantics,
    IntegerAttr,
    IntegerType,
    Signedness,
    i32,
)
from xdsl.ir import Attribute, Operation, SSAValue

from einc.ir.dtypes import BIT_FORMATS, float_semantics

Emit = Callable[[Operation], SSAValue]
f32 = Float32Type()


class _Ops:
    """Terse builders over an `emit` callback: the formulas below read as formulas."""

    def __init__(self, emit: Emit):
        self.emit = emit

    def i(self, value: int) -> SSAValue:
        return self.emit(arith.ConstantOp(IntegerAttr(value, i32)))

    def f(self, value: float) -> SSAValue:
        return self.emit(arith.ConstantOp(FloatAttr(value, f32)))

    def shl(self, x: SSAValue, n: int) -> SSAValue:
        return self.emit(arith.ShLIOp(x, self.i(n))) if n else x

    def shr(self, x: SSAValue, n: int) -> SSAValue:
        return self.emit(arith.ShRUIOp(x, self.i(n))) if n else x

    def band(self, x: SSAValue, mask: int) -> SSAValue:
        return self.emit(arith.AndIOp(x, self.i(mask)))

    def bor(self, x: SSAValue, y: SSAValue) -> SSAValue:
        return self.emit(arith.OrIOp(x, y))

    def add(self, x: SSAValue, n: int) -> SSAValue:
        return self.emit(arith.AddiOp(x, self.i(n))) if n else x

    def eq(self, x: SSAValue, n: int) -> SSAValue:
        return self.emit(arith.CmpiOp(x, self.i(n), "eq"))

    def select(self, cond: SSAValue, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(arith.SelectOp(cond, a, b))

    def to_f32(self, bits: SSAValue) -> SSAValue:
        return self.emit(arith.BitcastOp(bits, f32))

    def to_bits(self, x: SSAValue) -> SSAValue:
        return self.emit(arith.BitcastOp(x, i32))


def decode(emit: Emit, raw: SSAValue, ty: Attribute) -> SSAValue:
    """The f32 (floats) or i32 (integers) value of the stored bits `raw` of type `ty`."""
    o = _Ops(emit)
    b = emit(arith.ExtUIOp(raw, i32))
    if isinstance(ty, IntegerType):
        width = ty.width.data
        if ty.signedness.data == Signedness.UNSIGNED:
            return o.band(b, (1 << width) - 1)
        return emit(arith.ShRSIOp(o.shl(b, 32 - width), o.i(32 - width)))
    if isinstance(ty, BFloat16Type):
        return o.to_f32(o.shl(b, 16))
    s = float_semantics(ty)
    e_bits, m_bits, bias = s.exponent_bits, s.mantissa_bits, s.exponent_bias
    e = o.band(o.shr(b, m_bits), s.max_exponent)
    m = o.band(b, s.max_mantissa)
    normal = o.to_f32(o.bor(o.shl(o.add(e, 127 - bias), 23), o.shl(m, 23 - m_bits)))
    if s.has_zero:
        small = emit(arith.MulfOp(emit(arith.SIToFPOp(m, f32)), o.f(2.0 ** (1 - bias - m_bits))))
    else:  # E8M0: the all-zero exponent is 2^-bias, an f32 subnormal
        small = o.f(2.0**-bias)
    magnitude = o.select(o.eq(e, 0), small, normal)
    nan = o.f(float("nan"))
    if s.nonfinite == FloatNonfiniteBehavior.IEEE:
        special = o.select(o.eq(m, 0), o.f(float("inf")), nan)
        magnitude = o.select(o.eq(e, s.max_exponent), special, magnitude)
    elif s.nan_encoding == FloatNanEncoding.ALL_ONES:
        magnitude = o.select(o.eq(o.band(b, (1 << (e_bits + m_bits)) - 1), (1 << (e_bits + m_bits)) - 1), nan, magnitude)
    elif s.nan_encoding == FloatNanEncoding.NEGATIVE_ZERO:
        magnitude = o.select(o.eq(b, 1 << (e_bits + m_bits)), nan, magnitude)
    if not s.has_sign:
        return magnitude
    negative = emit(arith.CmpiOp(o.band(b, 1 << (e_bits + m_bits)), o.i(0), "ne"))
    return o.select(negative, emit(arith.NegfOp(magnitude)), magnitude)


def encode(emit: Emit, value: SSAValue, ty: Attribute) -> SSAValue:
    """The storage bits of `value` (f32 for floats, i32 for integers) in type `ty`."""
    o = _Ops(emit)
    storage = IntegerType(BIT_FORMATS[ty].storage or 8)
    if isinstance(ty, IntegerType):
        return emit(arith.TruncIOp(o.band(value, (1 << ty.width.data) - 1), storage))
    bits = o.to_bits(value)
    is_nan = emit(arith.CmpfOp(value, value, "uno"))
    if isinstance(ty, BFloat16Type):
        rounded = o.shr(emit(arith.AddiOp(bits, o.add(o.band(o.shr(bits, 16), 1), 0x7FFF))), 16)
        quiet = o.bor(o.shr(bits, 16), o.i(0x40))
        return emit(arith.TruncIOp(o.select(is_nan, quiet, rounded), storage))
    s = float_semantics(ty)
    if not s.has_sign:
        return emit(arith.TruncIOp(_encode_e8m0(o, bits), storage))
    e_bits, m_bits, bias = s.exponent_bits, s.mantissa_bits, s.exponent_bias
    e_min, sign_bit = 1 - bias, 1 << (e_bits + m_bits)
    sign = o.shr(bits, 31)
    a = emit(math.AbsFOp(value))
    binade = emit(arith.MaxSIOp(o.add(o.shr(o.to_bits(a), 23), -127), o.i(e_min)))
    spacing = o.to_f32(o.shl(o.add(binade, 127 - m_bits), 23))
    r = emit(arith.MulfOp(emit(math.RoundEvenOp(emit(arith.DivfOp(a, spacing)))), spacing))
    r_bits = o.to_bits(r)
    normal = o.bor(o.shl(o.add(o.shr(r_bits, 23), bias - 127), m_bits), o.band(o.shr(r_bits, 23 - m_bits), s.max_mantissa))
    subnormal = emit(arith.FPToSIOp(emit(arith.MulfOp(r, o.f(2.0 ** (m_bits - e_min)))), i32))
    code = o.select(emit(arith.CmpfOp(r, o.f(2.0**e_min), "olt")), subnormal, normal)
    largest, overflow, nan = _limit_codes(s)
    code = o.select(emit(arith.CmpiOp(code, o.i(largest), "sgt")), o.i(overflow), code)
    code = o.select(is_nan, o.i(nan), code)
    if s.nan_encoding == FloatNanEncoding.NEGATIVE_ZERO:  # no -0, and NaN is the sign bit alone
        signed = emit(arith.AndIOp(emit(arith.CmpiOp(code, o.i(0), "ne")), emit(arith.CmpiOp(code, o.i(sign_bit), "ne"))))
        sign = o.select(signed, sign, o.i(0))
    elif s.nonfinite == FloatNonfiniteBehavior.FINITE_ONLY:  # NaN: a zero of the other sign, as ml_dtypes
        sign = o.select(is_nan, emit(arith.XOrIOp(sign, o.i(1))), sign)
    return emit(arith.TruncIOp(o.bor(code, o.shl(sign, e_bits + m_bits)), storage))


def _limit_codes(s: FloatSemantics) -> tuple[int, int, int]:
    """(largest finite, what rounds past it, NaN) codes of a format, sign aside.
    Past the largest is inf (IEEE formats), NaN (FN, FNUZ) or, for float4 that has
    neither, the largest itself."""
    all_ones, inf = (s.max_exponent << s.mantissa_bits) | s.max_mantissa, s.max_exponent << s.mantissa_bits
    if s.nonfinite == FloatNonfiniteBehavior.FINITE_ONLY:
        return all_ones, all_ones, 0
    sign_bit = 1 << (s.exponent_bits + s.mantissa_bits)
    return {
        FloatNanEncoding.IEEE: (inf - 1, inf, inf | 1 << (s.mantissa_bits - 1)),
        FloatNanEncoding.ALL_ONES: (all_ones - 1, all_ones, all_ones),
        FloatNanEncoding.NEGATIVE_ZERO: (all_ones, sign_bit, sign_bit),
    }[s.nan_encoding]


def _encode_e8m0(o: _Ops, bits: SSAValue) -> SSAValue:
    """E8M0 (a bare exponent): the f32 exponent, rounded up when any fraction bit is
    set and short of the largest; NaN and inf become NaN (ONNX Cast's defaults)."""
    exponent = o.band(o.shr(bits, 23), 0xFF)
    fraction = o.emit(arith.CmpiOp(o.band(bits, 0x7FFFFF), o.i(0), "ne"))
    room = o.emit(arith.CmpiOp(exponent, o.i(0xFE), "ult"))
    up = o.emit(arith.ExtUIOp(o.emit(arith.AndIOp(fraction, room)), i32))
    return o.select(o.eq(exponent, 0xFF), o.i(0xFF), o.emit(arith.AddiOp(exponent, up)))
