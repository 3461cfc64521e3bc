"""Element types: ONNX's `TensorProto.DataType` <-> builtin xDSL types <-> numpy dtypes.

One table shared by the frontend (types of imported values), the interpreter and
the backends (the numpy arrays they read and write, the bits their buffers
hold), so none of them disagree. Types outside it (strings, complex) are
refused with an `EincError`.

Types narrower than a byte or with no arithmetic on the CPU (bf16, the float8
and float4 formats, 4- and 2-bit integers) are *bit formats*: a buffer holds
each element in a signless integer of `storage` width (one element per byte
for the narrow ones, as numpy's ml_dtypes arrays and onnx's helpers lay them
out), and scalars compute in f32 or i32, converted on load and store.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import numpy.typing as npt
from onnx import TensorProto
from xdsl.dialects.builtin import (
    BFloat16Type,
    Float4E2M1FNType,
    Float8E4M3FNType,
    Float8E4M3FNUZType,
    Float8E5M2FNUZType,
    Float8E5M2Type,
    Float8E8M0FNUType,
    Float16Type,
    Float32Type,
    Float64Type,
    FloatSemantics,
    IntegerType,
    Signedness,
)
from xdsl.ir import Attribute

from einc.diagnostics import EincError

_UNSIGNED = Signedness.UNSIGNED


@dataclass(frozen=True)
class ElementType:
    """One element type: its ONNX number, IR type and numpy dtype; for a bit
    format (`storage` set), the signless integer width a buffer element takes."""

    onnx: int
    ir: Attribute
    numpy: np.dtype
    storage: int | None = None

    @property
    def is_float(self) -> bool:
        return not isinstance(self.ir, IntegerType)


def _row(onnx: int, ir: Attribute, dtype: npt.DTypeLike, storage: int | None = None) -> ElementType:
    return ElementType(onnx, ir, np.dtype(dtype), storage)


ELEMENT_TYPES: tuple[ElementType, ...] = (
    _row(TensorProto.FLOAT, Float32Type(), np.float32),
    _row(TensorProto.DOUBLE, Float64Type(), np.float64),
    _row(TensorProto.FLOAT16, Float16Type(), np.float16),
    _row(TensorProto.BFLOAT16, BFloat16Type(), ml_dtypes.bfloat16, 16),
    _row(TensorProto.FLOAT8E4M3FN, Float8E4M3FNType(), ml_dtypes.float8_e4m3fn, 8),
    _row(TensorProto.FLOAT8E4M3FNUZ, Float8E4M3FNUZType(), ml_dtypes.float8_e4m3fnuz, 8),
    _row(TensorProto.FLOAT8E5M2, Float8E5M2Type(), ml_dtypes.float8_e5m2, 8),
    _row(TensorProto.FLOAT8E5M2FNUZ, Float8E5M2FNUZType(), ml_dtypes.float8_e5m2fnuz, 8),
    _row(TensorProto.FLOAT8E8M0, Float8E8M0FNUType(), ml_dtypes.float8_e8m0fnu, 8),
    _row(TensorProto.FLOAT4E2M1, Float4E2M1FNType(), ml_dtypes.float4_e2m1fn, 8),
    _row(TensorProto.INT8, IntegerType(8), np.int8),
    _row(TensorProto.INT16, IntegerType(16), np.int16),
    _row(TensorProto.INT32, IntegerType(32), np.int32),
    _row(TensorProto.INT64, IntegerType(64), np.int64),
    _row(TensorProto.UINT8, IntegerType(8, _UNSIGNED), np.uint8),
    _row(TensorProto.UINT16, IntegerType(16, _UNSIGNED), np.uint16),
    _row(TensorProto.UINT32, IntegerType(32, _UNSIGNED), np.uint32),
    _row(TensorProto.UINT64, IntegerType(64, _UNSIGNED), np.uint64),
    _row(TensorProto.INT4, IntegerType(4), ml_dtypes.int4, 8),
    _row(TensorProto.UINT4, IntegerType(4, _UNSIGNED), ml_dtypes.uint4, 8),
    _row(TensorProto.INT2, IntegerType(2), ml_dtypes.int2, 8),
    _row(TensorProto.UINT2, IntegerType(2, _UNSIGNED), ml_dtypes.uint2, 8),
    _row(TensorProto.BOOL, IntegerType(1), np.bool_),
)
"""Every element type einc handles; the dicts below are views of it."""

ONNX_TYPES: dict[int, Attribute] = {e.onnx: e.ir for e in ELEMENT_TYPES}
"""ONNX element type -> the builtin type of our tensors."""

NUMPY_TYPES: dict[Attribute, np.dtype] = {e.ir: e.numpy for e in ELEMENT_TYPES}
"""Builtin element type -> the numpy dtype of its arrays (ml_dtypes for bit formats)."""

BIT_FORMATS: dict[Attribute, ElementType] = {e.ir: e for e in ELEMENT_TYPES if e.storage}
"""The element types buffers hold as integer bits and scalars compute wider."""

BF16_SEMANTICS = FloatSemantics(exponent_bits=8, mantissa_bits=7, exponent_bias=127)
"""bf16 as a reduced-precision format (xDSL's BFloat16Type carries no semantics)."""

_FROM_NUMPY: dict[np.dtype, Attribute] = {dt: t for t, dt in NUMPY_TYPES.items()}


def onnx_to_type(elem_type: int) -> Attribute:
    """The builtin element type of an ONNX `TensorProto.DataType`."""
    if elem_type not in ONNX_TYPES:
        names = {number: name for name, number in TensorProto.DataType.items()}
        raise EincError(f"element type {names.get(elem_type, elem_type)} is not supported")
    return ONNX_TYPES[elem_type]


def type_to_numpy(t: Attribute) -> np.dtype:
    """The numpy dtype that holds elements of builtin type `t`."""
    if t not in NUMPY_TYPES:
        raise EincError(f"element type {t} has no numpy dtype")
    return NUMPY_TYPES[t]


def numpy_to_type(dtype: npt.DTypeLike) -> Attribute:
    """The builtin element type of numpy arrays of `dtype`."""
    dt = np.dtype(dtype)
    if dt not in _FROM_NUMPY:
        raise EincError(f"numpy dtype {dt} is not supported")
    return _FROM_NUMPY[dt]


def float_semantics(t: Attribute) -> FloatSemantics:
    """Exponent and mantissa widths, bias and special values of a float bit format."""
    return BF16_SEMANTICS if isinstance(t, BFloat16Type) else t.SEMANTICS  # type: ignore[attr-defined]


def compute_dtype(dtype: npt.DTypeLike) -> np.dtype:
    """The numpy dtype scalars of `dtype` compute in: float32 or int32 for bit
    formats (as the compiled code computes them), the dtype itself otherwise."""
    dt = np.dtype(dtype)
    bits = BIT_FORMATS.get(_FROM_NUMPY.get(dt))  # type: ignore[arg-type]
    if bits is None:
        return dt
    return np.dtype(np.float32 if bits.is_float else np.int32)


def value_range(t: Attribute) -> tuple[float, float]:
    """The smallest and largest finite value of element type `t` (ml_dtypes knows
    the narrow ones numpy's iinfo and finfo do not)."""
    dt = type_to_numpy(t)
    info = ml_dtypes.iinfo(dt) if isinstance(t, IntegerType) else ml_dtypes.finfo(dt)
    return float(info.min), float(info.max)


def dtype_name(dtype: npt.DTypeLike) -> str:
    """A name `np.dtype` reads back (with ml_dtypes imported): numpy's own
    `str` ('<f4') for its types, the name ('float8_e4m3fn') for ml_dtypes',
    whose `str` is an anonymous '<V1'."""
    dt = np.dtype(dtype)
    return dt.name if dt.kind == "V" or dt.type.__module__.startswith("ml_dtypes") else dt.str


def to_dtype(array: npt.ArrayLike, dtype: npt.DTypeLike) -> np.ndarray:
    """`array` converted to `dtype` as a compiled store converts: numpy's (and
    ml_dtypes') conversion, round to nearest even without saturating, except
    into E8M0, which rounds up and saturates (ONNX Cast's defaults for it)."""
    dt = np.dtype(dtype)
    if dt == np.dtype(ml_dtypes.float8_e8m0fnu):
        from onnx.numpy_helper import to_float8e8m0

        return to_float8e8m0(np.asarray(array, np.float32), saturate=True, round_mode="up")
    return np.asarray(array).astype(dt)
