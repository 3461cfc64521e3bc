"""The `memplan` pass: one arena for every intermediate, laid out near the lower bound.

It runs on ein cascades, after the last pass that changes them and before
`lower-ein-to-loops`. For each function it tries a few schedules (schedule.py),
computes liveness with in-place reuse under each (liveness.py), runs every
planner (algorithms.py) and keeps the smallest arena, reordering the body if a
schedule other than the program's won. It records the plan in the IR:

  einc.offset = N      on each op writing an arena buffer: its byte offset
  einc.offsets = [..]  on a fused group: one offset per result (-1: an output)
  einc.inplace = K     on an elementwise einsum that writes over its operand K
  einc.memplan = {...} on the function: arena_bytes, lower_bound_bytes,
                       algorithm, schedule, optimal

`lower-ein-to-loops` turns offsets into the buffer table (and lets an in-place
output share its input's buffer argument), `pack()` lays the arena out from them,
and only buffers that share no byte with another keep LLVM's `noalias`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, BoolAttr, DictionaryAttr, IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from einc.ir.ein import GroupOp
from einc.passes.memplan.algorithms import ORDERS, PlanResult, check_plan, plan
from einc.passes.memplan.liveness import DEFINITIONS, PRODUCERS, VIEWS, Liveness, analyse, source
from einc.passes.memplan.schedule import apply_order, schedules

OFFSET = "einc.offset"
OFFSETS = "einc.offsets"
INPLACE = "einc.inplace"
MEMPLAN = "einc.memplan"
ALGORITHMS = (*ORDERS, "local-search", "exact")


@dataclass
class MemoryPlan:
    """The plan of one function: its liveness under the winning schedule and every planner's result."""

    liveness: Liveness
    result: PlanResult
    schedule: str
    schedule_bounds: dict[str, tuple[int, int]]
    """Each schedule tried: (lower bound, best greedy arena)."""

    @property
    def arena(self) -> int:
        return self.result.best.arena

    @property
    def lower_bound(self) -> int:
        return self.result.lower_bound


def plan_function(
    fn: func.FuncOp,
    reorder: bool = True,
    inplace: bool = True,
    algorithm: str = "best",
    exact_limit: int = 64,
    exact_nodes: int = 20_000,
) -> MemoryPlan:
    """Plan `fn`'s arena (without changing the IR): the best schedule, then the best planner."""
    if algorithm != "best" and algorithm not in ALGORITHMS:
        raise PassFailedException(f"memplan: unknown algorithm '{algorithm}', expected best or one of {', '.join(ALGORITHMS)}")
    names = None if algorithm == "best" else [algorithm]
    if algorithm in ("local-search", "exact"):
        names = [*ORDERS, algorithm]  # the searches start from the greedy plan
    opaque = any(not isinstance(op, PRODUCERS + VIEWS + DEFINITIONS) for op in fn.body.block.ops if op is not fn.body.block.last_op)
    candidates = schedules(fn) if reorder and not opaque else {"program": None}  # control flow: keep its order
    greedy_names = [n for n in (names or ORDERS) if n in ORDERS]
    tried: dict[str, tuple[Liveness, PlanResult]] = {}
    for name, order in candidates.items():
        live = analyse(fn, order, inplace)
        tried[name] = (live, plan(live.buffers, greedy_names, exact_limit=0))
    # smallest arena, then smallest bound; the program's own order wins ties
    winner = min(tried, key=lambda n: (tried[n][1].best.arena, tried[n][1].lower_bound))
    live = tried[winner][0]
    result = plan(live.buffers, names, exact_limit=exact_limit, node_budget=exact_nodes)
    bounds = {n: (r.lower_bound, r.best.arena) for n, (_, r) in tried.items()}
    return MemoryPlan(live, result, winner, bounds)


def annotate(fn: func.FuncOp, memory: MemoryPlan) -> None:
    """Write the plan into the IR (and the winning order into the body)."""
    live = memory.liveness
    if memory.schedule != "program":
        apply_order(fn, live.order)
    best = memory.result.best
    group_offsets: dict[Operation, list[int]] = {}
    for b, values in enumerate(live.members):
        for value in values:
            op = value.owner
            if isinstance(op, GroupOp):
                group_offsets.setdefault(op, [-1] * len(op.results))[value.index] = best.offsets[b]  # type: ignore[attr-defined]
            else:
                op.attributes[OFFSET] = IntegerAttr(best.offsets[b], i64)  # type: ignore[union-attr]
    for op, offsets in group_offsets.items():
        op.attributes[OFFSETS] = ArrayAttr([IntegerAttr(o, i64) for o in offsets])
        if len(offsets) == 1:  # a group lowered whole (a kernel call) reads it as any producer
            op.attributes[OFFSET] = IntegerAttr(offsets[0], i64)
    for op, k in live.inplace.items():
        op.attributes[INPLACE] = IntegerAttr(k, i64)
    fn.attributes[MEMPLAN] = DictionaryAttr(
        {
            "arena_bytes": IntegerAttr(best.arena, i64),
            "lower_bound_bytes": IntegerAttr(memory.lower_bound, i64),
            "algorithm": StringAttr(best.algorithm),
            "schedule": StringAttr(memory.schedule),
            "optimal": BoolAttr.from_bool(best.optimal),
        }
    )


def planned_offset(value: SSAValue) -> int | None:
    """The arena offset the IR records for a value's buffer, if any."""
    op = value.owner
    if isinstance(op, GroupOp):
        offsets = op.attributes.get(OFFSETS)
        found = offsets.data[value.index].value.data if isinstance(offsets, ArrayAttr) else -1  # type: ignore[attr-defined, union-attr]
        return found if found >= 0 else None
    attr = op.attributes.get(OFFSET)  # type: ignore[union-attr]
    return attr.value.data if isinstance(attr, IntegerAttr) else None


def spread_group_offsets(group: GroupOp) -> None:
    """Before a group is inlined, hand each result's offset to the op inside that yields it.

    Values that stay inside the group get no planned offset: lowering gives them
    buffers of their own beside the arena, so they never share a byte.
    """
    offsets = group.attributes.get(OFFSETS)
    if not isinstance(offsets, ArrayAttr):
        return
    for value, offset in zip(group.yielded, offsets.data):
        owner = value.owner
        if isinstance(owner, Operation) and offset.value.data >= 0 and OFFSET not in owner.attributes:  # type: ignore[attr-defined]
            owner.attributes[OFFSET] = offset


def verify_annotations(fn: func.FuncOp) -> None:
    """Check the IR's plan against a fresh liveness analysis of the IR as it stands.

    Catches a plan gone stale (a pass moved or changed ops after memplan) and
    proves that no op writes bytes it still reads, except proven in-place writes.
    """
    live = analyse(fn, inplace=False)
    offsets: list[int] = []
    for values in live.members:
        found = planned_offset(values[0])
        if found is None:
            raise PassFailedException(f"memplan: '{values[0].owner.name}' writes an arena buffer with no planned offset")  # type: ignore[union-attr]
        offsets.append(found)
    # An in-place output shares its input's bytes by design: the input's life
    # ends the step before, so the checker sees them one after the other.
    merged = list(live.buffers)
    index = live.buffer_of()
    for b, values in enumerate(live.members):
        k = values[0].owner.attributes.get(INPLACE)  # type: ignore[union-attr]
        if isinstance(k, IntegerAttr):
            a = index[source(values[0].owner.operands[k.value.data])]  # type: ignore[union-attr]
            if offsets[a] != offsets[b] or merged[a].end != merged[b].start:
                raise PassFailedException(f"memplan: in-place '{values[0].owner.name}' does not share its input's bytes")  # type: ignore[union-attr]
            merged[a] = replace(merged[a], end=merged[a].end - 1)
    check_plan(merged, offsets)


@dataclass(frozen=True)
class MemPlan(ModulePass):
    """Plan every intermediate's offset in one arena: liveness, schedules, planners, in-place reuse."""

    name: ClassVar[str] = "memplan"

    algorithm: str = "best"
    """`best` keeps the smallest arena of all planners; or one of ALGORITHMS by name."""

    reorder: bool = True
    """Try other orders of independent ops, and reorder the body when one needs less arena."""

    inplace: bool = True
    """Let elementwise einsums write over an input that dies there."""

    exact_limit: int = 64
    """The exact search runs on functions with at most this many arena buffers."""

    exact_nodes: int = 20_000
    """Node budget of the exact search (no time limit: the same model gives the same plan)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for fn in op.ops:
            if isinstance(fn, func.FuncOp) and not fn.is_declaration:
                for inner in fn.body.block.ops:
                    for key in (OFFSET, OFFSETS, INPLACE):
                        inner.attributes.pop(key, None)
                memory = plan_function(fn, self.reorder, self.inplace, self.algorithm, self.exact_limit, self.exact_nodes)
                annotate(fn, memory)
                verify_annotations(fn)
