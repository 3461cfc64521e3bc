"""The example models of `make run` (examples/make_models.py) against onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import einc
from tests.conftest import ort_run

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
from make_models import make_attention, make_mlp  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


@pytest.mark.parametrize("make", [make_mlp, make_attention], ids=["mlp", "attention"])
def test_example_model_matches_onnxruntime(make, rng, tmp_path):
    model = make()
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    expected = ort_run(model, feeds)

    compiled = einc.compile(model)
    got = compiled.run(feeds)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL)

    # The saved artifact loads without recompiling and gives the same answer.
    compiled.save(tmp_path / "out")
    reloaded = einc.load(tmp_path / "out")
    for name, value in reloaded.run(feeds).items():
        np.testing.assert_array_equal(value, got[name])


def test_artifacts_are_deterministic(tmp_path):
    model = make_attention()
    einc.compile(model).save(tmp_path / "a")
    einc.compile(model).save(tmp_path / "b")
    for name in ("manifest.json", "model.o", "weights.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_mlp_at_batch_64_has_three_gemm_layers():
    model = make_mlp()
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 64
