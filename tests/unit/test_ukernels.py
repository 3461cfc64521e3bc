"""The GEMM micro-kernel: contraction groups compiled through it, against onnxruntime.

Each case is a model whose contractions the CPU pipeline sends to the kernel
(checked: the lowered module calls an `einc_gemm_*` function), with shapes
that leave partial register tiles on both edges, K not a multiple of the
unroll, batch dimensions, transposed operands, runtime-packed and prepacked
operands, convolution as an implicit GEMM, and fused epilogues.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import einc
from einc.backends.llvm.ukernels import calls, plan
from einc.backends.llvm.ukernels.gemm import offset_table
from einc.frontend.onnx import import_model
import einc.passes.winograd as winograd
from einc.passes import Pipeline
from einc.passes.pipeline import CPU_LOOPS
from tests.conftest import IR_VERSION, ort_run, single_node_model

RTOL, ATOL = 1e-4, 1e-4


def _f(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _kernel_specs(model: onnx.ModelProto) -> list[dict]:
    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    return [json.loads(op.attributes["einc.ukernel"].data) for op in module.ops if "einc.ukernel" in op.attributes]


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], kernels: int) -> list[dict]:
    specs = _kernel_specs(model)
    assert len(specs) == kernels
    ours = einc.compile(model, cache=False).run(feeds)  # not cached: tests monkeypatch the planning
    theirs = ort_run(model, feeds)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=RTOL, atol=ATOL)
    return specs


# (id, op, inputs, initializers, attributes)
CASES = [
    ("matmul-edges", "MatMul", lambda r: {"a": _f(r, 31, 45), "b": _f(r, 45, 37)}, None, {}),
    ("matmul-k1", "MatMul", lambda r: {"a": _f(r, 17, 1), "b": _f(r, 1, 40)}, None, {}),
    ("matmul-weight", "MatMul", lambda r: {"a": _f(r, 3, 29, 70)}, lambda r: {"w": _f(r, 70, 65)}, {}),
    ("matmul-batched", "MatMul", lambda r: {"a": _f(r, 2, 3, 20, 33), "b": _f(r, 2, 3, 33, 18)}, None, {}),
    ("matmul-broadcast", "MatMul", lambda r: {"a": _f(r, 2, 1, 15, 9), "b": _f(r, 3, 9, 40)}, None, {}),
    ("matmul-vec-mat", "MatMul", lambda r: {"a": _f(r, 50), "b": _f(r, 50, 70)}, None, {}),
    ("gemm-transb", "Gemm", lambda r: {"a": _f(r, 20, 130)}, lambda r: {"w": _f(r, 90, 130), "c": _f(r, 90)}, {"transB": 1}),
    ("gemm-transa", "Gemm", lambda r: {"a": _f(r, 40, 20)}, lambda r: {"w": _f(r, 40, 50)}, {"transA": 1, "alpha": 0.5}),
    ("conv", "Conv", lambda r: {"x": _f(r, 1, 5, 12, 13)}, lambda r: {"w": _f(r, 20, 5, 3, 3), "b": _f(r, 20)}, {"pads": [1, 1, 1, 1]}),
    ("conv-stride-batch", "Conv", lambda r: {"x": _f(r, 2, 6, 15, 15)}, lambda r: {"w": _f(r, 33, 6, 3, 3)}, {"strides": [2, 2]}),
    ("conv-1x1", "Conv", lambda r: {"x": _f(r, 1, 40, 7, 7)}, lambda r: {"w": _f(r, 24, 40, 1, 1), "b": _f(r, 24)}, {}),
    ("conv-grouped-depth", "Conv", lambda r: {"x": _f(r, 1, 8, 9, 9)}, lambda r: {"w": _f(r, 16, 4, 3, 3)}, {"group": 2}),
    ("conv-image-rows", "Conv", lambda r: {"x": _f(r, 2, 4, 30, 40)}, lambda r: {"w": _f(r, 8, 4, 3, 3), "b": _f(r, 8)}, {"pads": [1, 1, 1, 1]}),
    ("conv-stride2-runs", "Conv", lambda r: {"x": _f(r, 1, 5, 23, 29)}, lambda r: {"w": _f(r, 18, 5, 3, 3), "b": _f(r, 18)}, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("conv-7x7-stride2", "Conv", lambda r: {"x": _f(r, 1, 3, 40, 40)}, lambda r: {"w": _f(r, 16, 3, 7, 7)}, {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    ("conv-1x1-stride2", "Conv", lambda r: {"x": _f(r, 2, 12, 14, 14)}, lambda r: {"w": _f(r, 20, 12, 1, 1)}, {"strides": [2, 2]}),
    ("conv-many-channels-small-map", "Conv", lambda r: {"x": _f(r, 1, 40, 6, 5)}, lambda r: {"w": _f(r, 300, 40, 3, 3), "b": _f(r, 300)}, {"pads": [1, 1, 1, 1]}),
    ("conv-depthwise", "Conv", lambda r: {"x": _f(r, 1, 6, 20, 21)}, lambda r: {"w": _f(r, 6, 1, 3, 3), "b": _f(r, 6)}, {"group": 6, "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_contraction_through_kernel(case, rng):
    _, op, inputs, inits, attrs = case
    feeds = inputs(rng)
    model = single_node_model(op, feeds, initializers=inits(rng) if inits else None, **attrs)
    _check(model, feeds, kernels=1)


def _chain_model(rng: np.random.Generator, activation: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Gemm -> activation -> Add(residual): one group, the activation and add in the epilogue."""
    x, res = _f(rng, 33, 48), _f(rng, 33, 40)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1)]
    if activation == "Gelu":
        nodes += [
            helper.make_node("Div", ["g", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["e1"]),
            helper.make_node("Mul", ["g", "e1"], ["ge"]),
            helper.make_node("Mul", ["ge", "half"], ["act"]),
        ]
    else:
        nodes.append(helper.make_node(activation, ["g"], ["act"]))
    nodes.append(helper.make_node("Add", ["act", "res"], ["y"]))
    consts = {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape) for n, a in {"x": x, "res": res}.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_f(rng, 40, 48), "w"), numpy_helper.from_array(_f(rng, 40), "b")]
        + [numpy_helper.from_array(np.array(v), n) for n, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    return model, {"x": x, "res": res}


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", "Tanh", "Gelu", "Exp"])
def test_epilogue_functions(activation, rng):
    model, feeds = _chain_model(rng, activation)
    (spec,) = _check(model, feeds, kernels=1)
    inputs = spec["epilogue"]["inputs"]  # bias (broadcast along M), the residual, scalar constants
    assert len(inputs) >= 2 and spec["epilogue"]["map"] != "$0"


def test_weights_are_prepacked_activations_are_not(rng):
    feeds = {"a": _f(rng, 16, 70)}
    model = single_node_model("MatMul", feeds, initializers={"w": _f(rng, 70, 65)})
    (spec,) = _check(model, feeds, kernels=1)
    assert spec["b"].get("packed") and not spec["a"].get("packed")


def test_offset_tables_are_affine():
    extents = {"c": 2, "r": 3, "s": 3}
    table = offset_table(extents, ["c", "r", "s"], {"c": 100, "r": 10, "s": 1})
    assert table.tolist() == [c * 100 + r * 10 + s for c in range(2) for r in range(3) for s in range(3)]


def test_pack_matches_panel_layout(rng):
    spec = {
        "kind": "gemm", "name": "g", "vars": {"m": 5, "n": 20, "k": 7}, "batch": [], "m": ["m"], "n": ["n"], "k": ["k"],
        "a": {"coef": {"m": 7, "k": 1}}, "b": {"coef": {"n": 7, "k": 1}}, "c": {"coef": {"m": 20, "n": 1}},
        "tiles": {"mr": 2, "nr": 16, "kc": 8, "mc": 4, "nc": 32},
    }
    b = _f(rng, 20, 7)  # B[n, k]
    packed = plan(spec).pack("b", b).reshape(2, 8, 16)  # [panel][Kp][NR]
    np.testing.assert_array_equal(packed[0, :7], b[:16].T)
    np.testing.assert_array_equal(packed[1, :7, :4], b[16:].T)
    assert not packed[1, :, 4:].any() and not packed[:, 7].any()


def test_units_cover_the_output_once(rng):
    """Many units on several threads: every element is written exactly once (no races, no gaps)."""
    feeds = {"a": _f(rng, 300, 64)}
    model = single_node_model("MatMul", feeds, initializers={"w": _f(rng, 64, 500)})
    (spec,) = _check(model, feeds, kernels=1)
    assert plan(spec).units > 1


BALANCED_CASES = [
    ("conv-7x7-11-panels", "Conv", {"x": (1, 32, 7, 7)}, {"w": (528, 32, 3, 3), "b": (528,)}, {"pads": [1, 1, 1, 1]}),
    ("matmul-7-panels", "MatMul", {"a": (40, 300), "b": (300, 200)}, None, {}),
]


@pytest.mark.parametrize("case", BALANCED_CASES, ids=[c[0] for c in BALANCED_CASES])
def test_balanced_units_split_a_panel(case, rng, monkeypatch):
    """Panels that two threads cannot share evenly (11 of 48 columns; 7 of 32 with B packed at run
    time): the units are rectangles, one panel split by rows between the threads' halves, and
    together they cover every register tile once."""
    monkeypatch.setenv("EINC_NUM_THREADS", "2")
    _, op, inputs, inits, attrs = case
    feeds = {k: _f(rng, *shape) for k, shape in inputs.items()}
    model = single_node_model(op, feeds, initializers={k: _f(rng, *shape) for k, shape in (inits or {}).items()} or None, **attrs)
    (spec,) = _check(model, feeds, kernels=1)
    kernel = plan(spec)
    assert kernel.rects is not None and kernel.units == len(kernel.rects) > 2
    covered = np.zeros((kernel.nb, kernel.n_panels, kernel.m_panels), int)
    for bi, j0, j1, r0, r1 in kernel.rects:
        covered[bi, j0:j1, r0:r1] += 1
    assert (covered == 1).all()
    assert any(j1 - j0 == 1 and r1 - r0 < kernel.m_panels for _, j0, j1, r0, r1 in kernel.rects)


def test_two_runs_of_columns():
    from einc.backends.llvm.ukernels.gemm import two_runs

    # a 6-wide image row: chunks of 4 columns are 1 run (0-3), 2 runs (4,5 | 6,7), ...
    offsets = np.array([r * 8 + q for r in range(3) for q in range(6)])  # row stride 8 (padded)
    split, first, second, step = two_runs(offsets, 4, 5)
    assert split[0] == 4 and first[0] == 0 and step[0] == 1
    assert split[1] == 2 and first[1] == 4 and second[1] + 2 == 8  # lanes 2, 3 read 8, 9
    assert split[4] == 4  # the last chunk: its two real columns are one run
    # stride 2 (a strided convolution's columns), 3 per output row, rows 20 apart
    split, first, second, step = two_runs(np.array([r * 20 + 2 * q for r in range(2) for q in range(3)]), 4, 2)
    assert step[0] == 2 and split[0] == 3 and second[0] + 2 * 3 == 20
    assert two_runs(np.array([0, 5, 10, 15]), 4, 1)[0][0] == 0  # stride 5: a gather


TILE_CASES = [(128, (8, 12), (8, 48)), (136, (9, 10), (8, 48)), (132, (8, 8), (6, 64)), (130, (5, 10), (6, 64)), (140, (4, 8), (14, 32))]


@pytest.mark.parametrize(("cout", "hw", "tile"), TILE_CASES, ids=["8x48", "8x48-edges", "6x64", "6x64-edges", "14x32"])
def test_conv_register_tile(cout, hw, tile, rng, monkeypatch):
    """Convolutions with channels as rows take the register tile whose M x N pads least (edge tiles included)."""
    monkeypatch.setattr(calls, "ORIENTATION", "weights")
    feeds = {"x": _f(rng, 1, 6, *hw)}
    model = single_node_model("Conv", feeds, initializers={"w": _f(rng, cout, 6, 3, 3), "b": _f(rng, cout)}, pads=[1, 1, 1, 1])
    (spec,) = _check(model, feeds, kernels=1)
    assert (spec["tiles"]["mr"], spec["tiles"]["nr"]) == tile


def test_one_n_panel_splits_m_per_thread(rng, monkeypatch):
    """A 7x7 map in one 64-column panel: two threads take half of M each (B packed once per thread)."""
    monkeypatch.setenv("EINC_NUM_THREADS", "2")
    monkeypatch.setattr(calls, "ORIENTATION", "weights")
    feeds = {"x": _f(rng, 1, 16, 7, 7)}
    model = single_node_model("Conv", feeds, initializers={"w": _f(rng, 300, 16, 3, 3), "b": _f(rng, 300)}, pads=[1, 1, 1, 1])
    (spec,) = _check(model, feeds, kernels=1)
    kernel = plan(spec)
    assert (kernel.mr, kernel.nr) == (6, 64) and kernel.blocks == (2, 1) and not kernel.serial


CONV_CASES = [c for c in CASES if c[1] == "Conv" and "depthwise" not in c[0]]


@pytest.mark.parametrize("orientation", ["weights", "pixels"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_orientations(case, orientation, rng, monkeypatch):
    """Each convolution computed with output channels as M (weights as A) and with pixels as M
    (the image packed by runs into A, weights prepacked as B, tiles transposed at the store)."""
    monkeypatch.setattr(calls, "ORIENTATION", orientation)
    _, op, inputs, inits, attrs = case
    feeds = inputs(rng)
    model = single_node_model(op, feeds, initializers=inits(rng), **attrs)
    (spec,) = _check(model, feeds, kernels=1)
    kernel = plan(spec)
    assert kernel.c_transposed == (orientation == "pixels") and kernel.b.packed == (orientation == "pixels")


def _conv_chain(rng, cin: int, cout: int, hw: tuple[int, int], **attrs) -> tuple[onnx.ModelProto, dict]:
    """Conv (with bias) + residual Add + Relu: a three-input epilogue."""
    x = _f(rng, 1, cin, *hw)
    stride = attrs.get("strides", [1, 1])[0]
    res = _f(rng, 1, cout, -(-hw[0] // stride), -(-hw[1] // stride))
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], **attrs),
        helper.make_node("Add", ["c", "res"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape) for n, a in {"x": x, "res": res}.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_f(rng, cout, cin, 3, 3) * 0.1, "w"), numpy_helper.from_array(_f(rng, cout), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), {"x": x, "res": res}


# (id, cin, cout, map, attributes): M (pixels) and N (channels) edges, K in several blocks, a 7x7 map.
PIXEL_CASES = [
    ("edges", 5, 37, (9, 11), {}),
    ("k-blocks", 130, 20, (6, 7), {}),
    ("map-7x7", 24, 70, (7, 7), {}),
    ("stride2", 6, 33, (13, 15), {"strides": [2, 2]}),
]


@pytest.mark.parametrize(("cin", "cout", "hw", "attrs"), [c[1:] for c in PIXEL_CASES], ids=[c[0] for c in PIXEL_CASES])
def test_pixels_as_rows_with_epilogue(cin, cout, hw, attrs, rng, monkeypatch):
    """Pixels as M with the bias (constant along a column of C) and the residual (contiguous along
    it) in the epilogue, partial sums of earlier K blocks added at the transposed store."""
    monkeypatch.setattr(calls, "ORIENTATION", "pixels")
    model, feeds = _conv_chain(rng, cin, cout, hw, **attrs)
    (spec,) = _check(model, feeds, kernels=1)
    kernel = plan(spec)
    assert kernel.c_transposed and len(spec["epilogue"]["inputs"]) == 2
    if cin * 9 > kernel.kc:
        assert kernel.kp > kernel.kc  # several K blocks


@pytest.mark.parametrize(("cin", "cout", "hw", "k", "stride", "orientation"), [
    (64, 64, 56, 3, 1, "pixels"),  # 64 channels pad to 70 in 14-row tiles; 3136 pixels do not pad
    (256, 256, 14, 3, 1, "pixels"),  # a 14x14 map pads to 224 columns; 196 = 14 x 14 rows
    (512, 512, 7, 3, 1, "pixels"),  # 49 pixels: 7 x 48 tiles
    (64, 128, 56, 1, 2, "weights"),  # K = 64: the transposed store would cost more than the padding saves
])
def test_orientation_rule(cin, cout, hw, k, stride, orientation, rng, monkeypatch):
    """`auto` picks pixels as rows where that pads less, counting the transposed store as extra K
    (direct convolutions: the winograd pass would take the 3x3 ones at 56x56 and 14x14)."""
    monkeypatch.setattr(winograd, "ENABLED", False)
    feeds = {"x": _f(rng, 1, cin, hw, hw)}
    model = single_node_model("Conv", feeds, initializers={"w": _f(rng, cout, cin, k, k)}, strides=[stride] * 2, pads=[k // 2] * 4)
    (spec,) = _kernel_specs(model)
    assert plan(spec).c_transposed == (orientation == "pixels")


@pytest.mark.parametrize(("m", "k", "n", "tile"), [(64, 96, 256, (6, 64)), (128, 64, 256, (6, 64)), (1024, 64, 1024, (6, 64)), (48, 40, 96, (8, 48))])
def test_matmul_register_tile(m, k, n, tile, rng):
    """A matmul takes 6 x 64, or another register tile where that pads at least 3% less (48 x 96:
    48 x 128 in 6 x 64, exact in 8 x 48)."""
    feeds = {"a": _f(rng, m, k)}
    model = single_node_model("MatMul", feeds, initializers={"w": _f(rng, k, n)})
    (spec,) = _check(model, feeds, kernels=1)
    assert (spec["tiles"]["mr"], spec["tiles"]["nr"]) == tile


@pytest.mark.parametrize(("hw", "step"), [(56, 2), (40, None)], ids=["rows-affine", "edge-tiles"])
def test_a_through_its_k_table(hw, step, rng):
    """A stem convolution (3 channels, 7x7, stride 2: K = 147) whose register tiles each cover
    pixels at one stride is read from the image through A's K table, not packed; with edge
    tiles (20 x 20 pixels in 14-row tiles) it is packed, since those rows would run past it."""
    feeds = {"x": _f(rng, 1, 3, hw, hw)}
    feeds["x"][0, 2, 23, 23] = np.inf  # the last tap (K's last row) of output (10, 10): inf, not 0 x inf = NaN from K's padding
    model = single_node_model("Conv", feeds, initializers={"w": _f(rng, 32, 3, 7, 7), "b": _f(rng, 32)}, strides=[2, 2], pads=[3, 3, 3, 3])
    (spec,) = _check(model, feeds, kernels=1)
    kernel = plan(spec)
    assert kernel.c_transposed and kernel.a_step == step and kernel.a_runs == (step is None)
