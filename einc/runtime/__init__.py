"""The runtime: loads artifacts and runs them, without importing the compiler."""

import json
import os
from pathlib import Path

from einc.runtime.artifact import CompiledModel
from einc.runtime.artifact import load as _load_native


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load an artifact directory written by `einc compile`, for whichever target it was built."""
    root = Path(path)
    try:
        target = json.loads((root / "manifest.json").read_text()).get("target")
    except (OSError, ValueError, AttributeError):
        target = None  # the native loader reports what is wrong
    if target == "triton":
        from einc.runtime.triton import load_triton

        return load_triton(root, json.loads((root / "manifest.json").read_text()))  # type: ignore[return-value]
    return _load_native(root)


__all__ = ["CompiledModel", "load"]
