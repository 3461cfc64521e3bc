"""Liveness of an ein function's intermediates over its program order: which need arena bytes, and when.

A *step* is one op that writes a new buffer (einsum, gather, concat, pad), in
program order. An intermediate lives from the step that writes it to the last
step that reads it, directly or through views (`ein.reshape` shares its source's
buffer, so a view's readers extend the source's life). A value returned through
a view lives to the end: lowering copies it into the output buffer there.
Inputs, outputs, weights and constants have buffers of their own outside the
arena and are left out.

In place: an einsum with no reduce whose output has the same shape and element
type as an intermediate input that dies at this step, and that reads every
occurrence of that input at exactly the output's index, writes each element
after reading it and nothing else: the output may take over the input's buffer.
Such an output joins its input's buffer rather than getting one of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation, SSAValue

from einc.ir.dtypes import type_to_numpy
from einc.ir.ein import ConcatOp, ConstantOp, EinsumOp, GatherOp, GroupOp, PadOp, ReshapeOp, ScatterOp, TopKOp, WeightOp
from einc.passes.memplan.algorithms import Buffer, align

PRODUCERS: tuple[type[Operation], ...] = (EinsumOp, GatherOp, ScatterOp, TopKOp, ConcatOp, PadOp, GroupOp)
"""Ops whose results get arena buffers. A fused group is one step whose results get
buffers; values inside it never do. Any other op (control flow) is a step too,
reading what its regions read; its results get buffers of their own outside the
arena, as lowering gives them."""
VIEWS: tuple[type[Operation], ...] = (ReshapeOp,)
"""Ops whose result shares its source's buffer."""
DEFINITIONS: tuple[type[Operation], ...] = (WeightOp, ConstantOp)
"""Ops whose result lives outside the arena (the weight blob)."""


def nbytes(value: SSAValue) -> int:
    """The bytes of a tensor value's flat buffer (at least one element, as lowering allocates)."""
    ty: TensorType = value.type  # type: ignore[assignment]
    return max(1, math.prod(ty.get_shape())) * type_to_numpy(ty.get_element_type()).itemsize


@dataclass
class Liveness:
    """The arena buffers of one function under one order of its ops."""

    order: list[Operation]
    """Every op of the body but the return, in the order analysed."""
    steps: list[Operation]
    """The producers, in order: step i is steps[i]."""
    buffers: list[Buffer]
    """Arena buffers: aligned size and closed interval of steps."""
    members: list[list[SSAValue]]
    """The values each buffer holds (more than one where outputs are written in place)."""
    raw_bytes: list[int]
    """Each buffer's size before alignment."""
    inplace: dict[Operation, int]
    """Producers that write over an input: the operand index they overwrite."""

    def buffer_of(self) -> dict[SSAValue, int]:
        return {v: b for b, values in enumerate(self.members) for v in values}


def source(value: SSAValue) -> SSAValue:
    """The value whose buffer holds `value`: its view chain followed to the end."""
    while isinstance(value.owner, VIEWS):
        value = value.owner.operands[0]
    return value


def uses(op: Operation) -> list[SSAValue]:
    """The values an op reads: its operands, and outer values read inside its regions."""
    if not op.regions:
        return list(op.operands)
    inner = {v for nested in op.walk() for v in nested.results}
    inner |= {a for nested in op.walk() for region in nested.regions for block in region.blocks for a in block.args}
    return list(dict.fromkeys(v for nested in op.walk() for v in nested.operands if v not in inner))


def _identity_read(op: EinsumOp, k: int) -> bool:
    """Operand k is read at exactly the output's index, with the output's shape and type."""
    exprs = op.input_exprs[k]
    same_index = [e.plain_var for e in exprs] == op.output_vars and all(e.const == 0 for e in exprs)
    return same_index and op.inputs[k].type == op.output.type


def analyse(fn: func.FuncOp, order: Sequence[Operation] | None = None, inplace: bool = True) -> Liveness:
    """Buffers and lifetimes of `fn`'s intermediates if its ops ran in `order` (default: as written)."""
    block = fn.body.block
    ret = block.last_op
    assert isinstance(ret, func.ReturnOp)
    ops = list(order) if order is not None else [op for op in block.ops if op is not ret]
    returned = set(ret.operands)
    steps = [op for op in ops if not isinstance(op, VIEWS + DEFINITIONS)]
    step_of = {op: s for s, op in enumerate(steps)}
    end = len(steps)  # lowering's copies into outputs run after the last producer

    def temp(value: SSAValue) -> SSAValue | None:
        value = source(value)
        return value if isinstance(value.owner, PRODUCERS) and value not in returned else None

    last_use: dict[SSAValue, int] = {}
    for op in steps:
        for result in op.results:
            last_use.setdefault(result, step_of[op])
        for operand in uses(op):
            if (t := temp(operand)) is not None:
                last_use[t] = max(last_use.get(t, -1), step_of[op])
    for value in returned:
        if (t := temp(value)) is not None:
            last_use[t] = end

    group: dict[SSAValue, int] = {}
    members: list[list[SSAValue]] = []
    written_over: dict[Operation, int] = {}
    for op in (op for op in steps if isinstance(op, PRODUCERS)):
        target = _inplace_operand(op, step_of[op], temp, last_use) if inplace and op.results[0] not in returned else None
        if target is not None:
            written_over[op] = target
            group[op.results[0]] = group[temp(op.operands[target])]  # type: ignore[index]
            members[group[op.results[0]]].append(op.results[0])
            continue
        for result in op.results:
            if result not in returned:
                group[result] = len(members)
                members.append([result])

    buffers, raw = [], []
    for b, values in enumerate(members):
        first = values[0]
        size = nbytes(first)
        raw.append(size)
        start = step_of[first.owner]  # type: ignore[index]
        buffers.append(Buffer(first.name_hint or f"t{b}", align(size), start, max(last_use[v] for v in values)))
    return Liveness(ops, steps, buffers, members, raw, written_over)


def _inplace_operand(op: Operation, step: int, temp, last_use: dict[SSAValue, int]) -> int | None:
    """The operand an elementwise einsum may overwrite, if any (see the module's note)."""
    if not isinstance(op, EinsumOp) or op.reduce is not None:
        return None
    for k, operand in enumerate(op.inputs):
        t = temp(operand)
        if t is None or last_use.get(t) != step:
            continue
        sharing = [j for j, other in enumerate(op.inputs) if temp(other) is t]
        if all(_identity_read(op, j) for j in sharing):
            return k
    return None
