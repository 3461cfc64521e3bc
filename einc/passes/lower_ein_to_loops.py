"""The `lower-ein-to-loops` pass: ein ops on tensors -> loop nests on buffers.

This is the CPU backend's way down from value semantics. Every tensor gets a flat
row-major buffer (`memref<N x T>`) that is an argument of the function: the
model's inputs, then its outputs, then weights and inline constants, then
intermediates. The runtime owns all of them (intermediates live in its arena),
so compiled code never allocates; the argument roles are recorded in the
function attribute `einc.buffers`. Views (reshape) share their source's buffer:
they only change how indices linearise. After `memplan`, each intermediate's
entry carries its planned arena offset, an in-place output reuses its input's
argument, and `einc.noalias_args` lists only the arguments that share no byte.

Each einsum becomes one loop nest: without a reduce, a loop over the output
indices that stores the map; with one, an initialising loop that writes the
identity and a nest over all indices that folds the map into the output. The
loop order puts the index that is contiguous in the output innermost when some
input's last index depends on it too (matmul runs m, k, n; a 3x3/2 max pool runs
its taps outside the output column, which then vectorises: 64 x 112 x 112 with
its pad copy 0.29 -> 0.19 ms, 2 threads), else
the reduction.
Gather, concat and pad are loops over their output (or input) with computed
source indices; scatter copies its data, then loops over its updates and stores
each at its computed place; topk inserts each element of a row into
its k result slots.

Scalars are computed in a *compute type* per storage type: bools are stored as
bytes and computed as i1, unsigned integers widen to a signed type, 16-bit
floats widen to f32, bit formats (bf16, float8, 4- and 2-bit integers) are stored
as integer bits and computed as f32 or i32 (`bit_formats`). A map computes in the
common type of its operands and converts to the output's type at the end;
comparisons give i1.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import arith, func, llvm, math, memref, scf
from xdsl.dialects.builtin import (
    ArrayAttr,
    BFloat16Type,
    DenseArrayBase,
    DictionaryAttr,
    Float16Type,
    Float32Type,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    Signedness,
    StringAttr,
    TensorType,
    UnitAttr,
    i1,
    i8,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from einc.ir import mapexpr
from einc.ir.dtypes import BIT_FORMATS, numpy_to_type, type_to_numpy
from einc.ir.ein import (
    REDUCTIONS,
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
    inline_group,
)
from einc.ir.indexexpr import IndexExpr
from einc.passes import bit_formats
from einc.passes.memplan import (
    INPLACE,
    MEMPLAN,
    planned_offset,
    spread_group_offsets,
    verify_annotations,
)
from einc.passes.memplan.liveness import nbytes

OpBuilder = Callable[..., Operation]

FLOAT_FUNCTIONS: dict[str, OpBuilder] = {
    "add": arith.AddfOp,
    "sub": arith.SubfOp,
    "mul": arith.MulfOp,
    "div": arith.DivfOp,
    "fmod": llvm.FRemOp,  # exact C fmod; arith has no remf in xDSL 0.74
    "max": arith.MaximumfOp,
    "min": arith.MinimumfOp,
    "pow": math.PowFOp,
    "neg": arith.NegfOp,
    "abs": math.AbsFOp,
    "exp": math.ExpOp,
    "log": math.LogOp,
    "sqrt": math.SqrtOp,
    "tanh": math.TanhOp,
    "erf": math.ErfOp,
    "floor": math.FloorOp,
    "ceil": math.CeilOp,
    "round": math.RoundEvenOp,
    "sin": math.SinOp,
    "cos": math.CosOp,
    "tan": math.TanOp,
    "asin": math.AsinOp,
    "acos": math.AcosOp,
    "atan": math.AtanOp,
    "sinh": math.SinhOp,
    "cosh": math.CoshOp,
    "asinh": math.AsinhOp,
    "acosh": math.AcoshOp,
    "atanh": math.AtanhOp,
}
"""Map-language functions on floats -> the arith/math op that computes them."""

INT_FUNCTIONS: dict[str, OpBuilder] = {
    "add": arith.AddiOp,
    "sub": arith.SubiOp,
    "mul": arith.MuliOp,
    "div": arith.DivSIOp,
    "fmod": arith.RemSIOp,
    "max": arith.MaxSIOp,
    "min": arith.MinSIOp,
    "shl": arith.ShLIOp,
    "shr": arith.ShRSIOp,  # unsigned inputs compute zero-extended in a wider type, where it is logical
    "bitand": arith.AndIOp,
    "bitor": arith.OrIOp,
    "bitxor": arith.XOrIOp,
}
"""Map-language functions on (signed) integers."""

EXPANSIONS: dict[str, str] = {
    "sigmoid": "1.0 / (1.0 + exp(-$0))",
    "softplus": "max($0, 0.0) + log(1.0 + exp(-abs($0)))",
    "sign": "select(gt($0, 0), 1, select(lt($0, 0), -1, 0))",
    "mod": "select(and(ne(fmod($0, $1), 0), ne(lt(fmod($0, $1), 0), lt($1, 0))), fmod($0, $1) + $1, fmod($0, $1))",
}
"""Functions with no single op, written in terms of others."""

FLOAT_EXPANSIONS: dict[str, str] = {
    "neg": "0 - $0",
}
INT_EXPANSIONS: dict[str, str] = {
    "neg": "0 - $0",
    "abs": "select(lt($0, 0), 0 - $0, $0)",
    "floor": "$0",
    "ceil": "$0",
    "round": "$0",
    "bitnot": "bitxor($0, -1)",
}
"""Expansions that differ by the operand's kind (float or integer)."""

_CMP_FLOAT = {"lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge", "eq": "oeq", "ne": "une"}
_CMP_INT = {"lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge", "eq": "eq", "ne": "ne"}
_LOGICAL = {"and": arith.AndIOp, "or": arith.OrIOp, "xor": arith.XOrIOp}


def compute_type(ty: Attribute) -> Attribute:
    """The type scalars of element type `ty` are computed in."""
    if ty in BIT_FORMATS:
        return Float32Type() if BIT_FORMATS[ty].is_float else i32
    if isinstance(ty, IntegerType):
        if ty.width.data == 1:
            return i1
        if ty.signedness.data == Signedness.UNSIGNED:
            return i32 if ty.width.data < 32 else i64
        return IntegerType(ty.width.data)
    if isinstance(ty, (Float16Type, BFloat16Type)):
        return Float32Type()
    return ty


def storage_type(ty: Attribute) -> Attribute:
    """The element type buffers of element type `ty` hold (signless, byte-sized)."""
    if ty in BIT_FORMATS:
        return IntegerType(BIT_FORMATS[ty].storage or 8)
    if isinstance(ty, IntegerType):
        return i8 if ty.width.data == 1 else IntegerType(ty.width.data)
    return ty


@dataclass
class Buffer:
    """A tensor's storage: a flat buffer argument, its shape and element type."""

    ref: SSAValue
    shape: tuple[int, ...]
    elem: Attribute

    def strides(self) -> list[int]:
        strides, acc = [], 1
        for size in reversed(self.shape):
            strides.append(acc)
            acc *= size
        return list(reversed(strides))


def flat_type(ty: TensorType) -> MemRefType:
    return MemRefType(storage_type(ty.get_element_type()), [max(1, pymath.prod(ty.get_shape()))])


def _is_int(ty: Attribute) -> bool:
    return isinstance(ty, (IntegerType, IndexType))


def _common(types: Sequence[Attribute], fractional: bool, hint: Attribute, keep_bool: bool = False) -> Attribute:
    """The type a call's operands are computed in: mapexpr.common_dtype on xDSL types."""
    chosen = mapexpr.common_dtype(
        [type_to_numpy(_storage_free(t)) for t in types], fractional, type_to_numpy(hint), keep_bool
    )
    for t in [*types, hint]:
        if type_to_numpy(_storage_free(t)) == chosen:
            return t if not isinstance(t, IndexType) else i64
    return numpy_to_type(chosen)


def _storage_free(t: Attribute) -> Attribute:
    return i64 if isinstance(t, IndexType) else t


@dataclass
class _Emitter:
    """Appends ops to a block; index constants go once to the function's top."""

    block: Block
    constants: dict[int, SSAValue] = field(default_factory=dict)
    _last_constant: Operation | None = None

    def emit(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if op.results else None  # type: ignore[return-value]

    def index(self, value: int) -> SSAValue:
        if value not in self.constants:
            op = arith.ConstantOp(IntegerAttr(value, IndexType()))
            op.results[0].name_hint = f"c{value}" if value >= 0 else f"cm{-value}"
            if self._last_constant is not None:
                self._last_constant.parent_block().insert_op_after(op, self._last_constant)  # type: ignore[union-attr]
            elif self.block.first_op is None:
                self.block.add_op(op)
            else:
                self.block.insert_op_before(op, self.block.first_op)
            self._last_constant = op
            self.constants[value] = op.results[0]
        return self.constants[value]

    def scalar(self, value: float, ty: Attribute) -> SSAValue:
        if isinstance(ty, IntegerType):
            width = ty.width.data
            if width == 1:  # -inf (max's identity) is false, +inf (min's) true
                truth = value > 0 if pymath.isinf(value) else bool(value)
                return self.emit(arith.ConstantOp(IntegerAttr(-1 if truth else 0, i1)))
            if pymath.isinf(value):
                value = -(2 ** (width - 1)) if value < 0 else 2 ** (width - 1) - 1
            return self.emit(arith.ConstantOp(IntegerAttr(int(value), ty)))
        return self.emit(arith.ConstantOp(FloatAttr(value, ty)))  # type: ignore[arg-type]

    # -- loops and addressing ------------------------------------------------

    def loops(self, vars_: Sequence[str], extents: dict[str, int], body: Callable[[dict[str, SSAValue]], None]) -> None:
        """A perfect nest of scf.for over `vars_` (outermost first) around `body`."""
        ivs: dict[str, SSAValue] = {}
        outer = self.block
        for var in vars_:
            inner = Block(arg_types=[IndexType()])
            inner.args[0].name_hint = var
            self.emit(scf.ForOp(self.index(0), self.index(extents[var]), self.index(1), [], Region(inner)))
            self.block = inner
            ivs[var] = inner.args[0]
        body(ivs)
        block = self.block
        while block is not outer:
            block.add_op(scf.YieldOp())
            parent = block.parent_op()
            assert parent is not None and parent.parent_block() is not None
            block = parent.parent_block()  # type: ignore[assignment]
        self.block = outer

    def carried_loops(
        self, vars_: Sequence[str], extents: dict[str, int], ivs: dict[str, SSAValue], init: SSAValue,
        step: Callable[[dict[str, SSAValue], SSAValue], SSAValue],
    ) -> SSAValue:
        """A nest of scf.for over `vars_` that carries one value from `init` through
        `step(ivs, value)` (an accumulator in a register); returns its final value."""
        if not vars_:
            return step(ivs, init)
        bounds = self.index(0), self.index(extents[vars_[0]]), self.index(1)  # first, so they go to the top
        body = Block(arg_types=[IndexType(), init.type])
        body.args[0].name_hint = vars_[0]
        outer, self.block = self.block, body
        self.emit(scf.YieldOp(self.carried_loops(vars_[1:], extents, {**ivs, vars_[0]: body.args[0]}, body.args[1], step)))
        self.block = outer
        return self.emit(scf.ForOp(*bounds, [init], Region(body)))

    def linear(self, coeffs: dict[str, int], const: int, ivs: dict[str, SSAValue]) -> SSAValue:
        """`sum(c * iv) + const` as index arithmetic."""
        total: SSAValue | None = None
        for var, c in coeffs.items():
            if c == 0:
                continue
            term = ivs[var] if c == 1 else self.emit(arith.MuliOp(ivs[var], self.index(c)))
            total = term if total is None else self.emit(arith.AddiOp(total, term))
        if total is None:
            return self.index(const)
        return self.emit(arith.AddiOp(total, self.index(const))) if const else total

    def offset(self, buf: Buffer, exprs: Sequence[IndexExpr], ivs: dict[str, SSAValue]) -> SSAValue:
        """The linear element offset of `buf[exprs]` at the loop point `ivs`."""
        coeffs: dict[str, int] = {}
        const = 0
        for expr, stride in zip(exprs, buf.strides()):
            const += expr.const * stride
            for var, c in expr.terms:
                coeffs[var] = coeffs.get(var, 0) + c * stride
        return self.linear(coeffs, const, ivs)

    def offset_of(self, buf: Buffer, indices: Sequence[SSAValue]) -> SSAValue:
        """The linear offset of `buf` at computed index values, one per dimension."""
        names = {f"_d{d}": v for d, v in enumerate(indices)}
        return self.linear({f"_d{d}": s for d, s in enumerate(buf.strides())}, 0, names)

    def load(self, buf: Buffer, at: SSAValue) -> SSAValue:
        """A scalar of `buf`, in its compute type."""
        raw = self.emit(memref.LoadOp.get(buf.ref, [at]))
        if buf.elem in BIT_FORMATS:
            return bit_formats.decode(self.emit, raw, buf.elem)
        return self.convert(raw, compute_type(buf.elem), unsigned=_unsigned(buf.elem))

    def store(self, value: SSAValue, buf: Buffer, at: SSAValue) -> None:
        """Store a scalar, converting it to `buf`'s storage type."""
        value = self.convert(value, compute_type(buf.elem))
        if buf.elem in BIT_FORMATS:
            raw = bit_formats.encode(self.emit, value, buf.elem)
        else:
            raw = self.convert(value, storage_type(buf.elem))
        self.emit(memref.StoreOp.get(raw, buf.ref, [at]))

    # -- scalar code ---------------------------------------------------------

    def convert(self, value: SSAValue, to: Attribute, unsigned: bool = False) -> SSAValue:
        """Convert a scalar between types (bools: nonzero is true, true is 1)."""
        src = value.type
        if src == to:
            return value
        if to == i1:
            zero = self.scalar(0, src)
            if _is_int(src):
                return self.emit(arith.CmpiOp(value, zero, "ne"))
            return self.emit(arith.CmpfOp(value, zero, "une"))
        if src == i1:
            unsigned = True
        if isinstance(src, IntegerType) and isinstance(to, IntegerType):
            if src.width.data < to.width.data:
                return self.emit(arith.ExtUIOp(value, to) if unsigned else arith.ExtSIOp(value, to))
            return self.emit(arith.TruncIOp(value, to))
        if isinstance(src, IntegerType):
            return self.emit(arith.UIToFPOp(value, to) if unsigned else arith.SIToFPOp(value, to))  # type: ignore[arg-type]
        if isinstance(to, IntegerType):
            return self.emit(arith.FPToSIOp(value, to))
        wider = src.bitwidth < to.bitwidth  # type: ignore[attr-defined]
        return self.emit(arith.ExtFOp(value, to) if wider else arith.TruncFOp(value, to))

    def scalar_expr(self, expr: mapexpr.Expr, inputs: Sequence[SSAValue], hint: Attribute) -> SSAValue:
        """Code for a map expression; literals take the type of their siblings."""
        match expr:
            case mapexpr.Input(index):
                return inputs[index]
            case mapexpr.Const(value):
                return self.scalar(value, hint)
            case mapexpr.Call(fn, args):
                return self._call(fn, args, inputs, hint)
        raise AssertionError(expr)

    def _operands(
        self, args: Sequence[mapexpr.Expr], inputs: Sequence[SSAValue], hint: Attribute, keep_bool: bool = False
    ) -> list[SSAValue]:
        """Operands converted to their common type (literals adopt it)."""
        values: list[SSAValue | None] = [
            None if isinstance(a, mapexpr.Const) else self.scalar_expr(a, inputs, hint) for a in args
        ]
        typed = [v.type for v in values if v is not None]
        fractional = any(isinstance(a, mapexpr.Const) and not float(a.value).is_integer() for a in args)
        ty = _common(typed, fractional, hint, keep_bool)
        return [
            self.convert(v, ty) if v is not None else self.scalar(a.value, ty)  # type: ignore[union-attr]
            for v, a in zip(values, args)
        ]

    def _call(self, fn: str, args: Sequence[mapexpr.Expr], inputs: Sequence[SSAValue], hint: Attribute) -> SSAValue:
        kind = mapexpr.FUNCTIONS[fn].kind
        if fn in EXPANSIONS:
            return self.scalar_expr(mapexpr.substitute(mapexpr.parse(EXPANSIONS[fn]), args), inputs, hint)
        if kind == "select":
            cond = self.convert(self.scalar_expr(args[0], inputs, i1), i1)
            a, b = self._operands(args[1:], inputs, hint, keep_bool=True)
            return self.emit(arith.SelectOp(cond, a, b))
        if kind == "logical":
            values = [self.convert(self.scalar_expr(a, inputs, i1), i1) for a in args]
            if fn == "not":
                return self.emit(arith.XOrIOp(values[0], self.scalar(1, i1)))
            return self.emit(_LOGICAL[fn](*values))
        operand_hint = hint if hint != i1 else Float32Type()
        values = self._operands(args, inputs, operand_hint, keep_bool=kind == "compare")
        ty = values[0].type
        if kind == "compare":
            if _is_int(ty):
                return self.emit(arith.CmpiOp(values[0], values[1], _CMP_INT[fn]))
            return self.emit(arith.CmpfOp(values[0], values[1], _CMP_FLOAT[fn]))
        if kind == "test":
            if _is_int(ty):
                return self.scalar(0, i1)
            if fn == "isnan":
                return self.emit(arith.CmpfOp(values[0], values[0], "uno"))
            magnitude = self.emit(math.AbsFOp(values[0]))
            return self.emit(arith.CmpfOp(magnitude, self.scalar(pymath.inf, ty), "oeq"))
        expansions = INT_EXPANSIONS if _is_int(ty) else FLOAT_EXPANSIONS
        if fn in expansions:
            expr = mapexpr.substitute(mapexpr.parse(expansions[fn]), [mapexpr.Input(i) for i in range(len(values))])
            return self.scalar_expr(expr, values, ty)
        table = INT_FUNCTIONS if _is_int(ty) else FLOAT_FUNCTIONS
        if fn not in table:
            raise PassFailedException(f"map function '{fn}' has no lowering for {ty}")
        return self.emit(table[fn](*values))

    def clamp(self, value: SSAValue, low: int, high: int) -> SSAValue:
        """`min(max(value, low), high)` on indices."""
        value = self.emit(arith.MaxSIOp(value, self.index(low)))
        return self.emit(arith.MinSIOp(value, self.index(high)))


def _unsigned(ty: Attribute) -> bool:
    return isinstance(ty, IntegerType) and ty.signedness.data == Signedness.UNSIGNED


def _loop_order(op: EinsumOp) -> list[str]:
    outs, reds = op.output_vars, op.reduction_vars()
    if not reds or not outs:
        return outs + reds
    innermost_of_inputs = {v for exprs in op.input_exprs if exprs for v in exprs[-1].variables}
    if outs[-1] in innermost_of_inputs:  # also strided (a pool's 2 * q + s): the vectoriser takes it
        return outs[:-1] + reds + outs[-1:]
    return outs + reds


def _vars(shape: Sequence[int]) -> tuple[list[str], dict[str, int]]:
    names = [f"i{d}" for d in range(len(shape))]
    return names, dict(zip(names, shape))


@dataclass
class _FunctionLowering:
    """Lowers one function of ein ops to a function of loop nests."""

    fn: func.FuncOp
    buffers: dict[SSAValue, Buffer] = field(default_factory=dict)
    roles: list[DictionaryAttr] = field(default_factory=list)

    def run(self) -> func.FuncOp:
        if MEMPLAN in self.fn.attributes:
            verify_annotations(self.fn)  # a plan gone stale would overlap live buffers
        for group in [op for op in self.fn.walk() if isinstance(op, GroupOp) and not _has_kernel(op)]:
            spread_group_offsets(group)
            inline_group(group)  # (also in an ein.if's branches, where groups lower as they do here)
        _give_outputs_own_producers(self.fn)
        body = self.fn.body.block
        ret = body.last_op
        assert isinstance(ret, func.ReturnOp)
        output_names = _names(self.fn, "einc.outputs", "output", len(ret.arguments))
        input_names = _names(self.fn, "einc.inputs", "input", len(body.args))

        sources: list[SSAValue] = []

        def add(value: SSAValue, role: str, name: str, extra: dict[str, Attribute] | None = None) -> None:
            ty: TensorType = value.type  # type: ignore[assignment]
            sources.append(value)
            entry: dict[str, Attribute] = {
                "role": StringAttr(role),
                "name": StringAttr(name),
                "shape": ArrayAttr([IntegerAttr(s, i64) for s in ty.get_shape()]),
                "dtype": StringAttr(type_to_numpy(ty.get_element_type()).name),
            }
            self.roles.append(DictionaryAttr({**entry, **(extra or {})}))

        for arg, name in zip(body.args, input_names):
            add(arg, "input", name)
        for value, name in zip(ret.arguments, output_names):
            add(value, "output", name)
        weights: dict[str, SSAValue] = {}
        for op in body.ops:
            if isinstance(op, WeightOp):
                sym = op.sym.string_value()
                if sym not in weights:
                    weights[sym] = op.result
                    add(op.result, "weight", sym)
            elif isinstance(op, ConstantOp):
                add(op.result, "constant", f"const{len(self.roles)}", {"value": op.value})
        outputs = set(ret.arguments)
        arena: list[tuple[int, int, int]] = []  # (offset, bytes, argument) of planned temps
        for op in body.ops:
            if type(op) not in _PRODUCERS or INPLACE in op.attributes:
                continue
            for result in op.results if isinstance(op, GroupOp) else op.results[:1]:  # a rows group has several
                if result in outputs:
                    continue
                offset = planned_offset(result)
                planned = IntegerAttr(offset, i64) if offset is not None else None
                if planned is not None:
                    arena.append((offset, nbytes(result), len(sources)))
                add(result, "temp", result.name_hint or f"t{len(self.roles)}", {"offset": planned} if planned is not None else None)

        block = Block(arg_types=[flat_type(v.type) for v in sources])  # type: ignore[arg-type]
        for arg, src in zip(block.args, sources):
            arg.name_hint = src.name_hint
            ty: TensorType = src.type  # type: ignore[assignment]
            self.buffers[src] = Buffer(arg, tuple(ty.get_shape()), ty.get_element_type())
        for op in body.ops:
            if isinstance(op, WeightOp):
                self.buffers[op.result] = self.buffers[weights[op.sym.string_value()]]

        emitter = _Emitter(block)
        for op in body.ops:
            if isinstance(op, ReshapeOp):
                src = self.buffers[op.source]
                self.buffers[op.result] = Buffer(src.ref, tuple(op.result.type.get_shape()), src.elem)  # type: ignore[attr-defined]
            elif type(op) in _PRODUCERS:
                if isinstance(k := op.attributes.get(INPLACE), IntegerAttr) and op.results[0] not in outputs:
                    # memplan proved this elementwise output may overwrite operand k
                    src = self.buffers[op.operands[k.value.data]]
                    self.buffers[op.results[0]] = Buffer(src.ref, tuple(op.results[0].type.get_shape()), src.elem)  # type: ignore[attr-defined]
                _PRODUCERS[type(op)](self, emitter, op)
            elif not isinstance(op, (WeightOp, ConstantOp, func.ReturnOp)):
                raise PassFailedException(f"lower-ein-to-loops cannot lower '{op.name}'")
        emitter.emit(func.ReturnOp())

        new_fn = func.FuncOp(self.fn.sym_name.data, ([a.type for a in block.args], []), Region(block))
        new_fn.attributes["einc.buffers"] = ArrayAttr(self.roles)
        new_fn.attributes["einc.noalias_args"] = _noalias_args(arena, len(sources))
        return new_fn

    # -- one method per producing op -------------------------------------------

    def lower_einsum(self, e: _Emitter, op: EinsumOp) -> None:
        extents = op.extents()
        out = self.buffers[op.output]
        ins = [self.buffers[v] for v in op.inputs]
        exprs = op.input_exprs
        out_exprs = [IndexExpr.var(v) for v in op.output_vars]
        elem = compute_type(out.elem)
        fmap = op.map_expr
        reduce = op.reduce_op

        def mapped(ivs: dict[str, SSAValue]) -> SSAValue:
            values = [e.load(buf, e.offset(buf, ex, ivs)) for buf, ex in zip(ins, exprs)]
            return e.convert(e.scalar_expr(fmap, values, elem), elem)

        if reduce is None:
            e.loops(op.output_vars, extents, lambda ivs: e.store(mapped(ivs), out, e.offset(out, out_exprs, ivs)))
            return
        fold = mapexpr.Call(reduce, (mapexpr.Input(0), mapexpr.Input(1)))
        if out.elem in BIT_FORMATS or isinstance(out.elem, Float16Type):
            # accumulate in the compute type (f32) and round once, not at every step, as onnxruntime does

            def step(ivs: dict[str, SSAValue], acc: SSAValue) -> SSAValue:
                return e.scalar_expr(fold, [acc, mapped(ivs)], elem)

            def reduced(ivs: dict[str, SSAValue]) -> None:
                acc = e.carried_loops(op.reduction_vars(), extents, ivs, e.scalar(REDUCTIONS[reduce], elem), step)
                e.store(acc, out, e.offset(out, out_exprs, ivs))

            e.loops(op.output_vars, extents, reduced)
            return

        def init(ivs: dict[str, SSAValue]) -> None:
            e.store(e.scalar(REDUCTIONS[reduce], elem), out, e.offset(out, out_exprs, ivs))

        def accumulate(ivs: dict[str, SSAValue]) -> None:
            value = mapped(ivs)
            at = e.offset(out, out_exprs, ivs)
            e.store(e.scalar_expr(fold, [e.load(out, at), value], elem), out, at)

        e.loops(op.output_vars, extents, init)
        e.loops(_loop_order(op), extents, accumulate)

    def lower_gather(self, e: _Emitter, op: GatherOp) -> None:
        data, idx, out = self.buffers[op.data], self.buffers[op.indices], self.buffers[op.result]
        axis = op.axis.value.data
        names, extents = _vars(out.shape)
        n_idx = len(idx.shape)
        size = data.shape[axis]

        def body(ivs: dict[str, SSAValue]) -> None:
            at = e.offset(idx, [IndexExpr.var(v) for v in names[axis : axis + n_idx]], ivs)
            raw = e.emit(arith.IndexCastOp(e.load(idx, at), IndexType()))
            negative = e.emit(arith.CmpiOp(raw, e.index(0), "slt"))
            wrapped = e.emit(arith.SelectOp(negative, e.emit(arith.AddiOp(raw, e.index(size))), raw))
            position = e.clamp(wrapped, 0, size - 1)
            src = [ivs[v] for v in names[:axis]] + [position] + [ivs[v] for v in names[axis + n_idx :]]
            value = e.load(data, e.offset_of(data, src))
            e.store(value, out, e.offset(out, [IndexExpr.var(v) for v in names], ivs))

        e.loops(names, extents, body)

    def lower_scatter(self, e: _Emitter, op: ScatterOp) -> None:
        """Copy the data into the result, then one loop over the updates that stores
        each (or folds it into what is there) at its computed place, in order."""
        data, idx, upd, out = (self.buffers[v] for v in (op.data, op.indices, op.updates, op.result))
        axis, reduction = op.axis.value.data, op.reduction.data
        size = data.shape[axis]
        if out.ref is not data.ref:
            names, extents = _vars(out.shape)
            at = [IndexExpr.var(v) for v in names]
            e.loops(names, extents, lambda ivs: e.store(e.load(data, e.offset(data, at, ivs)), out, e.offset(out, at, ivs)))
        names, extents = _vars(upd.shape)
        n_idx = len(idx.shape)
        elem = compute_type(out.elem)

        def body(ivs: dict[str, SSAValue]) -> None:
            raw = e.emit(arith.IndexCastOp(e.load(idx, e.offset(idx, [IndexExpr.var(v) for v in names[axis : axis + n_idx]], ivs)), IndexType()))
            negative = e.emit(arith.CmpiOp(raw, e.index(0), "slt"))
            position = e.clamp(e.emit(arith.SelectOp(negative, e.emit(arith.AddiOp(raw, e.index(size))), raw)), 0, size - 1)
            place = e.offset_of(out, [ivs[v] for v in names[:axis]] + [position] + [ivs[v] for v in names[axis + n_idx :]])
            value = e.load(upd, e.offset(upd, [IndexExpr.var(v) for v in names], ivs))
            if reduction != "none":
                fold = mapexpr.Call(reduction, (mapexpr.Input(0), mapexpr.Input(1)))
                value = e.scalar_expr(fold, [e.load(out, place), value], elem)
            e.store(value, out, place)

        e.loops(names, extents, body)

    def lower_top_k(self, e: _Emitter, op: TopKOp) -> None:
        """Per row, insertion into the k result slots: each element i (in order) that
        beats the last slot's goes through the slots from the last, where slot p takes
        slot p-1's position if i beats that, else i if i beats slot p's, else keeps
        its own (selects, no branches). A slot p >= i is still empty and beaten by
        anything; a later equal element never beats an earlier one, so ties stay in
        position order. At most O(n k) per row, about n compares on most data."""
        src, out = self.buffers[op.source], self.buffers[op.result]
        axis, k = op.axis.value.data, op.k
        n = src.shape[axis]
        names, extents = _vars(out.shape)
        extents.update({"i": n, "q": k})
        beats = mapexpr.Call("gt" if op.largest.value.data else "lt", (mapexpr.Input(0), mapexpr.Input(1)))
        elem = compute_type(src.elem)

        def at(ivs: dict[str, SSAValue], buf: Buffer, position: SSAValue) -> SSAValue:
            return e.offset_of(buf, [ivs[v] for v in names[:axis]] + [position] + [ivs[v] for v in names[axis + 1 :]])

        def wins(ivs: dict[str, SSAValue], value: SSAValue, slot: SSAValue) -> tuple[SSAValue, SSAValue]:
            """(position held by `slot`, whether element i beats it)."""
            held = e.load(out, at(ivs, out, slot))
            other = e.load(src, at(ivs, src, e.clamp(e.emit(arith.IndexCastOp(held, IndexType())), 0, n - 1)))
            empty = e.emit(arith.CmpiOp(slot, ivs["i"], "sge"))
            return held, e.emit(arith.OrIOp(empty, e.convert(e.scalar_expr(beats, [value, other], elem), i1)))

        def insert(ivs: dict[str, SSAValue], value: SSAValue) -> None:
            slot = e.emit(arith.SubiOp(e.index(k - 1), ivs["q"]))
            held, beats_held = wins(ivs, value, slot)
            previous, beats_previous = wins(ivs, value, e.emit(arith.MaxSIOp(e.emit(arith.SubiOp(slot, e.index(1))), e.index(0))))
            has_previous = e.emit(arith.CmpiOp(slot, e.index(0), "sgt"))
            shift = e.emit(arith.AndIOp(has_previous, beats_previous))
            mine = e.emit(arith.IndexCastOp(ivs["i"], i64))
            kept = e.emit(arith.SelectOp(beats_held, mine, held))
            e.store(e.emit(arith.SelectOp(shift, previous, kept)), out, at(ivs, out, slot))

        def element(ivs: dict[str, SSAValue]) -> None:
            """Only an element that beats the last slot moves anything: the rest cost one compare."""
            value = e.load(src, at(ivs, src, ivs["i"]))
            _, beats_last = wins(ivs, value, e.index(k - 1))
            outer, e.block = e.block, Block()
            e.loops(["q"], extents, lambda inner: insert({**ivs, **inner}, value))
            e.emit(scf.YieldOp())
            then, e.block = e.block, outer
            e.emit(scf.IfOp(beats_last, [], Region(then), Region(Block([scf.YieldOp()]))))

        rows = names[:axis] + names[axis + 1 :]
        e.loops([*rows, "i"], extents, element)

    def lower_concat(self, e: _Emitter, op: ConcatOp) -> None:
        out = self.buffers[op.result]
        axis = op.axis.value.data
        start = 0
        for value in op.inputs:
            src = self.buffers[value]
            names, extents = _vars(src.shape)
            out_exprs = [IndexExpr.var(v) for v in names]
            out_exprs[axis] = IndexExpr(((names[axis], 1),), start)

            def body(ivs: dict[str, SSAValue], src: Buffer = src, out_exprs: list[IndexExpr] = out_exprs) -> None:
                loaded = e.load(src, e.offset(src, [IndexExpr.var(v) for v in names], ivs))
                e.store(loaded, out, e.offset(out, out_exprs, ivs))

            e.loops(names, extents, body)
            start += src.shape[axis]

    def lower_pad(self, e: _Emitter, op: PadOp) -> None:
        src, out = self.buffers[op.source], self.buffers[op.result]
        low, _high, interior = op.amounts
        mode = op.mode.data
        names, extents = _vars(out.shape)

        def body(ivs: dict[str, SSAValue]) -> None:
            valid: SSAValue | None = None
            indices = []
            for d, var in enumerate(names):
                n, step = src.shape[d], interior[d] + 1
                t = e.emit(arith.SubiOp(ivs[var], e.index(low[d]))) if low[d] else ivs[var]
                if mode == "reflect":
                    t = e.emit(arith.MaxSIOp(t, e.emit(arith.SubiOp(e.index(0), t))))
                    over = e.emit(arith.SubiOp(e.index(2 * (n - 1)), t))
                    t = e.emit(arith.MinSIOp(t, over))
                elif mode == "constant":
                    inside = [e.emit(arith.CmpiOp(t, e.index(0), "sge")), e.emit(arith.CmpiOp(t, e.index((n - 1) * step), "sle"))]
                    if step > 1:
                        rem = e.emit(arith.RemSIOp(t, e.index(step)))
                        inside.append(e.emit(arith.CmpiOp(rem, e.index(0), "eq")))
                        t = e.emit(arith.DivSIOp(t, e.index(step)))
                    for cond in inside:
                        valid = cond if valid is None else e.emit(arith.AndIOp(valid, cond))
                indices.append(e.clamp(t, 0, n - 1))
            value = e.load(src, e.offset_of(src, indices))
            if valid is not None:
                fill = e.scalar(op.value.value.data, value.type)
                value = e.emit(arith.SelectOp(valid, value, fill))
            e.store(value, out, e.offset(out, [IndexExpr.var(v) for v in names], ivs))

        e.loops(names, extents, body)


    def lower_if(self, e: _Emitter, op: IfOp) -> None:
        """scf.if on the loaded condition; each branch lowers its ops in place and
        copies its yielded values into the if's result buffers, which live outside.

        Buffers for values made inside a branch (and for results after the first,
        which `run` does not give one) are added here as new arguments of the
        function, with their roles appended to the table in the same order.
        """
        entry: Block = self.buffers[op.cond].ref.block  # type: ignore[attr-defined]  # every buffer is an argument of it

        def new_buffer(value: SSAValue, role: str, name: str, extra: dict[str, Attribute] | None = None) -> None:
            ty: TensorType = value.type  # type: ignore[assignment]
            arg = entry.insert_arg(flat_type(ty), len(entry.args))
            arg.name_hint = value.name_hint
            self.buffers[value] = Buffer(arg, tuple(ty.get_shape()), ty.get_element_type())
            self.roles.append(DictionaryAttr({
                "role": StringAttr(role),
                "name": StringAttr(name),
                "shape": ArrayAttr([IntegerAttr(s, i64) for s in ty.get_shape()]),
                "dtype": StringAttr(type_to_numpy(ty.get_element_type()).name),
                **(extra or {}),
            }))

        for result in op.outputs:
            if result not in self.buffers:
                new_buffer(result, "temp", result.name_hint or f"t{len(self.roles)}")
        cond = e.load(self.buffers[op.cond], e.index(0))  # index(0) first: constants stay at the top
        outer = e.block
        branches = []
        for region in (op.then_region, op.else_region):
            e.block = Block()
            for inner in region.block.ops:
                if isinstance(inner, WeightOp):
                    same = next((v for v in self.buffers if isinstance(v.owner, WeightOp) and v.owner.sym == inner.sym), None)
                    if same is not None:
                        self.buffers[inner.result] = self.buffers[same]
                    else:
                        new_buffer(inner.result, "weight", inner.sym.string_value())
                elif isinstance(inner, ConstantOp):
                    new_buffer(inner.result, "constant", f"const{len(self.roles)}", {"value": inner.value})
                elif isinstance(inner, ReshapeOp):
                    src = self.buffers[inner.source]
                    self.buffers[inner.result] = Buffer(src.ref, tuple(inner.result.type.get_shape()), src.elem)  # type: ignore[attr-defined]
                elif type(inner) in _PRODUCERS:
                    for result in inner.results:
                        new_buffer(result, "temp", result.name_hint or f"t{len(self.roles)}")
                    _PRODUCERS[type(inner)](self, e, inner)
                elif isinstance(inner, YieldOp):
                    for value, result in zip(inner.values, op.outputs):
                        src, dst = self.buffers[value], self.buffers[result]
                        names, extents = _vars(dst.shape)
                        at = [IndexExpr.var(v) for v in names]

                        def copy(ivs: dict[str, SSAValue], src: Buffer = src, dst: Buffer = dst, at: list = at) -> None:
                            e.store(e.load(src, e.offset(src, at, ivs)), dst, e.offset(dst, at, ivs))

                        e.loops(names, extents, copy)
                else:
                    raise PassFailedException(f"lower-ein-to-loops cannot lower '{inner.name}' in an ein.if")
            e.emit(scf.YieldOp())
            branches.append(Region(e.block))
        e.block = outer
        e.emit(scf.IfOp(cond, [], branches[0], branches[1]))


_PRODUCERS: dict[type[Operation], Callable[[_FunctionLowering, _Emitter, Operation], None]] = {
    EinsumOp: _FunctionLowering.lower_einsum,  # type: ignore[dict-item]
    GatherOp: _FunctionLowering.lower_gather,  # type: ignore[dict-item]
    ScatterOp: _FunctionLowering.lower_scatter,  # type: ignore[dict-item]
    TopKOp: _FunctionLowering.lower_top_k,  # type: ignore[dict-item]
    ConcatOp: _FunctionLowering.lower_concat,  # type: ignore[dict-item]
    PadOp: _FunctionLowering.lower_pad,  # type: ignore[dict-item]
    GroupOp: lambda self, e, op: _group_kernel(op).lower(self, e, op),  # type: ignore[union-attr]
    IfOp: _FunctionLowering.lower_if,  # type: ignore[dict-item]
}
"""Ops that write a new buffer, and the method that lowers each."""

GROUP_KERNELS: dict[str, str] = {
    "contraction": "einc.backends.llvm.ukernels.calls:ContractionCall",
    "rows": "einc.backends.llvm.ukernels.rows:RowsCall",
    "attention": "einc.backends.llvm.ukernels.attention:AttentionCall",
    "winograd-input": "einc.backends.llvm.ukernels.winograd:WinogradInputCall",
    "winograd-output": "einc.backends.llvm.ukernels.winograd:WinogradOutputCall",
    "winograd": "einc.backends.llvm.ukernels.winograd:WinogradCall",
    "window": "einc.backends.llvm.ukernels.depthwise:WindowCall",
}
"""Group kind -> handler (`accepts(group)`, `lower(lowering, emitter, group)`) that
lowers a whole group to a kernel call; groups without one (or that it declines)
are inlined and lowered einsum by einsum."""


def _group_kernel(group: GroupOp):
    path = GROUP_KERNELS.get(group.kind.data)
    if path is None:
        return None
    from importlib import import_module

    module, name = path.split(":")
    return getattr(import_module(module), name)


def _has_kernel(group: GroupOp) -> bool:
    handler = _group_kernel(group)
    return handler is not None and handler.accepts(group)


def _noalias_args(arena: list[tuple[int, int, int]], count: int) -> Attribute:
    """The arguments LLVM may take as noalias: all but planned temps that share bytes with another."""
    if not arena:
        return UnitAttr()
    shared: set[int] = set()
    reach, reach_arg = -1, -1
    for offset, size, arg in sorted(arena, key=lambda span: (span[0], -span[1])):
        if offset < reach:
            shared.update((arg, reach_arg))
        if offset + size > reach:
            reach, reach_arg = offset + size, arg
    return DenseArrayBase.from_list(i64, [a for a in range(count) if a not in shared])


def _names(fn: func.FuncOp, attr: str, default: str, count: int) -> list[str]:
    names = fn.attributes.get(attr)
    if isinstance(names, ArrayAttr) and len(names) == count:
        return [n.data for n in names]  # type: ignore[union-attr]
    return [f"{default}{i}" for i in range(count)]


def _give_outputs_own_producers(fn: func.FuncOp) -> None:
    """Each output must be written by an op of its own: copy where it is not.

    An output that is an input, a weight, a constant, a view, or the same value
    as another output has no op to write it into the output buffer.
    """
    ret = fn.body.block.last_op
    assert isinstance(ret, func.ReturnOp)
    seen: set[SSAValue] = set()
    for n, value in enumerate(ret.arguments):
        if type(value.owner) in _PRODUCERS and value not in seen:
            seen.add(value)
            continue
        ty: TensorType = value.type  # type: ignore[assignment]
        vars_ = [f"i{d}" for d in range(len(ty.get_shape()))]
        copy = EinsumOp([value], [vars_], vars_, ty)
        fn.body.block.insert_op_before(copy, ret)
        ret.operands[n] = copy.output
        seen.add(copy.output)


@dataclass(frozen=True)
class LowerEinToLoops(ModulePass):
    """Lower ein ops on tensors to scf loop nests on flat buffer arguments."""

    name: ClassVar[str] = "lower-ein-to-loops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for fn in list(op.ops):
            if isinstance(fn, func.FuncOp) and not fn.is_declaration:
                new_fn = _FunctionLowering(fn).run()
                new_fn.attributes.update(
                    {k: v for k, v in fn.attributes.items() if k.startswith("einc.") and k not in new_fn.attributes}
                )
                op.body.block.insert_op_before(new_fn, fn)
                fn.detach()
                fn.erase(safe_erase=False)
