"""Lowerings of the loss family: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both pick, for every sample position (n, d1, ..., dk), the input's element of
the target class: `loss[n, d] = -input[n, target[n, d], d] * weight[target[n, d]]`.
The pick is a one-hot einsum that reduces over the classes c,

    L[n, d] = sum_c select(eq(T[n, d], iota[c]), -(X[n, c, d] * W[c]), 0)

rather than `ein.gather`, because a target equal to `ignore_index` may name no
class at all (negative, or C and beyond): a comparison against the class range
matches nothing there and gives 0, where a gather would read out of bounds
unless the index were clamped and the result masked afterwards. An
`ignore_index` inside [0, C) becomes a zero in the per-class weight W
(compile-time for no weight, one einsum over C for a runtime one), so one map
handles weights and ignored targets alike, and the einsum stays an einsum that
fusion and the pass-count analysis understand. It reads C elements per sample
position; SoftmaxCrossEntropyLoss reads all of them for its log-softmax anyway.

`sum` and `mean` reduce the same map over (n, c, d) straight to a scalar; a mean
divides by the sum of the picked weights (the same one-hot over W) when there
is a weight or an ignore_index, else by the number of sample positions.
SoftmaxCrossEntropyLoss is the stable log-softmax cascade over axis 1
(max-subtracted) followed by the same pick; it returns the log-probabilities
as its optional second result.
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.ir import SSAValue

from einc.ir.dtypes import type_to_numpy
from einc.passes.onnx_to_ein.common import (
    CascadeBuilder,
    Lowering,
    Node,
    Unsupported,
    axis_vars,
    shape_of,
    tensor_type,
)
from einc.passes.onnx_to_ein.nn import log_softmax_cascade

REDUCTIONS = ("none", "sum", "mean")


def _ignore_index(node: Node) -> int | None:
    return None if node.attr("ignore_index") is None else node.int_attr("ignore_index", 0)


def _class_weights(b: CascadeBuilder, node: Node, x: SSAValue, iota: SSAValue) -> SSAValue | None:
    """W[c]: the `weight` input with a zero at an `ignore_index` in [0, C), or None for all ones.

    An ignore_index outside [0, C) needs no zero: no class compares equal to it.
    """
    weight, classes = node.input(2), shape_of(iota)[0]
    ignore = _ignore_index(node)
    inside = ignore is not None and 0 <= ignore < classes
    if weight is None:
        if not inside:
            return None
        ones = np.ones(classes, type_to_numpy(x.type.get_element_type()))  # type: ignore[attr-defined]
        ones[ignore] = 0
        return b.constant(ones, x)
    if not inside:
        return weight
    return b.einsum([iota, weight], [["c"], ["c"]], ["c"], tensor_type([classes], weight), f"select(eq($0, {ignore}), 0, $1)")


def nll_cascade(b: CascadeBuilder, node: Node, log_prob: SSAValue, target: SSAValue) -> SSAValue:
    """The negative log-likelihood of `log_prob` [N, C, d...] at `target` [N, d...], reduced."""
    shape = shape_of(log_prob)
    if len(shape) < 2:
        raise Unsupported(f"input must have rank 2 or more, got shape {list(shape)}")
    reduction = node.string_attr("reduction", "mean")
    if reduction not in REDUCTIONS:
        raise Unsupported(f"reduction '{reduction}' is not one of {', '.join(REDUCTIONS)}")
    iota = b.constant(np.arange(shape[1]), target)
    weights = _class_weights(b, node, log_prob, iota)
    ivars = axis_vars(len(shape))
    ivars[1] = "c"
    tvars = [v for d, v in enumerate(ivars) if d != 1]
    inputs, exprs = [target, iota, log_prob], [tvars, ["c"], ivars]
    picked = "-$2"
    if weights is not None:
        inputs.append(weights)
        exprs.append(["c"])
        picked = "-($2 * $3)"
    pick = f"select(eq($0, $1), {picked}, 0)"
    if reduction == "none":
        return b.einsum(inputs, exprs, tvars, tensor_type(shape_of(target), log_prob), pick, "add")
    scalar = tensor_type([], log_prob)
    total = b.einsum(inputs, exprs, [], scalar, pick, "add")
    if reduction == "sum":
        return total
    if weights is None and _ignore_index(node) is None:
        count = math.prod(shape_of(target))
        return b.einsum([total], [[]], [], scalar, f"$0 / {float(count)!r}")
    counted = inputs[:2] + inputs[3:]
    picked_weight = "$2" if weights is not None else "1"
    norm = b.einsum(counted, exprs[:2] + exprs[3:], [], scalar, f"select(eq($0, $1), {picked_weight}, 0)", "add")
    return b.einsum([total, norm], [[], []], [], scalar, "$0 / $1")


def lower_nll_loss(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x, target = node.input(0), node.input(1)
    if x is None or target is None:
        raise Unsupported("input and target are required")
    return [nll_cascade(b, node, x, target)]


def lower_softmax_cross_entropy(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Log-softmax over the classes (axis 1), then the negative log-likelihood."""
    x, target = node.input(0), node.input(1)
    if x is None or target is None:
        raise Unsupported("scores and labels are required")
    if len(shape_of(x)) < 2:
        raise Unsupported(f"scores must have rank 2 or more, got shape {list(shape_of(x))}")
    log_prob = log_softmax_cascade(b, x, 1)
    return [nll_cascade(b, node, log_prob, target), log_prob][: len(node.op.results)]


LOWERINGS: dict[str, Lowering] = {
    "NegativeLogLikelihoodLoss": lower_nll_loss,
    "SoftmaxCrossEntropyLoss": lower_softmax_cross_entropy,
}
