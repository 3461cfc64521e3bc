"""ONNX import: a model becomes one `func.func @main` of `onnx` ops with static types.

The steps, each with its own diagnostics, in the order a user meets them: load the
file; refuse what no later stage could compile (a newer opset, nodes of other
domains), naming every such node at once; fix the input shapes the caller gives;
run onnx's shape inference (strict, with data propagation) so every value has a
static type (where it stops, shape computations are folded and If branches are
inferred as models of their own); then emit one op per node. Initializers and
Constant values larger than `INLINE_LIMIT` elements stay out of the IR, in the
weight table, referenced by `ein.weight @symbol`, so a 90 MB model prints as a few
kilobytes of IR.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, NodeProto, TensorProto, TypeProto, numpy_helper
from onnx.checker import ValidationError
from onnx.shape_inference import InferenceError
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    FloatAttr,
    FunctionType,
    IntegerAttr,
    ModuleOp,
    NoneType,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from einc.diagnostics import EincError, located
from einc.ir.dtypes import compute_dtype, numpy_to_type, onnx_to_type, type_to_numpy
from einc.ir.ein import ConstantOp, WeightOp
from einc.ir.onnx import OP_CLASSES, NoneOp, YieldOp, onnx_op_class

INLINE_LIMIT = 64
"""Initializers and Constant values with more elements than this become weights."""

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The names of ONNX's default operator domain, the only one einc compiles."""

Signature = list[tuple[str, tuple[int, ...], np.dtype]]
"""Name, shape and dtype of each input or output of a model."""


@dataclass
class ImportedModel:
    """An imported model: its IR, the weights that IR refers to, its signature."""

    module: ModuleOp
    weights: dict[str, np.ndarray] = field(repr=False)
    """`ein.weight` symbol -> the array it stands for."""
    inputs: Signature
    outputs: Signature
    source: str
    """The model's file, or `<model>` for a ModelProto, for diagnostics."""

    def __post_init__(self) -> None:
        # passes that compute on weights (fold-weights) find the table through the module
        from einc.passes.fold_weights import attach_weights

        attach_weights(self.module, self.weights)


def import_model(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> ImportedModel:
    """Import an ONNX model (file or ModelProto, never modified) with static shapes.

    `input_shapes` gives concrete shapes to inputs with symbolic dims, by input name.
    Every problem with the model is raised as an `EincError`.
    """
    proto, source = _load(model)
    try:
        _check_opsets(proto)
        if proto.functions:
            proto = onnx.inliner.inline_local_functions(proto)
        _check_nodes(proto.graph)
        _check_references(proto.graph, set())
        initializers = _initializer_names(proto.graph)
        inputs = [i for i in proto.graph.input if i.name not in initializers]
        inferred = _infer_shapes(proto, inputs, input_shapes or {})
        return _Importer(source).run(proto, inferred, [i.name for i in inputs])
    except EincError as err:
        raise located(err, source) from None


# -- loading and refusing ------------------------------------------------------------


def _load(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        proto, source = model, "<model>"
    else:
        source = os.fspath(model)
        if not os.path.isfile(source):
            raise EincError("no such file", file=source)
        try:
            proto = onnx.load(source)
        except DecodeError:
            raise EincError(
                "not an ONNX model: the file is not a ModelProto or is truncated", file=source
            ) from None
        except (OSError, ValueError, ValidationError) as err:  # external data missing
            raise EincError(f"cannot load the model: {err}", file=source) from None
    if not proto.HasField("graph"):
        raise EincError("not an ONNX model: it has no graph", file=source)
    return proto, source


def _check_opsets(model: onnx.ModelProto) -> None:
    known = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS and opset.version > known:
            raise EincError(
                f"the model uses ONNX opset {opset.version} but the installed onnx "
                f"{onnx.__version__} knows opsets up to {known}: upgrade onnx or "
                "export the model for an older opset"
            )


def _subgraphs(node: NodeProto) -> Iterator[GraphProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def _all_nodes(graph: GraphProto) -> Iterator[NodeProto]:
    """The nodes of a graph and of its subgraphs, depth first."""
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def _node_label(node: NodeProto) -> str:
    return node.name or f"<unnamed, output {node.output[0] if node.output else ''}>"


def _op_label(node: NodeProto) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


def _check_nodes(graph: GraphProto) -> None:
    bad = [
        n
        for n in _all_nodes(graph)
        if n.domain not in DEFAULT_DOMAINS or n.op_type not in OP_CLASSES
    ]
    if not bad:
        return
    listed = ", ".join(f"'{_node_label(n)}' ({_op_label(n)})" for n in bad)
    domains = sorted({n.domain for n in bad if n.domain not in DEFAULT_DOMAINS})
    why = f"einc compiles the ops of the default ONNX domain known to onnx {onnx.__version__}"
    if domains:
        why += f"; this model also uses {', '.join(domains)}"
    raise EincError(f"{len(bad)} unsupported node{'s' * (len(bad) > 1)}: {listed}\n{why}")


def _check_references(graph: GraphProto, outer: set[str]) -> None:
    """Every node input must be defined before the node (ONNX graphs are sorted)."""
    defined = outer | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                raise EincError(
                    f"input '{name}' is not defined before this node: no earlier node, "
                    "initializer or graph input makes it",
                    node=_node_label(node),
                    op=_op_label(node),
                )
        for sub in _subgraphs(node):
            _check_references(sub, defined)
        defined.update(node.output)
    for value in graph.output:
        if value.name not in defined:
            raise EincError(f"graph output '{value.name}' is not defined in its graph")


def _initializer_names(graph: GraphProto) -> set[str]:
    if graph.sparse_initializer:
        name = graph.sparse_initializer[0].values.name
        raise EincError(f"sparse initializer '{name}' is not supported")
    return {t.name for t in graph.initializer}


# -- shapes ------------------------------------------------------------------------------


_UNKNOWN_DIM = re.compile(r"^unk__\d+$")
"""The names shape inference makes up for dims it cannot know."""


def _dims(t: TypeProto) -> list[int | str] | None:
    """A tensor type's dims: ints where known, names or '?' where not; None if unranked."""
    if not t.tensor_type.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else _UNKNOWN_DIM.sub("?", d.dim_param or "?")
        for d in t.tensor_type.shape.dim
    ]


def _fix_input_shapes(
    inputs: Sequence[onnx.ValueInfoProto], shapes: Mapping[str, Sequence[int]]
) -> dict[str, int]:
    """Write the caller's shapes into the (copied) graph inputs; refuse any mismatch.

    Returns the values this gives to named (symbolic) dims, for `_bind_symbols`.
    """
    by_name = {i.name: i for i in inputs}
    for name in shapes:
        if name not in by_name:
            raise EincError(
                f"an input shape is given for '{name}', which is not an input of the model "
                f"(its inputs: {', '.join(by_name) or 'none'})"
            )
    unknown = []
    symbols: dict[str, int] = {}
    for value in inputs:
        if value.type.WhichOneof("value") != "tensor_type":
            raise EincError(f"input '{value.name}' is not a tensor: only tensors are supported")
        dims = _dims(value.type)
        if value.name in shapes:
            given = [int(d) for d in shapes[value.name]]
            if any(d < 0 for d in given):
                raise EincError(f"the shape {_show(given)} of '{value.name}' has a negative dim")
            if dims is not None and len(dims) != len(given):
                raise EincError(
                    f"input '{value.name}' has rank {len(dims)} (dims {_show(dims)}) "
                    f"but the given shape {_show(given)} has rank {len(given)}"
                )
            for n, (have, want) in enumerate(zip(dims or given, given)):
                if isinstance(have, str) and have != "?":
                    symbols[have] = want
                if isinstance(have, int) and have != want:
                    raise EincError(
                        f"input '{value.name}' has dims {_show(dims)}: dim {n} is fixed at "
                        f"{have} but the given shape {_show(given)} sets it to {want}"
                    )
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for d in given:
                shape.dim.add().dim_value = d
        elif dims is None or not all(isinstance(d, int) for d in dims):
            unknown.append((value.name, dims))
    if unknown:
        raise EincError("\n".join(_ask_for_shape(name, dims) for name, dims in unknown))
    return symbols


def _bind_symbols(graph: GraphProto, symbols: Mapping[str, int]) -> None:
    """Give every dim named like a bound input dim its value, subgraphs included.

    ONNX dim names are shared: `batch` in an If branch's declared output is the
    `batch` of the input the caller gave a shape to; shape inference does not
    carry that into subgraphs by itself.
    """
    if not symbols:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in symbols:
                    dim.dim_value = symbols[dim.dim_param]
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.HasField("g") or attr.graphs else []:
                _bind_symbols(sub, symbols)


def _ask_for_shape(name: str, dims: list[int | str] | None) -> str:
    if dims is None:
        return f"input '{name}' has unknown rank: give its shape with --input-shape {name}=DxD"
    example = "x".join(str(d) if isinstance(d, int) else "D" for d in dims)
    return (
        f"input '{name}' has symbolic or unknown dims {_show(dims)}: "
        f"give its shape with --input-shape {name}={example}"
    )


def _show(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _inference_copy(
    model: onnx.ModelProto, inputs: Sequence[onnx.ValueInfoProto]
) -> onnx.ModelProto:
    """A copy for shape inference in which large initializers are typed graph inputs.

    Inference only reads their types (shape-carrying tensors are small), so it never
    copies the weights twice nor trips protobuf's 2 GB message limit.
    """
    g = model.graph
    large = [t for t in g.initializer if _numel(t) > INLINE_LIMIT]
    declared = {i.name for i in g.input}
    initializers = _initializer_names(g)
    graph = GraphProto(
        name=g.name,
        node=g.node,
        input=[
            *inputs,
            *(i for i in g.input if i.name in initializers),
            *(
                onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                for t in large
                if t.name not in declared
            ),
        ],
        output=g.output,
        value_info=g.value_info,
        initializer=[t for t in g.initializer if _numel(t) <= INLINE_LIMIT],
    )
    _spell_out_defaults(graph)
    return onnx.ModelProto(
        ir_version=model.ir_version, opset_import=model.opset_import, graph=graph
    )


INFERENCE_DEFAULTS: dict[str, dict[str, int]] = {"STFT": {"onesided": 1}}
"""Schema defaults that onnx 1.23's shape inference misreads when the attribute is
missing (it takes STFT's onesided as 0), so the copy it infers spells them out."""


def _spell_out_defaults(graph: GraphProto) -> None:
    """Write INFERENCE_DEFAULTS into the nodes (and subgraphs) of an inference copy."""
    for node in graph.node:
        present = {a.name for a in node.attribute}
        if node.domain in DEFAULT_DOMAINS:
            for name, value in INFERENCE_DEFAULTS.get(node.op_type, {}).items():
                if name not in present:
                    node.attribute.append(onnx.helper.make_attribute(name, value))
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                _spell_out_defaults(sub)


def _numel(t: TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64))


def _infer_shapes(
    model: onnx.ModelProto,
    inputs: Sequence[onnx.ValueInfoProto],
    shapes: Mapping[str, Sequence[int]],
) -> onnx.ModelProto:
    copy = _inference_copy(model, inputs)
    _bind_symbols(copy.graph, _fix_input_shapes(copy.graph.input[: len(inputs)], shapes))
    _forget_negative_dims(copy.graph)
    try:
        return _infer_and_fold(copy)
    except InferenceError as err:
        raise _inference_error(str(err)) from None


def _infer_and_fold(copy: onnx.ModelProto, strict: bool = True) -> onnx.ModelProto:
    """onnx shape inference, helped where it stops: fold known values, infer If branches.

    While folding, inference runs leniently: an If whose condition becomes known
    may have an untaken branch that is invalid for these shapes (exporters trace
    both sides of a shape test). The last round is strict, on the folded model,
    unless `strict` is off. Values inside subgraphs count: a model whose outputs
    are typed can still hold a branch that onnx cannot type (it infers subgraphs
    without data propagation).
    """
    def infer(strict: bool) -> onnx.ModelProto:
        return onnx.shape_inference.infer_shapes(copy, strict_mode=strict, data_prop=True)

    try:
        inferred = infer(strict=True)
        if not _unknown_shapes(inferred.graph):
            return inferred
    except InferenceError:
        inferred = infer(strict=False)
    tried: dict[tuple, _Branch] = {}
    for _ in range(_FOLD_ROUNDS):
        changed = _fold_known_values(copy, inferred)
        changed |= _infer_branches(copy, inferred, tried)
        if not changed:
            break
        inferred = infer(strict=False)
        if not _unknown_shapes(inferred.graph):
            break
    return infer(strict=strict)


def _forget_negative_dims(graph: GraphProto) -> None:
    """Exporters write -1 for "any size"; shape inference takes it as a size that conflicts."""
    for value in [*graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    dim.ClearField("dim_value")


def _inline_if(node: NodeProto, condition: bool) -> list[NodeProto]:
    """The nodes of the branch an If takes, its results renamed to the If's outputs."""
    branch = next(a.g for a in node.attribute if a.name == ("then_branch" if condition else "else_branch"))
    constants = [
        onnx.helper.make_node("Constant", [], [t.name], value=t) for t in branch.initializer
    ]
    renames = [
        onnx.helper.make_node("Identity", [inner.name], [outer])
        for inner, outer in zip(branch.output, node.output)
        if outer
    ]
    return [*constants, *branch.node, *renames]


def _outer_names(graph: GraphProto) -> list[str]:
    """Names a subgraph reads from the graphs around it, in first-use order."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    outer: list[str] = []
    for node in graph.node:
        reads = [*node.input, *(n for sub in _subgraphs(node) for n in _outer_names(sub))]
        outer += [n for n in reads if n and n not in defined and n not in outer]
        defined.update(node.output)
    outer += [o.name for o in graph.output if o.name not in defined and o.name not in outer]
    return outer


@dataclass
class _Branch:
    """One If branch inferred as a model of its own, for the outer types it was given."""

    nodes: list[NodeProto]
    """Its nodes after folding (nested Ifs with known conditions inlined)."""
    inferred: GraphProto | None
    """The graph as lenient inference types it (None if even that failed)."""
    error: str = ""
    """The shape error strict inference finds in it, if any: then the branch cannot
    run on these shapes (onnxruntime fails in it too)."""

    def outputs(self) -> list[TypeProto] | None:
        """The types of its results, where every one is ranked."""
        if self.inferred is None:
            return None
        types = [o.type for o in self.inferred.output]
        return types if all(_dims(t) is not None for t in types) else None

    def runs(self) -> bool:
        """Whether it passes the strict check with static result shapes."""
        types = self.outputs()
        return not self.error and types is not None and all(_static(t) for t in types)


def _infer_branch(
    copy: onnx.ModelProto, branch: GraphProto, outer: list[str],
    types: dict[str, TypeProto], initializers: dict[str, TensorProto],
) -> _Branch:
    """Infer a branch as a model whose inputs are the outer values it reads, then
    check the folded branch strictly (whether it can run matters when its If's
    condition is known only at run time)."""
    graph = GraphProto(
        name=branch.name,
        node=branch.node,
        input=[onnx.ValueInfoProto(name=n, type=types[n]) for n in outer if n not in initializers],
        initializer=[*branch.initializer, *(initializers[n] for n in outer if n in initializers)],
        output=[
            onnx.helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None)
            for o in branch.output
        ],
    )
    standalone = onnx.ModelProto(ir_version=copy.ir_version, opset_import=copy.opset_import, graph=graph)
    inferred: GraphProto | None = None
    try:
        inferred = _infer_and_fold(standalone, strict=False).graph
        onnx.shape_inference.infer_shapes(standalone, strict_mode=True, data_prop=True)
    except InferenceError as err:
        first = _inference_error(str(err)).reason.splitlines()[0]  # the rest follows from it
        return _Branch(list(standalone.graph.node), inferred, first)
    return _Branch(list(standalone.graph.node), inferred)


def _node_unknown(node: NodeProto, types: Mapping[str, TypeProto]) -> bool:
    """Whether a node's results, or values inside its subgraphs, lack static shapes."""
    return any(n and not _static(types.get(n)) for n in node.output) or any(
        _unknown_shapes(sub) for sub in _subgraphs(node)
    )


def _infer_branches(
    copy: onnx.ModelProto, inferred: onnx.ModelProto, tried: dict[tuple, _Branch]
) -> bool:
    """Infer each If branch as a model of its own, with its outer values as typed inputs.

    onnx infers subgraphs without folding or data propagation, so a branch whose
    shapes are computed stays unknown, and so does the If. Once the outer values
    a branch reads have static types, the branch is a graph like any other: it
    gets the same treatment as the main graph, and its results' types flow back.
    `tried` keeps each branch's outcome per outer types, so nested Ifs are not
    inferred again in every folding round. Returns whether a branch changed.
    """
    types = _types(inferred.graph)
    initializers = {t.name: t for t in copy.graph.initializer}
    changed = False
    for node, typed in zip(copy.graph.node, inferred.graph.node):
        if node.op_type != "If" or not _node_unknown(typed, types):
            continue
        outcomes: dict[str, _Branch] = {}
        for attr in node.attribute:
            if not attr.HasField("g"):
                continue
            if any(o.type.WhichOneof("value") not in (None, "tensor_type") for o in attr.g.output):
                break  # sequences, optionals: left to onnx (and refused later)
            outer = _outer_names(attr.g)
            if not all(n in initializers or (n in types and _dims(types[n]) is not None) for n in outer):
                break
            key = (_node_label(node), attr.name, *(types[n].SerializeToString() for n in outer if n not in initializers))
            if key not in tried:
                tried[key] = _infer_branch(copy, attr.g, outer, types, initializers)
            outcomes[attr.name] = tried[key]
        else:
            for attr in node.attribute:
                if attr.name in outcomes:
                    changed |= _settle_branch(node, attr.name, attr.g, outcomes)
    return changed


def _settle_branch(node: NodeProto, name: str, branch: GraphProto, outcomes: dict[str, _Branch]) -> bool:
    """Write a branch's inferred types (and folded nodes) back into the If.

    A branch that cannot run on these shapes, beside one that can, becomes NaN
    of the other's result types: the If's condition is known only at run time,
    where onnxruntime would fail in that branch; einc has no run-time error, so
    the results say "no answer" (only float results can say it, so only
    branches with float results are replaced; others keep the shape error).
    """
    outcome = outcomes[name]
    other = next((o for n, o in outcomes.items() if n != name), None)
    if outcome.error and other is not None and other.runs() and all(_is_float(t) for t in other.outputs() or []):
        types = other.outputs()
        assert types is not None
        nodes, value_info = _no_answer(branch, types, f"{_node_label(node)}/{name}: {outcome.error}"), []
        if nodes != list(branch.node):
            warnings.warn(
                f"node '{_node_label(node)}' (If): its {name} cannot run on these input shapes "
                f"({outcome.error}); where the condition takes it at run time, the compiled model "
                "gives NaN (onnxruntime fails there)",
                stacklevel=2,
            )
    elif (types := outcome.outputs()) is not None:
        assert outcome.inferred is not None
        nodes, value_info = outcome.nodes, list(outcome.inferred.value_info)
    else:
        return False
    if (nodes, value_info) == (list(branch.node), list(branch.value_info)) and all(
        o.type == t for o, t in zip(branch.output, types)
    ):
        return False
    del branch.node[:]
    branch.node.extend(nodes)
    del branch.value_info[:]
    branch.value_info.extend(value_info)
    for out, t in zip(branch.output, types):
        out.type.CopyFrom(t)
    return True


def _no_answer(branch: GraphProto, types: list[TypeProto], why: str) -> list[NodeProto]:
    """Nodes that give each result of a branch as NaN of the given type."""
    nodes = []
    for out, t in zip(branch.output, types):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type)
        shape = np.array(_dims(t), dtype=np.int64)
        nodes += [
            onnx.helper.make_node("Constant", [], [f"{out.name}_shape"], value=numpy_helper.from_array(shape)),
            onnx.helper.make_node(
                "ConstantOfShape", [f"{out.name}_shape"], [out.name], name=f"{out.name}_no_answer",
                doc_string=why, value=numpy_helper.from_array(np.full([1], np.nan, dtype)),
            ),
        ]
    return nodes


_FOLD_ROUNDS = 16
_FOLD_LIMIT = 4096
"""Shape computations are folded while their values have at most this many elements."""


def _static(t: TypeProto | None) -> bool:
    dims = _dims(t) if t is not None else None
    return dims is not None and all(isinstance(d, int) for d in dims)


def _is_float(t: TypeProto) -> bool:
    return onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type).kind == "f"


def _unknown_shapes(graph: GraphProto) -> bool:
    """Whether a value made in the graph or in one of its subgraphs lacks a static shape."""
    types = _types(graph)
    return any(_node_unknown(node, types) for node in graph.node)


def _fold_known_values(copy: onnx.ModelProto, inferred: onnx.ModelProto) -> bool:
    """Replace, in the inference copy, nodes whose outputs are computable now by Constants.

    onnx's data propagation stops at Expand, Range, ConstantOfShape and friends
    when their shape operands are computed; with concrete input shapes every such
    computation is a constant. A node is folded when all its inputs are known
    small values, or when it is Shape/Size of a fully shaped value. Each folded
    value is computed by onnx's reference evaluator, so shape inference sees it
    on the next round. Returns whether anything was folded.
    """
    from onnx.reference import ReferenceEvaluator

    graph = copy.graph
    known: dict[str, np.ndarray] = {
        t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if _numel(t) <= _FOLD_LIMIT
    }
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            known[node.output[0]] = _constant_array(node)
    types = _types(inferred.graph)
    nodes: list[NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "If" and node.domain in ("", "ai.onnx") and node.input[0] in known:
            nodes[-1:] = _inline_if(node, bool(np.asarray(known[node.input[0]]).reshape(-1)[0]))
            continue
        if node.op_type == "Constant" or node.domain not in ("", "ai.onnx") or any(True for _ in _subgraphs(node)):
            continue
        inputs = [n for n in node.input if n]
        if node.op_type in ("Shape", "Size") and inputs[0] in types:
            dims = _dims(types[inputs[0]])
            if dims is None or not all(isinstance(d, int) for d in dims):
                continue
            feeds = {inputs[0]: np.zeros(dims, dtype=np.float32)}
        elif inputs and all(n in known for n in inputs):
            feeds = {n: known[n] for n in inputs}
        else:
            continue
        try:
            one = onnx.helper.make_model(
                onnx.helper.make_graph(
                    [node],
                    "fold",
                    [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
                    [onnx.helper.make_tensor_value_info(o, 0, None) for o in node.output if o],
                ),
                opset_imports=copy.opset_import,
                ir_version=copy.ir_version,
            )
            values = ReferenceEvaluator(one).run(None, feeds)
        except Exception:  # noqa: BLE001 - a node the reference cannot run is left to einc
            continue
        arrays = [np.asarray(v) for v in values]
        if any(a.size > _FOLD_LIMIT or a.dtype == object for a in arrays):
            continue
        outputs = [o for o in node.output if o]
        nodes[-1:] = [
            onnx.helper.make_node("Constant", [], [o], value=onnx.numpy_helper.from_array(a, o))
            for o, a in zip(outputs, arrays)
        ]
        known.update(zip(outputs, arrays))
    folded = len(nodes) != len(graph.node) or any(a is not b for a, b in zip(nodes, graph.node))
    del graph.node[:]
    graph.node.extend(nodes)
    return folded


_INFERENCE_ERROR = re.compile(
    r"\(op_type:(?P<op>[^,]*), node name: (?P<node>[^)]*)\): (?P<reason>.*)"
)
_ERROR_TAG = re.compile(r"\[\w+\]\s*")


def _inference_error(text: str) -> EincError:
    """onnx's `[ShapeInferenceError] (op_type:Add, node name: n): [...] reason`, as ours."""
    found = list(_INFERENCE_ERROR.finditer(text))
    if not found:
        return EincError("shape inference failed: " + _ERROR_TAG.sub("", text).strip())
    first, *rest = found
    lines = [_ERROR_TAG.sub("", first["reason"]).strip()] + [
        f"node '{m['node']}' ({m['op']}): {_ERROR_TAG.sub('', m['reason']).strip()}" for m in rest
    ]
    return EincError(
        "shape inference failed: " + "\n".join(lines), node=first["node"] or None, op=first["op"]
    )


# -- attributes and data -----------------------------------------------------------------


def _dense(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    flat = array.ravel().astype(compute_dtype(array.dtype))  # bit formats as float32 or int32
    values = flat.tolist() if flat.dtype.kind in "biu" else flat.astype(np.float64).tolist()
    return DenseIntOrFPElementsAttr.from_list(
        TensorType(numpy_to_type(array.dtype), array.shape), values
    )


def _to_array(tensor: TensorProto) -> np.ndarray:
    dtype = type_to_numpy(onnx_to_type(tensor.data_type))  # refuses strings, complex
    try:
        array = numpy_helper.to_array(tensor)
    except (OSError, ValueError, ValidationError) as err:
        raise EincError(f"cannot read tensor '{tensor.name}': {err}") from None
    # ascontiguousarray makes 0-d arrays 1-d: keep the shape a scalar initializer has
    return np.ascontiguousarray(array, dtype=dtype).reshape(array.shape)


def _int_attr(a: AttributeProto) -> Attribute:
    return IntegerAttr(a.i, i64)


def _float_attr(a: AttributeProto) -> Attribute:
    return FloatAttr(a.f, f32)


def _string_attr(a: AttributeProto) -> Attribute:
    return StringAttr(a.s.decode(errors="replace"))


def _ints_attr(a: AttributeProto) -> Attribute:
    return DenseArrayBase.from_list(i64, list(a.ints))


def _floats_attr(a: AttributeProto) -> Attribute:
    return DenseArrayBase.from_list(f32, list(a.floats))


def _strings_attr(a: AttributeProto) -> Attribute:
    return ArrayAttr([StringAttr(s.decode(errors="replace")) for s in a.strings])


def _tensor_attr(a: AttributeProto) -> Attribute:
    return _dense(_to_array(a.t))


ATTRIBUTES: dict[int, Callable[[AttributeProto], Attribute]] = {
    AttributeProto.INT: _int_attr,
    AttributeProto.FLOAT: _float_attr,
    AttributeProto.STRING: _string_attr,
    AttributeProto.INTS: _ints_attr,
    AttributeProto.FLOATS: _floats_attr,
    AttributeProto.STRINGS: _strings_attr,
    AttributeProto.TENSOR: _tensor_attr,
}
"""ONNX attribute type -> its op attribute (GRAPH attributes become regions)."""

CONSTANT_DTYPES: dict[str, type] = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}
"""A Constant's scalar and list attributes -> the dtype of the tensor they make."""


def _constant_array(node: NodeProto) -> np.ndarray:
    if len(node.attribute) != 1:
        raise EincError(f"a Constant needs exactly one attribute, not {len(node.attribute)}")
    attr = node.attribute[0]
    if attr.name == "value":
        return _to_array(attr.t)
    if attr.name in CONSTANT_DTYPES:
        return np.array(onnx.helper.get_attribute_value(attr), dtype=CONSTANT_DTYPES[attr.name])
    raise EincError(f"a Constant given by '{attr.name}' is not supported")


def _ssa_name(onnx_name: str) -> str:
    """A readable SSA name for an ONNX value: `/conv1/Conv_output_0` -> `conv1_Conv_output_0`."""
    name = re.sub(r"[^A-Za-z0-9_$.-]", "_", onnx_name).strip("_")
    return name if name and not name[0].isdigit() else f"v{name}"


# -- emitting the IR -----------------------------------------------------------------------

Scope = ChainMap[str, SSAValue]
"""ONNX value name -> its SSA value; subgraphs see the values of the graphs around them."""


def _types(graph: GraphProto) -> dict[str, TypeProto]:
    return {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}


def _used_names(graph: GraphProto) -> set[str]:
    """Every value name read by a node or returned by a graph, subgraphs included."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for sub in _subgraphs(node):
            used |= _used_names(sub)
    return used


def _strip_trailing_empty(names: Sequence[str]) -> list[str]:
    """ONNX writes absent trailing optional inputs/outputs as '' or leaves them out: drop them."""
    names = list(names)
    while names and not names[-1]:
        names.pop()
    return names


class _Importer:
    """Emits the IR of one model, collecting its weights and unique weight symbols."""

    def __init__(self, source: str):
        self.source = source
        self.weights: dict[str, np.ndarray] = {}
        self.used: set[str] = set()

    def run(
        self, model: onnx.ModelProto, inferred: onnx.ModelProto, input_names: list[str]
    ) -> ImportedModel:
        graph = inferred.graph
        self.used = _used_names(graph)
        types = _types(graph)
        by_name = {i.name: i for i in graph.input}
        block = Block(arg_types=[self._type(by_name[n].type, n) for n in input_names])
        scope: Scope = ChainMap()
        for name, arg in zip(input_names, block.args):
            arg.name_hint = _ssa_name(name)
            scope[name] = arg
        self._emit_graph(graph, model.graph.initializer, block, scope, types)
        results = [self._lookup(scope, o.name, "graph output") for o in graph.output]
        block.add_op(func.ReturnOp(*results))
        signature = FunctionType.from_lists(block.arg_types, [r.type for r in results])
        main = func.FuncOp("main", signature, Region(block))
        main.attributes["einc.inputs"] = ArrayAttr([StringAttr(n) for n in input_names])
        main.attributes["einc.outputs"] = ArrayAttr([StringAttr(o.name) for o in graph.output])
        opsets = {
            (o.domain or "ai.onnx"): IntegerAttr(o.version, i64) for o in model.opset_import
        }
        module = ModuleOp([main], attributes={"onnx.opset": DictionaryAttr(opsets)})
        return ImportedModel(
            module=module,
            weights=self.weights,
            inputs=[_signature(n, v) for n, v in zip(input_names, block.args)],
            outputs=[_signature(o.name, v) for o, v in zip(graph.output, results)],
            source=self.source,
        )

    def _emit_graph(
        self,
        graph: GraphProto,
        initializers: Sequence[TensorProto],
        block: Block,
        scope: Scope,
        types: dict[str, TypeProto],
    ) -> None:
        for tensor in initializers:
            if tensor.name in self.used:
                op = self._data_op(tensor.name, _to_array(tensor))
                block.add_op(op)
                scope[tensor.name] = op.results[0]
        for node in graph.node:
            try:
                self._emit_node(node, block, scope, types)
            except EincError as err:
                if err.node is None and err.op is None:
                    err.node, err.op = _node_label(node), _op_label(node)
                raise

    def _emit_node(
        self, node: NodeProto, block: Block, scope: Scope, types: dict[str, TypeProto]
    ) -> None:
        if node.op_type == "Constant":
            op = self._data_op(node.output[0], _constant_array(node))
            if node.name:
                op.attributes["onnx_node"] = StringAttr(node.name)
            block.add_op(op)
            scope[node.output[0]] = op.results[0]
            return
        operands = []
        for name in _strip_trailing_empty(node.input):
            if name:
                operands.append(self._lookup(scope, name, "input"))
            else:
                none = NoneOp()
                none.result.name_hint = "none"
                block.add_op(none)
                operands.append(none.result)
        outputs = _strip_trailing_empty(node.output)
        result_types = [self._result_type(n, types) for n in outputs]
        attributes: dict[str, Attribute] = {}
        regions: list[Region] = []
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                attributes[attr.name] = IntegerAttr(len(regions), i64)
                regions.append(self._region(attr.g, scope))
            elif attr.type in ATTRIBUTES:
                attributes[attr.name] = ATTRIBUTES[attr.type](attr)
            else:
                kind = AttributeProto.AttributeType.Name(attr.type)
                raise EincError(f"attribute '{attr.name}' of type {kind} is not supported")
        if node.name:
            attributes["onnx_node"] = StringAttr(node.name)
        op = onnx_op_class(node.op_type)(operands, result_types, attributes, regions)
        block.add_op(op)
        for name, result in zip(outputs, op.results):
            if name:
                result.name_hint = _ssa_name(name)
                scope[name] = result

    def _region(self, graph: GraphProto, scope: Scope) -> Region:
        """A subgraph as a region: its inputs are block arguments, `onnx.yield` its outputs."""
        types = _types(graph)
        block = Block(arg_types=[self._type(i.type, i.name) for i in graph.input])
        inner = scope.new_child()
        for value, arg in zip(graph.input, block.args):
            arg.name_hint = _ssa_name(value.name)
            inner[value.name] = arg
        self._emit_graph(graph, graph.initializer, block, inner, types)
        outputs = [self._lookup(inner, o.name, "subgraph output") for o in graph.output]
        block.add_op(YieldOp(outputs))
        return Region(block)

    def _data_op(self, name: str, array: np.ndarray) -> Operation:
        """`ein.weight` for large data (kept in the weight table), else `ein.constant`."""
        if array.size > INLINE_LIMIT:
            symbol = self._symbol(name)
            self.weights[symbol] = array
            op: Operation = WeightOp(symbol, TensorType(numpy_to_type(array.dtype), array.shape))
        else:
            op = ConstantOp(_dense(array))
        op.results[0].name_hint = _ssa_name(name)
        return op

    def _symbol(self, name: str) -> str:
        """A unique symbol close to the ONNX name: `onnx::MatMul_12` -> `onnx__MatMul_12`."""
        base = re.sub(r"[^A-Za-z0-9_$.]", "_", name)
        if not re.match(r"[A-Za-z_]", base):
            base = "_" + base
        symbol, n = base, 0
        while symbol in self.weights:
            n += 1
            symbol = f"{base}_{n}"
        return symbol

    def _result_type(self, name: str, types: dict[str, TypeProto]) -> Attribute:
        """A node output's type; `none` for absent outputs and for outputs nobody reads
        whose type inference left open (such as the mask of Dropout before opset 12)."""
        if not name:
            return NoneType()
        try:
            return self._type(types.get(name), name)
        except EincError:
            if name in self.used:
                raise
            return NoneType()

    @staticmethod
    def _lookup(scope: Scope, name: str, what: str) -> SSAValue:
        if name not in scope:
            raise EincError(f"{what} '{name}' is no node's output, initializer or graph input")
        return scope[name]

    @staticmethod
    def _type(t: TypeProto | None, name: str) -> TensorType:
        """The static tensor type of a value, or an error saying what inference left open."""
        kind = t.WhichOneof("value") if t is not None else None
        if t is None or kind is None:
            raise EincError(f"shape inference could not determine the type of value '{name}'")
        if kind != "tensor_type":
            kind = kind.removesuffix("_type").replace("_", " ")
            raise EincError(f"value '{name}' is of {kind} type: only tensors are supported")
        if t.tensor_type.elem_type == TensorProto.UNDEFINED:
            raise EincError(f"shape inference could not determine the dtype of value '{name}'")
        try:
            element = onnx_to_type(t.tensor_type.elem_type)
        except EincError as err:
            raise EincError(f"value '{name}': {err.reason}") from None
        dims = _dims(t)
        if dims is None:
            raise EincError(f"shape inference could not determine the rank of value '{name}'")
        if not all(isinstance(d, int) for d in dims):
            raise EincError(
                f"shape inference could not determine the shape of value '{name}': "
                f"dims {_show(dims)}"
            )
        return TensorType(element, dims)


def _signature(name: str, value: SSAValue) -> tuple[str, tuple[int, ...], np.dtype]:
    t: TensorType = value.type  # type: ignore[assignment]
    return name, tuple(t.get_shape()), type_to_numpy(t.get_element_type())
