"""Orders of a function's ops that may need less arena: the memory planner's schedules.

Independent ops can run in any order, and the order decides which buffers are
live together. Finding the order of least peak memory is NP-hard, so the planner
tries a bounded set of orders (each linear in the ops) and keeps the one whose
plan needs the smallest arena:

  program        the order as written (kept on ties, so the IR moves only for a gain)
  min-memory     list scheduling: of the ready ops, run the one that adds the
                 fewest bytes (its new buffer less the buffers it frees)
  depth-first    post-order from the outputs, the operand with the heaviest
                 subgraph first (Sethi-Ullman's register order, for buffers)

Weights and constants stay first; a view goes right before the first op that
reads it.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from einc.passes.memplan.liveness import DEFINITIONS, PRODUCERS, VIEWS, nbytes, source


def _graph(fn: func.FuncOp) -> tuple[list[Operation], dict[Operation, list[Operation]], set[SSAValue]]:
    """Producers in program order, each with the producers it reads (through views)."""
    block = fn.body.block
    ret = block.last_op
    assert isinstance(ret, func.ReturnOp)
    producers = [op for op in block.ops if isinstance(op, PRODUCERS)]
    preds: dict[Operation, list[Operation]] = {}
    for op in producers:
        owners = [source(v).owner for v in op.operands]
        preds[op] = list(dict.fromkeys(o for o in owners if isinstance(o, PRODUCERS)))
    return producers, preds, set(ret.operands)


def _min_memory(fn: func.FuncOp) -> list[Operation]:
    producers, preds, returned = _graph(fn)
    position = {op: i for i, op in enumerate(producers)}
    users: dict[Operation, list[Operation]] = {op: [] for op in producers}
    for op, ps in preds.items():
        for p in ps:
            users[p].append(op)
    waiting = {op: len(ps) for op, ps in preds.items()}
    pending = {op: len(users[op]) for op in producers}
    lives_on = {source(v).owner for v in returned}

    def cost(op: Operation) -> int:
        made = sum(nbytes(r) for r in op.results if r not in returned)
        freed = sum(nbytes(r) for p in preds[op] if pending[p] == 1 and p not in lives_on for r in p.results)
        return made - freed

    ready = [op for op in producers if not preds[op]]
    order: list[Operation] = []
    while ready:
        op = min(ready, key=lambda o: (cost(o), position[o]))
        ready.remove(op)
        order.append(op)
        for p in preds[op]:
            pending[p] -= 1
        for u in users[op]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    return order


def _depth_first(fn: func.FuncOp) -> list[Operation]:
    producers, preds, _ = _graph(fn)
    weight: dict[Operation, int] = {}
    for op in producers:  # program order is topological
        weight[op] = sum(nbytes(r) for r in op.results) + sum(weight[p] for p in preds[op])
    order: list[Operation] = []
    done: set[Operation] = set()

    def visit(root: Operation) -> None:
        stack: list[tuple[Operation, bool]] = [(root, False)]
        while stack:
            op, expanded = stack.pop()
            if op in done:
                continue
            if expanded:
                done.add(op)
                order.append(op)
                continue
            stack.append((op, True))
            # pushed lightest first, so the heaviest operand is visited first
            for p in sorted(preds[op], key=lambda p: weight[p]):
                if p not in done:
                    stack.append((p, False))

    for value in fn.body.block.last_op.operands:  # type: ignore[union-attr]
        if isinstance(owner := source(value).owner, PRODUCERS):
            visit(owner)
    for op in producers:  # results nobody returns still run, in program order
        visit(op)
    return order


SCHEDULES: dict[str, Callable[[func.FuncOp], list[Operation]] | None] = {
    "program": None,
    "min-memory": _min_memory,
    "depth-first": _depth_first,
}
"""Schedule name -> the producers in that order (None: as written)."""


def full_order(fn: func.FuncOp, producers: list[Operation]) -> list[Operation]:
    """Every op of the body but the return, for this order of producers."""
    block = fn.body.block
    ops = [op for op in block.ops if op is not block.last_op]
    order = [op for op in ops if isinstance(op, DEFINITIONS)]
    placed = set(order)

    def place(op: Operation) -> None:
        for operand in op.operands:
            owner = operand.owner
            if isinstance(owner, VIEWS) and owner not in placed:
                place(owner)
        placed.add(op)
        order.append(op)

    for op in producers:
        place(op)
    for op in ops:
        if op not in placed:
            place(op)
    return order


def schedules(fn: func.FuncOp) -> dict[str, list[Operation]]:
    """Each schedule's full op order; orders equal to an earlier one are left out."""
    result: dict[str, list[Operation]] = {}
    program = [op for op in fn.body.block.ops if op is not fn.body.block.last_op]
    for name, make in SCHEDULES.items():
        order = program if make is None else full_order(fn, make(fn))
        if all(order != other for other in result.values()):
            result[name] = order
    return result


def apply_order(fn: func.FuncOp, order: list[Operation]) -> None:
    """Move the body's ops into `order` (the return stays last)."""
    block = fn.body.block
    ret = block.last_op
    assert ret is not None
    for op in order:
        op.detach()
        block.insert_op_before(op, ret)
