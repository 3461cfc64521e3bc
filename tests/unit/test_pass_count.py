"""Pass-count analysis (FuseMax) and `einc explain` on cascades with known answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from einc.analysis.pass_count import cascades
from einc.frontend.onnx import import_model
from einc.passes import Pipeline
from einc.tools.explain import analyse
from tests.conftest import single_node_model

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
from make_models import make_attention, make_mlp  # noqa: E402


def most_passes(model: onnx.ModelProto, pipeline: str = "onnx-to-ein") -> int:
    module = import_model(model).module
    Pipeline(pipeline).apply(module)
    return max(c.pass_count for c in cascades(next(iter(module.ops))))


def test_softmax_attention_is_three_passes_and_two_after_rewrites():
    data = analyse(make_attention())
    before = max(c["passes"] for c in data["before"])
    after = max(c["passes"] for c in data["after"])
    assert (before, after) == (3, 2)
    attention = next(c for c in data["before"] if c["passes"] == 3)
    assert [e["pass"] for e in attention["einsums"]] == [1, 1, 1, 2, 2, 3, 3]


def test_plain_softmax_is_three_passes():
    model = single_node_model("Softmax", {"x": np.zeros((4, 16), np.float32)})
    assert most_passes(model) == 3


def test_mlp_contractions_are_one_pass():
    assert most_passes(make_mlp()) == 1


def test_defer_division_keeps_attention_correct(rng):
    from tests.conftest import ort_run

    import einc

    model = make_attention()
    x = {"x": rng.standard_normal((64, 64)).astype(np.float32)}
    np.testing.assert_allclose(einc.compile(model).run(x)["y"], ort_run(model, x)["y"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("flag", [[], ["--json"]], ids=["text", "json"])
def test_explain_command(tmp_path: Path, flag: list[str]):
    onnx.save(make_attention(), tmp_path / "attention.onnx")
    result = subprocess.run(
        [sys.executable, "-m", "einc.cli", "explain", "attention.onnx", *flag],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    if flag:
        data = json.loads(result.stdout)
        assert data["rewrites"] == ["defer-division"]
        assert max(c["passes"] for c in data["after"]) == 2
    else:
        assert "most passes over one rank: 3 before, 2 after" in result.stdout
        assert "= max_" in result.stdout and "exp(" in result.stdout
