"""einc's passes, one module each, and the table that names them.

Every pass is an xDSL `ModulePass`; `PASSES` maps its kebab-case name to a loader
so that `einc opt -p name{opt=..}` and `Pipeline("a,b")` find it. Adding a pass is
one row here and one module beside this file.
"""

from collections.abc import Callable
from importlib import import_module

from xdsl.passes import ModulePass

_PASS_CLASSES: dict[str, str] = {
    "onnx-to-ein": "einc.passes.onnx_to_ein:OnnxToEin",
    "defer-division": "einc.passes.defer_division:DeferDivisionPass",
    "fold-weights": "einc.passes.fold_weights:FoldWeights",
    "fuse": "einc.passes.fuse:Fuse",
    "winograd": "einc.passes.winograd:Winograd",
    "tile": "einc.passes.tile:Tile",
    "memplan": "einc.passes.memplan:MemPlan",
    "lower-ein-to-loops": "einc.passes.lower_ein_to_loops:LowerEinToLoops",
    "outline-loop-nests": "einc.passes.outline_nests:OutlineLoopNests",
    "parallel-nests": "einc.passes.parallel_nests:ParallelNests",
    "convert-arith-to-llvm": "einc.passes.convert_arith_to_llvm:ConvertArithToLLVM",
    "convert-math-to-llvm": "einc.passes.convert_math_to_llvm:ConvertMathToLLVM",
    "convert-cf-to-llvm": "einc.passes.convert_cf_to_llvm:ConvertCfToLLVM",
    "convert-func-to-llvm": "einc.passes.convert_func_to_llvm:ConvertFuncToLLVM",
    "add-entry-point": "einc.passes.add_entry_point:AddEntryPoint",
}


def _loader(path: str) -> Callable[[], type[ModulePass]]:
    module, cls = path.split(":")
    return lambda: getattr(import_module(module), cls)


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    name: _loader(path) for name, path in _PASS_CLASSES.items()
}

from einc.passes.pipeline import Pipeline  # noqa: E402

__all__ = ["PASSES", "Pipeline"]
