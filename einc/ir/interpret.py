"""A numpy interpreter for `ein` cascades: the meaning of the IR, for tests.

It evaluates each einsum over its whole iteration space at once (memory grows
with the product of all extents), so it suits small cases: it checks lowerings
of ONNX ops independently of any backend, and backends against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.ir import Block, Operation, SSAValue

from einc.ir import mapexpr
from einc.ir.dtypes import compute_dtype, to_dtype, type_to_numpy
from einc.ir.ein import (
    ConcatOp,
    ConstantOp,
    EinsumOp,
    GatherOp,
    GroupOp,
    IfOp,
    PadOp,
    ReshapeOp,
    ScatterOp,
    TopKOp,
    WeightOp,
    YieldOp,
)

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def einsum(op: EinsumOp, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The value of one extended einsum on concrete inputs."""
    extents = op.extents()
    order = op.output_vars + op.reduction_vars()
    grid = {
        var: np.arange(extents[var]).reshape([-1 if i == n else 1 for i in range(len(order))])
        for n, var in enumerate(order)
    }
    dtype = type_to_numpy(op.result_type().get_element_type())
    # An f16 reduction computes and accumulates in f32 and rounds once, as the CPU code
    # and onnxruntime do; bit formats compute in f32 / i32 anyway.
    wide = dtype == np.float16 and op.reduce_op is not None
    gathered = []
    for array, exprs in zip(inputs, op.input_exprs):
        index = tuple(
            sum((grid[v] * c for v, c in e.terms), np.full([1] * len(order), e.const)) for e in exprs
        )
        picked = array[index] if exprs else np.broadcast_to(array, [1] * len(order))
        ty = np.dtype(np.float32) if wide and picked.dtype == np.float16 else compute_dtype(picked.dtype)
        gathered.append(picked.astype(ty, copy=False))
    value = mapexpr.evaluate(op.map_expr, gathered, np.dtype(np.float32) if wide else compute_dtype(dtype))
    value = np.broadcast_to(value, [extents[v] for v in order])
    n_out = len(op.output_vars)
    if op.reduce_op is not None and len(order) > n_out:
        value = _REDUCE[op.reduce_op].reduce(value, axis=tuple(range(n_out, len(order))))
    return to_dtype(value, dtype).reshape(op.result_type().get_shape())


def pad(op: PadOp, x: np.ndarray) -> np.ndarray:
    """ein.pad: dilate by `interior`, then pad (or crop) each side."""
    low, high, interior = op.amounts
    if any(interior):
        shape = [n + max(n - 1, 0) * i for n, i in zip(x.shape, interior)]
        dilated = np.full(shape, op.value.value.data, dtype=x.dtype)
        dilated[tuple(slice(None, None, i + 1) for i in interior)] = x
        x = dilated
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for lo, hi, n in zip(low, high, x.shape))
    x = x[crop]
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in zip(low, high)]
    if op.mode.data == "constant":
        return np.pad(x, widths, constant_values=np.asarray(op.value.value.data).astype(x.dtype))
    return np.pad(x, widths, mode=op.mode.data)


def gather(op: GatherOp, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    axis = op.axis.value.data
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return np.take(data, indices, axis=axis)


_SCATTER = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def scatter(op: ScatterOp, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    """A copy of `data` with `updates` stored (or folded, `ufunc.at`) where the indices say."""
    axis = op.axis.value.data
    idx = np.where(indices < 0, indices + data.shape[axis], indices)
    rank, k = updates.ndim, idx.ndim
    grids = np.ogrid[tuple(slice(n) for n in updates.shape)] if rank else []
    where = (*grids[:axis], idx.reshape((1,) * axis + idx.shape + (1,) * (rank - axis - k)), *grids[axis + k :])
    out = data.copy()
    if op.reduction.data == "none":
        out[where] = updates  # numpy keeps the last of duplicate indices
    else:
        _SCATTER[op.reduction.data].at(out, where, updates)
    return out


def top_k(op: TopKOp, x: np.ndarray) -> np.ndarray:
    """Positions of the k best along the axis: a stable sort (equal elements by position)."""
    axis = op.axis.value.data
    x = np.moveaxis(x, axis, -1)
    position = np.broadcast_to(np.arange(x.shape[-1]), x.shape)
    if op.largest.value.data:  # descending, ties by ascending position: ascending with ties by descending, reversed
        order = np.lexsort((-position, x), axis=-1)[..., ::-1]
    else:
        order = np.lexsort((position, x), axis=-1)
    return np.moveaxis(order[..., : op.k].astype(np.int64), -1, axis)


def _constant(op: ConstantOp) -> np.ndarray:
    ty = op.result.type
    dtype = type_to_numpy(ty.get_element_type())  # type: ignore[attr-defined]
    return np.array(op.value.get_values(), dtype=dtype).reshape(ty.get_shape())  # type: ignore[attr-defined]


EVALUATORS: dict[type[Operation], Callable[..., np.ndarray]] = {
    EinsumOp: lambda op, *xs: einsum(op, xs),
    ReshapeOp: lambda op, x: x.reshape(op.result.type.get_shape()),
    GatherOp: gather,
    ScatterOp: scatter,
    TopKOp: top_k,
    ConcatOp: lambda op, *xs: np.concatenate(xs, axis=op.axis.value.data),
    PadOp: pad,
    ConstantOp: _constant,
}
"""How each value-producing ein op computes its result from its operands' values."""


def evaluate_op(op: Operation, operands: Sequence[np.ndarray]) -> np.ndarray:
    """The value of one ein op (not a weight) on concrete operands."""
    return EVALUATORS[type(op)](op, *operands)


def run_function(
    fn: func.FuncOp, args: Sequence[np.ndarray], weights: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """Evaluate a function of ein ops on arguments; weights by symbol."""
    return run_block(fn.body.block, args, weights)


def run_block(
    block: Block,
    args: Sequence[np.ndarray],
    weights: dict[str, np.ndarray],
    outer: Mapping[SSAValue, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Evaluate a block of ein ops up to its terminator (func.return or ein.yield);
    `outer` holds the values of enclosing blocks that a non-isolated region reads."""
    env: dict[SSAValue, np.ndarray] = {**(outer or {}), **dict(zip(block.args, args))}
    for op in block.ops:
        if isinstance(op, WeightOp):
            env[op.result] = weights[op.sym.string_value()]
        elif isinstance(op, GroupOp):
            results = run_block(op.body.block, [env[v] for v in op.inputs], weights)
            env.update(zip(op.outputs, results))
        elif isinstance(op, IfOp):
            taken = op.branch(bool(np.asarray(env[op.cond]).reshape(-1)[0]))
            env.update(zip(op.outputs, run_block(taken.block, [], weights, env)))
        elif type(op) in EVALUATORS:
            env[op.results[0]] = evaluate_op(op, [env[v] for v in op.operands])
        elif isinstance(op, (func.ReturnOp, YieldOp)):
            return [env[v] for v in op.operands]
        else:
            raise NotImplementedError(f"the ein interpreter cannot run '{op.name}'")
    raise ValueError("block has no terminator")
