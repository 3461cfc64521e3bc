"""onnx-to-ein, loss family: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss over
(N, C) and (N, C, d...) inputs, every reduction, runtime and constant class weights,
ignore_index inside, below and above the class range (targets equal to it included),
int32/int64 targets, float16/float/double, and SCE's log_prob. Each case runs through
the ein interpreter and the CPU backend against onnxruntime: float32 and float64 at
RTOL/ATOL, float16 at 2e-3 (onnxruntime computes in float16 too)."""

from __future__ import annotations

import numpy as np
import pytest

import einc
from einc.diagnostics import EincError
from einc.frontend.onnx import import_model
from einc.passes import Pipeline
from tests.unit.test_onnx_to_ein_math import check_lowering, node_model

RTOL, ATOL = 1e-5, 1e-6
HALF_TOL = 2e-3

SHAPES = [(4, 5), (3, 4, 2), (2, 3, 2, 3)]
"""Inputs (N, C), (N, C, d1), (N, C, d1, d2)."""


def _feeds(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    ignore: int | None = None,
    weight: bool = False,
    dtype: type = np.float32,
    target_dtype: type = np.int64,
    scale: float = 2.0,
) -> dict[str, np.ndarray]:
    """Input, targets in [0, C) with about a third set to `ignore`, optional class weights."""
    n, c, *rest = shape
    target = rng.integers(0, c, (n, *rest))
    if ignore is not None:
        target[rng.random(target.shape) < 0.35] = ignore
        target.flat[0] = ignore
    feeds = {"x": rng.uniform(-scale, scale, shape).astype(dtype), "t": target.astype(target_dtype)}
    if weight:
        feeds["w"] = rng.uniform(0.2, 1.5, (c,)).astype(dtype)
    return feeds


def _check(op: str, feeds: dict[str, np.ndarray], attrs: dict, n_outputs: int = 1, opset: int = 13,
           initializers: dict[str, np.ndarray] | None = None) -> None:
    model = node_model(op, feeds, initializers, opset=opset, n_outputs=n_outputs, **attrs)
    half = feeds["x"].dtype == np.float16
    check_lowering(model, feeds, HALF_TOL if half else RTOL, HALF_TOL if half else ATOL)


WEIGHT_IGNORES = [(False, None), (True, None), (False, 1), (True, 1), (True, -1), (False, -100), (True, 7)]
"""Class weights or not, with no ignore_index, one inside [0, C), negative ones, one beyond C."""


@pytest.mark.parametrize("weight,ignore", WEIGHT_IGNORES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_loss(rng, op, shape, reduction, weight, ignore):
    feeds = _feeds(rng, shape, ignore, weight)
    attrs = {"reduction": reduction, **({} if ignore is None else {"ignore_index": ignore})}
    _check(op, feeds, attrs)


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("ignore", [None, 2, -1])
def test_sce_log_prob(rng, reduction, ignore):
    feeds = _feeds(rng, (3, 5, 4), ignore, weight=True)
    attrs = {"reduction": reduction, **({} if ignore is None else {"ignore_index": ignore})}
    _check("SoftmaxCrossEntropyLoss", feeds, attrs, n_outputs=2)


def test_sce_is_stable(rng):
    """Scores of +-1e4 would overflow exp without the max subtracted first."""
    feeds = _feeds(rng, (4, 6), scale=1e4)
    _check("SoftmaxCrossEntropyLoss", feeds, {"reduction": "none"}, n_outputs=2)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_constant_weight(rng, reduction):
    """A small weight initializer is an ein.constant: its masked copy folds at compile time."""
    feeds = _feeds(rng, (3, 4, 2), ignore=0)
    weight = {"w": rng.uniform(0.2, 1.5, (4,)).astype(np.float32)}
    for op in ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"]:
        _check(op, feeds, {"reduction": reduction, "ignore_index": 0}, initializers=weight)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_float_types(rng, op, dtype):
    feeds = _feeds(rng, (3, 4, 3), ignore=2, weight=True, dtype=dtype)
    _check(op, feeds, {"reduction": "mean", "ignore_index": 2})


@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_int32_targets(rng, op):
    feeds = _feeds(rng, (4, 3, 2), ignore=-1, target_dtype=np.int32)
    _check(op, feeds, {"reduction": "sum", "ignore_index": -1})


def test_nll_opset_22(rng):
    feeds = _feeds(rng, (3, 4, 2), ignore=3, weight=True)
    _check("NegativeLogLikelihoodLoss", feeds, {"reduction": "mean", "ignore_index": 3}, opset=22)


def test_all_ignored_mean_is_nan(rng):
    """Every target ignored: the mean divides 0 by a zero weight sum, as onnxruntime does."""
    feeds = _feeds(rng, (2, 3))
    feeds["t"][:] = 1
    _check("NegativeLogLikelihoodLoss", feeds, {"reduction": "mean", "ignore_index": 1})


def test_pick_is_one_einsum_without_gather(rng):
    """The pick reads the targets against a class iota: an einsum, never ein.gather."""
    feeds = _feeds(rng, (3, 4, 2), ignore=-1, weight=True)
    model = node_model("SoftmaxCrossEntropyLoss", feeds, reduction="mean", ignore_index=-1)
    imported = import_model(model)
    Pipeline("onnx-to-ein", verify_each=True).apply(imported.module)
    ops = [op for op in imported.module.walk() if op.name.startswith("ein.")]
    assert not [op for op in ops if op.name == "ein.gather"]
    maps = [op.map.data for op in ops if op.name == "ein.einsum"]
    assert "select(eq($0, $1), -($2 * $3), 0)" in maps
    assert "exp($0 - $1)" in maps  # the log-softmax is max-subtracted


@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_unknown_reduction_is_reported(rng, op):
    model = node_model(op, _feeds(rng, (3, 4)), reduction="median")
    with pytest.raises(EincError, match=f"node '{op.lower()}_node' \\({op}\\): reduction 'median' is not one of"):
        einc.compile(model)
