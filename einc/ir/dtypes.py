"""Element types: ONNX's `TensorProto.DataType` <-> builtin xDSL types <-> numpy dtypes.

One table shared by the frontend (types of imported values) and the backends (the
numpy arrays they read and write), so the three never disagree. Types outside it
(strings, complex, 4- and 8-bit floats) are refused with an `EincError`.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import numpy.typing as npt
from onnx import TensorProto
from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
)
from xdsl.ir import Attribute

from einc.diagnostics import EincError

_UNSIGNED = Signedness.UNSIGNED

ONNX_TYPES: dict[int, Attribute] = {
    TensorProto.FLOAT: Float32Type(),
    TensorProto.DOUBLE: Float64Type(),
    TensorProto.FLOAT16: Float16Type(),
    TensorProto.BFLOAT16: BFloat16Type(),
    TensorProto.INT8: IntegerType(8),
    TensorProto.INT16: IntegerType(16),
    TensorProto.INT32: IntegerType(32),
    TensorProto.INT64: IntegerType(64),
    TensorProto.UINT8: IntegerType(8, _UNSIGNED),
    TensorProto.UINT16: IntegerType(16, _UNSIGNED),
    TensorProto.UINT32: IntegerType(32, _UNSIGNED),
    TensorProto.UINT64: IntegerType(64, _UNSIGNED),
    TensorProto.BOOL: IntegerType(1),
}
"""ONNX element type -> the builtin type of our tensors."""

NUMPY_TYPES: dict[Attribute, np.dtype] = {
    Float32Type(): np.dtype(np.float32),
    Float64Type(): np.dtype(np.float64),
    Float16Type(): np.dtype(np.float16),
    BFloat16Type(): np.dtype(ml_dtypes.bfloat16),
    IntegerType(8): np.dtype(np.int8),
    IntegerType(16): np.dtype(np.int16),
    IntegerType(32): np.dtype(np.int32),
    IntegerType(64): np.dtype(np.int64),
    IntegerType(8, _UNSIGNED): np.dtype(np.uint8),
    IntegerType(16, _UNSIGNED): np.dtype(np.uint16),
    IntegerType(32, _UNSIGNED): np.dtype(np.uint32),
    IntegerType(64, _UNSIGNED): np.dtype(np.uint64),
    IntegerType(1): np.dtype(np.bool_),
}
"""Builtin element type -> the numpy dtype of its arrays (bf16 through ml_dtypes)."""

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
