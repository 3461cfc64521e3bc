"""A numpy interpreter for `ein` cascades: the meaning of the IR, for tests.

It evaluates each einsum over its whole iteration space at once (memory grows
with the product of all extents), so it suits small cases: it checks lowerings
of ONNX ops independently of any backend, and backends against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.ir import SSAValue

from einc.ir import mapexpr
from einc.ir.dtypes import type_to_numpy
from einc.ir.ein import ConstantOp, EinsumOp, ReshapeOp, WeightOp

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def einsum(op: EinsumOp, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The value of one extended einsum on concrete inputs."""
    extents = op.extents()
    order = op.output_vars + op.reduction_vars()
    grid = {
        var: np.arange(extents[var]).reshape([-1 if i == n else 1 for i in range(len(order))])
        for n, var in enumerate(order)
    }
    gathered = []
    for array, exprs in zip(inputs, op.input_exprs):
        index = tuple(
            sum((grid[v] * c for v, c in e.terms), np.full([1] * len(order), e.const)) for e in exprs
        )
        gathered.append(array[index] if exprs else np.broadcast_to(array, [1] * len(order)))
    dtype = type_to_numpy(op.result_type().get_element_type())
    value = mapexpr.evaluate(op.map_expr, gathered, dtype)
    value = np.broadcast_to(value, [extents[v] for v in order])
    n_out = len(op.output_vars)
    if op.reduce_op is not None and len(order) > n_out:
        value = _REDUCE[op.reduce_op].reduce(value, axis=tuple(range(n_out, len(order))))
    return np.asarray(value, dtype=dtype).reshape(op.result_type().get_shape())


def run_function(
    fn: func.FuncOp, args: Sequence[np.ndarray], weights: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """Evaluate a function of ein ops on arguments; weights by symbol."""
    env: dict[SSAValue, np.ndarray] = dict(zip(fn.body.block.args, args))
    for op in fn.body.block.ops:
        if isinstance(op, EinsumOp):
            env[op.output] = einsum(op, [env[v] for v in op.inputs])
        elif isinstance(op, ReshapeOp):
            env[op.result] = env[op.source].reshape(op.result.type.get_shape())  # type: ignore[attr-defined]
        elif isinstance(op, WeightOp):
            env[op.result] = weights[op.sym.string_value()]
        elif isinstance(op, ConstantOp):
            dtype = type_to_numpy(op.result.type.get_element_type())  # type: ignore[attr-defined]
            env[op.result] = np.array(op.value.get_values(), dtype=dtype).reshape(
                op.result.type.get_shape()  # type: ignore[attr-defined]
            )
        elif isinstance(op, func.ReturnOp):
            return [env[v] for v in op.arguments]
        else:
            raise NotImplementedError(f"the ein interpreter cannot run '{op.name}'")
    raise ValueError("function has no return")
