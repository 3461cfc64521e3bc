"""The runtime: loads artifacts and runs them, without importing the compiler."""

from einc.runtime.artifact import CompiledModel, load

__all__ = ["CompiledModel", "load"]
