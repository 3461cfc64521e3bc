"""`einc explain MODEL`: the einsum cascades of a model and the passes each needs.

For every rank that some einsum reduces, the cascades along it are listed with
their einsums in the papers' notation and the pass each einsum runs in (the
FuseMax rule, einc.analysis.pass_count), once for the cascades as the ONNX ops
define them and once after einc's rewrites (einc.passes.pipeline.REWRITES).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import onnx
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from einc.analysis.pass_count import Cascade, cascades, einsum_text
from einc.frontend.onnx import import_model
from einc.passes import Pipeline
from einc.passes.pipeline import CASCADE, REWRITES


def _main(module: ModuleOp) -> func.FuncOp:
    return next(op for op in module.ops if isinstance(op, func.FuncOp))


def _names(fn: func.FuncOp) -> dict[SSAValue, str]:
    """Short readable tensor names: ONNX value names where they exist."""
    names: dict[SSAValue, str] = {}
    taken: set[str] = set()

    def name(value: SSAValue, fallback: str) -> None:
        base = (value.name_hint or fallback).replace(".", "_")
        text, n = base, 1
        while text in taken:
            n += 1
            text = f"{base}_{n}"
        taken.add(text)
        names[value] = text

    for arg in fn.body.block.args:
        name(arg, "in")
    for op in fn.body.block.ops:
        for result in op.results:
            sym = getattr(op, "sym", None)
            name(result, sym.string_value() if sym is not None else f"t{len(names)}")
    return names


def _describe(found: Sequence[Cascade], names: dict[SSAValue, str]) -> list[dict[str, Any]]:
    return [
        {
            "rank": c.rank,
            "passes": c.pass_count,
            "einsums": [
                {"einsum": einsum_text(op, names, c.var_names[op]), "pass": c.passes[op]} for op in c.einsums
            ],
        }
        for c in found
    ]


def analyse(model: str | os.PathLike[str] | onnx.ModelProto, input_shapes: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """The cascades before and after einc's rewrites, as plain data."""
    module = import_model(model, input_shapes).module
    Pipeline(CASCADE).apply(module)
    before = _describe(cascades(_main(module)), _names(_main(module)))
    Pipeline(REWRITES).apply(module)
    after = _describe(cascades(_main(module)), _names(_main(module)))
    Pipeline("fuse,winograd,tile").apply(module)
    return {"rewrites": REWRITES.split(","), "before": before, "after": after, "groups": _groups(module)}


def _groups(module: ModuleOp) -> list[dict[str, Any]]:
    """The kernels `fuse` makes (einc/passes/fuse.py), each with its einsums' maps and why."""
    from einc.ir.ein import EinsumOp, GroupOp

    found = []
    names = _names(_main(module))
    for op in _main(module).body.block.ops:
        if isinstance(op, GroupOp):
            tile = op.attributes.get("einc.tile")
            found.append(
                {
                    "kind": op.kind.data,
                    "output": ", ".join(names[r] for r in op.outputs),
                    "maps": [e.map.data + (f" reduce {e.reduce_op}" if e.reduce_op else "") for e in op.body.block.ops if isinstance(e, EinsumOp)],
                    "why": op.attributes["einc.why"].data if "einc.why" in op.attributes else "",  # type: ignore[attr-defined]
                    "tile": {k: v.value.data for k, v in tile.data.items()} if tile is not None else {},  # type: ignore[attr-defined]
                    "cpu_kernel": _cpu_kernel(op),
                }
            )
    return found


def _cpu_kernel(group: Any) -> dict[str, Any]:
    """The CPU kernel the group becomes and its register tile (MR x NR), as the backend will choose
    them: the kernel may take another tile than the tile pass's (pixels as rows, 7 x 48 on 7x7
    maps). Empty where the group has no kernel of its own (lowered as loops)."""
    from einc.backends.llvm.ukernels.calls import ContractionCall, kernel_spec
    from einc.backends.llvm.ukernels.winograd import WinogradCall

    kind = group.kind.data
    if kind == "contraction" and ContractionCall.accepts(group):
        spec = kernel_spec(group)
        if spec is not None:
            return {"kind": spec.get("kind", "gemm"), "mr": spec["tiles"]["mr"], "nr": spec["tiles"]["nr"]}
    elif kind == "winograd":
        spec = WinogradCall.spec(group)
        if spec is not None:
            return {"kind": "winograd_fused", "mr": spec["mr"], "nr": spec["nr"]}
    return {}


def _render(title: str, found: list[dict[str, Any]]) -> list[str]:
    lines = [title]
    multi = [c for c in found if c["passes"] > 1 or len(c["einsums"]) > 1]
    for c in multi:
        lines.append(f"  cascade along rank {c['rank']}: {c['passes']} pass{'es' if c['passes'] > 1 else ''}")
        lines += [f"    pass {e['pass']}  {e['einsum']}" for e in c["einsums"]]
    single = len(found) - len(multi)
    if single:
        lines.append(f"  and {single} single-einsum cascade{'s' if single > 1 else ''} of 1 pass each")
    return lines


def explain(model: str | os.PathLike[str] | onnx.ModelProto, input_shapes: dict[str, Sequence[int]] | None = None, as_json: bool = False) -> str:
    """The report `einc explain` prints: text, or JSON for tools."""
    data = analyse(model, input_shapes)
    if as_json:
        return json.dumps(data, indent=1) + "\n"
    most_before = max((c["passes"] for c in data["before"]), default=0)
    most_after = max((c["passes"] for c in data["after"]), default=0)
    lines = _render("as the ONNX ops define them:", data["before"])
    lines += [""] + _render(f"after einc's rewrites ({', '.join(data['rewrites'])}):", data["after"])
    lines += ["", f"most passes over one rank: {most_before} before, {most_after} after"]
    lines += ["", f"fused groups (fuse, winograd, tile): {len(data['groups'])}"]
    for n, g in enumerate(data["groups"], 1):
        tile = " ".join(f"{k}={v}" for k, v in g["tile"].items())
        kernel = g["cpu_kernel"]
        if kernel and kernel["kind"] != "depthwise":
            tile += f"{'; ' if tile else ''}cpu kernel: {kernel['kind']}, register tile {kernel['mr']} x {kernel['nr']}"
        elif kernel:
            tile += f"{'; ' if tile else ''}cpu kernel: depthwise"
        lines.append(f"  {n}. {g['kind']} -> {g['output']}: {'; '.join(g['maps'])}" + (f"  [{tile}]" if tile else ""))
        lines.append(f"     why: {g['why']}")
    return "\n".join(lines) + "\n"
