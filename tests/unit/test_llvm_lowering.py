"""Loops in func/scf/memref/arith/math -> the CPU pipeline's tail -> machine code, against numpy.

Each kernel runs through `convert-memref-to-ptr` ... `add-entry-point`, is compiled
for the host by einc.backends.llvm.translate and called once through `einc_entry`
with a table of numpy buffers, as the runtime does.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from einc.backends.llvm.translate import compile_to_object, to_llvmlite
from einc.runtime.jit import load_object
from einc.passes import Pipeline
from einc.passes.pipeline import CPU_LLVM, make_context

TAIL = CPU_LLVM

MLIR_TYPE = {
    np.float32: "f32",
    np.float64: "f64",
    np.int8: "i8",
    np.int32: "i32",
    np.int64: "i64",
    np.uint32: "i32",
}


def run(text: str, *buffers: np.ndarray, opt_level: int = 3) -> None:
    """Lower, compile and call `@main` on `buffers` (written in place)."""
    module = Parser(make_context(), text).parse_module()
    Pipeline(TAIL, verify_each=True).apply(module)
    code = load_object(compile_to_object(module, opt_level))
    table = (ctypes.c_void_p * len(buffers))(*(b.ctypes.data for b in buffers))
    code.function("einc_entry", None, ctypes.c_void_p)(table)


def map_kernel(body: str, ins: list[type], outs: list[type], n: int) -> str:
    """`out_k[i] = body(in_0[i], ...)` for i < n: the body reads %x0.. and %i, defines %y0.."""
    memref = [f"memref<{n}x{MLIR_TYPE[t]}>" for t in ins + outs]
    names = [f"%in{k}" for k in range(len(ins))] + [f"%out{k}" for k in range(len(outs))]
    args = ", ".join(f"{a}: {m}" for a, m in zip(names, memref, strict=True))
    loads = "\n".join(f"    %x{k} = memref.load %in{k}[%i] : {memref[k]}" for k in range(len(ins)))
    stores = "\n".join(
        f"    memref.store %y{k}, %out{k}[%i] : {memref[len(ins) + k]}" for k in range(len(outs))
    )
    return f"""
func.func @main({args}) attributes {{einc.noalias_args}} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = arith.constant {n} : index
  scf.for %i = %c0 to %n step %c1 {{
{loads}
    {body}
{stores}
  }}
  return
}}
"""


def run_map(body: str, inputs: list[np.ndarray], out_dtypes: list[type]) -> list[np.ndarray]:
    n = len(inputs[0])
    outs = [np.zeros(n, dtype) for dtype in out_dtypes]
    text = map_kernel(body, [a.dtype.type for a in inputs], list(out_dtypes), n)
    run(text, *inputs, *outs)
    return outs


RNG = np.random.default_rng(0)
N = 67  # not a multiple of any vector width: the vectorised loop's remainder runs too


def floats(lo=-3.0, hi=3.0, dtype=np.float32) -> np.ndarray:
    return RNG.uniform(lo, hi, N).astype(dtype)


def ints(lo=-1000, hi=1000, dtype=np.int32) -> np.ndarray:
    return RNG.integers(lo, hi, N).astype(dtype)


def with_nans(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[::5] = np.nan
    return a


_erf = np.vectorize(math.erf)

UNARY_MATH = {
    "exp": np.exp,
    "exp2": np.exp2,
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "absf": np.abs,
    "floor": np.floor,
    "ceil": np.ceil,
    "trunc": np.trunc,
    "round": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "roundeven": np.round,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "tanh": np.tanh,
    "erf": _erf,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "atan": np.arctan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "cbrt": np.cbrt,
}
POSITIVE = {"log", "log2", "log10", "sqrt", "rsqrt"}
UNIT = {"asin", "acos", "log1p"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(UNARY_MATH))
def test_unary_math(op: str, dtype: type):
    lo, hi = (0.1, 5.0) if op in POSITIVE else (-0.99, 0.99) if op in UNIT else (-3.0, 3.0)
    x = floats(lo, hi, dtype)
    (y,) = run_map(f"%y0 = math.{op} %x0 : {MLIR_TYPE[dtype]}", [x], [dtype])
    expected = UNARY_MATH[op](x.astype(np.float64)).astype(dtype)
    np.testing.assert_allclose(y, expected, rtol=2e-6 if dtype == np.float32 else 1e-13, atol=1e-7)


BINARY_MATH = {
    "powf": np.power,
    "atan2": np.arctan2,
    "copysign": np.copysign,
}


@pytest.mark.parametrize("op", sorted(BINARY_MATH))
def test_binary_math(op: str):
    a, b = floats(0.1, 3.0), floats()
    (y,) = run_map(f"%y0 = math.{op} %x0, %x1 : f32", [a, b], [np.float32])
    expected = BINARY_MATH[op](a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(y, expected, rtol=2e-6)


def test_fma():
    a, b, c = floats(), floats(), floats()
    (y,) = run_map("%y0 = math.fma %x0, %x1, %x2 : f32", [a, b, c], [np.float32])
    expected = (a.astype(np.float64) * b + c).astype(np.float32)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


FLOAT_BINARY = {
    "addf": np.add,
    "subf": np.subtract,
    "mulf": np.multiply,
    "divf": np.divide,
    "maximumf": np.maximum,
    "minimumf": np.minimum,
    "maxnumf": np.fmax,
    "minnumf": np.fmin,
}


@pytest.mark.parametrize("op", sorted(FLOAT_BINARY))
def test_float_binary(op: str):
    a, b = with_nans(floats()), floats()
    b[1::7] = np.nan
    (y,) = run_map(f"%y0 = arith.{op} %x0, %x1 : f32", [a, b], [np.float32])
    np.testing.assert_array_equal(y, FLOAT_BINARY[op](a, b))


def test_negf_and_constants():
    x = floats()
    body = """%k = arith.constant 2.5 : f32
    %m = arith.mulf %x0, %k fastmath<fast> : f32
    %y0 = arith.negf %m : f32"""
    (y,) = run_map(body, [x], [np.float32])
    np.testing.assert_allclose(y, -(x * np.float32(2.5)), rtol=1e-6)


def _floordiv(a, b):
    return np.floor_divide(a, b)


def _u32(f):
    return lambda a, b: f(a.view(np.uint32), b.view(np.uint32)).astype(np.uint32).view(np.int32)


INT_BINARY = {
    "addi": np.add,
    "subi": np.subtract,
    "muli": np.multiply,
    "divsi": lambda a, b: np.trunc(a / b).astype(np.int32),
    "remsi": np.fmod,
    "floordivsi": _floordiv,
    "divui": _u32(np.floor_divide),
    "remui": _u32(np.remainder),
    "andi": np.bitwise_and,
    "ori": np.bitwise_or,
    "xori": np.bitwise_xor,
    "maxsi": np.maximum,
    "minsi": np.minimum,
    "maxui": _u32(np.maximum),
    "minui": _u32(np.minimum),
}


@pytest.mark.parametrize("op", sorted(INT_BINARY))
def test_int_binary(op: str):
    a, b = ints(), ints(1, 50)
    b[::2] *= -1
    (y,) = run_map(f"%y0 = arith.{op} %x0, %x1 : i32", [a, b], [np.int32])
    np.testing.assert_array_equal(y, INT_BINARY[op](a, b).astype(np.int32))


@pytest.mark.parametrize(
    "op, reference",
    [
        ("shli", lambda a, s: a << s),
        ("shrsi", lambda a, s: a >> s),
        ("shrui", lambda a, s: (a.view(np.uint32) >> s.view(np.uint32)).view(np.int32)),
    ],
)
def test_shifts(op, reference):
    a, s = ints(-(2**20), 2**20), ints(0, 31)
    (y,) = run_map(f"%y0 = arith.{op} %x0, %x1 : i32", [a, s], [np.int32])
    np.testing.assert_array_equal(y, reference(a, s))


CMPI = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "slt": lambda a, b: a < b,
    "sle": lambda a, b: a <= b,
    "sgt": lambda a, b: a > b,
    "sge": lambda a, b: a >= b,
    "ult": lambda a, b: a.view(np.uint32) < b.view(np.uint32),
    "ule": lambda a, b: a.view(np.uint32) <= b.view(np.uint32),
    "ugt": lambda a, b: a.view(np.uint32) > b.view(np.uint32),
    "uge": lambda a, b: a.view(np.uint32) >= b.view(np.uint32),
}


@pytest.mark.parametrize("predicate", sorted(CMPI))
def test_cmpi_select(predicate: str):
    a, b = ints(-5, 5), ints(-5, 5)
    body = f"""%c = arith.cmpi {predicate}, %x0, %x1 : i32
    %y0 = arith.select %c, %x0, %x1 : i32"""
    (y,) = run_map(body, [a, b], [np.int32])
    np.testing.assert_array_equal(y, np.where(CMPI[predicate](a, b), a, b))


def _unordered(f):
    return lambda a, b: np.isnan(a) | np.isnan(b) | f(a, b)


CMPF = {
    "false": lambda a, b: np.zeros(a.shape, bool),
    "true": lambda a, b: np.ones(a.shape, bool),
    "oeq": np.equal,
    "ogt": np.greater,
    "oge": np.greater_equal,
    "olt": np.less,
    "ole": np.less_equal,
    "one": lambda a, b: ~np.isnan(a) & ~np.isnan(b) & (a != b),
    "ord": lambda a, b: ~np.isnan(a) & ~np.isnan(b),
    "ueq": _unordered(np.equal),
    "ugt": _unordered(np.greater),
    "uge": _unordered(np.greater_equal),
    "ult": _unordered(np.less),
    "ule": _unordered(np.less_equal),
    "une": np.not_equal,
    "uno": lambda a, b: np.isnan(a) | np.isnan(b),
}


@pytest.mark.parametrize("predicate", sorted(CMPF))
def test_cmpf(predicate: str):
    a, b = with_nans(np.round(floats())), np.round(floats())
    b[1::7] = np.nan
    body = f"""%c = arith.cmpf {predicate}, %x0, %x1 : f32
    %y0 = arith.extui %c : i1 to i32"""
    (y,) = run_map(body, [a, b], [np.int32])
    np.testing.assert_array_equal(y, CMPF[predicate](a, b).astype(np.int32))


CASTS = [
    ("fptosi", np.float32, np.int32, floats(-1e5, 1e5), lambda x: np.trunc(x)),
    ("fptoui", np.float32, np.uint32, floats(0, 4e9), np.trunc),
    ("fptosi", np.float64, np.int8, floats(-100, 100, np.float64), np.trunc),
    ("sitofp", np.int32, np.float32, ints(-(2**30), 2**30), lambda x: x),
    ("uitofp", np.int32, np.float32, ints(-(2**31), 2**31 - 1), lambda x: x.view(np.uint32)),
    ("uitofp", np.int64, np.float64, ints(-(2**62), 2**62, np.int64), lambda x: x.view(np.uint64)),
    ("extf", np.float32, np.float64, floats(), lambda x: x),
    ("truncf", np.float64, np.float32, floats(dtype=np.float64), lambda x: x),
    ("extsi", np.int8, np.int32, ints(-128, 127, np.int8), lambda x: x),
    ("extui", np.int8, np.int32, ints(-128, 127, np.int8), lambda x: x.view(np.uint8)),
    ("trunci", np.int32, np.int8, ints(-(2**20), 2**20), lambda x: x.astype(np.int8)),
    ("bitcast", np.float32, np.int32, floats(), lambda x: x.view(np.int32)),
]


@pytest.mark.parametrize(
    "op, src, dst, x, reference", CASTS, ids=[f"{c[0]}-{c[2].__name__}" for c in CASTS]
)
def test_casts(op, src, dst, x, reference):
    (y,) = run_map(f"%y0 = arith.{op} %x0 : {MLIR_TYPE[src]} to {MLIR_TYPE[dst]}", [x], [dst])
    np.testing.assert_array_equal(y, np.asarray(reference(x)).astype(dst))


def test_index_casts_and_floordiv_of_index():
    x = ints()
    body = """%k = arith.index_cast %x0 : i32 to index
    %s = arith.addi %k, %i : index
    %c3 = arith.constant 3 : index
    %q = arith.floordivsi %s, %c3 : index
    %y0 = arith.index_cast %q : index to i32
    %y1 = arith.index_cast %i : index to i64"""
    y, idx = run_map(body, [x], [np.int32, np.int64])
    np.testing.assert_array_equal(y, (x.astype(np.int64) + np.arange(N)) // 3)
    np.testing.assert_array_equal(idx, np.arange(N))


MATMUL = """
func.func @main(%a: memref<{m}x{k}xf32>, %b: memref<{k}x{n}xf32>, %c: memref<{m}x{n}xf32>)
    attributes {{einc.noalias_args}} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %m = arith.constant {m} : index
  %n = arith.constant {n} : index
  %k = arith.constant {k} : index
  %zero = arith.constant 0.0 : f32
  scf.for %i = %c0 to %m step %c1 {{
    scf.for %j = %c0 to %n step %c1 {{
      %sum = scf.for %p = %c0 to %k step %c1 iter_args(%acc = %zero) -> (f32) {{
        %x = memref.load %a[%i, %p] : memref<{m}x{k}xf32>
        %y = memref.load %b[%p, %j] : memref<{k}x{n}xf32>
        %xy = arith.mulf %x, %y : f32
        %next = arith.addf %acc, %xy : f32
        scf.yield %next : f32
      }}
      memref.store %sum, %c[%i, %j] : memref<{m}x{n}xf32>
    }}
  }}
  return
}}
"""


@pytest.mark.parametrize("opt_level", [0, 3])
def test_matmul(opt_level: int):
    m, n, k = 13, 35, 21
    a, b = RNG.standard_normal((m, k), np.float32), RNG.standard_normal((k, n), np.float32)
    c = np.zeros((m, n), np.float32)
    run(MATMUL.format(m=m, n=n, k=k), a, b, c, opt_level=opt_level)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


SOFTMAX_ROWS = """
func.func @main(%x: memref<{r}x{n}xf32>, %y: memref<{r}x{n}xf32>)
    attributes {{einc.noalias_args}} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %r = arith.constant {r} : index
  %n = arith.constant {n} : index
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.0 : f32
  scf.for %i = %c0 to %r step %c1 {{
    %max = scf.for %j = %c0 to %n step %c1 iter_args(%m = %ninf) -> (f32) {{
      %v = memref.load %x[%i, %j] : memref<{r}x{n}xf32>
      %gt = arith.cmpf ogt, %v, %m : f32
      %m2 = scf.if %gt -> (f32) {{
        scf.yield %v : f32
      }} else {{
        scf.yield %m : f32
      }}
      scf.yield %m2 : f32
    }}
    %sum = scf.for %j = %c0 to %n step %c1 iter_args(%s = %zero) -> (f32) {{
      %v = memref.load %x[%i, %j] : memref<{r}x{n}xf32>
      %d = arith.subf %v, %max : f32
      %e = math.exp %d : f32
      memref.store %e, %y[%i, %j] : memref<{r}x{n}xf32>
      %s2 = arith.addf %s, %e : f32
      scf.yield %s2 : f32
    }}
    scf.for %j = %c0 to %n step %c1 {{
      %e = memref.load %y[%i, %j] : memref<{r}x{n}xf32>
      %q = arith.divf %e, %sum : f32
      memref.store %q, %y[%i, %j] : memref<{r}x{n}xf32>
    }}
  }}
  return
}}
"""


def test_softmax_rows_with_scf_if():
    r, n = 5, 40
    x = RNG.standard_normal((r, n), np.float32) * 4
    y = np.zeros_like(x)
    run(SOFTMAX_ROWS.format(r=r, n=n), x, y)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_gelu_with_tanh_and_erf_f32():
    x = floats(-4, 4)
    body = """%half = arith.constant 0.5 : f32
    %one = arith.constant 1.0 : f32
    %rsqrt2 = arith.constant 0.707106781 : f32
    %s = arith.mulf %x0, %rsqrt2 : f32
    %e = math.erf %s : f32
    %t = math.tanh %x0 : f32
    %p = arith.addf %e, %one : f32
    %h = arith.mulf %x0, %half : f32
    %y0 = arith.mulf %h, %p : f32
    %y1 = arith.addf %t, %y0 : f32"""
    gelu, y1 = run_map(body, [x], [np.float32, np.float32])
    expected = 0.5 * x * (1 + _erf(x / np.sqrt(2)))
    np.testing.assert_allclose(gelu, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y1, np.tanh(x) + expected, rtol=1e-5, atol=1e-6)


def lowered(body: str) -> ModuleOp:
    text = map_kernel(body, [np.float32], [np.float32], 8)
    return Pipeline(TAIL).apply(Parser(make_context(), text).parse_module())


def test_noalias_and_entry_point_in_llvm_ir():
    text = str(to_llvmlite(lowered("%y0 = math.tanh %x0 : f32")))
    assert 'define void @"main"(ptr noalias' in text.replace("%", "")
    assert 'declare float @"tanhf"(float' in text
    assert 'define void @"einc_entry"(ptr' in text


def test_lookup_of_a_missing_symbol_fails():
    code = load_object(compile_to_object(lowered("%y0 = math.exp %x0 : f32")))
    with pytest.raises(KeyError, match="nope"):
        code.address("nope")
