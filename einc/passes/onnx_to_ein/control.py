"""Lowerings of ONNX control ops: If.

The importer puts an If's subgraphs in the op's regions, in the order of its
GRAPH attributes, and keeps each region's index in the attribute
(`then_branch`, `else_branch`). Branch bodies are onnx ops that read outer
values directly; the pass lowers them like any other node, after the If.

A condition known at compile time (an `ein.constant`, often folded from shape
arithmetic) selects its branch here: the branch's ops move before the If and
its yielded values replace the If's results, so the cascade stays straight-line.
Otherwise the branches move into an `ein.if`, which the backends lower to a real
branch. A branch that only makes constants (such as the NaN the importer gives a
branch that cannot run on the compiled shapes) is not worth a branch: the If is
if-converted, the other branch runs unconditionally and a select on the
condition picks each result (einc's code has no effects and no traps, so running
a branch the condition does not take is safe). Straight-line, its buffers share
the arena plan and its results need no copy out of a branch (Silero VAD: 0.124 ms
with the `ein.if`, 0.096 ms if-converted). Loop and Scan have no lowering: einc
compiles graphs without loops.
"""

from __future__ import annotations

from xdsl.ir import Block, Region, SSAValue
from xdsl.rewriter import InsertPoint

from einc.ir.ein import IfOp, YieldOp
from einc.ir.onnx import YieldOp as OnnxYieldOp
from einc.passes.onnx_to_ein.common import CascadeBuilder, Lowering, Node, Unsupported


def _branches(node: Node) -> tuple[Region, Region]:
    regions = node.op.regions
    then_index, else_index = node.int_attr("then_branch", 0), node.int_attr("else_branch", 1)
    if len(regions) != 2 or {then_index, else_index} != {0, 1}:
        raise Unsupported("an If needs a then_branch and an else_branch subgraph")
    return regions[then_index], regions[else_index]


def _terminator(block: Block) -> OnnxYieldOp:
    terminator = block.last_op
    assert isinstance(terminator, OnnxYieldOp)
    return terminator


def inline_branch(b: CascadeBuilder, region: Region) -> list[SSAValue]:
    """Move a branch's ops before the If; its yielded values are the If's results."""
    block = region.block
    yielded = list(_terminator(block).operands)
    for op in list(block.ops)[:-1]:
        op.detach()
        b.rewriter.insert_op(op, InsertPoint.before(b.anchor))
    return yielded


CONSTANT_OPS = ("ein.constant", "ein.weight", "onnx.ConstantOfShape")
"""The ops of a branch that only makes constants."""


def _only_constants(region: Region) -> bool:
    return all(op.name in CONSTANT_OPS for op in list(region.block.ops)[:-1])


def select_branches(
    b: CascadeBuilder, cond: SSAValue, then_region: Region, else_region: Region, result_types: list
) -> list[SSAValue]:
    """If-conversion: both branches move before the If; the condition selects each result."""
    flag = b.reshape(cond, [])
    pairs = zip(inline_branch(b, then_region), inline_branch(b, else_region))
    return [b.elementwise([flag, t, e], "select($0, $1, $2)", ty) for (t, e), ty in zip(pairs, result_types)]


def lower_if(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    cond = node.input(0)
    assert cond is not None
    then_region, else_region = _branches(node)
    known = node.constant_input(0)
    if known is not None:
        if known.size != 1:
            raise Unsupported(f"the condition has {known.size} elements, not 1")
        return inline_branch(b, then_region if bool(known.reshape(-1)[0]) else else_region)
    result_types = node.result_types
    for name, region in (("then", then_region), ("else", else_region)):
        types = [v.type for v in _terminator(region.block).operands]
        if types != result_types:
            raise Unsupported(
                f"the {name} branch yields {', '.join(map(str, types))} but the If's results are "
                f"{', '.join(map(str, result_types))}: both branches must give the same static types"
            )
    if _only_constants(then_region) or _only_constants(else_region):
        return select_branches(b, cond, then_region, else_region, result_types)
    regions = []
    for region in (then_region, else_region):
        block = region.block
        terminator = _terminator(block)
        region.detach_block(block)
        yield_op = YieldOp(list(terminator.operands))
        block.insert_op_before(yield_op, terminator)
        terminator.detach()
        terminator.erase()
        regions.append(Region(block))
    op = b.insert(IfOp(cond, result_types, regions[0], regions[1]))
    return list(op.results)


LOWERINGS: dict[str, Lowering] = {"If": lower_if}
