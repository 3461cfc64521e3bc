"""Affine index expressions of einsum operands: `m`, `0`, `p * 2 + r`.

An operand of an extended einsum is indexed by one expression per dimension.
Plain index variables are the usual einsum case; a constant selects one element
(broadcasting a size-1 dimension); sums of scaled variables express convolution
and pooling windows (`I[n, c, p*s + r, q*s + t]`). Keeping them affine keeps the
iteration space analysable: ranges come from the plain occurrences, and the
CPU lowering turns each expression into a strided offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TERM = re.compile(r"^\s*(?:(\d+)\s*\*\s*([A-Za-z_]\w*)|([A-Za-z_]\w*)(?:\s*\*\s*(\d+))?|(\d+))\s*$")


@dataclass(frozen=True)
class IndexExpr:
    """`sum(coeff * var) + const` over einsum index variables."""

    terms: tuple[tuple[str, int], ...]
    const: int = 0

    @staticmethod
    def var(name: str) -> IndexExpr:
        return IndexExpr(((name, 1),))

    @staticmethod
    def constant(value: int) -> IndexExpr:
        return IndexExpr((), value)

    @staticmethod
    def parse(text: str) -> IndexExpr:
        terms: list[tuple[str, int]] = []
        const = 0
        for part in text.split("+"):
            m = _TERM.match(part)
            if m is None:
                raise ValueError(f"bad index expression '{text}'")
            if m.group(5) is not None:
                const += int(m.group(5))
            elif m.group(1) is not None:
                terms.append((m.group(2), int(m.group(1))))
            else:
                terms.append((m.group(3), int(m.group(4) or 1)))
        return IndexExpr(tuple(terms), const)

    @property
    def plain_var(self) -> str | None:
        """The variable if the expression is exactly one variable, else None."""
        if self.const == 0 and len(self.terms) == 1 and self.terms[0][1] == 1:
            return self.terms[0][0]
        return None

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.terms)

    def max_value(self, extents: dict[str, int]) -> int:
        """The largest value over the iteration space (extents are exclusive)."""
        return self.const + sum(c * (extents[v] - 1) for v, c in self.terms)

    def __str__(self) -> str:
        parts = [v if c == 1 else f"{v} * {c}" for v, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts)
