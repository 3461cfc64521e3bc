"""Shared test helpers: small ONNX models built in memory, onnxruntime as reference."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

IR_VERSION = 10  # onnxruntime 1.31 reads IR versions up to 13; onnx 1.23 writes 14

# Every test session compiles for real: a fresh artifact cache, shared by the
# session's own compiles and subprocesses only, never one left by earlier runs.
_CACHE = tempfile.mkdtemp(prefix="einc-test-cache-")
os.environ["EINC_CACHE_DIR"] = _CACHE


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


def single_node_model(
    op_type: str,
    inputs: dict[str, np.ndarray],
    n_outputs: int = 1,
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    input_names: Sequence[str] | None = None,
    out_dtype: int = onnx.TensorProto.FLOAT,
    **attrs,
) -> onnx.ModelProto:
    """A model of one node; `inputs` become graph inputs, `initializers` weights."""
    initializers = initializers or {}
    names = list(input_names) if input_names is not None else [*inputs, *initializers]
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, name=f"{op_type.lower()}_node", **attrs)
    graph = helper.make_graph(
        [node],
        f"{op_type}_test",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info(o, out_dtype, None) for o in outs],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
