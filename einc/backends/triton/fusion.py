"""Grouping for the Triton target: which einsums of a model run as one kernel.

The `fuse` pass groups for the CPU's kernels (f32 GEMMs with vector epilogues).
Triton's templates take every float type (fp16 and bf16 operands go to
`tl.dot` as they are) and every map function with a Triton form, so this
target groups by what its own templates accept: a candidate group is kept if
its template builds a kernel for it (`NoMatch` rejects it), and every value it
computes that is read outside is read after it. In order, on the einsums not
yet grouped:

1. "attention": QK^T, the score maps (scale, mask), max, exp, sum, PV and the
   division by the sum; the scores never leave the one-pass kernel.
2. "contraction": a sum of products (worth `tl.dot`) with the elementwise
   einsums after it (bias, GELU, residual add) as its epilogue.
3. "rows": a reduction with the elementwise einsums it reads whole (a residual
   add or an embedding sum before a LayerNorm) and the einsums after it over the
   same rows (LayerNorm's variance, reciprocal deviation and scale; softmax).
4. "rows" with no reduced dims: a map with the maps over its shape that it
   reads, directly or not.

Values read outside a group are its results: the kernel writes them as well.
Each group records why in `einc.why`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue

from einc.analysis.cascades import match_attention
from einc.backends.triton.emitter import View
from einc.backends.triton.kernels import (
    NoMatch,
    Space,
    attention_kernel,
    dot_kernel,
    is_dot,
    rows_kernel,
)
from einc.ir.dtypes import type_to_numpy
from einc.ir.ein import EinsumOp, GroupOp, YieldOp

LOOKAHEAD = 64
"""Ops after a group's seed that are looked at for more members."""

TEMPLATES: dict[str, Callable[..., object]] = {"attention": attention_kernel, "contraction": dot_kernel, "rows": rows_kernel}


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def _dtype(value: SSAValue) -> np.dtype:
    return type_to_numpy(value.type.get_element_type())  # type: ignore[attr-defined]


def _kernel_op(op: Operation | None) -> bool:
    """An einsum that computes (a view einsum only moves indices and is no kernel)."""
    from einc.backends.triton.target import is_view

    return isinstance(op, EinsumOp) and not is_view(op) and isinstance(op.parent_op(), func.FuncOp)


def _map(op: Operation | None) -> bool:
    return _kernel_op(op) and op.reduce_op is None  # type: ignore[union-attr]


class Grouper:
    """Forms the groups of one function; `pos` orders its top-level ops."""

    def __init__(self, fn: func.FuncOp):
        self.block = fn.body.block
        self.pos = {op: n for n, op in enumerate(self.block.ops)}

    # -- checks ------------------------------------------------------------------

    def outputs(self, ops: Sequence[EinsumOp]) -> list[SSAValue] | None:
        """The values of `ops` read outside them, or None if one is read before the last op."""
        members, last = set(ops), self.pos[ops[-1]]
        outs = []
        for op in ops:
            readers = {u.operation for u in op.output.uses} - members
            if any(self.pos.get(r, -1) <= last for r in readers):
                return None
            if readers:
                outs.append(op.output)
        return outs

    def accepts(self, kind: str, ops: Sequence[EinsumOp]) -> bool:
        """Whether the template of `kind` makes one kernel of `ops` (on contiguous stand-in views)."""
        outs = self.outputs(ops)
        if not outs:
            return False
        inner = {op.output for op in ops}
        inputs = dict.fromkeys(v for op in ops for v in op.inputs if v not in inner)
        views = {v: View.contiguous(f"a{n}", _shape(v), _dtype(v)) for n, v in enumerate(inputs)}
        results = [(v, View.contiguous(f"o{n}", _shape(v), _dtype(v))) for n, v in enumerate(outs)]
        try:
            TEMPLATES[kind]("k", ops, views, results)
        except (NoMatch, AssertionError):
            return False
        return True

    # -- groups ------------------------------------------------------------------

    def group(self, kind: str, ops: Sequence[EinsumOp], why: str) -> GroupOp:
        """Wrap `ops` (in order) into an isolated group placed where the last one was."""
        outs = self.outputs(ops)
        assert outs
        inner = {op.output for op in ops}
        inputs = list(dict.fromkeys(v for op in ops for v in op.inputs if v not in inner))
        block = Block(arg_types=[v.type for v in inputs])
        mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, block.args))
        for arg, v in zip(block.args, inputs):
            arg.name_hint = v.name_hint
        for op in ops:
            clone = op.clone(value_mapper=mapping)
            clone.output.name_hint = op.output.name_hint
            mapping[op.output] = clone.output
            block.add_op(clone)
        block.add_op(YieldOp([mapping[v] for v in outs]))
        group = GroupOp(inputs, [v.type for v in outs], kind, Region(block))
        group.attributes["einc.why"] = StringAttr(why)
        self.block.insert_op_after(group, ops[-1])
        self.pos[group] = self.pos[ops[-1]]
        for value, result in zip(outs, group.outputs):
            result.name_hint = value.name_hint
            value.replace_all_uses_with(result)
        for op in reversed(ops):
            self.block.erase_op(op)
        return group

    def readers_after(self, seed: EinsumOp, members: list[EinsumOp], take: Callable[[list[EinsumOp]], bool]) -> str:
        """Append to `members`, in program order, each einsum after `seed` that reads one while
        `take(members + [op])` holds; returns why the chain ends."""
        values = {m.output for m in members}
        op = seed.next_op
        for _ in range(LOOKAHEAD):
            if op is None:
                break
            if any(v in values for v in op.operands):
                if isinstance(op, func.ReturnOp):
                    op = op.next_op
                    continue
                if not _kernel_op(op):
                    return f"read by {op.name}"
                if not take([*members, op]):  # type: ignore[list-item]
                    return f"read by an einsum the kernel cannot take ({op.output.name_hint or '?'})"  # type: ignore[union-attr]
                members.append(op)  # type: ignore[arg-type]
                values.add(op.output)  # type: ignore[union-attr]
            op = op.next_op
        return "end of the function"

    def longest(self, kind: str, members: list[EinsumOp], least: int) -> list[EinsumOp] | None:
        """The longest prefix (of at least `least` ops) that the template takes."""
        for n in range(len(members), least - 1, -1):
            if self.accepts(kind, members[:n]):
                return members[:n]
        return None

    # -- the four kinds ----------------------------------------------------------

    def attention(self, qk: EinsumOp) -> GroupOp | None:
        members = [qk]

        def take(ops: list[EinsumOp]) -> bool:
            return len(ops) <= 12 and sum(1 for o in ops if is_dot(o)) <= 2

        self.readers_after(qk, members, take)
        for n in range(7, len(members) + 1):
            try:
                match_attention(members[:n])
            except NoMatch:
                continue
            if self.accepts("attention", members[:n]):
                return self.group("attention", members[:n], "attention: QK^T, score maps, softmax and PV in one "
                                  "pass over the keys (the scores never leave registers)")
        return None

    def contraction(self, con: EinsumOp) -> GroupOp:
        members = [con]
        stop = self.readers_after(con, members, lambda ops: self.accepts("contraction", ops))
        chain = self.longest("contraction", members, 1) or [con]
        n = len(chain) - 1
        why = f"contraction on tl.dot with {n} elementwise op{'s' if n != 1 else ''} as its epilogue; the chain ends: {stop}"
        return self.group("contraction", chain, why)

    def one_space(self, ops: Sequence[EinsumOp], seed: EinsumOp) -> bool:
        """Every einsum over the seed's rows and reduced dims, nothing else."""
        try:
            space = Space(ops)
        except NoMatch:
            return False
        dims = set(space.dims[seed.output]) | set(space.reduced(seed))
        return set(space.extents) == dims and all(
            set(space.dims[op.output]) in (dims, set(space.dims[seed.output])) for op in ops
        )

    def rows(self, seed: EinsumOp) -> GroupOp | None:
        fits = lambda ops: self.one_space(sorted(ops, key=self.pos.__getitem__), seed)
        before: list[EinsumOp] = []
        frontier = [seed]
        while frontier:  # the maps the seed reads whole (a residual add before a LayerNorm)
            op = frontier.pop()
            for value in op.inputs:
                producer = value.owner
                if _map(producer) and producer not in before and fits([*before, producer, seed]):  # type: ignore[list-item]
                    before.append(producer)  # type: ignore[arg-type]
                    frontier.append(producer)  # type: ignore[arg-type]
        before.sort(key=self.pos.__getitem__)
        members = [seed]
        stop = self.readers_after(seed, members, lambda ops: fits(ops))
        for prologue in (before, []):
            chain = self.longest("rows", [*prologue, *members], len(prologue) + 1)
            if chain is not None and self.outputs(chain) is not None:
                rows = math.prod(_shape(seed.output))
                length = math.prod(seed.extents()[v] for v in seed.reduction_vars())
                why = (f"rows: {len(chain)} einsums over {rows} rows of {length}, {len(prologue)} of them maps the "
                       f"reduction reads whole; the chain ends: {stop}")
                return self.group("rows", chain, why)
        return None

    def maps(self, last: EinsumOp) -> GroupOp | None:
        """`last` with the maps over its shape it reads, directly or not (GELU's two branches
        from x meet only in its last product), each read outside only after `last`."""
        def fits(ops: list[EinsumOp]) -> bool:
            try:
                space = Space(ops)
            except NoMatch:
                return False
            return all(set(space.dims[op.output]) == set(space.extents) for op in ops)

        members, frontier = [last], [last]
        while frontier:
            for value in frontier.pop().inputs:
                op = value.owner
                if not _map(op) or op in members:
                    continue
                readers = {u.operation for u in op.output.uses}  # type: ignore[union-attr]
                late = all(r in members or self.pos.get(r, -1) > self.pos[last] for r in readers)
                if late and fits(sorted([*members, op], key=self.pos.__getitem__)):  # type: ignore[list-item]
                    members.append(op)  # type: ignore[arg-type]
                    frontier.append(op)  # type: ignore[arg-type]
        chain = sorted(members, key=self.pos.__getitem__)
        if len(chain) < 2 or not self.accepts("rows", chain):
            return None
        return self.group("rows", chain, f"{len(chain)} elementwise einsums over one shape, the last one's "
                          "operands computed in the kernel")


def group_for_triton(fn: func.FuncOp) -> list[GroupOp]:
    """Group the einsums of `fn` for the Triton templates: attention, contractions, rows, maps."""
    g = Grouper(fn)
    groups: list[GroupOp | None] = []
    passes: list[tuple[Callable[[EinsumOp], bool], Callable[[EinsumOp], GroupOp | None]]] = [
        (is_dot, g.attention),
        (is_dot, g.contraction),
        (lambda op: op.reduce_op is not None and bool(op.reduction_vars()), g.rows),
        (lambda op: op.reduce_op is None, g.maps),
    ]
    for wanted, make in passes:
        ops = list(g.block.ops)
        for op in reversed(ops) if make == g.maps else ops:  # a chain of maps is found from its end
            if op.parent is g.block and _kernel_op(op) and wanted(op):  # type: ignore[arg-type]
                groups.append(make(op))  # type: ignore[arg-type]
    return [grp for grp in groups if grp is not None]
