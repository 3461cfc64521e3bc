"""fold-weights: ein ops whose operands are all weights or constants run once, at compile time.

Exported models compute on their weights in every run: a transposed initializer
before a MatMul, LSTM gate weights concatenated and sliced (Silero VAD), a
BatchNorm scale multiplied into a convolution's weight, a QuantizeLinear /
DequantizeLinear pair on a constant weight. onnx-to-ein folds only ops on inline
`ein.constant`s; this pass evaluates every op (einsum, reshape, concat, pad,
gather, ...) whose operands are known at compile time with the ein interpreter
and replaces the values that run-time ops read by new `ein.weight`s (or
`ein.constant`s of at most `INLINE_LIMIT` elements). A folded weight is a plain
`ein.weight`, so `fuse` and the GEMM kernels prepack it like any other.

Cost rule: an op folds only when its result has at most as many elements as its
operands together (or at most `SMALL_RESULT`), so an Expand or Tile of a weight
stays a run-time broadcast instead of multiplying the artifact's size; and only
when the interpreter's iteration space stays under `GRID_LIMIT`. A reshape is a
view: it is folded through but never materialised on its own (the weight under
it is read in place).

The weight table (symbol -> numpy array) is not in the IR: the importer attaches
it to its module (`attach_weights`) and this pass updates it in place: new
symbols for folded values, and symbols no op refers to any more are dropped.
Without a table (`einc opt` on IR text) only ops on `ein.constant`s fold.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from einc.ir.dtypes import type_to_numpy
from einc.ir.ein import ConstantOp, EinsumOp, ReshapeOp, WeightOp, YieldOp
from einc.ir.interpret import EVALUATORS, evaluate_op
from einc.passes.onnx_to_ein.common import constant_value, dense_attr

INLINE_LIMIT = 64
"""Folded values of at most this many elements become `ein.constant`s, as the importer's do."""

SMALL_RESULT = 64
"""Results of at most this many elements fold whatever their operands' sizes."""

GRID_LIMIT = 1 << 24
"""Largest iteration space (product of an einsum's extents) the interpreter evaluates here."""

_TABLES: weakref.WeakKeyDictionary[ModuleOp, dict[str, np.ndarray]] = weakref.WeakKeyDictionary()


def attach_weights(module: ModuleOp, weights: dict[str, np.ndarray]) -> None:
    """Make `weights` the table that the `ein.weight` symbols of `module` refer to."""
    _TABLES[module] = weights


def weight_table(module: ModuleOp) -> dict[str, np.ndarray] | None:
    """The weight table attached to `module`, if any."""
    return _TABLES.get(module)


def _size(value: SSAValue) -> int:
    return math.prod(value.type.get_shape())  # type: ignore[attr-defined]


def _worth_folding(op: Operation, inline_only: bool) -> bool:
    """The cost rule: no growth beyond the operands (or a small result), a bounded evaluation."""
    size = _size(op.results[0])
    if inline_only and size > INLINE_LIMIT and not isinstance(op, ReshapeOp):
        return False
    if size > max(sum(_size(v) for v in op.operands), SMALL_RESULT):
        return False
    if isinstance(op, EinsumOp):
        extents = op.extents()
        return math.prod(extents[v] for v in op.output_vars + op.reduction_vars()) <= GRID_LIMIT
    return True


def new_symbol(hint: str | None, table: dict[str, np.ndarray], suffix: str = "folded") -> str:
    """A new symbol after the value's name, unique in the table (deterministic: program order)."""
    base = re.sub(r"[^A-Za-z0-9_$.]", "_", hint or suffix)
    base = base if re.match(r"[A-Za-z_]", base) else "_" + base
    symbol, n = f"{base}_{suffix}", 0
    while symbol in table:
        n += 1
        symbol = f"{base}_{suffix}_{n}"
    return symbol


def _ops(module: ModuleOp) -> Iterator[Operation]:
    """The ops of every function, definitions before uses (regions after their op)."""
    for fn in module.ops:
        if isinstance(fn, func.FuncOp):
            yield from fn.walk()


@dataclass(frozen=True)
class FoldWeights(ModulePass):
    """Evaluate ops on weights and constants at compile time; their results become weights."""

    name: ClassVar[str] = "fold-weights"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        table = weight_table(op)
        order = list(_ops(op))
        known: dict[SSAValue, np.ndarray] = {}
        folded: set[Operation] = set()
        for o in order:
            if isinstance(o, WeightOp) and table is not None and o.sym.string_value() in table:
                known[o.result] = table[o.sym.string_value()]
            elif isinstance(o, ConstantOp):
                known[o.result] = constant_value(o)
            elif (
                type(o) in EVALUATORS
                and len(o.results) == 1
                and o.operands
                and all(v in known for v in o.operands)
                and not any(isinstance(u.operation, (func.ReturnOp, YieldOp)) for u in o.results[0].uses)
                and _worth_folding(o, table is None)
            ):
                known[o.results[0]] = evaluate_op(o, [known[v] for v in o.operands])
                folded.add(o)
        # Values run-time ops read: materialise them, reading through views (reshapes stay).
        needed: set[SSAValue] = set()
        for o in reversed(order):
            if o not in folded:
                continue
            result = o.results[0]
            if result in needed or any(u.operation not in folded for u in result.uses):
                if isinstance(o, ReshapeOp):
                    needed.add(o.source)
                else:
                    self._materialise(o, known[result], table)
        for o in reversed(order):  # folded ops, weights and constants nobody reads any more
            if isinstance(o, (WeightOp, ConstantOp)) or o in folded:
                if o.parent is not None and not any(r.uses for r in o.results):
                    o.detach()
                    o.erase()
        if table is not None:
            used = {o.sym.string_value() for o in _ops(op) if isinstance(o, WeightOp)}
            for sym in [s for s in table if s not in used]:
                del table[sym]

    @staticmethod
    def _materialise(op: Operation, value: np.ndarray, table: dict[str, np.ndarray] | None) -> None:
        """Replace `op`'s result by a weight (or a constant) holding `value`."""
        result = op.results[0]
        ty: TensorType = result.type  # type: ignore[assignment]
        value = np.ascontiguousarray(value, dtype=type_to_numpy(ty.get_element_type())).reshape(ty.get_shape())
        if value.size <= INLINE_LIMIT or table is None:
            new: Operation = ConstantOp(dense_attr(value, ty))
        else:
            sym = new_symbol(result.name_hint, table)
            table[sym] = value
            new = WeightOp(sym, ty)
        block = op.parent_block()
        assert block is not None
        block.insert_op_before(new, op)
        new.results[0].name_hint = result.name_hint
        result.replace_all_uses_with(new.results[0])
