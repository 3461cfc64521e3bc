"""Affine index expressions of einsum operands: `m`, `0`, `p * 2 + r`, `9 - i`.

An operand of an extended einsum is indexed by one expression per dimension.
Plain index variables are the usual einsum case; a constant selects one element
(broadcasting a size-1 dimension); sums of scaled variables express convolution
and pooling windows (`I[n, c, p*s + r, q*s + t]`) and strided or reversed slices
(`X[9 - i]`). Keeping them affine keeps the iteration space analysable: ranges
come from the plain occurrences, and the CPU lowering turns each expression
into a strided offset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"\s*(?:(?P<int>\d+)|(?P<name>[A-Za-z_]\w*)|(?P<op>[-+*]))")


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
    def affine(coeffs: dict[str, int], const: int = 0) -> IndexExpr:
        """From a map var -> coefficient (zero coefficients dropped)."""
        return IndexExpr(tuple((v, c) for v, c in coeffs.items() if c), const)

    @staticmethod
    def parse(text: str) -> IndexExpr:
        """Read `term (('+'|'-') term)*` with `term := int | var | int*var | var*int`."""
        tokens: list[str] = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(f"bad index expression '{text}'")
            tokens.append(m.group(m.lastgroup or "op"))
            pos = m.end()
        coeffs: dict[str, int] = {}
        const = 0
        sign = 1
        i = 0
        if tokens[:1] == ["-"]:
            sign, i = -1, 1
        while i < len(tokens):
            factors = [tokens[i]]
            i += 1
            if i < len(tokens) and tokens[i] == "*":
                if i + 1 >= len(tokens):
                    raise ValueError(f"bad index expression '{text}'")
                factors.append(tokens[i + 1])
                i += 2
            names = [f for f in factors if not f.isdigit()]
            ints = [int(f) for f in factors if f.isdigit()]
            if len(names) > 1 or any(f in "+-*" for f in factors):
                raise ValueError(f"bad index expression '{text}'")
            value = sign
            for n in ints:
                value *= n
            if names:
                coeffs[names[0]] = coeffs.get(names[0], 0) + value
            else:
                const += value
            if i < len(tokens):
                if tokens[i] not in "+-":
                    raise ValueError(f"bad index expression '{text}'")
                sign = 1 if tokens[i] == "+" else -1
                i += 1
                if i == len(tokens):
                    raise ValueError(f"bad index expression '{text}'")
        return IndexExpr.affine(coeffs, const)

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
        return self.const + sum(c * (extents[v] - 1) for v, c in self.terms if c > 0)

    def min_value(self, extents: dict[str, int]) -> int:
        """The smallest value over the iteration space."""
        return self.const + sum(c * (extents[v] - 1) for v, c in self.terms if c < 0)

    def __str__(self) -> str:
        def term(var: str, c: int) -> str:
            return var if abs(c) == 1 else f"{var} * {abs(c)}"

        text = " + ".join(term(v, c) for v, c in self.terms if c > 0)
        if self.const > 0 or (not text and self.const == 0) or (not text and self.terms):
            text = f"{text} + {self.const}" if text else str(max(self.const, 0))
        for v, c in self.terms:
            if c < 0:
                text += f" - {term(v, c)}"
        if self.const < 0:
            text += f" - {-self.const}"
        return text


def flat_offset(
    exprs: Sequence[IndexExpr], shape: Sequence[int], names: Mapping[str, str] | None = None
) -> tuple[dict[str, int], int]:
    """The flat offset of `X[exprs]` in a row-major buffer of `shape`, as ({var: coefficient},
    constant); `names` renames the variables (an einsum's to a kernel's canonical dims)."""
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    coef: dict[str, int] = {}
    const = 0
    for expr, stride in zip(exprs, strides):
        const += expr.const * stride
        for var, c in expr.terms:
            key = names[var] if names is not None else var
            coef[key] = coef.get(key, 0) + c * stride
    return coef, const
