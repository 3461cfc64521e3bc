"""Matching einsum cascades: canonical dims, contractions, the attention cascade.

Backends and `fuse` ask the same questions of a run of einsums: which index
variables of different einsums stand for the same rank (`Space`: unified
through the values they share, so a fused kernel has one iteration space),
which ranks of a sum of products are batch, M, N and K (`classify`), and
whether a run is softmax attention (`match_attention`: QK, score maps, max,
exp, sum, PV, division, deferred or not). Target-independent: the CPU's
attention kernel, the Triton templates and the fuse pass share these answers.
A run that is not what is asked raises `NoMatch` with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.ir import SSAValue

from einc.ir import mapexpr
from einc.ir.ein import EinsumOp


class NoMatch(Exception):
    """A kernel template does not apply to these einsums."""


class Space:
    """Canonical dims of the einsums of one kernel.

    Every index variable of every einsum maps to a canonical dim. A value computed
    in the kernel is a tile over the canonical dims of its producer's output; an
    einsum that reads it with plain variables binds them to those dims. Reads of
    the same kernel input at the same position with plain variables also bind (so
    two einsums that both read X[i, j] agree on i and j); everything else gets a
    fresh dim.
    """

    RESERVED: frozenset[str] = frozenset()
    """Names the dims must avoid (a backend's own locals in generated source)."""

    def __init__(self, ops: Sequence[EinsumOp], inputs: Sequence[SSAValue] = ()):
        self.extents: dict[str, int] = {}
        self.names: dict[EinsumOp, dict[str, str]] = {}
        self.dims: dict[SSAValue, list[str]] = {}
        self.order: list[str] = []
        produced = {op.output for op in ops}
        read_at: dict[tuple[SSAValue, int], str] = {}
        for op in ops:
            extents = op.extents()
            names: dict[str, str] = {}
            used: set[str] = set()

            def bind(var: str, dim: str) -> bool:
                if var in names:
                    return names[var] == dim
                if dim in used or self.extents[dim] != extents[var]:
                    return False
                names[var] = dim
                used.add(dim)
                return True

            for value, exprs in zip(op.inputs, op.input_exprs):
                if value in produced:
                    if value not in self.dims:
                        raise NoMatch("reads a value before it is computed")
                    for expr, dim in zip(exprs, self.dims[value]):
                        var = expr.plain_var
                        if var is not None and var in names and names[var] != dim:
                            ok = self._unify(names[var], dim, names, read_at)
                        else:
                            ok = var is not None and bind(var, dim)
                        if not ok:
                            raise NoMatch(f"reads an in-kernel value at '{expr}'")
            for value, exprs in zip(op.inputs, op.input_exprs):
                if value not in produced:
                    for pos, expr in enumerate(exprs):
                        if (var := expr.plain_var) is not None and (value, pos) in read_at:
                            bind(var, read_at[(value, pos)])
            for var in [*op.output_vars, *op.reduction_vars(), *extents]:
                if var not in names:
                    dim = self._fresh(var)
                    self.extents[dim] = extents[var]
                    bind(var, dim)
            for value, exprs in zip(op.inputs, op.input_exprs):
                if value not in produced:
                    for pos, expr in enumerate(exprs):
                        if (var := expr.plain_var) is not None:
                            read_at.setdefault((value, pos), names[var])
            self.names[op] = names
            self.dims[op.output] = [names[v] for v in op.output_vars]

    def _unify(self, keep: str, drop: str, current: dict[str, str], read_at: dict[tuple[SSAValue, int], str]) -> bool:
        """Make `drop` the same dim as `keep`: two in-kernel values computed over dims of their
        own meet in one einsum at the same index (GELU's branches from x); refused where an
        einsum would then index two of its variables by one dim."""
        if self.extents.get(keep) != self.extents.get(drop):
            return False
        every = [*self.names.values(), current]
        if any(keep in names.values() and drop in names.values() for names in every):
            return False
        for names in every:
            for var, dim in names.items():
                if dim == drop:
                    names[var] = keep
        for value, dims in self.dims.items():
            self.dims[value] = [keep if d == drop else d for d in dims]
        for key, dim in read_at.items():
            if dim == drop:
                read_at[key] = keep
        del self.extents[drop]
        self.order.remove(drop)
        return True

    def _fresh(self, var: str) -> str:
        base = var if var.isidentifier() and not var.startswith(("v", "t_", "in_", "out_", "w_", "c_")) else "d"
        name, n = base, 0
        while name in self.extents or name in self.RESERVED:
            n += 1
            name = f"{base}_{n}"
        self.order.append(name)
        return name

    def reduced(self, op: EinsumOp) -> list[str]:
        return [self.names[op][v] for v in op.reduction_vars()]

    def deps(self, op: EinsumOp) -> set[str]:
        """Canonical dims the map of `op` varies over (before reduction)."""
        return {self.names[op][v] for e in op.input_exprs for x in e for v in x.variables}


def _product(op: EinsumOp) -> tuple[int, int] | None:
    """(a, b) if the map of `op` is `$a * $b` over two different inputs."""
    expr = op.map_expr
    if isinstance(expr, mapexpr.Call) and expr.fn == "mul":
        a, b = expr.args
        if isinstance(a, mapexpr.Input) and isinstance(b, mapexpr.Input) and a.index != b.index:
            return a.index, b.index
    return None


@dataclass
class Contraction:
    """A sum of products split into the ranks of a matrix product."""

    op: EinsumOp
    a: int
    b: int
    batch: list[str]
    m: list[str]
    n: list[str]
    k: list[str]


def classify(op: EinsumOp, space: Space) -> Contraction:
    """Which canonical dims of a `$a * $b` sum are batch, rows (M), columns (N), depth (K)."""
    pair = _product(op)
    if op.reduce_op != "add" or pair is None:
        raise NoMatch("not a sum of products")
    names = space.names[op]
    a, b = pair
    exprs = op.input_exprs
    vars_a = {v for e in exprs[a] for v in e.variables}
    vars_b = {v for e in exprs[b] for v in e.variables}
    red = op.reduction_vars()
    if any(v not in vars_a or v not in vars_b for v in red):
        raise NoMatch("a reduced index is missing from one operand")
    out = op.output_vars
    if any(v not in vars_a and v not in vars_b for v in out):
        raise NoMatch("an output index is in neither operand")
    if out and out[-1] in vars_a and out[-1] not in vars_b:
        a, b, vars_a, vars_b = b, a, vars_b, vars_a  # N holds the output's contiguous index
    batch = [names[v] for v in out if v in vars_a and v in vars_b]
    m = [names[v] for v in out if v in vars_a and v not in vars_b]
    n = [names[v] for v in out if v in vars_b and v not in vars_a]
    k_order = [v for e in exprs[a] for v in e.variables if v in red]
    k = list(dict.fromkeys(names[v] for v in k_order))
    return Contraction(op, a, b, batch, m, n, k)


@dataclass
class Attention:
    """The einsums of an attention cascade, by role."""

    qk: EinsumOp
    scores: list[EinsumOp]
    gm: EinsumOp
    exp: EinsumOp
    sd: EinsumOp
    pv: EinsumOp
    norm: EinsumOp
    """The division by the sum: of P before PV, or of PV after it (deferred)."""
    deferred: bool


def _only_user(value: SSAValue, ops: Sequence[EinsumOp]) -> list[EinsumOp]:
    return [op for op in ops if value in op.inputs]


def match_attention(ops: Sequence[EinsumOp]) -> Attention:
    """Find QK, score maps, max, exp, sum, PV and the division in a group body."""
    products = [op for op in ops if op.reduce_op == "add" and _product(op)]
    maxes = [op for op in ops if op.reduce_op == "max"]
    if len(products) != 2 or len(maxes) != 1:
        raise NoMatch("attention needs two contractions and one max")
    qk, pv = products
    gm = maxes[0]
    chain: list[EinsumOp] = []
    value = gm.inputs[0]
    while value != qk.output:
        op = value.owner
        if not isinstance(op, EinsumOp) or op not in ops or op.reduce_op:
            raise NoMatch("the max does not read the scores")
        in_kernel = [v for v in op.inputs if isinstance(v.owner, EinsumOp) and v.owner in ops]
        if len(in_kernel) != 1:
            raise NoMatch("a score map reads two computed values")
        chain.insert(0, op)
        value = in_kernel[0]
    scores = gm.inputs[0]
    exps = [op for op in ops if op.map_expr == mapexpr.parse("exp($0 - $1)") and list(op.inputs) == [scores, gm.output]]
    if len(exps) != 1:
        raise NoMatch("no exp(scores - max)")
    exp = exps[0]
    sums = [op for op in ops if op.reduce_op == "add" and list(op.inputs) == [exp.output] and op.map.data == "$0"]
    if len(sums) != 1:
        raise NoMatch("no sum of the exponentials")
    sd = sums[0]
    div = mapexpr.parse("$0 / $1")
    if exp.output in pv.inputs:
        norms = [op for op in ops if op.map_expr == div and list(op.inputs) == [pv.output, sd.output]]
        deferred = True
    else:
        norms = [op for op in ops if op.map_expr == div and list(op.inputs) == [exp.output, sd.output]]
        deferred = False
        if len(norms) != 1 or norms[0].output not in pv.inputs:
            raise NoMatch("PV does not read the probabilities")
    if len(norms) != 1:
        raise NoMatch("no division by the sum")
    expected = {qk, *chain, gm, exp, sd, pv, norms[0]}
    if set(ops) != expected:
        raise NoMatch("the group has einsums beyond attention")
    return Attention(qk, chain, gm, exp, sd, pv, norms[0], deferred)
