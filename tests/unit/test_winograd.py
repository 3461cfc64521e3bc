"""The `winograd` pass and its transform kernels: 3x3 stride-1 convolutions in F(2x2, 3x3) form.

Every rewritten model is run and checked against onnxruntime, with the CPU kernels and
(GROUP_KERNELS without the transforms) with the groups lowered einsum by einsum, which
computes the einsums exactly as the IR writes them.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import einc
import einc.passes.winograd as winograd
from einc.backends.llvm.ukernels.winograd import WinogradFusedPlan, _split
from einc.frontend.onnx import import_model
from einc.ir.ein import GroupOp
from einc.passes import Pipeline
from einc.passes import lower_ein_to_loops as loops
from einc.tools.explain import explain
from tests.conftest import ort_run

RTOL, ATOL = 1e-4, 1e-4


def _conv_model(n: int, cin: int, cout: int, h: int, w: int, *, k: int = 3, stride: int = 1, residual: bool = False,
                act: str | None = "Relu", bias: bool = True) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    pad = k // 2
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.2).astype(np.float32), "w")]
    conv_inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["y"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, cin, h, w])]
    feeds = {"x": rng.standard_normal((n, cin, h, w)).astype(np.float32)}
    last = "y"
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [n, cout, oh, ow]))
        feeds["r"] = rng.standard_normal((n, cout, oh, ow)).astype(np.float32)
        nodes.append(helper.make_node("Add", [last, "r"], ["s"]))
        last = "s"
    if act:
        nodes.append(helper.make_node(act, [last], ["z"]))
        last = "z"
    graph = helper.make_graph(nodes, "conv", inputs, [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), feeds


def _groups(model: onnx.ModelProto, **options: int) -> list[GroupOp]:
    module = import_model(model).module
    text = ",".join(f"{k}={v}" for k, v in options.items())
    Pipeline(f"onnx-to-ein,fold-weights,fuse,winograd{{{text}}}" if text else "onnx-to-ein,fold-weights,fuse,winograd").apply(module)
    return [op for op in module.walk() if isinstance(op, GroupOp)]


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    ours = einc.compile(model, cache=False).run(feeds)
    theirs = ort_run(model, feeds)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=RTOL, atol=ATOL)


CASES = [
    # (id, n, cin, cout, h, w, residual, act)
    ("56x56", 1, 16, 24, 56, 56, False, "Relu"),
    ("residual", 1, 16, 16, 14, 14, True, "Relu"),
    ("batch-2", 2, 16, 32, 14, 14, False, "Relu"),
    ("wide", 1, 16, 16, 14, 68, False, "Sigmoid"),  # 34 tiles a row: two vectors and 2 more
    ("narrow", 1, 16, 16, 28, 10, True, None),  # 5 tiles a row: one partial vector
    ("no-bias", 1, 16, 16, 16, 16, False, None),
    ("k-padded", 1, 18, 20, 16, 16, True, "Relu"),  # 18 channels: K padded to 20 in the packed A
]
THREE = ["winograd-input", "contraction", "winograd-output"]
FUSED = {"56x56", "narrow", "no-bias", "k-padded"}
"""Cases in the fused form: one image, at least FUSED_MIN_ROWS rows of tiles."""


@pytest.mark.parametrize(("case", "n", "cin", "cout", "h", "w", "residual", "act"), CASES, ids=[c[0] for c in CASES])
def test_winograd_matches_onnxruntime(case, n, cin, cout, h, w, residual, act):
    model, feeds = _conv_model(n, cin, cout, h, w, residual=residual, act=act, bias=act is not None or residual)
    kinds = [g.kind.data for g in _groups(model)]
    assert kinds == (["winograd"] if case in FUSED else THREE)
    _check(model, feeds)


@pytest.mark.parametrize("case", sorted(FUSED))
def test_fused_form_as_three_groups_computes_the_same(case, monkeypatch):
    """The fused form off: the same convolutions as three groups, each over the whole map."""
    monkeypatch.setattr(winograd, "FUSED", False)
    n, cin, cout, h, w, residual, act = next(c[1:] for c in CASES if c[0] == case)
    model, feeds = _conv_model(n, cin, cout, h, w, residual=residual, act=act, bias=act is not None or residual)
    assert [g.kind.data for g in _groups(model)] == THREE
    _check(model, feeds)


@pytest.mark.parametrize(("case", "mr", "nr"), [("56x56", 14, 32), ("narrow", 7, 48), ("no-bias", 8, 48)])
def test_fused_kernel_plans_rows_of_tiles(case, mr, nr, monkeypatch):
    """The fused kernel's units are rows of tiles; its GEMMs take the register tile of least padded
    work for a row (28 tiles: 14 x 32; 5: 7 x 48; 8: 8 x 48) and the transformed weight prepacked."""
    monkeypatch.setenv("EINC_NUM_THREADS", "2")
    n, cin, cout, h, w, residual, act = next(c[1:] for c in CASES if c[0] == case)
    model, feeds = _conv_model(n, cin, cout, h, w, residual=residual, act=act, bias=act is not None or residual)
    specs = _kernel_specs(model)
    assert list(specs) == ["winograd_fused"]
    spec = specs["winograd_fused"]
    assert (spec["mr"], spec["nr"]) == (mr, nr) and spec["packed"] and spec["unpadded"] == 1
    assert f"cpu kernel: winograd_fused, register tile {mr} x {nr}" in explain(model)
    plan = WinogradFusedPlan(spec)
    assert plan.units == h // 2 and plan.gemm.a.packed and plan.gemm.b.packed and plan.gemm.c_transposed
    assert 16 * (w // 2) * (cin + cout) * 4 <= winograd.FUSED_SCRATCH
    _check(model, feeds)


def test_fused_form_needs_rows_and_room():
    """Too few rows of tiles for the threads, or a row's scratch beyond FUSED_SCRATCH: three groups."""
    model, _ = _conv_model(1, 16, 16, 14, 14)  # 7 rows
    assert [g.kind.data for g in _groups(model)] == THREE
    model, _ = _conv_model(1, 256, 256, 56, 56, act=None)  # 28 tiles x 512 channels x 16: 896 KiB
    assert [g.kind.data for g in _groups(model)] == THREE


def test_epilogue_moves_to_the_output_group():
    model, _ = _conv_model(1, 16, 16, 14, 14, residual=True)
    out = _groups(model)[-1]
    ops = [op for op in out.body.block.ops if op.name == "ein.einsum"]
    assert len(ops) == 4  # the transform, bias, residual add, ReLU
    assert "%r" not in str(ops[0]) and "u * 2 + j" in str(out)  # the residual read at [n, m, 2t + i, 2u + j]


@pytest.mark.parametrize("size", [14, 16], ids=["three-groups", "fused"])
def test_generic_lowering_computes_the_same(size, monkeypatch):
    """Without the transform kernels the groups are lowered einsum by einsum: the IR means what it says."""
    table = {k: v for k, v in loops.GROUP_KERNELS.items() if not k.startswith("winograd")}
    monkeypatch.setattr(loops, "GROUP_KERNELS", table)
    model, feeds = _conv_model(1, 16, 16, size, size, residual=True)
    _check(model, feeds)


def test_few_planes_split_rows(monkeypatch):
    """Fewer planes than 4 a thread: units are blocks of tile rows."""
    assert _split(64, 28, 2) == (28, 1)
    assert _split(4, 28, 2) == (14, 2)
    monkeypatch.setattr(winograd, "FUSED", False)
    model, feeds = _conv_model(1, 2, 3, 56, 20, residual=True)
    kinds = [g.kind.data for g in _groups(model, min_channels=1)]
    assert kinds == ["winograd-input", "contraction", "winograd-output"]
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    _check(model, feeds)


@pytest.mark.parametrize(("shape", "why"), [
    (dict(h=7, w=7, cin=16, cout=16), "an odd map (7x7)"),
    (dict(h=8, w=8, cin=16, cout=16), "a small map (8x8 < 196 pixels)"),
    (dict(h=14, w=14, cin=4, cout=16), "few channels (4 -> 16)"),
])
def test_declined_with_a_reason(shape, why):
    model, feeds = _conv_model(1, shape["cin"], shape["cout"], shape["h"], shape["w"])
    (group,) = _groups(model)
    assert group.kind.data == "contraction" and why in group.attributes["einc.why"].data
    _check(model, feeds)


@pytest.mark.parametrize("kw", [dict(k=5), dict(stride=2)], ids=["5x5", "stride-2"])
def test_other_convolutions_stay_direct(kw):
    model, _ = _conv_model(1, 16, 16, 28, 28, **kw)
    (group,) = _groups(model)
    assert group.kind.data == "contraction" and "Winograd" not in group.attributes["einc.why"].data


def _kernel_specs(model: onnx.ModelProto) -> dict[str, dict]:
    from einc.passes.pipeline import CPU_LOOPS

    module = import_model(model).module
    Pipeline(CPU_LOOPS).apply(module)
    specs = [json.loads(op.attributes["einc.ukernel"].data) for op in module.ops if "einc.ukernel" in op.attributes]
    return {s["kind"]: s for s in specs}


@pytest.mark.parametrize(("case", "mr"), [("56x56", 14), ("residual", 7), ("no-bias", 8), ("batch-2", 0), ("wide", 0), ("narrow", 0)])
def test_transform_writes_the_gemm_packed_panels(case, mr, monkeypatch):
    """Where a panel of MR tiles lies in one row of tiles (one image), the input transform writes
    the GEMM's packed A layout and the GEMM reads it as is (tiles as rows); elsewhere the plain
    layout, which the GEMM packs. Channel blocks split the panels when they are few (7 at 14x14)."""
    monkeypatch.setenv("EINC_NUM_THREADS", "2")
    monkeypatch.setattr(winograd, "FUSED", False)
    n, cin, cout, h, w, residual, act = next(c[1:] for c in CASES if c[0] == case)
    model, feeds = _conv_model(n, cin, cout, h, w, residual=residual, act=act, bias=act is not None or residual)
    specs = _kernel_specs(model)
    assert specs["winograd_input"].get("mr", 0) == mr
    assert bool(specs["gemm"]["a"].get("packed_by")) == bool(mr)
    if mr:
        assert specs["gemm"]["tiles"]["mr"] == mr and (w // 2) % mr == 0
    _check(model, feeds)


def test_fused_kernel_packs_a_shared_weight_at_run_time(monkeypatch):
    """A transformed weight the kernel cannot take prepacked (another reader: `_weight_only_here`
    finds none) is packed by the row's GEMMs as they run."""
    from einc.backends.llvm.ukernels import calls

    monkeypatch.setattr(calls, "_weight_only_here", lambda *args: None)
    model, feeds = _conv_model(1, 18, 20, 16, 16, residual=True)
    assert _kernel_specs(model)["winograd_fused"]["packed"] is False
    _check(model, feeds)


@pytest.mark.parametrize("absorb", [True, False], ids=["pad-absorbed", "padded-image"])
def test_fused_group_takes_the_zero_pad(absorb, monkeypatch):
    """The fused group takes the convolution's zero pad (its only reader) and its kernel reads the
    unpadded image with the border masked; with ABSORB_PAD off it reads the padded image. Large
    border values check that no masked lane is read: a wrong mask shows at once."""
    monkeypatch.setattr(winograd, "ABSORB_PAD", absorb)
    model, feeds = _conv_model(1, 16, 24, 20, 30, residual=True)  # 15 tiles a row: one vector, masked
    feeds["x"][:, :, [0, -1], :] = 1e3
    feeds["x"][:, :, :, [0, -1]] = -1e3
    (group,) = _groups(model)
    first = next(iter(group.body.block.ops))
    assert group.kind.data == "winograd" and (first.name == "ein.pad") == absorb
    assert ("zero pad read as a mask" in group.attributes["einc.why"].data) == absorb
    assert _kernel_specs(model)["winograd_fused"]["unpadded"] == int(absorb)
    _check(model, feeds)
