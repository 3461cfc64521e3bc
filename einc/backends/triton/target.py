"""The Triton target: einsum cascades -> one readable Python module of Triton kernels.

`Program` walks `@main` once. Every tensor gets a strided `View` of a buffer:
inputs, outputs, weights and constants, and temporaries in one device arena.
Reshapes that keep element order, transposes, slices and broadcasts (einsums
that only move indices) become views and cost no kernel. Each `ein.group` becomes
one kernel from the template its kind names (contraction, rows, attention); an
einsum outside a group, a gather, a concat slice or a pad is a kernel of its own;
a group no template takes is emitted einsum by einsum. A kernel that computes a
model output writes it straight into the output buffer.

The module `render` writes holds the kernels and a `launch(buffers)` function
that runs them in order; `compile_for_triton` packs it into an artifact with
the weights and the arena layout. Nothing here imports torch or triton: a
machine without a GPU compiles, and `einc opt -t triton` prints the source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Block, BlockArgument, Operation, Region, SSAValue

import einc
from einc.backends.triton.emitter import View, compute_type, has_triton_form
from einc.backends.triton.kernels import (
    Kernel,
    NoMatch,
    attention_kernel,
    copy_kernel,
    dot_kernel,
    gather_kernel,
    is_dot,
    pad_kernel,
    rows_kernel,
)
from einc.diagnostics import EincError
from einc.ir import mapexpr
from einc.ir.dtypes import type_to_numpy
from einc.ir.ein import ConcatOp, ConstantOp, EinsumOp, GatherOp, GroupOp, PadOp, ReshapeOp, WeightOp, YieldOp

ALIGNMENT = 256
"""Byte alignment of every buffer in the arena and the weight blob (coalesced, vector loads)."""


def pipeline() -> str:
    """ONNX -> rewritten cascades, weight-only ops folded; `group_for_triton` then groups them for this target's
    templates (the `fuse` pass groups for the CPU's f32 kernels)."""
    from einc.passes.pipeline import CASCADE, FOLD, REWRITES

    return f"{CASCADE},{REWRITES},{FOLD}"


@dataclass
class Buffer:
    """Storage for tensors: an input, output, weight, constant or arena temporary."""

    name: str
    role: str
    dtype: np.dtype
    size: int
    source: str
    """The model's name for it: input/output name, weight symbol, or the value it holds."""
    value: np.ndarray | None = None
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return max(1, self.size) * self.dtype.itemsize


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text).strip("_") or "t"
    return name if not name[0].isdigit() else f"_{name}"


def _dtype(value: SSAValue) -> np.dtype:
    return type_to_numpy(value.type.get_element_type())  # type: ignore[attr-defined]


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def is_view(op: EinsumOp) -> bool:
    """An einsum that only moves indices (transpose, slice, broadcast): a view, no kernel."""
    return (
        len(op.inputs) == 1
        and op.map_expr == mapexpr.Input(0)
        and op.reduce_op is None
        and not op.reduction_vars()
        and _dtype(op.inputs[0]) == _dtype(op.output)
    )


GROUP_KERNELS: dict[str, Callable[..., Kernel]] = {
    "contraction": dot_kernel,
    "rows": rows_kernel,
    "attention": attention_kernel,
}
"""Group kind -> the template that makes its kernel."""


class Program:
    """The kernels of one function, in order, and the buffers they use."""

    def __init__(self, fn: func.FuncOp, weights: dict[str, np.ndarray] | None = None, source: str = "<model>"):
        self.source = source
        self.weights = weights or {}
        self.buffers: dict[str, Buffer] = {}
        self.kernels: list[Kernel] = []
        self.views: dict[SSAValue, View] = {}
        self.constants: dict[SSAValue, np.ndarray] = {}
        block = fn.body.block
        names = _names(fn, "einc.inputs", len(block.args), "in")
        ret = block.last_op
        assert isinstance(ret, func.ReturnOp)
        self.output_names = _names(fn, "einc.outputs", len(ret.operands), "out")
        self.input_names = names
        self.wants: dict[SSAValue, list[str]] = {}
        """Values whose kernel writes a model output directly: value -> output names."""
        self.bound: set[str] = set()
        """Outputs some kernel writes."""
        for value, name in zip(ret.operands, self.output_names):
            # An output that is a reshape of a value is that value's bytes: let its kernel write it.
            while isinstance(value.owner, ReshapeOp) and value.owner.source not in block.args:
                value = value.owner.source
            self.wants.setdefault(value, []).append(name)
        self.layouts = _transposed_layouts(block)
        """Values a kernel writes in the order a transpose reads them (value -> strides)."""
        for arg, name in zip(block.args, names):
            buf = self._buffer(f"in_{name}", "input", _dtype(arg), math.prod(_shape(arg)), name)
            self.views[arg] = View.contiguous(buf.name, _shape(arg), buf.dtype)
        for op in block.ops:
            if not isinstance(op, func.ReturnOp) and any(r.uses for r in op.results):
                self.emit(op)
        for value, name in zip(ret.operands, self.output_names):
            if name not in self.bound:
                out = self._buffer(f"out_{name}", "output", _dtype(value), math.prod(_shape(value)), name)
                self.bound.add(name)
                dst = View.contiguous(out.name, _shape(value), out.dtype)
                self._kernel(copy_kernel, value, self.views[value], dst, f"output {name} = copy of its value")

    # -- buffers ---------------------------------------------------------------------

    def _buffer(self, name: str, role: str, dtype: np.dtype, size: int, source: str, value: np.ndarray | None = None) -> Buffer:
        compute_type(dtype)  # refuses element types Triton has none for, naming them
        name = _identifier(name)
        base, n = name, 1
        while name in self.buffers:
            n += 1
            name = f"{base}_{n}"
        buf = Buffer(name, role, np.dtype(dtype), size, source, value)
        self.buffers[name] = buf
        return buf

    def allocate(self, value: SSAValue, result: SSAValue | None = None) -> View:
        """A fresh contiguous buffer for `value`: the model output it is, if it is one."""
        result = result or value
        shape, dtype = _shape(result), _dtype(result)
        wanted = self.wants.get(result)
        if wanted:
            name = wanted.pop(0)
            self.bound.add(name)
            buf = self._buffer(f"out_{name}", "output", dtype, math.prod(shape), name)
        else:
            buf = self._buffer(f"t_{result.name_hint or 'tmp'}", "temp", dtype, math.prod(shape), result.name_hint or "")
        view = View.contiguous(buf.name, shape, dtype)
        if not wanted and result in self.layouts:
            view = View(buf.name, shape, self.layouts[result], 0, dtype)
        self.views[result] = view
        return view

    def _name(self, value: SSAValue) -> str:
        return _identifier(f"k{len(self.kernels)}_{value.name_hint or 'kernel'}")

    def _kernel(self, template: Callable[..., Kernel], value: SSAValue, *args, **kwargs) -> None:
        if math.prod(_shape(value)) == 0:
            return
        self.kernels.append(template(self._name(value), *args, **kwargs))

    def _error(self, op: Operation, reason: str) -> EincError:
        value = op.results[0] if op.results else None
        return EincError(f"the triton target cannot emit this: {reason}", file=self.source,
                         node=(value.name_hint if value is not None else None) or "?", op=op.name)

    # -- ops ---------------------------------------------------------------------------

    def emit(self, op: Operation) -> None:
        match op:
            case WeightOp():
                sym = op.sym.string_value()
                buf = self._buffer(f"w_{sym}", "weight", _dtype(op.result), math.prod(_shape(op.result)), sym)
                self.views[op.result] = View.contiguous(buf.name, _shape(op.result), buf.dtype)
                if sym in self.weights:
                    self.constants[op.result] = self.weights[sym]
            case ConstantOp():
                value = np.array(op.value.get_values(), dtype=_dtype(op.result)).reshape(_shape(op.result))
                buf = self._buffer(f"c_{op.result.name_hint or 'const'}", "constant", value.dtype, value.size,
                                   op.result.name_hint or "", value)
                self.views[op.result] = View.contiguous(buf.name, value.shape, value.dtype)
                self.constants[op.result] = value
            case ReshapeOp():
                view = self.views[op.source].reshape(_shape(op.result))
                if view is None:
                    dense = self.allocate(op.source, op.result)
                    src = self.views[op.source]
                    self._kernel(copy_kernel, op.result, src, View(dense.buffer, src.shape, _strides(src.shape), 0, src.dtype),
                                 f"{op.result.name_hint or 'reshape'}: reshape of a strided view")
                else:
                    self.views[op.result] = view
            case EinsumOp():
                self._check_map(op)
                if is_view(op):
                    self.views[op.output] = self.views[op.inputs[0]].select(
                        op.input_exprs[0], op.output_vars, _shape(op.output)
                    )
                else:
                    self._einsum_kernel([op], [(op.output, op.output)], kind=None)
            case GroupOp():
                self._group(op)
            case GatherOp():
                dst = self.allocate(op.result)
                self._kernel(gather_kernel, op.result, op, self.views[op.data], self.views[op.indices], dst)
            case ConcatOp():
                dst = self.allocate(op.result)
                axis = op.axis.value.data
                start = 0
                for value in op.inputs:
                    size = _shape(value)[axis]
                    part = View(dst.buffer, _shape(value), dst.strides, dst.offset + start * dst.strides[axis], dst.dtype)
                    self._kernel(copy_kernel, value, self.views[value], part, f"concat slice {start}:{start + size} of axis {axis}")
                    start += size
            case PadOp():
                dst = self.allocate(op.result)
                self._kernel(pad_kernel, op.result, op, self.views[op.source], dst)
            case _:
                raise self._error(op, f"no Triton kernel for '{op.name}'")

    def _check_map(self, op: EinsumOp) -> None:
        for fn in _functions(op.map_expr):
            if not has_triton_form(fn):
                raise self._error(op, f"map function '{fn}' has no Triton form")

    def _einsum_kernel(self, ops: Sequence[EinsumOp], results: Sequence[tuple[SSAValue, SSAValue]], kind: str | None) -> None:
        """One kernel for `ops` (from the template for `kind`, or the generic one)."""
        inner = {op.output for op in ops}
        inputs = {v: self.views[v] for op in ops for v in op.inputs if v not in inner}
        wants = {v: list(names) for v, names in self.wants.items()}
        before = set(self.buffers)
        outputs = [(value, self.allocate(value, result)) for value, result in results]
        first = results[0][1]
        if kind is None:
            template = dot_kernel if len(ops) == 1 and is_dot(ops[0]) else rows_kernel
        else:
            template = GROUP_KERNELS[kind]
        kwargs = {"constants": {v: self.constants[v] for v in inputs if v in self.constants}} if template is attention_kernel else {}
        try:
            kernel = template(self._name(first), ops, inputs, outputs, **kwargs)
        except NoMatch:
            if template is dot_kernel and kind is None:
                kernel = rows_kernel(self._name(first), ops, inputs, outputs)
            else:  # undo the allocation: the caller emits these einsums another way
                self.wants = wants
                for name in set(self.buffers) - before:
                    self.bound.discard(self.buffers.pop(name).source)
                for _, result in results:
                    self.views.pop(result, None)
                raise
        if math.prod(_shape(first)) != 0:
            self.kernels.append(kernel)

    def _group(self, group: GroupOp) -> None:
        """A fused group: its template's one kernel, or each einsum on its own."""
        block = group.body.block
        for arg, value in zip(block.args, group.inputs):
            self.views[arg] = self.views[value]
            if value in self.constants:
                self.constants[arg] = self.constants[value]
        terminator = block.last_op
        assert isinstance(terminator, YieldOp)
        body = [op for op in block.ops if op is not terminator]
        # Views inside the body over the group's inputs are inputs of the kernel too.
        einsums: list[EinsumOp] = []
        fusible = True
        for op in body:
            if isinstance(op, EinsumOp) and not (is_view(op) and op.inputs[0] in self.views):
                self._check_map(op)
                einsums.append(op)
            elif isinstance(op, (ReshapeOp, EinsumOp)) and (op.operands[0] in self.views):
                self.emit(op)
            elif isinstance(op, (WeightOp, ConstantOp)):
                self.emit(op)
            else:
                fusible = False
                break
        yielded = list(terminator.values)
        inner = {op.output for op in einsums}
        results = [(v, r) for v, r in zip(yielded, group.outputs) if v in inner]
        kind = group.kind.data
        if fusible and kind in GROUP_KERNELS and einsums and results:
            try:
                self._einsum_kernel(einsums, results, kind)
                self._group_passthrough(group, yielded, inner)
                return
            except NoMatch:
                pass
        # Emitted einsum by einsum: the group's results are its body's values.
        for value, result in zip(yielded, group.outputs):
            if self.wants.get(result) and value not in self.views:
                self.wants.setdefault(value, []).extend(self.wants.pop(result))
        for op in body:
            if not (op.results and op.results[0] in self.views):  # views made above stay
                self.emit(op)
        for value, result in zip(yielded, group.outputs):
            self.views[result] = self.views[value]

    def _group_passthrough(self, group: GroupOp, yielded: Sequence[SSAValue], inner: set[SSAValue]) -> None:
        for value, result in zip(yielded, group.outputs):
            if value not in inner:
                self.views[result] = self.views[value]

    # -- layout --------------------------------------------------------------------------

    def plan_arena(self) -> int:
        """Offsets of temporaries in one arena: best fit among those live at the same time.

        A temporary is live from the first kernel that touches it to the last; two
        live at the same time never share a byte. (The `memplan` pass plans the
        CPU's arena on the cascade, where every einsum owns a buffer; this target
        makes views of many of them, so it plans over its own kernels.)
        """
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for n, kernel in enumerate(self.kernels):
            for name in kernel.args:
                first.setdefault(name, n)
                last[name] = n
        temps = sorted((b for b in self.buffers.values() if b.role == "temp"), key=lambda b: (-b.nbytes, b.name))
        placed: list[Buffer] = []
        arena = 0
        for buf in temps:
            live = (first.get(buf.name, 0), last.get(buf.name, 0))
            taken = sorted(
                (p.offset, p.offset + _align(p.nbytes))
                for p in placed
                if not (last.get(p.name, 0) < live[0] or live[1] < first.get(p.name, 0))
            )
            offset = 0
            for lo, hi in taken:
                if offset + buf.nbytes <= lo:
                    break
                offset = max(offset, hi)
            buf.offset = offset
            placed.append(buf)
            arena = max(arena, _align(offset + buf.nbytes))
        return arena


def _transposed_layouts(block: Block) -> dict[SSAValue, tuple[int, ...]]:
    """Strides for values read only by a transpose that only a reshape reads (attention's
    heads going back into the hidden dim): written in the transposed order, the
    transpose is contiguous, the reshape a view, and no copy kernel runs."""
    layouts: dict[SSAValue, tuple[int, ...]] = {}
    for op in block.ops:
        if not isinstance(op, ReshapeOp) or not isinstance(t := op.source.owner, EinsumOp) or not is_view(t):
            continue
        value = t.inputs[0]
        exprs = t.input_exprs[0]
        order = [e.plain_var for e in exprs]
        if (
            len(list(op.source.uses)) != 1 or len(list(value.uses)) != 1 or sorted(map(str, order)) != sorted(t.output_vars)
            or isinstance(value, BlockArgument) or isinstance(value.owner, (WeightOp, ConstantOp, ReshapeOp))
        ):
            continue
        dense = _strides(_shape(t.output))
        layouts[value] = tuple(dense[t.output_vars.index(v)] for v in order)  # type: ignore[arg-type]
    return layouts


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _strides(shape: Sequence[int]) -> tuple[int, ...]:
    return View.contiguous("", shape, np.dtype(np.float32)).strides


def _names(fn: func.FuncOp, attr: str, count: int, prefix: str) -> list[str]:
    names = fn.attributes.get(attr)
    if isinstance(names, ArrayAttr) and len(names.data) == count:
        return [n.data for n in names.data]  # type: ignore[attr-defined]
    if attr == "einc.inputs":
        return [a.name_hint or f"{prefix}{n}" for n, a in enumerate(fn.body.block.args)]
    return [f"{prefix}{n}" for n in range(count)]


def _functions(expr: mapexpr.Expr) -> set[str]:
    if isinstance(expr, mapexpr.Call):
        return {expr.fn}.union(*(_functions(a) for a in expr.args))
    return set()


# -- the generated module --------------------------------------------------------------

HEADER = '''"""Triton kernels of {source}, generated by einc {version}.

One kernel per fused group of einsums (or per einsum, or per data move), in the
order `launch` runs them. Shapes are static: extents and strides are literals.
Buffers are named by role: in_ (inputs), out_ (outputs), w_ and c_ (weights and
constants), t_ (temporaries in the arena).
"""

import os

import triton
import triton.language as tl

try:
    from triton.language.extra import libdevice
except ImportError:  # asin, acos and atan need it (and a GPU)
    libdevice = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def tuned(configs):
    """The autotuner's candidates: all of them on a GPU, the first in the CPU interpreter."""
    return configs[:1] if INTERPRET else configs


@triton.jit
def _mul_combine(a, b):
    return a * b
'''


def _normalized(kernel: Kernel) -> str:
    """A kernel's code with its name, parameter names and comments abstracted away."""
    lines = [line for line in kernel.source.splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace(f"def {kernel.name}(", "def _(", 1)
    for n, arg in enumerate(kernel.args):
        text = re.sub(rf"\b{arg}\b", f"_a{n}", text)
    return text


def unique_kernels(program: Program) -> dict[str, str]:
    """Each kernel's name -> the name of the first kernel with the same code.

    A model repeats its layers; each distinct kernel is written, compiled and
    autotuned once, and launched on each layer's buffers.
    """
    first: dict[str, str] = {}
    names: dict[str, str] = {}
    for kernel in program.kernels:
        names[kernel.name] = first.setdefault(_normalized(kernel), kernel.name)
    return names


def render(program: Program) -> str:
    """The generated module: header, kernels, and `launch`."""
    parts = [HEADER.format(source=program.source, version=einc.__version__)]
    names = unique_kernels(program)
    for kernel in program.kernels:
        if names[kernel.name] == kernel.name:
            parts.append("\n" + kernel.source)
    lines = ["", "def launch(buffers):", '    """Run the kernels in order; `buffers` maps each buffer name to its tensor.',
             "", "    Returns what each launch returns (on a GPU its compiled kernel, which the runtime",
             '    binds to its arguments once and then launches directly)."""']
    used = list(dict.fromkeys(name for k in program.kernels for name in k.args))
    for name in used:
        lines.append(f'    {name} = buffers["{name}"]')
    lines.append("    return [")
    for kernel in program.kernels:
        options = f", num_warps={kernel.warps}" if kernel.warps else ""
        lines.append(f"        {names[kernel.name]}[{kernel.grid}]({', '.join(kernel.args)}{options}),")
    lines.append("    ]")
    parts.append("\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def main_function(module: ModuleOp) -> func.FuncOp:
    fns = [op for op in module.ops if isinstance(op, func.FuncOp)]
    return next((f for f in fns if f.sym_name.data == "main"), fns[0])


def emit_source(module: ModuleOp, weights: dict[str, np.ndarray] | None = None, source: str = "<mlir>") -> str:
    """The Triton module of a function of ein ops (the `einc opt -t triton` target)."""
    return render(Program(main_function(module), weights, source))


def print_source(module: ModuleOp, stream) -> None:
    """`einc opt -t triton`: the generated module instead of IR."""
    try:
        stream.write(emit_source(module))
    except EincError as err:
        raise SystemExit(f"einc: error: {err}") from None


def group_whole(fn: func.FuncOp, kind: str) -> GroupOp:
    """Make the whole cascade of `fn` one `ein.group` of `kind`.

    For models of one op (a softmax, a LayerNorm, an attention block) in tests and
    benchmarks: the group a fusion pass would form, whatever its cost rules say.
    """
    block = fn.body.block
    ret = block.last_op
    assert isinstance(ret, func.ReturnOp)
    body = [op for op in block.ops if op is not ret and not isinstance(op, (WeightOp, ConstantOp))]
    produced = {r for op in body for r in op.results}
    inputs = list(dict.fromkeys(v for op in body for v in op.operands if v not in produced))
    inner = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, inner.args))
    for op in body:
        clone = op.clone(value_mapper=mapping)
        inner.add_op(clone)
        for old, new in zip(op.results, clone.results):
            new.name_hint = old.name_hint
            mapping[old] = new
    outs = list(ret.operands)
    inner.add_op(YieldOp([mapping[v] for v in outs]))
    group = GroupOp(inputs, [v.type for v in outs], kind, Region(inner))
    block.insert_op_before(group, ret)
    for old, new in zip(outs, group.outputs):
        new.name_hint = old.name_hint
    ret.operands = list(group.outputs)
    for op in reversed(body):
        block.erase_op(op)
    return group


def compile_for_triton(imported, group: str | None = None) -> "TritonModel":  # noqa: F821
    """Compile an imported ONNX model to Triton kernels: source, weights and arena layout.

    The target's own grouping (`group_for_triton`) decides which einsums share a
    kernel; `group` (tests and benchmarks of one-op models) makes the whole
    cascade one group of that kind instead (`group_whole`).
    """
    from einc.backends.triton.fusion import group_for_triton
    from einc.passes import Pipeline
    from einc.runtime.artifact import FORMAT
    from einc.runtime.triton import TritonModel

    module = imported.module
    module.attributes["einc.source"] = StringAttr(imported.source)
    Pipeline(pipeline()).apply(module)
    if group is None:
        group_for_triton(main_function(module))
    else:
        group_whole(main_function(module), group)
    program = Program(main_function(module), imported.weights, imported.source)
    source = render(program)
    names = unique_kernels(program)
    arena = program.plan_arena()
    blob = bytearray()
    used = {name for k in program.kernels for name in k.args}
    for buf in program.buffers.values():
        if buf.role in ("weight", "constant") and buf.name in used:
            data = buf.value if buf.role == "constant" else imported.weights[buf.source]
            blob.extend(b"\0" * (_align(len(blob)) - len(blob)))
            buf.offset = len(blob)
            blob.extend(np.ascontiguousarray(data, dtype=buf.dtype).tobytes())
    manifest = {
        "format": FORMAT,
        "einc_version": einc.__version__,
        "target": "triton",
        "inputs": [{"name": n, "shape": list(s), "dtype": np.dtype(d).name} for n, s, d in imported.inputs],
        "outputs": [{"name": n, "shape": list(s), "dtype": np.dtype(d).name} for n, s, d in imported.outputs],
        "buffers": [
            {"name": b.name, "role": b.role, "source": b.source, "dtype": b.dtype.name, "size": b.size, "offset": b.offset}
            for b in program.buffers.values()
            if b.name in used or b.role in ("input", "output")
        ],
        "arena_bytes": arena,
        "kernels": list(dict.fromkeys(unique_kernels(program).values())),
        "launches": [[names[k.name], k.grid, k.args, k.warps] for k in program.kernels],
    }
    return TritonModel(manifest, source, bytes(blob))

