"""The conformance harness itself: output comparison, failure reasons, the
expected-failures file, and workers that hang or crash (fast: no node tests run)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from einc.diagnostics import EincError
from tests.conformance import harness


@pytest.mark.parametrize(
    ("got", "reason"),
    [
        (np.array([1.0, 2.0005], np.float32), None),  # within rtol 1e-3
        (np.array([1.0, 2.1], np.float32), "output 'y': 1 of 2 values differ, max abs error 0.1"),
        (np.array([1.0, 2.0], np.float64), "output 'y' has dtype float64, expected float32"),
        (np.array([[1.0, 2.0]], np.float32), "output 'y' has shape [1, 2], expected [2]"),
    ],
)
def test_compare_uses_the_backend_runners_rule(got, reason):
    want = np.array([1.0, 2.0], np.float32)
    assert harness.compare([want], {"y": got}, ["y"], 1e-3, 1e-7) == reason


def test_compare_nan_scalars_and_missing_outputs():
    nan = np.array([np.nan, 1.0], np.float32)
    assert harness.compare([nan], {"y": nan.copy()}, ["y"], 1e-3, 1e-7) is None
    assert harness.compare([np.float32(2.0)], {"y": np.array(2.0, np.float32)}, ["y"], 1e-3, 1e-7) is None
    assert harness.compare([nan], {}, ["y"], 1e-3, 1e-7) == "output 'y' is missing"
    ints = np.array([3, 4], np.int64)
    assert "1 of 2 values differ" in harness.compare([ints], {"y": np.array([3, 5])}, ["y"], 1e-3, 1e-7)


def test_reasons_are_one_line_and_leave_node_names_out():
    err = EincError("einc computes 1 of its 2 results\nmore", node="n1", op="Dropout")
    assert harness.error_reason(err) == "Dropout: einc computes 1 of its 2 results"
    listed = EincError("1 unsupported node (op Conv not supported by einc): 'c' (Conv)")
    assert harness.error_reason(listed) == "1 unsupported node (op Conv not supported by einc)"
    assert harness.error_reason(ValueError("bad value\ntrace")) == "ValueError: bad value"


def test_expected_failures_round_trip(tmp_path: Path):
    path = tmp_path / "expected.txt"
    harness.write_expected_failures({"test_b": "why # not", "test_a": "because"}, path)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == ["test_a  # because", "test_b  # why # not"]
    assert harness.read_expected_failures(path) == {"test_a": "because", "test_b": "why # not"}


def test_mismatches_and_update():
    run = harness.Run([], {"test_a": None, "test_b": "broke", "test_c": None}, 0.0, {}, 0)
    expected = {"test_a": "old", "test_c": "old", "test_z": "not run"}
    assert harness.mismatches(run, expected) == (["test_b"], ["test_a", "test_c"])
    assert harness.updated_expected_failures(run, expected) == {"test_b": "broke", "test_z": "not run"}


def test_cases_from_files_as_older_onnx_wheels_ship_them(tmp_path: Path):
    """onnx <= 1.22 keeps node tests as model.onnx plus test_data_set_0/*.pb."""
    from types import SimpleNamespace

    import onnx
    from onnx import helper, numpy_helper

    x = np.arange(3, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "model.onnx")
    (tmp_path / "test_data_set_0").mkdir()
    for name, array in (("input_0", x), ("output_0", -x)):
        (tmp_path / "test_data_set_0" / f"{name}.pb").write_bytes(numpy_helper.from_array(array).SerializeToString())
    model, sets = harness._data_sets(SimpleNamespace(model=None, model_dir=str(tmp_path)))
    assert model.graph.node[0].op_type == "Neg"
    assert [[a.tolist() for a in part] for part in sets[0]] == [[x.tolist()], [(-x).tolist()]]


def test_tensor_protos_in_data_sets_are_read_as_numpy():
    from types import SimpleNamespace

    from onnx import numpy_helper

    x = np.arange(4, dtype=np.float64)
    case = SimpleNamespace(model=object(), data_sets=[([numpy_helper.from_array(x)], [x])])
    _, [(ins, outs)] = harness._data_sets(case)
    assert isinstance(ins[0], np.ndarray) and ins[0].dtype == np.float64 and (ins[0] == x).all()


def misbehave(job: str) -> Iterator[tuple[str, harness.Outcome]]:
    """A worker's job for the tests below: pass, hang, or crash the process."""
    if job == "hang":
        time.sleep(60)
    if job == "crash":
        os._exit(3)
    yield f"{job}-1", ("outputs", [])
    yield f"{job}-2", ("error", "failed")


def test_workers_survive_hangs_and_crashes():
    jobs = [("hang", ["hang-1"]), ("crash", ["crash-1", "crash-2"]), ("ok", ["ok-1", "ok-2"]), ("ok2", ["ok2-1", "ok2-2"])]
    start = time.monotonic()
    got = {name: outcome for name, outcome, _ in harness.run_jobs(jobs, work=misbehave, workers=2, timeout=2)}
    assert time.monotonic() - start < 30
    assert got == {
        "hang-1": ("error", "timeout: no result within 2 s"),
        "crash-1": ("error", "worker crashed (exit code 3)"),
        "crash-2": ("error", "worker crashed (exit code 3)"),
        "ok-1": ("outputs", []),
        "ok-2": ("error", "failed"),
        "ok2-1": ("outputs", []),
        "ok2-2": ("error", "failed"),
    }
