"""lower-ein-to-loops, end to end: ein programs compiled for the CPU must compute
what the ein interpreter (numpy) computes, for every op and element type."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.parser import Parser

from einc.backends.llvm.target import compile_for_cpu
from einc.frontend.onnx import ImportedModel
from einc.ir.interpret import run_function
from einc.passes.pipeline import make_context


def compile_and_compare(text: str, *args: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> None:
    """Compile `@main` (ein ops) for the CPU and compare with the interpreter."""
    weights = weights or {}
    expected = run_function(next(iter(Parser(make_context(), text).parse_module().ops)), list(args), weights)
    module = Parser(make_context(), text).parse_module()
    main = next(iter(module.ops))
    names = [f"x{i}" for i in range(len(args))]
    imported = ImportedModel(
        module=module,
        weights=weights,
        inputs=[(n, a.shape, a.dtype) for n, a in zip(names, args)],
        outputs=[(f"y{i}", e.shape, e.dtype) for i, e in enumerate(expected)],
        source="<test>",
    )
    from xdsl.dialects.builtin import ArrayAttr, StringAttr

    main.attributes["einc.inputs"] = ArrayAttr([StringAttr(n) for n in names])
    main.attributes["einc.outputs"] = ArrayAttr([StringAttr(f"y{i}") for i in range(len(expected))])
    got = compile_for_cpu(imported).run(dict(zip(names, args)))
    for i, want in enumerate(expected):
        assert got[f"y{i}"].dtype == want.dtype
        np.testing.assert_allclose(got[f"y{i}"], want, rtol=1e-6, atol=1e-6, err_msg=f"output {i}")


RNG = np.random.default_rng(7)
F = RNG.standard_normal((4, 5)).astype(np.float32)


@pytest.mark.parametrize(
    "map_text,out_type",
    [
        ("lt($0, 0.25)", "i1"),
        ("select(gt($0, 0), $0, $0 * 0.1)", "f32"),
        ("and(gt($0, -0.5), not(gt($0, 0.5)))", "i1"),
        ("isnan($0 / $0)", "i1"),
        ("sign($0)", "f32"),
        ("round($0 * 3.0)", "f32"),
        ("mod($0 * 7.0, 2.0)", "f32"),
        ("fmod($0 * 7.0, -2.0)", "f32"),
        ("$0 * 100.0", "i32"),
        ("$0 * 100.0", "i64"),
        ("$0 * 10.0", "f64"),
        ("abs($0)", "f32"),
        ("$0 * (1.0 / 2.0) + 3 / 2", "f32"),
        ("-$0", "f32"),
    ],
)
def test_typed_maps(map_text: str, out_type: str):
    text = f"""
    func.func @main(%x: tensor<4x5xf32>) -> tensor<4x5x{out_type}> {{
      %0 = ein.einsum (%x[i, j]) -> [i, j] map "{map_text}" : (tensor<4x5xf32>) -> tensor<4x5x{out_type}>
      func.return %0 : tensor<4x5x{out_type}>
    }}"""
    compile_and_compare(text, F)


@pytest.mark.parametrize(
    "elem,array",
    [
        ("i64", RNG.integers(-50, 50, (4, 5))),
        ("i32", RNG.integers(-50, 50, (4, 5)).astype(np.int32)),
        ("ui8", RNG.integers(0, 255, (4, 5)).astype(np.uint8)),
        ("i8", RNG.integers(-128, 127, (4, 5)).astype(np.int8)),
        ("i1", RNG.integers(0, 2, (4, 5)).astype(bool)),
    ],
)
def test_integer_and_bool_storage(elem: str, array: np.ndarray):
    text = f"""
    func.func @main(%x: tensor<4x5x{elem}>) -> (tensor<4x5xf32>, tensor<4xi64>, tensor<4x5x{elem}>) {{
      %0 = ein.einsum (%x[i, j]) -> [i, j] map "$0 * 0.5" : (tensor<4x5x{elem}>) -> tensor<4x5xf32>
      %1 = ein.einsum (%x[i, j]) -> [i] reduce add : (tensor<4x5x{elem}>) -> tensor<4xi64>
      %2 = ein.einsum (%x[i, j]) -> [i, j] map "max($0, 1)" : (tensor<4x5x{elem}>) -> tensor<4x5x{elem}>
      func.return %0, %1, %2 : tensor<4x5xf32>, tensor<4xi64>, tensor<4x5x{elem}>
    }}"""
    compile_and_compare(text, array)


def test_integer_arithmetic():
    a = RNG.integers(-20, 20, (6,)).astype(np.int64)
    b = np.array([3, -3, 5, 7, -2, 4], dtype=np.int64)
    text = """
    func.func @main(%a: tensor<6xi64>, %b: tensor<6xi64>) -> (tensor<6xi64>, tensor<6xi64>, tensor<6xi64>, tensor<6xi1>) {
      %0 = ein.einsum (%a[i], %b[i]) -> [i] map "mod($0, $1)" : (tensor<6xi64>, tensor<6xi64>) -> tensor<6xi64>
      %1 = ein.einsum (%a[i], %b[i]) -> [i] map "fmod($0, $1)" : (tensor<6xi64>, tensor<6xi64>) -> tensor<6xi64>
      %2 = ein.einsum (%a[i], %b[i]) -> [i] map "abs($0 - $1) + min($0, $1)" : (tensor<6xi64>, tensor<6xi64>) -> tensor<6xi64>
      %3 = ein.einsum (%a[i], %b[i]) -> [i] map "le($0, $1)" : (tensor<6xi64>, tensor<6xi64>) -> tensor<6xi1>
      func.return %0, %1, %2, %3 : tensor<6xi64>, tensor<6xi64>, tensor<6xi64>, tensor<6xi1>
    }"""
    compile_and_compare(text, a, b)


def test_gather_concat_and_reversed_slices():
    x = RNG.standard_normal((5, 3)).astype(np.float32)
    idx = np.array([[4, -1], [0, 2]], dtype=np.int64)
    text = """
    func.func @main(%x: tensor<5x3xf32>, %i: tensor<2x2xi64>) -> (tensor<2x2x3xf32>, tensor<5x2x2xf32>, tensor<10x3xf32>, tensor<3x3xf32>) {
      %0 = ein.gather %x[%i] axis 0 : (tensor<5x3xf32>, tensor<2x2xi64>) -> tensor<2x2x3xf32>
      %t = ein.einsum (%x[i, j]) -> [j, i] : (tensor<5x3xf32>) -> tensor<3x5xf32>
      %1 = ein.gather %x[%i] axis 1 : (tensor<5x3xf32>, tensor<2x2xi64>) -> tensor<5x2x2xf32>
      %2 = ein.concat %x, %x axis 0 : (tensor<5x3xf32>, tensor<5x3xf32>) -> tensor<10x3xf32>
      %3 = ein.einsum (%x[4 - i * 2, j]) -> [i, j] : (tensor<5x3xf32>) -> tensor<3x3xf32>
      func.return %0, %1, %2, %3 : tensor<2x2x3xf32>, tensor<5x2x2xf32>, tensor<10x3xf32>, tensor<3x3xf32>
    }"""
    idx1 = np.array([[2, -3], [0, 1]], dtype=np.int64)
    compile_and_compare(text, x, idx1)


@pytest.mark.parametrize(
    "low,high,interior,mode,value,out",
    [
        ([1, 2], [2, 0], [0, 0], "constant", 0.5, "8x7"),
        ([1, 0], [0, 1], [1, 2], "constant", 0.0, "10x14"),
        ([-1, 1], [1, -2], [0, 0], "constant", "-inf", "5x4"),
        ([2, 1], [1, 2], [0, 0], "edge", 0.0, "8x8"),
        ([2, 2], [2, 2], [0, 0], "reflect", 0.0, "9x9"),
    ],
)
def test_pad(low, high, interior, mode, value, out):
    x = RNG.standard_normal((5, 5)).astype(np.float32)
    text = f"""
    func.func @main(%x: tensor<5x5xf32>) -> tensor<{out}xf32> {{
      %0 = ein.pad %x low {low} high {high} interior {interior} {mode} {value} : tensor<5x5xf32> -> tensor<{out}xf32>
      func.return %0 : tensor<{out}xf32>
    }}"""
    compile_and_compare(text, x)


def test_constants_and_outputs_that_alias():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    text = """
    func.func @main(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<3xf32>, tensor<2x3xf32>, tensor<6xf32>) {
      %c = ein.constant dense<[1.0, 2.0, 3.0]> : tensor<3xf32>
      %0 = ein.einsum (%x[i, j], %c[j]) -> [i, j] map "$0 * $1" : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
      %1 = ein.reshape %0 : tensor<2x3xf32> -> tensor<6xf32>
      func.return %0, %c, %x, %1 : tensor<2x3xf32>, tensor<3xf32>, tensor<2x3xf32>, tensor<6xf32>
    }"""
    compile_and_compare(text, x)


def test_groups_without_a_kernel_run_as_their_einsums():
    x = RNG.standard_normal((4, 8)).astype(np.float32)
    w = RNG.standard_normal((3, 8)).astype(np.float32)
    b = RNG.standard_normal(3).astype(np.float32)
    text = """
    func.func @main(%x: tensor<4x8xf32>, %w: tensor<3x8xf32>, %b: tensor<3xf32>) -> tensor<4x3xf32> {
      %0 = ein.group "contraction" (%x, %w, %b) : (tensor<4x8xf32>, tensor<3x8xf32>, tensor<3xf32>) -> tensor<4x3xf32> {
      ^bb0(%gx: tensor<4x8xf32>, %gw: tensor<3x8xf32>, %gb: tensor<3xf32>):
        %y = ein.einsum (%gx[m, k], %gw[n, k]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<3x8xf32>) -> tensor<4x3xf32>
        %r = ein.einsum (%y[m, n], %gb[n]) -> [m, n] map "max($0 + $1, 0.0)" : (tensor<4x3xf32>, tensor<3xf32>) -> tensor<4x3xf32>
        ein.yield %r : tensor<4x3xf32>
      }
      func.return %0 : tensor<4x3xf32>
    }"""
    compile_and_compare(text, x, w, b)
    np.testing.assert_allclose(
        run_function(next(iter(Parser(make_context(), text).parse_module().ops)), [x, w, b], {})[0],
        np.maximum(x @ w.T + b, 0),
        rtol=1e-5,
    )


def test_bool_reductions_start_from_their_identities():
    x = np.array([[False, False], [True, False]])
    text = """
    func.func @main(%x: tensor<2x2xi1>) -> (tensor<2xi1>, tensor<2xi1>) {
      %0 = ein.einsum (%x[i, j]) -> [i] reduce max : (tensor<2x2xi1>) -> tensor<2xi1>
      %1 = ein.einsum (%x[i, j]) -> [i] reduce min : (tensor<2x2xi1>) -> tensor<2xi1>
      func.return %0, %1 : tensor<2xi1>, tensor<2xi1>
    }"""
    compile_and_compare(text, x)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("elem", ["f32", "i32"])
def test_scatter_along_a_middle_axis(reduction: str, elem: str):
    """Duplicate and negative indices along axis 1; updates apply in order (none: the last wins)."""
    dtype = {"f32": np.float32, "i32": np.int32}[elem]
    data = (RNG.standard_normal((2, 5, 3)) * 4).astype(dtype)
    updates = (RNG.standard_normal((2, 2, 2, 3)) * 4).astype(dtype)
    indices = np.array([[1, -1], [4, 1]], np.int64)
    suffix = "" if reduction == "none" else f" reduce {reduction}"
    compile_and_compare(
        f"""
        func.func @main(%d: tensor<2x5x3x{elem}>, %i: tensor<2x2xi64>, %u: tensor<2x2x2x3x{elem}>) -> tensor<2x5x3x{elem}> {{
          %0 = ein.scatter %u into %d[%i] axis 1{suffix} : (tensor<2x5x3x{elem}>, tensor<2x2xi64>, tensor<2x2x2x3x{elem}>) -> tensor<2x5x3x{elem}>
          func.return %0 : tensor<2x5x3x{elem}>
        }}
        """,
        data, indices, updates,
    )


@pytest.mark.parametrize("order", ["largest", "smallest"])
@pytest.mark.parametrize("elem", ["f32", "i32"])
def test_topk_selects_with_ties_in_position_order(order: str, elem: str):
    dtype = {"f32": np.float32, "i32": np.int32}[elem]
    x = RNG.integers(-3, 4, (2, 40, 3)).astype(dtype)  # many ties
    compile_and_compare(
        f"""
        func.func @main(%x: tensor<2x40x3x{elem}>) -> tensor<2x6x3xi64> {{
          %0 = ein.topk %x k 6 axis 1 {order} : tensor<2x40x3x{elem}> -> tensor<2x6x3xi64>
          func.return %0 : tensor<2x6x3xi64>
        }}
        """,
        x,
    )
