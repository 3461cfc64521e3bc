"""User-facing errors: one `einc: error:` line naming file, node, op and reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EincError(Exception):
    """An error caused by the user's input, reported without a traceback."""

    reason: str
    file: str | None = None
    node: str | None = None
    op: str | None = None

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.node is not None or self.op:
            where.append(f"node '{self.node or '?'}' ({self.op or '?'})")
        return ": ".join(where + [self.reason])


def located(err: EincError, file: str) -> EincError:
    """The same error with the model file filled in where it was missing."""
    if err.file is None:
        err.file = file
    return err
