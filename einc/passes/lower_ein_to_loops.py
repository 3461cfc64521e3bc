"""The `lower-ein-to-loops` pass: einsum cascades on tensors -> loop nests on buffers.

This is the CPU backend's way down from value semantics. Every tensor gets a flat
row-major buffer (`memref<N x T>`) that is an argument of the function: the
model's inputs, then its outputs, then weights and inline constants, then
intermediates. The runtime owns all of them (intermediates live in its arena),
so compiled code never allocates; the argument roles are recorded in the
function attribute `einc.buffers`. Views (reshape) share their source's buffer:
they only change how indices linearise.

Each einsum becomes one loop nest: without a reduce, a loop over the output
indices that stores the map; with one, an initialising loop that writes the
identity and a nest over all indices that folds the map into the output. The
loop order puts the index that is contiguous in the output innermost when some
input is contiguous along it too (matmul runs m, k, n), else the reduction.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import arith, func, math, memref, scf
from xdsl.dialects.builtin import (

    ArrayAttr,
    DictionaryAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from einc.ir import mapexpr
from einc.ir.ein import REDUCTIONS, ConstantOp, EinsumOp, ReshapeOp, WeightOp
from einc.ir.indexexpr import IndexExpr

Builder = Callable[..., Operation]

FLOAT_FUNCTIONS: dict[str, Builder] = {
    "add": arith.AddfOp,
    "sub": arith.SubfOp,
    "mul": arith.MulfOp,
    "div": arith.DivfOp,
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
    "sin": math.SinOp,
    "cos": math.CosOp,
}
"""Map-language functions on floats -> the arith/math op that computes them."""

INT_FUNCTIONS: dict[str, Builder] = {
    "add": arith.AddiOp,
    "sub": arith.SubiOp,
    "mul": arith.MuliOp,
    "div": arith.DivSIOp,
    "max": arith.MaxSIOp,
    "min": arith.MinSIOp,
}
"""Map-language functions on (signed) integers."""

EXPANSIONS: dict[str, str] = {"sigmoid": "1.0 / (1.0 + exp(-$0))"}
"""Functions with no single op, written in terms of others."""


@dataclass
class Buffer:
    """A tensor's storage: a flat buffer argument and the shape it is read with."""

    ref: SSAValue
    shape: tuple[int, ...]

    def strides(self) -> list[int]:
        strides, acc = [], 1
        for size in reversed(self.shape):
            strides.append(acc)
            acc *= size
        return list(reversed(strides))


def flat_type(ty: TensorType) -> MemRefType:
    return MemRefType(ty.get_element_type(), [max(1, pymath.prod(ty.get_shape()))])


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
            op.results[0].name_hint = f"c{value}"
            if self._last_constant is not None:
                self._last_constant.parent_block().insert_op_after(op, self._last_constant)  # type: ignore[union-attr]
            else:
                entry = self.block
                if entry.first_op is None:
                    entry.add_op(op)
                else:
                    entry.insert_op_before(op, entry.first_op)
            self._last_constant = op
            self.constants[value] = op.results[0]
        return self.constants[value]

    def scalar(self, value: float, ty: Attribute) -> SSAValue:
        if isinstance(ty, IntegerType):
            width = ty.width.data
            if pymath.isinf(value):
                value = -(2 ** (width - 1)) if value < 0 else 2 ** (width - 1) - 1
            return self.emit(arith.ConstantOp(IntegerAttr(int(value), ty)))
        return self.emit(arith.ConstantOp(FloatAttr(value, ty)))  # type: ignore[arg-type]

    def loops(self, vars_: Sequence[str], extents: dict[str, int], body: Callable[[dict[str, SSAValue]], None]) -> None:
        """A perfect nest of scf.for over `vars_` (outermost first) around `body`."""
        ivs: dict[str, SSAValue] = {}
        outer = self.block
        for var in vars_:
            lb, ub, step = self.index(0), self.index(extents[var]), self.index(1)
            inner = Block(arg_types=[IndexType()])
            inner.args[0].name_hint = var
            self.emit(scf.ForOp(lb, ub, step, [], Region(inner)))
            self.block = inner
            ivs[var] = inner.args[0]
        body(ivs)
        # close the nest from the inside out
        block = self.block
        while block is not outer:
            block.add_op(scf.YieldOp())
            parent = block.parent_op()
            assert parent is not None and parent.parent_block() is not None
            block = parent.parent_block()  # type: ignore[assignment]
        self.block = outer

    def offset(self, buf: Buffer, exprs: Sequence[IndexExpr], ivs: dict[str, SSAValue]) -> SSAValue:
        """The linear element offset of `buf[exprs]` at the loop point `ivs`."""
        coeffs: dict[str, int] = {}
        const = 0
        for expr, stride in zip(exprs, buf.strides()):
            const += expr.const * stride
            for var, c in expr.terms:
                coeffs[var] = coeffs.get(var, 0) + c * stride
        total: SSAValue | None = None
        for var, c in coeffs.items():
            term = ivs[var] if c == 1 else self.emit(arith.MuliOp(ivs[var], self.index(c)))
            total = term if total is None else self.emit(arith.AddiOp(total, term))
        if total is None:
            return self.index(const)
        return self.emit(arith.AddiOp(total, self.index(const))) if const else total

    def convert(self, value: SSAValue, to: Attribute) -> SSAValue:
        """Convert a scalar between element types (the map computes in the output's)."""
        src = value.type
        if src == to:
            return value
        if isinstance(src, IntegerType) and isinstance(to, IntegerType):
            op = arith.ExtSIOp(value, to) if src.width.data < to.width.data else arith.TruncIOp(value, to)
        elif isinstance(src, IntegerType):
            op = arith.SIToFPOp(value, to)  # type: ignore[arg-type]
        elif isinstance(to, IntegerType):
            op = arith.FPToSIOp(value, to)
        else:
            wider = src.bitwidth < to.bitwidth  # type: ignore[attr-defined]
            op = arith.ExtFOp(value, to) if wider else arith.TruncFOp(value, to)
        return self.emit(op)

    def scalar_expr(self, expr: mapexpr.Expr, inputs: Sequence[SSAValue], ty: Attribute) -> SSAValue:
        """Code for a map expression, computed in element type `ty`."""
        match expr:
            case mapexpr.Input(index):
                return self.convert(inputs[index], ty)
            case mapexpr.Const(value):
                return self.scalar(value, ty)
            case mapexpr.Call(fn, args):
                if fn in EXPANSIONS:
                    return self.scalar_expr(mapexpr.substitute(mapexpr.parse(EXPANSIONS[fn]), args), inputs, ty)
                table = INT_FUNCTIONS if isinstance(ty, IntegerType) else FLOAT_FUNCTIONS
                if fn not in table:
                    raise PassFailedException(f"map function '{fn}' has no lowering for {ty}")
                operands = [self.scalar_expr(a, inputs, ty) for a in args]
                return self.emit(table[fn](*operands))
        raise AssertionError(expr)


def _loop_order(op: EinsumOp) -> list[str]:
    outs, reds = op.output_vars, op.reduction_vars()
    if not reds or not outs:
        return outs + reds
    innermost_of_inputs = {exprs[-1].plain_var for exprs in op.input_exprs if exprs}
    if outs[-1] in innermost_of_inputs:
        return outs[:-1] + reds + outs[-1:]
    return outs + reds


@dataclass
class _FunctionLowering:
    """Lowers one function of einsum cascades to a function of loop nests."""

    fn: func.FuncOp
    buffers: dict[SSAValue, Buffer] = field(default_factory=dict)
    roles: list[DictionaryAttr] = field(default_factory=list)

    def run(self) -> func.FuncOp:
        _give_outputs_own_einsums(self.fn)
        body = self.fn.body.block
        ret = body.last_op
        assert isinstance(ret, func.ReturnOp)
        output_names = _names(self.fn, "einc.outputs", "output", len(ret.arguments))
        input_names = _names(self.fn, "einc.inputs", "input", len(body.args))

        arg_types: list[Attribute] = []
        sources: list[SSAValue | None] = []

        def add(value: SSAValue | None, ty: TensorType, role: str, name: str, extra: dict[str, Attribute] | None = None) -> None:
            arg_types.append(flat_type(ty))
            sources.append(value)
            entry: dict[str, Attribute] = {
                "role": StringAttr(role),
                "name": StringAttr(name),
                "shape": ArrayAttr([IntegerAttr(s, i64) for s in ty.get_shape()]),
            }
            self.roles.append(DictionaryAttr({**entry, **(extra or {})}))

        for arg, name in zip(body.args, input_names):
            add(arg, arg.type, "input", name)  # type: ignore[arg-type]
        for value, name in zip(ret.arguments, output_names):
            add(value, value.type, "output", name)  # type: ignore[arg-type]
        weights: dict[str, SSAValue] = {}
        for op in body.ops:
            if isinstance(op, WeightOp):
                sym = op.sym.string_value()
                if sym in weights:
                    continue
                weights[sym] = op.result
                add(op.result, op.result.type, "weight", sym)  # type: ignore[arg-type]
            elif isinstance(op, ConstantOp):
                add(op.result, op.result.type, "constant", f"const{len(self.roles)}", {"value": op.value})  # type: ignore[arg-type]
        outputs = set(ret.arguments)
        for op in body.ops:
            if isinstance(op, EinsumOp) and op.output not in outputs:
                add(op.output, op.output.type, "temp", op.output.name_hint or f"t{len(self.roles)}")  # type: ignore[arg-type]

        block = Block(arg_types=arg_types)
        for arg, src in zip(block.args, sources):
            assert src is not None
            arg.name_hint = src.name_hint
            self.buffers[src] = Buffer(arg, tuple(src.type.get_shape()))  # type: ignore[attr-defined]
        for op in body.ops:
            if isinstance(op, WeightOp):
                self.buffers[op.result] = self.buffers[weights[op.sym.string_value()]]

        emitter = _Emitter(block)
        for op in body.ops:
            if isinstance(op, ReshapeOp):
                src = self.buffers[op.source]
                self.buffers[op.result] = Buffer(src.ref, tuple(op.result.type.get_shape()))  # type: ignore[attr-defined]
            elif isinstance(op, EinsumOp):
                self.lower_einsum(emitter, op)
            elif not isinstance(op, (WeightOp, ConstantOp, func.ReturnOp)):
                raise PassFailedException(f"lower-ein-to-loops cannot lower '{op.name}'")
        emitter.emit(func.ReturnOp())

        new_fn = func.FuncOp(self.fn.sym_name.data, (arg_types, []), Region(block))
        new_fn.attributes["einc.buffers"] = ArrayAttr(self.roles)
        new_fn.attributes["einc.noalias_args"] = UnitAttr()
        return new_fn

    def lower_einsum(self, e: _Emitter, op: EinsumOp) -> None:
        extents = op.extents()
        out = self.buffers[op.output]
        ins = [self.buffers[v] for v in op.inputs]
        exprs = op.input_exprs
        out_exprs = [IndexExpr.var(v) for v in op.output_vars]
        elem = op.result_type().get_element_type()
        fmap = op.map_expr
        reduce = op.reduce_op

        def loads(ivs: dict[str, SSAValue]) -> list[SSAValue]:
            return [
                e.emit(memref.LoadOp.get(buf.ref, [e.offset(buf, ex, ivs)]))
                for buf, ex in zip(ins, exprs)
            ]

        if reduce is None:
            def body(ivs: dict[str, SSAValue]) -> None:
                value = e.scalar_expr(fmap, loads(ivs), elem)
                e.emit(memref.StoreOp.get(value, out.ref, [e.offset(out, out_exprs, ivs)]))

            e.loops(op.output_vars, extents, body)
            return

        def init(ivs: dict[str, SSAValue]) -> None:
            value = e.scalar(REDUCTIONS[reduce], elem)
            e.emit(memref.StoreOp.get(value, out.ref, [e.offset(out, out_exprs, ivs)]))

        def accumulate(ivs: dict[str, SSAValue]) -> None:
            value = e.scalar_expr(fmap, loads(ivs), elem)
            at = e.offset(out, out_exprs, ivs)
            acc = e.emit(memref.LoadOp.get(out.ref, [at]))
            combined = e.scalar_expr(mapexpr.Call(reduce, (mapexpr.Input(0), mapexpr.Input(1))), [acc, value], elem)
            e.emit(memref.StoreOp.get(combined, out.ref, [at]))

        e.loops(op.output_vars, extents, init)
        e.loops(_loop_order(op), extents, accumulate)


def _names(fn: func.FuncOp, attr: str, default: str, count: int) -> list[str]:
    names = fn.attributes.get(attr)
    if isinstance(names, ArrayAttr) and len(names) == count:
        return [n.data for n in names]  # type: ignore[union-attr]
    return [f"{default}{i}" for i in range(count)]


def _give_outputs_own_einsums(fn: func.FuncOp) -> None:
    """Each output must be written by an einsum of its own: copy where it is not.

    An output that is an input, a weight, a view, or the same value as another
    output has no einsum to write it into the output buffer.
    """
    ret = fn.body.block.last_op
    assert isinstance(ret, func.ReturnOp)
    seen: set[SSAValue] = set()
    for n, value in enumerate(ret.arguments):
        if isinstance(value.owner, EinsumOp) and value not in seen:
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
    """Lower einsum cascades on tensors to scf loop nests on flat buffer arguments."""

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



