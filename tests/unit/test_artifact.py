"""The runtime's memory for a compiled model: weights and arena on huge pages where the kernel offers them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import einc
from einc.runtime import artifact
from tests.conftest import single_node_model

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _smaps_field(address: int, field: str) -> int | None:
    """`field` of the mapping that holds `address`, from /proc/self/smaps (None: not found)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _big_matmul(rng: np.random.Generator):
    a = rng.standard_normal((8, 1024)).astype(np.float32)
    w = rng.standard_normal((1024, 768)).astype(np.float32)  # 3 MiB: over HUGE_PAGE
    return single_node_model("MatMul", {"a": a}, initializers={"w": w}), a, w


def test_large_weights_are_a_huge_page_mapping_and_give_the_same_answer(rng, tmp_path):
    model, a, w = _big_matmul(rng)
    compiled = einc.compile(model)
    assert compiled._weights.nbytes >= artifact.HUGE_PAGE
    assert compiled._weights.ctypes.data % artifact.ALIGNMENT == 0
    np.testing.assert_allclose(compiled.run({"a": a})["y0"], a @ w, rtol=1e-4, atol=1e-4)
    compiled.save(tmp_path / "art")
    loaded = einc.load(tmp_path / "art")
    np.testing.assert_array_equal(loaded._weights, compiled._weights)
    np.testing.assert_allclose(loaded.run({"a": a})["y0"], a @ w, rtol=1e-4, atol=1e-4)
    if not THP.exists() or "[never]" in THP.read_text() or not Path("/proc/self/smaps").exists():
        pytest.skip("this kernel has no transparent huge pages: the mapping is checked only where it has")
    for array in (compiled._weights, loaded._weights):
        assert _smaps_field(array.ctypes.data, "THPeligible") == 1


def test_huge_pages_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("EINC_HUGE_PAGES", "0")
    plain = artifact._aligned_empty(artifact.HUGE_PAGE)
    assert plain.ctypes.data % artifact.ALIGNMENT == 0 and plain.nbytes == artifact.HUGE_PAGE
    assert isinstance(plain.base, np.ndarray)  # numpy's own memory, not a mapping of its own
    monkeypatch.delenv("EINC_HUGE_PAGES")
    mapped = artifact._aligned_empty(artifact.HUGE_PAGE)
    assert not isinstance(mapped.base, np.ndarray)
    mapped[:] = 7  # writable
    assert int(mapped.sum()) == 7 * artifact.HUGE_PAGE
    assert os.environ.get("EINC_HUGE_PAGES") is None
