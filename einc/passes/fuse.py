"""The `fuse` pass: einsums that run as one kernel become one `ein.group`.

Two kinds of group, each a unit a backend compiles on its own:

- "contraction": a sum of products (`$0 * $1` reduced by add over f32) with
  the elementwise einsums that consume it and nothing else (bias, activation,
  residual add, scaling). The CPU backend runs it as a packed, register-blocked
  GEMM whose epilogue applies the consumers' maps while the tile is in
  registers; the intermediate tensors are never written.
- "rows": a reduction with the einsums after it that share its rows
  (softmax's max, exp, sum, divide; LayerNorm's mean, centred variance,
  reciprocal deviation, scale): every member is indexed by the reduction's
  row dims P and possibly its reduced dims R, and reduces, if at all, over all
  of R. The pass-count analysis (einc.analysis.pass_count) says how many
  traversals of R the chain needs (softmax and LayerNorm: three); the kernel
  makes all of them over one row before the next, so the row is read from
  memory once and the later passes find it in cache, instead of each einsum
  streaming the whole tensor. Members may be read outside (attention's
  exponentials and sums feed the value contraction): each such value is a
  result of the group.

The cost rule: elementwise einsums after a contraction join its group when
every value they make, but the last, is read only inside the group (fusing
then removes a write and a read of the whole tensor per einsum and adds no
work); a reader outside, a reduction, a map function the vector epilogue
lacks (`EPILOGUE_FUNCTIONS`) or a non-f32 type ends the group. A rows group
takes, in program order, every einsum that reads one of its values while that
einsum fits the row space (same rows, all of R or none reduced, f32, plain
indices, vector map functions), and elementwise einsums that fit and read its
inputs; the first reader of a group value that does not fit ends it. A group
started by an elementwise einsum (rows: all dims but the last) is kept only
if something joins it: GELU's chain of maps, a residual add before a LayerNorm.
Each group records why in `einc.why`, which `einc explain` prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import Float32Type, ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from einc.analysis.cascades import NoMatch, match_attention
from einc.backends.llvm.ukernels.vector import EPILOGUE_FUNCTIONS
from einc.ir import mapexpr
from einc.ir.ein import EinsumOp, GroupOp, IfOp, YieldOp
from einc.ir.indexexpr import IndexExpr


def _f32(value: SSAValue) -> bool:
    ty = value.type
    return isinstance(ty, TensorType) and isinstance(ty.get_element_type(), Float32Type)


def _factors(expr: mapexpr.Expr) -> list[mapexpr.Expr]:
    if isinstance(expr, mapexpr.Call) and expr.fn == "mul":
        return _factors(expr.args[0]) + _factors(expr.args[1])
    return [expr]


def contraction_scale(op: Operation) -> float | None:
    """For a sum over some index of `$0 * $1` (times constants) of two f32 tensors, the constant factor."""
    if not (
        isinstance(op, EinsumOp)
        and len(op.inputs) == 2
        and op.reduce_op == "add"
        and bool(op.reduction_vars())
        and all(_f32(v) for v in [*op.inputs, op.output])
    ):
        return None
    factors = _factors(op.map_expr)
    inputs = sorted(f.index for f in factors if isinstance(f, mapexpr.Input))
    consts = [f.value for f in factors if isinstance(f, mapexpr.Const)]
    if inputs != [0, 1] or len(inputs) + len(consts) != len(factors):
        return None
    scale = 1.0
    for c in consts:
        scale *= c
    return scale


def is_contraction(op: Operation) -> bool:
    """A sum over some index of products of two f32 tensors (Gemm's alpha allowed)."""
    return contraction_scale(op) is not None


def _functions(expr: mapexpr.Expr) -> set[str]:
    if isinstance(expr, mapexpr.Call):
        return {expr.fn}.union(*(_functions(a) for a in expr.args))
    return set()


def epilogue_step(op: Operation, members: set[SSAValue], shape: Attribute) -> str | None:
    """Why `op` cannot join a contraction group whose values are `members` (None: it can)."""
    if not isinstance(op, EinsumOp):
        return f"read by {op.name}"
    if op.reduce_op is not None:
        return "read by a reduction (a reduce or the next contraction)"
    if op.result_type() != shape:
        return "read by an einsum of another shape"
    if not all(_f32(v) for v in [*op.inputs, op.output]):
        return "read by a non-f32 einsum"
    missing = _functions(op.map_expr) - EPILOGUE_FUNCTIONS
    if missing:
        return f"read by a map the vector epilogue lacks ({', '.join(sorted(missing))})"
    identity = [IndexExpr.var(v) for v in op.output_vars]
    for operand, exprs in zip(op.inputs, op.input_exprs):
        if operand in members and exprs != identity:
            return "read transposed or broadcast"
    return None


def closed(chain: Sequence[Operation]) -> bool:
    """Whether only the last op's result is read outside the chain."""
    inside = set(chain)
    return all(use.operation in inside for op in chain[:-1] for use in op.results[0].uses)


LOOKAHEAD = 64
"""Ops after a contraction that the pass looks at for its epilogue."""


def epilogue_chain(con: EinsumOp) -> tuple[list[EinsumOp], str]:
    """The contraction and the elementwise ops after it that form one closed group.

    Ops are taken in program order while each one that reads a group value is
    a valid epilogue step; the longest prefix in which only the last value
    escapes wins (GELU's `x * (1 + erf(x / sqrt2)) / 2` reads x twice: both
    readers join, and x stays in registers).
    """
    chain: list[EinsumOp] = [con]
    members = {con.output}
    best, stop = 1, "end of the function"
    op = con.next_op
    for _ in range(LOOKAHEAD):
        if op is None:
            break
        if any(v in members for v in op.operands):
            stop = epilogue_step(op, members, con.output.type) or ""
            if stop:
                break
            chain.append(op)  # type: ignore[arg-type]
            members.add(op.results[0])
            if closed(chain):
                best = len(chain)
        op = op.next_op
    if best < len(chain):
        readers = len({u.operation for u in chain[best - 1].results[0].uses})
        stop = f"its value is also read outside the group ({readers} readers)"
    return chain[:best], stop


def make_group(kind: str, ops: Sequence[Operation], why: str, outputs: Sequence[SSAValue] | None = None) -> GroupOp:
    """Wrap `ops` (in order; einsums, or any op of one result) into an isolated group placed where
    the last one was.

    `outputs` are the values read outside (by default the last op's result);
    every reader of them must come after the last op.
    """
    inside = {op.results[0] for op in ops}
    escaping = list(outputs) if outputs is not None else [ops[-1].results[0]]
    inputs: list[SSAValue] = []
    for op in ops:
        for v in op.operands:
            if v not in inside and v not in inputs:
                inputs.append(v)
    last = ops[-1]
    block = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, block.args))
    for arg, v in zip(block.args, inputs):
        arg.name_hint = v.name_hint
    for op in ops:
        clone = op.clone()
        for i, v in enumerate(op.operands):
            clone.operands[i] = mapping[v]
        mapping[op.results[0]] = clone.results[0]
        clone.results[0].name_hint = op.results[0].name_hint
        block.add_op(clone)
    block.add_op(YieldOp([mapping[v] for v in escaping]))
    group = GroupOp(inputs, [v.type for v in escaping], kind, Region(block))
    group.attributes["einc.why"] = StringAttr(why)
    parent = last.parent_block()
    assert parent is not None
    parent.insert_op_after(group, last)
    for value, result in zip(escaping, group.outputs):
        result.name_hint = value.name_hint
        value.replace_all_uses_with(result)
    for op in reversed(ops):
        op.detach()
        op.erase()
    return group


def fuse_contractions(block: Block, declined: dict[Operation, str] | None = None) -> list[GroupOp]:
    groups = []
    for op in list(block.ops):
        if not is_contraction(op):
            continue
        chain, stop = epilogue_chain(op)  # type: ignore[arg-type]
        fused = len(chain) - 1
        why = (
            f"contraction with {fused} elementwise op{'s' if fused != 1 else ''} fused as its epilogue "
            f"(their intermediate values are read only inside the group); the chain ends: {stop}"
        )
        if declined and op in declined:
            why += f"; not an attention group: {declined[op]}"
        groups.append(make_group("contraction", chain, why))
    return groups


# -- attention groups ----------------------------------------------------------------------

ATTENTION_OPS = 12
"""Most einsums an attention candidate takes (QK, score maps, max, exp, sum, PV, division)."""


def attention_candidate(qk: EinsumOp) -> list[EinsumOp]:
    """The einsums after a contraction that read its values, in program order, while they
    could still be attention: at most ATTENTION_OPS of them, at most two contractions."""
    members = [qk]
    values = {qk.output}
    op = qk.next_op
    for _ in range(LOOKAHEAD):
        if op is None or len(members) >= ATTENTION_OPS:
            break
        if any(v in values for v in op.operands) and not isinstance(op, func.ReturnOp):
            if not isinstance(op, EinsumOp) or (is_contraction(op) and sum(map(is_contraction, members)) >= 2):
                break
            members.append(op)
            values.add(op.output)
        op = op.next_op
    return members


def attention_chain(qk: EinsumOp) -> tuple[list[EinsumOp] | None, str | None]:
    """The attention cascade QK starts and its description, or (None, why the CPU kernel
    declines it), or (None, None) where QK starts no attention.

    The shortest prefix of the candidate that is a whole cascade (cascades.match_attention:
    QK, score maps, max, exp, sum, PV, division by the sum) must read nothing but its last
    value outside, and the kernel (ukernels/attention.py) must take it."""
    from einc.backends.llvm.ukernels.attention import Decline, describe

    members = attention_candidate(qk)
    for n in range(6, len(members) + 1):
        ops = members[:n]
        try:
            match_attention(ops)
        except NoMatch:
            continue
        if not closed(ops):
            return None, "an intermediate value (scores, probabilities or sums) is read outside"
        inside = {op.output for op in ops}
        inputs: list[SSAValue] = []
        for op in ops:
            inputs += [v for v in op.inputs if v not in inside and v not in inputs]
        try:
            spec = describe(ops, inputs)
        except Decline as e:
            return None, str(e)
        maps = len(ops) - 6
        return ops, (
            f"attention: QK^T, {maps} score map{'s' if maps != 1 else ''}, softmax and PV in one kernel, "
            f"1 pass over the {spec['n']} keys (running max and sum, FlashAttention-2; the cascade needs 2 "
            f"after defer-division, 3 before), {spec['m']} queries in blocks of {16 * spec['qv']}, "
            f"head dims {spec['e']}/{spec['f']}, {math.prod(spec['batch'].values())} batch x head"
        )
    return None, None


def fuse_attention(block: Block, enabled: bool = True) -> tuple[list[GroupOp], dict[Operation, str]]:
    """Attention cascades -> "attention" groups; for those the kernel declines, the reason
    (by QK einsum), which the contraction group that takes QK instead records."""
    groups: list[GroupOp] = []
    declined: dict[Operation, str] = {}
    for op in list(block.ops):
        if op.parent is not block or not is_contraction(op):
            continue
        ops, why = attention_chain(op)  # type: ignore[arg-type]
        if ops is None:
            if why:
                declined[op] = why
            continue
        assert why is not None
        if not enabled:
            declined[op] = "the attention kernel is off (fuse{attention=false})"
            continue
        groups.append(make_group("attention", ops, why))
    return groups, declined


# -- rows groups ---------------------------------------------------------------------------

MIN_ROW = 16
"""Elements a row started by an elementwise map should have (16 f32 lanes fill an AVX-512
vector): a map over [1, 96, 4, 8] takes its rows as [1, 96] x 32 rather than [1, 96, 4] x 8."""


@dataclass
class RowSpace:
    """The canonical dims of a rows group: rows P (the seed reduction's output) and the
    reduced dims R, and for each member the canonical dim of every index variable.

    `ready[v]` is the pass after which a member value can be read: a full value
    (over P and R) streams in its pass and is re-read from storage later; a
    per-row value is ready once the reduction it comes from has finished. A
    full or reducing einsum runs in pass max(full inputs' pass, per-row
    inputs' pass + 1): FuseMax's rule, the count einc.analysis.pass_count gives.
    """

    extents: dict[str, int]
    p: list[str]
    r: list[str]
    ops: list[EinsumOp]
    dims: dict[SSAValue, list[str]]
    names: dict[EinsumOp, dict[str, str]]
    ready: dict[SSAValue, int]
    passes: dict[EinsumOp, int]
    seen: dict[SSAValue, list[str | None]]
    """The canonical dim of each axis of the inputs members read (None: a constant index)."""

    @property
    def pass_count(self) -> int:
        return max(self.passes.values(), default=0)

    def full(self, value: SSAValue) -> bool:
        return len(self.dims[value]) > len(self.p)

    @staticmethod
    def seed(op: Operation) -> RowSpace | None:
        """The space of an einsum that can start a rows group: a plain, f32, non-contraction
        reduction (its output dims are the rows), or an elementwise map that is not a copy
        (rows: all dims but the last; a LayerNorm or softmax after it joins over the last)."""
        if not isinstance(op, EinsumOp) or is_contraction(op):
            return None
        if op.reduce_op is not None and op.reduction_vars():
            rows, reduced = op.output_vars, op.reduction_vars()
        elif op.reduce_op is None and op.output_vars and op.map_expr != mapexpr.Input(0):
            extents = op.extents()
            last = len(op.output_vars) - 1  # the last dim, and more trailing dims while the row is short
            while last > 0 and math.prod(extents[v] for v in op.output_vars[last:]) < MIN_ROW:
                wider = set(op.output_vars[last - 1 :])
                if any(0 < len(wider & {e.plain_var for e in exprs}) < len(wider) for exprs in op.input_exprs):
                    break  # an input indexed by part of the wider row (a per-channel bias): keep it out
                last -= 1
            rows, reduced = op.output_vars[:last], op.output_vars[last:]
        else:
            return None
        extents = op.extents()
        p = [f"p{i}" for i in range(len(rows))]
        r = [f"r{i}" for i in range(len(reduced))]
        space = RowSpace({}, p, r, [], {}, {}, {}, {}, {})
        names = dict(zip(rows, p)) | dict(zip(reduced, r))
        space.extents = {names[v]: extents[v] for v in names}
        return space if space._check(op, names) is None else None

    def _check(self, op: EinsumOp, names: dict[str, str]) -> str | None:
        """Why `op` with its variables named `names` cannot join (None: it joined)."""
        if not all(_f32(v) for v in [*op.inputs, op.output]):
            return "read by a non-f32 einsum"
        missing = _functions(op.map_expr) - EPILOGUE_FUNCTIONS
        if missing:
            return f"read by a map the vector code lacks ({', '.join(sorted(missing))})"
        for exprs in op.input_exprs:
            if any(e.terms and e.plain_var is None for e in exprs):
                return "read through an affine index"
        if set(names) != set(op.output_vars) | set(op.reduction_vars()) or any(v not in names for v in op.output_vars):
            return "read by an einsum with dims outside the rows"
        out = [names[v] for v in op.output_vars]
        reduced = {names[v] for v in op.reduction_vars()}
        if len(set(out)) != len(out) or set(out) not in (set(self.p), set(self.p) | set(self.r)):
            return "read by an einsum of other rows"
        if out not in (self.p, self.p + self.r):
            return "read by an einsum that writes the rows in another order (a transpose)"
        if op.reduce_op is not None and (reduced != set(self.r) or set(out) != set(self.p)):
            return "read by a reduction over other dims"
        ready = [self.ready[v] + (0 if self.full(v) else 1) for v in op.inputs if v in self.ready]
        step = max([1, *ready])
        self.ops.append(op)
        self.names[op] = names
        for value, exprs in zip(op.inputs, op.input_exprs):
            if value not in self.dims and value not in self.seen:
                self.seen[value] = [names.get(e.plain_var) if e.plain_var else None for e in exprs]  # type: ignore[arg-type]
        self.dims[op.output] = out
        if op.reduce_op is not None or len(out) > len(self.p):
            self.passes[op] = step
            self.ready[op.output] = step
        else:
            self.ready[op.output] = max([0, *(self.ready[v] for v in op.inputs if v in self.ready)])
        return None

    def join(self, op: Operation) -> str | None:
        """Add `op`, which reads a member, if it fits the space; else say why not."""
        if not isinstance(op, EinsumOp):
            return f"read by {op.name}"
        if is_contraction(op):
            return "read by a contraction"
        names: dict[str, str] = {}
        for value, exprs in zip(op.inputs, op.input_exprs):
            known = self.dims.get(value) or self.seen.get(value)
            if known is None:
                continue
            for expr, dim in zip(exprs, known):
                var = expr.plain_var
                if dim is None and var is None:
                    continue
                if var is None or dim is None or names.setdefault(var, dim) != dim:
                    if value in self.dims:
                        return "read transposed, broadcast or shifted"
                    return "read with an input's dims in another order"
        # A variable only fresh inputs carry: the one free canonical dim of its extent.
        extents = op.extents()
        for var in op.output_vars + op.reduction_vars():
            if var not in names:
                free = [d for d in self.p + self.r if d not in names.values() and self.extents[d] == extents[var]]
                if len(free) == 1:
                    names[var] = free[0]
        if len(set(names.values())) != len(names):
            return "read with two dims on one index"
        return self._check(op, names)


def rows_chain(seed: EinsumOp) -> tuple[RowSpace, str] | None:
    """The rows group a reduction starts, and why it ends there."""
    space = RowSpace.seed(seed)
    if space is None:
        return None
    stop = "end of the function"
    op = seed.next_op
    for _ in range(LOOKAHEAD):
        if op is None:
            break
        if any(v in space.dims for v in op.operands):
            if isinstance(op, func.ReturnOp):
                op = op.next_op
                continue
            why = space.join(op)
            if why is not None:
                stop = why
                break
        elif isinstance(op, EinsumOp) and op.reduce_op is None and any(v in space.seen for v in op.inputs):
            space.join(op)  # a sibling map of the same inputs (GELU's x^3 beside x/2): joins if it fits
        op = op.next_op
    return space, stop


def fuse_rows(block: Block) -> list[GroupOp]:
    groups = []
    taken: set[Operation] = set()
    for op in list(block.ops):
        if op in taken:
            continue
        found = rows_chain(op)  # type: ignore[arg-type]
        if found is None:
            continue
        space, stop = found
        if not any(m.reduce_op for m in space.ops) and len(space.ops) < 2:
            continue  # one elementwise einsum is one loop already
        members = set(space.ops)
        taken |= members
        outputs = [m.output for m in space.ops if any(u.operation not in members for u in m.output.uses)]
        rows = 1
        for d in space.p:
            rows *= space.extents[d]
        length = 1
        for d in space.r:
            length *= space.extents[d]
        why = (
            f"rows: {len(space.ops)} einsum{'s' if len(space.ops) != 1 else ''} over {rows} rows of {length}, "
            f"{space.pass_count} pass{'es' if space.pass_count != 1 else ''} over each row (the row stays in cache "
            f"between them), {len(outputs)} result{'s' if len(outputs) != 1 else ''} read outside; the chain ends: {stop}"
        )
        groups.append(make_group("rows", space.ops, why, outputs))
    return groups


# -- window groups ----------------------------------------------------------------------------

WINDOW_REDUCTIONS = ("max", "min")
"""Reductions of a window group (a sum over a window times a constant is a depthwise contraction)."""


def window_operand(op: EinsumOp) -> int | None:
    """Which of a two-input einsum's inputs is indexed by its reduced (tap) indices alone, if one is."""
    taps = set(op.reduction_vars())
    found = [i for i, exprs in enumerate(op.input_exprs) if {v for e in exprs for v in e.variables} <= taps]
    return found[0] if len(op.inputs) == 2 and len(found) == 1 else None


def fuse_windows(block: Block) -> list[GroupOp]:
    """Each reduction over a window of an image with a constant per tap (MaxPool, MinPool: the
    second input is indexed by the window's indices alone) as a group of its own, which the
    CPU target runs as a vector kernel (`ukernels/depthwise.py`)."""
    groups = []
    for op in list(block.ops):
        if not (isinstance(op, EinsumOp) and op.reduce_op in WINDOW_REDUCTIONS and all(_f32(v) for v in [*op.inputs, op.output])):
            continue
        if window_operand(op) is not None:
            why = f"a {op.reduce_op} over a window of {len(op.reduction_vars())} indices with a constant per tap"
            groups.append(make_group("window", [op], why))
    return groups


@dataclass(frozen=True)
class Fuse(ModulePass):
    """Group contractions with their elementwise epilogues, and reductions with the
    einsums that share their rows, into `ein.group`s."""

    name: ClassVar[str] = "fuse"

    attention: bool = True
    """Make "attention" groups (one FlashAttention-2 kernel); off, attention is a contraction,
    a rows group and a contraction (for comparisons)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for fn in op.ops:
            if isinstance(fn, func.FuncOp) and not fn.is_declaration:
                # the function's body, and the branches of its ifs (Silero VAD runs inside them)
                blocks = [fn.body.block] + [r.block for o in fn.walk() if isinstance(o, IfOp) for r in o.regions]
                for block in blocks:
                    _, declined = fuse_attention(block, self.attention)
                    fuse_contractions(block, declined)
                    fuse_rows(block)
                    fuse_windows(block)
