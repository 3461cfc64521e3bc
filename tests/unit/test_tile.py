"""The `tile` pass: cache-derived GEMM block sizes recorded on contraction groups."""

from __future__ import annotations

import numpy as np

from einc.frontend.onnx import import_model
from einc.ir.ein import GroupOp
from einc.passes import Pipeline
from einc.passes.tile import Tile, gemm_tiles, host_caches
from tests.conftest import single_node_model


def test_host_caches_are_read():
    caches = host_caches()
    assert caches["l1"] >= 16 << 10 and caches["l2"] >= caches["l1"] and caches["l3"] >= caches["l2"]


def test_avx512_and_avx2_register_tiles():
    wide = gemm_tiles(16, 48 << 10, 1 << 20, 32 << 20, 2)
    assert (wide["mr"], wide["nr"]) == (14, 32)  # 28 zmm accumulators of 32
    narrow = gemm_tiles(8, 32 << 10, 256 << 10, 8 << 20, 4)
    assert (narrow["mr"], narrow["nr"]) == (6, 16)  # 12 ymm accumulators of 16
    for t in (wide, narrow):
        assert t["mc"] % t["mr"] == 0 and t["nc"] % t["nr"] == 0 and t["kc"] % 16 == 0
        assert t["mc"] * t["kc"] * 4 <= (1 << 20 if t is wide else 256 << 10)  # A block within L2


def test_options_override_and_attribute(rng):
    model = single_node_model("MatMul", {"a": rng.standard_normal((5, 7)).astype(np.float32)}, initializers={"b": rng.standard_normal((7, 3)).astype(np.float32)})
    module = import_model(model).module
    Pipeline("onnx-to-ein,fuse,tile{kc=64 mr=6 l2=524288}").apply(module)
    (group,) = [op for op in module.walk() if isinstance(op, GroupOp)]
    tiles = {k: v.value.data for k, v in group.attributes["einc.tile"].data.items()}
    assert tiles["kc"] == 64 and tiles["mr"] == 6
    assert tiles == {**Tile(kc=64, mr=6, l2=524288).sizes()}
