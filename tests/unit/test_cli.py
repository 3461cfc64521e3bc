"""The `einc` command line: compile, run and opt as a user runs them, and every
bad input ending in one `einc: error:` line with exit status 1, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import ort_run, single_node_model

EINC = [sys.executable, "-m", "einc.cli"]


def einc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EINC, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("einc: error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture
def gemm_model(tmp_path: Path, rng) -> Path:
    model = single_node_model(
        "Gemm",
        {"x": np.zeros((4, 6), np.float32)},
        initializers={"w": rng.standard_normal((6, 3)).astype(np.float32), "b": np.ones(3, np.float32)},
    )
    path = tmp_path / "gemm.onnx"
    onnx.save(model, path)
    return path


def test_compile_then_run(gemm_model: Path, tmp_path: Path, rng):
    result = einc("compile", str(gemm_model), "-o", "art", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "art").iterdir()} == {"manifest.json", "model.o", "model.so", "weights.bin"}
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = einc("run", "art", "--input", "x=x.npy", "--output-dir", "res", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "y0: float32[4, 3]" in result.stdout
    expected = ort_run(onnx.load(gemm_model), {"x": x})["y0"]
    np.testing.assert_allclose(np.load(tmp_path / "res" / "y0.npy"), expected, rtol=1e-5, atol=1e-6)


def test_opt_prints_einsums(gemm_model: Path, tmp_path: Path):
    (tmp_path / "m.mlir").write_text(
        'func.func @f(%a: tensor<2x3xf32>) -> tensor<3x2xf32> {\n'
        '  %0 = ein.einsum (%a[i, j]) -> [j, i] : (tensor<2x3xf32>) -> tensor<3x2xf32>\n'
        "  func.return %0 : tensor<3x2xf32>\n}\n"
    )
    result = einc("opt", "m.mlir", "-p", "lower-ein-to-loops", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "scf.for" in result.stdout and "memref<6xf32>" in result.stdout


@pytest.mark.parametrize(
    "content,fragments",
    [
        (b"this is not a protobuf", ["bad.onnx", "not an ONNX model"]),
        (None, ["bad.onnx", "truncated"]),
    ],
    ids=["garbage", "truncated"],
)
def test_compile_rejects_files_that_are_not_onnx(tmp_path: Path, gemm_model: Path, content, fragments):
    data = content if content is not None else gemm_model.read_bytes()[:40]
    (tmp_path / "bad.onnx").write_bytes(data)
    assert_one_line_error(einc("compile", "bad.onnx", cwd=tmp_path), *fragments)


def test_compile_missing_file(tmp_path: Path):
    assert_one_line_error(einc("compile", "missing.onnx", cwd=tmp_path), "missing.onnx")


def test_compile_lists_unsupported_nodes(tmp_path: Path):
    model = single_node_model("Bernoulli", {"x": np.zeros((2, 3), np.float32)})
    onnx.save(model, tmp_path / "b.onnx")
    assert_one_line_error(einc("compile", "b.onnx", cwd=tmp_path), "b.onnx", "bernoulli_node", "Bernoulli")


def test_compile_wrong_input_shape(gemm_model: Path, tmp_path: Path):
    result = einc("compile", str(gemm_model), "--input-shape", "x=5x6", cwd=tmp_path)
    assert_one_line_error(result, "'x'")
    result = einc("compile", str(gemm_model), "--input-shape", "x=5by6", cwd=tmp_path)
    assert_one_line_error(result, "--input-shape")


def test_run_rejects_bad_feeds(gemm_model: Path, tmp_path: Path):
    assert einc("compile", str(gemm_model), "-o", "art", cwd=tmp_path).returncode == 0
    np.save(tmp_path / "wrong.npy", np.zeros((3, 3), np.float32))
    np.save(tmp_path / "f64.npy", np.zeros((4, 6), np.float64))
    assert_one_line_error(einc("run", "art", "--input", "x=wrong.npy", cwd=tmp_path), "shape [3, 3]")
    assert_one_line_error(einc("run", "art", "--input", "x=f64.npy", cwd=tmp_path), "float64")
    assert_one_line_error(einc("run", "art", "--input", "z=wrong.npy", cwd=tmp_path), "missing ['x']")
    assert_one_line_error(einc("run", "art", "--input", "x=nothere.npy", cwd=tmp_path), "nothere.npy")
    assert_one_line_error(einc("run", "nowhere", cwd=tmp_path), "not an einc artifact")


def test_opt_reports_invalid_ir(tmp_path: Path):
    (tmp_path / "bad.mlir").write_text(
        "func.func @f(%a: tensor<4xf32>) -> tensor<4x1xf32> {\n"
        '  %0 = ein.einsum (%a[m]) -> [m] : (tensor<4xf32>) -> tensor<4x1xf32>\n'
        "  func.return %0 : tensor<4x1xf32>\n}\n"
    )
    assert_one_line_error(einc("opt", "bad.mlir", cwd=tmp_path), "output has rank 2 but 1 indices")


def test_opt_refuses_a_model_file(gemm_model: Path, tmp_path: Path):
    """`einc opt` on an ONNX model (or a missing file): one line naming the file, no traceback."""
    assert_one_line_error(einc("opt", str(gemm_model), "-p", "fuse", cwd=tmp_path), f"{gemm_model}: `einc opt` reads IR text")
    assert_one_line_error(einc("opt", "missing.mlir", cwd=tmp_path), "missing.mlir: no such file")


def test_interrupt_is_one_line(monkeypatch, capsys):
    """Ctrl-C during a command: one `einc: interrupted` line and status 130, no traceback."""
    import argparse

    from einc import cli

    def interrupted(args):
        raise KeyboardInterrupt

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(handler=interrupted)

    monkeypatch.setattr(cli, "_build_parser", Parser)
    assert cli.main(["bench", "model.onnx"]) == 130
    assert capsys.readouterr().err == "einc: interrupted\n"
