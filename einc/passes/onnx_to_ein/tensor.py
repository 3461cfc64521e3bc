"""Lowerings of ONNX ops that move or view data (Reshape, Transpose, ...).

Shapes are static after import, so ops whose output shape is computed from a
shape tensor (Reshape, Flatten) take it from their inferred result type.
"""

from __future__ import annotations

from xdsl.ir import SSAValue

from einc.passes.onnx_to_ein.common import CascadeBuilder, Lowering, Node, Unsupported, shape_of


def lower_view(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    """Reshape, Flatten, Squeeze, Unsqueeze: a view with the inferred result shape."""
    x = node.input(0)
    assert x is not None
    return [b.reshape(x, node.result_types[0].get_shape())]


def lower_identity(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    return [v for v in node.inputs if v is not None][:1]


def lower_transpose(b: CascadeBuilder, node: Node) -> list[SSAValue]:
    x = node.input(0)
    assert x is not None
    rank = len(shape_of(x))
    perm = node.ints_attr("perm", list(reversed(range(rank))))
    assert perm is not None
    if sorted(perm) != list(range(rank)):
        raise Unsupported(f"perm {perm} is not a permutation of {rank} dims")
    return [b.transpose(x, perm)]


LOWERINGS: dict[str, Lowering] = {
    "Reshape": lower_view,
    "Flatten": lower_view,
    "Squeeze": lower_view,
    "Unsqueeze": lower_view,
    "Identity": lower_identity,
    "Dropout": lower_identity,
    "Transpose": lower_transpose,
}
