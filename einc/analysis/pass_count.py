"""Pass-count analysis of einsum cascades (FuseMax, MICRO 2024, section III).

A *pass* is one traversal of a whole fiber along a rank. An einsum that reads a
tensor after a reduction over the whole fiber of rank r has finished (softmax's
exp(x - max) needs the max over all of r) must traverse r again: N such
read-after-full-reduction dependencies in a chain make an (N+1)-pass cascade.

Ranks are identified across einsums by following tensor dimensions: an index
variable takes the rank of the first input dimension it indexes plainly,
unless another variable of the same einsum already has that rank (QK^T reads
Q and K, both of sequence rank; its key index gets a rank of its own). Views
keep the ranks of the dimensions they do not change.

A cascade for rank r is a connected set of einsums that iterate r, linked by
streaming edges (a consumer reads the producer's tensor along r: same pass) and
by reduction edges (the producer reduced r fully: the next pass). A reduction
edge also reaches through ops that neither iterate r nor reduce another rank
(`max * 2` is still the max); a contraction over another rank starts anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from einc.ir import mapexpr
from einc.ir.ein import ConcatOp, EinsumOp, GatherOp, PadOp, ReshapeOp
from einc.ir.indexexpr import IndexExpr


_RANK_LETTERS = "mnkpqefghjlrstuvwxyzabcdio"
"""Names for ranks whose einsum variables are generic (i0, i1) or taken."""


@dataclass
class RankMap:
    """Rank ids of every tensor dimension and every einsum index variable."""

    dims: dict[SSAValue, list[int]] = field(default_factory=dict)
    vars: dict[EinsumOp, dict[str, int]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    def fresh(self, hint: str | None = None) -> int:
        """A new rank; without a hint it is named when an einsum variable first meets it."""
        rank = len(self.names)
        self.names[rank] = ""
        if hint is not None:
            self.rename(rank, hint)
        return rank

    def rename(self, rank: int, hint: str) -> None:
        """Give a still unnamed rank a readable name, unique among ranks."""
        if self.names[rank]:
            return
        taken = set(self.names.values())
        generic = hint[:1].isalpha() and hint[1:].isdigit()
        if hint in taken or generic:
            free = [c for c in _RANK_LETTERS if c not in taken]
            hint = free[0] if free else f"r{rank}"
        self.names[rank] = hint

    def of(self, value: SSAValue) -> list[int]:
        if value not in self.dims:
            shape = value.type.get_shape()  # type: ignore[attr-defined]
            self.dims[value] = [self.fresh() for _ in shape]
        return self.dims[value]


def _reshape_ranks(ranks: RankMap, src: Sequence[int], src_shape: Sequence[int], dst_shape: Sequence[int]) -> list[int]:
    """Dimensions a reshape leaves alone (same size, same place from either end) keep their rank."""
    out: list[int | None] = [None] * len(dst_shape)
    i = 0
    while i < min(len(src_shape), len(dst_shape)) and src_shape[i] == dst_shape[i] and src_shape[i] != 1:
        out[i] = src[i]
        i += 1
    j = 1
    while j <= min(len(src_shape), len(dst_shape)) - i and src_shape[-j] == dst_shape[-j] and src_shape[-j] != 1:
        out[len(dst_shape) - j] = src[len(src_shape) - j]
        j += 1
    return [r if r is not None else ranks.fresh() for r in out]


def assign_ranks(ops: Sequence[Operation]) -> RankMap:
    """Rank ids for the values and einsum variables of a function body."""
    ranks = RankMap()
    for op in ops:
        if isinstance(op, EinsumOp):
            var_rank: dict[str, int] = {}
            for value, exprs in zip(op.inputs, op.input_exprs):
                for expr, rank in zip(exprs, ranks.of(value)):
                    var = expr.plain_var
                    if var is not None and var not in var_rank and rank not in var_rank.values():
                        var_rank[var] = rank
            for var in op.output_vars + op.reduction_vars():
                if var not in var_rank:
                    var_rank[var] = ranks.fresh(var)
            for var, rank in var_rank.items():
                ranks.rename(rank, var)
            ranks.vars[op] = var_rank
            ranks.dims[op.output] = [var_rank[v] for v in op.output_vars]
        elif isinstance(op, ReshapeOp):
            src_shape = op.source.type.get_shape()  # type: ignore[attr-defined]
            dst_shape = op.result.type.get_shape()  # type: ignore[attr-defined]
            ranks.dims[op.result] = _reshape_ranks(ranks, ranks.of(op.source), src_shape, dst_shape)
        elif isinstance(op, (ConcatOp, PadOp)):
            src = op.inputs[0] if isinstance(op, ConcatOp) else op.source
            keep = _unchanged_dims(op)
            ranks.dims[op.result] = [
                r if d in keep else ranks.fresh() for d, r in enumerate(ranks.of(src))
            ]
        elif isinstance(op, GatherOp):
            axis = op.axis.value.data
            data = ranks.of(op.data)
            ranks.dims[op.result] = data[:axis] + ranks.of(op.indices) + data[axis + 1 :]
    return ranks


def _unchanged_dims(op: ConcatOp | PadOp) -> set[int]:
    if isinstance(op, ConcatOp):
        return {d for d in range(len(op.result.type.get_shape())) if d != op.axis.value.data}  # type: ignore[attr-defined]
    low, high, interior = op.amounts
    return {d for d, amounts in enumerate(zip(low, high, interior)) if not any(amounts)}


@dataclass
class Cascade:
    """Einsums that traverse one rank together, with the pass each runs in."""

    rank: str
    einsums: list[EinsumOp]
    passes: dict[EinsumOp, int]
    var_names: dict[EinsumOp, dict[str, str]]
    """Each einsum's index variables -> the names of their ranks."""

    @property
    def pass_count(self) -> int:
        return max(self.passes.values())


def _reduces_other_rank(op: Operation, ranks: RankMap) -> bool:
    return isinstance(op, EinsumOp) and bool(op.reduction_vars())


def cascades(fn: func.FuncOp) -> list[Cascade]:
    """Every cascade of a function along every rank that some einsum reduces."""
    ops = list(fn.body.block.ops)
    ranks = assign_ranks(ops)
    reduced = {
        ranks.vars[op][v] for op in ops if isinstance(op, EinsumOp) for v in op.reduction_vars()
    }
    found: list[Cascade] = []
    for rank in sorted(reduced):
        found.extend(_cascades_along(ops, ranks, rank))
    return found


def _cascades_along(ops: Sequence[Operation], ranks: RankMap, rank: int) -> list[Cascade]:
    stream: dict[SSAValue, tuple[int, EinsumOp]] = {}
    done: dict[SSAValue, tuple[int, EinsumOp]] = {}
    passes: dict[EinsumOp, int] = {}
    parent: dict[EinsumOp, EinsumOp] = {}

    def find(op: EinsumOp) -> EinsumOp:
        while parent[op] is not op:
            parent[op] = parent[parent[op]]
            op = parent[op]
        return op

    for op in ops:
        if isinstance(op, EinsumOp) and rank in ranks.vars[op].values():
            parent[op] = op
            n = 1
            for value in op.inputs:
                if value in stream and rank in ranks.of(value):
                    p, origin = stream[value]
                    n = max(n, p)
                elif value in done:
                    p, origin = done[value]
                    n = max(n, p + 1)
                else:
                    continue
                parent[find(origin)] = find(op)
            passes[op] = n
            if rank in ranks.dims[op.output]:
                stream[op.output] = (n, op)
            else:
                done[op.output] = (n, op)
        elif op.results and not _reduces_other_rank(op, ranks):
            sources = [v for v in op.operands if v in stream or v in done]
            for result in op.results:
                if rank in ranks.dims.get(result, []):
                    inherited = [stream[v] for v in sources if v in stream]
                    if inherited:
                        stream[result] = max(inherited, key=lambda t: t[0])
                dones = [done[v] for v in sources if v in done]
                if dones and rank not in ranks.dims.get(result, []):
                    done[result] = max(dones, key=lambda t: t[0])
    groups: dict[EinsumOp, list[EinsumOp]] = {}
    for op in passes:
        groups.setdefault(find(op), []).append(op)
    name = ranks.names[rank]
    return [
        Cascade(
            name,
            members,
            {m: passes[m] for m in members},
            {m: {v: ranks.names[r] for v, r in ranks.vars[m].items()} for m in members},
        )
        for members in groups.values()
        if any(rank in {ranks.vars[m][v] for v in m.reduction_vars()} for m in members)
    ]


def einsum_text(op: EinsumOp, names: dict[SSAValue, str], var_names: dict[str, str] | None = None) -> str:
    """An einsum in the notation of the papers: `Z[m,n] = add_k(A[m,k] * B[k,n])`.

    With `var_names`, index variables are written as the ranks they traverse,
    so one rank has one name across a cascade.
    """
    rename = var_names or {}

    def index(expr: IndexExpr) -> str:
        return str(IndexExpr(tuple((rename.get(v, v), c) for v, c in expr.terms), expr.const)).replace(" ", "")

    refs = [f"{names[v]}[{','.join(index(e) for e in exprs)}]" for v, exprs in zip(op.inputs, op.input_exprs)]
    body = mapexpr.render(op.map_expr)
    for i in reversed(range(len(refs))):
        body = body.replace(f"${i}", refs[i])
    red = [rename.get(v, v) for v in op.reduction_vars()]
    if red:
        body = f"{op.reduce_op}_{','.join(red)}({body})"
    return f"{names[op.output]}[{','.join(rename.get(v, v) for v in op.output_vars)}] = {body}"
