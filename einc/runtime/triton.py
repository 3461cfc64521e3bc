"""Running a Triton artifact: one device arena, weights uploaded once, kernels in order.

The artifact's `kernels.py` is plain Python (written by einc.backends.triton):
its `launch(buffers)` runs every kernel on a dict of tensors by buffer name. This
module builds that dict once per model: weights and constants are typed views
into one device copy of `weights.bin`, temporaries typed views into one arena of
`arena_bytes`; per run only the inputs and outputs change. Inputs that are
already torch tensors on the device with the right dtype and layout are used as
they are (no copy); numpy arrays are moved to the device (on the CPU, under
`TRITON_INTERPRET=1`, `torch.from_numpy` shares their memory). Outputs come back
as torch tensors if any input was one, else as numpy arrays.

On a GPU the first run goes through `launch`, which compiles and autotunes each
kernel; each launch is then bound to its compiled kernel, grid and device
pointers (`_bind`), and later runs call Triton's C launcher straight from that
table: a launch then costs a few microseconds of Python instead of Triton's
argument binding, cache lookup and autotuner dispatch.

torch and triton are imported on first use, so an artifact can be compiled and
saved on a machine that has neither.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from einc.diagnostics import EincError

SOURCE = "kernels.py"
MANIFEST = "manifest.json"
WEIGHTS = "weights.bin"

INSTALL = "the triton target needs torch and triton: pip install torch triton"


def _import_torch() -> Any:
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as err:
        raise EincError(f"{INSTALL} ({err.name} is missing)") from None
    return torch


def _torch_dtype(torch: Any, name: str) -> Any:
    return {"bool": torch.bool}.get(name) or getattr(torch, name)


def _device(torch: Any) -> str:
    if os.environ.get("TRITON_INTERPRET") == "1":
        import triton.language as tl

        if type(tl.max).__name__ != "InterpretedFunction":
            raise EincError("TRITON_INTERPRET=1 must be set before triton is first imported in this process")
        return "cpu"
    if not torch.cuda.is_available():
        raise EincError(
            "the triton target runs on an NVIDIA GPU and torch sees none "
            "(set TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter)"
        )
    return "cuda"


def _load_module(source: str) -> ModuleType:
    """Import generated source from a file (Triton reads kernels' source through inspect)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    root = Path(os.environ.get("EINC_CACHE_DIR") or Path(tempfile.gettempdir()) / "einc-triton")
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"kernels_{digest}.py"
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
    name = f"einc_triton_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class TritonModel:
    """A model compiled for the triton target: `run(feeds) -> outputs`, `save(dir)`."""

    def __init__(self, manifest: dict[str, Any], source: str, weights: bytes):
        self.manifest = manifest
        self.source = source
        """The generated Python module: the kernels and their launcher."""
        self.inputs: list[dict[str, Any]] = manifest["inputs"]
        self.outputs: list[dict[str, Any]] = manifest["outputs"]
        self._weights_bytes = weights
        self._ready = False
        self._bound: list[_Bound] | None = None
        self.unbound = ""
        """Why launches are not bound (after a first run), if they are not."""
        """Each launch bound to its compiled kernel, grid and arguments after the first run ([]: not possible)."""

    def _setup(self) -> None:
        torch = _import_torch()
        self._torch = torch
        self.device = _device(torch)
        self._module = _load_module(self.source)
        host = torch.frombuffer(bytearray(self._weights_bytes), dtype=torch.uint8) if self._weights_bytes else torch.zeros(1, dtype=torch.uint8)
        self._weights = host.to(self.device)
        self._arena = torch.empty(max(1, self.manifest["arena_bytes"]), dtype=torch.uint8, device=self.device)
        self._buffers: dict[str, Any] = {}
        self._slots: dict[tuple[str, str], str] = {}
        for buf in self.manifest["buffers"]:
            dtype = _torch_dtype(torch, buf["dtype"])
            nbytes = max(1, buf["size"]) * torch.empty((), dtype=dtype).element_size()
            if buf["role"] in ("weight", "constant"):
                self._buffers[buf["name"]] = self._weights[buf["offset"] : buf["offset"] + nbytes].view(dtype)
            elif buf["role"] == "temp":
                self._buffers[buf["name"]] = self._arena[buf["offset"] : buf["offset"] + nbytes].view(dtype)
            else:
                self._slots[(buf["role"], buf["source"])] = buf["name"]
        self._ready = True

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run one inference; outputs keyed by the model's output names."""
        if not self._ready:
            self._setup()
        torch = self._torch
        names = [i["name"] for i in self.inputs]
        if set(feeds) != set(names):
            raise EincError(
                f"inputs do not match the model: missing {[n for n in names if n not in feeds]}, "
                f"unexpected {[n for n in feeds if n not in names]}; the model takes {names}"
            )
        as_torch = any(isinstance(v, torch.Tensor) for v in feeds.values())
        slots: dict[str, Any] = {}
        keep = []
        for spec in self.inputs:
            tensor = self._to_device(spec, feeds[spec["name"]])
            keep.append(tensor)
            slot = self._slots.get(("input", spec["name"]))
            if slot is not None:
                slots[slot] = tensor
        results: dict[str, Any] = {}
        for spec in self.outputs:
            out = torch.empty(spec["shape"], dtype=_torch_dtype(torch, spec["dtype"]), device=self.device)
            results[spec["name"]] = out
            slots[self._slots[("output", spec["name"])]] = out
        if not (self._bound and self._launch_bound(slots)):
            launched = self._module.launch({**self._buffers, **slots})
            if self._bound is None:
                self._bound = _bind(self, launched)
        if as_torch:
            return results
        return {name: _to_numpy(torch, t) for name, t in results.items()}

    def _launch_bound(self, slots: dict[str, Any]) -> bool:
        """Launch every kernel through Triton's C launcher with its bound arguments; False (and
        nothing launched) where an input is not 16-byte aligned as the compiled kernels assume."""
        if not self._bound:
            return False
        pointers = {name: t.data_ptr() for name, t in slots.items()}
        if any(p % 16 for p in pointers.values()):
            return False
        stream = self._stream(self._device_index)
        enter, leave = self._hooks.launch_enter_hook, self._hooks.launch_exit_hook
        for b in self._bound:
            args = b.args
            if b.slots:
                args = list(args)
                for i, name in b.slots:
                    args[i] = pointers[name]
            meta = None if enter is None else b.kernel.launch_metadata(b.grid, stream, *args)
            b.launcher(*b.grid, stream, b.function, b.metadata, meta, enter, leave, *args)
        return True

    def _to_device(self, spec: dict[str, Any], value: Any) -> Any:
        torch = self._torch
        dtype = _torch_dtype(torch, spec["dtype"])
        if isinstance(value, torch.Tensor):
            tensor = value
        else:
            array = np.ascontiguousarray(value)
            if array.dtype.name != spec["dtype"]:
                raise EincError(f"input '{spec['name']}' has dtype {array.dtype}, the model expects {spec['dtype']}")
            tensor = (torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
                      if spec["dtype"] == "bfloat16" else torch.from_numpy(array))
        if tensor.dtype != dtype:
            raise EincError(f"input '{spec['name']}' has dtype {tensor.dtype}, the model expects {spec['dtype']}")
        if tuple(tensor.shape) != tuple(spec["shape"]):
            raise EincError(
                f"input '{spec['name']}' has shape {list(tensor.shape)}, the model was "
                f"compiled for {list(spec['shape'])}"
            )
        return tensor.to(self.device).contiguous()

    def capture(self, feeds: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Record one run in a CUDA graph; returns `(replay, outputs)`.

        `replay()` runs every kernel again on the same input tensors (write new
        values into them in place) and refreshes `outputs`, with no Python per
        kernel. A run first compiles and autotunes every kernel outside the graph.
        """
        torch = _import_torch()
        if not all(isinstance(v, torch.Tensor) and v.is_cuda for v in feeds.values()):
            raise EincError("capture needs the inputs as torch tensors on the GPU")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.run(feeds)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.run(feeds)
        return graph.replay, outputs

    def tuned(self) -> dict[str, str]:
        """The configuration the autotuner picked for each autotuned kernel (after a run)."""
        if not self._ready:
            return {}
        picked = {}
        for name in self.manifest["kernels"]:
            best = getattr(getattr(self._module, name), "best_config", None)
            if best is not None:
                tiles = " ".join(f"{k}={v}" for k, v in best.kwargs.items())
                picked[name] = f"{tiles} warps={best.num_warps} stages={best.num_stages}"
        return picked

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the artifact directory: manifest, the generated module, the weights."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        (root / MANIFEST).write_text(json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")
        (root / SOURCE).write_text(self.source)
        (root / WEIGHTS).write_bytes(self._weights_bytes)

    def emit_source(self, directory: str | os.PathLike[str], stem: str = "model") -> Path:
        """Write the generated module where a person can read it; returns its path."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{stem}.py"
        path.write_text(self.source)
        return path


@dataclass
class _Bound:
    """One launch, bound once: the compiled kernel, its launcher, function and metadata, its grid,
    and its arguments (device pointers, then constexprs), inputs and outputs left as `slots`."""

    kernel: Any
    launcher: Any
    function: Any
    metadata: Any
    grid: tuple[int, int, int]
    args: tuple[Any, ...]
    slots: list[tuple[int, str]]


def _bind(model: TritonModel, launched: Any) -> list[_Bound]:
    """`_bind_launches`, or no binding (and the reason) where this Triton's objects differ."""
    try:
        return _bind_launches(model, launched)
    except (AttributeError, KeyError, TypeError) as err:
        return _unbound(model, f"{type(err).__name__}: {err}")


def _bind_launches(model: TritonModel, launched: Any) -> list[_Bound]:
    """Bind each launch of a first run to what it compiled, so later runs skip Triton's
    per-launch Python (argument binding, cache lookup, autotuner, grid lambda).

    Launch hooks (a profiler's) still see every launch. Empty, with the reason in
    `model.unbound`, where binding does not apply: the CPU interpreter, an artifact
    without a launch table, or a Triton whose launches return something else.
    """
    try:
        import triton
        from triton import knobs
        from triton.runtime.driver import driver
    except ImportError as err:
        return _unbound(model, f"this Triton lacks {err.name}")
    table = model.manifest.get("launches")
    if model.device != "cuda":
        return _unbound(model, "the CPU interpreter")
    if table is None or not isinstance(launched, list) or len(launched) != len(table):
        return _unbound(model, "no launch table")
    fixed = {name: t.data_ptr() for name, t in model._buffers.items()}
    bound = []
    for (name, grid_source, args, _warps), compiled in zip(table, launched):
        missing = [a for a in ("run", "function", "packed_metadata") if not hasattr(compiled, a)]
        if missing:
            return _unbound(model, f"launch of {name} returned {type(compiled).__name__} without {missing}")
        fn = getattr(model._module, name)
        best = getattr(fn, "best_config", None)  # an autotuner's pick; its `fn` is the JITFunction
        meta = dict(best.kwargs) if best is not None else {}
        jit = fn.fn if best is not None else fn
        grid = eval(grid_source, {"triton": triton})  # the launch's own grid: a tuple or a lambda of meta
        grid = tuple(grid(meta) if callable(grid) else grid)
        values = [fixed.get(a, a) for a in args] + [meta[p] for p in jit.arg_names[len(args):]]
        slots = [(i, v) for i, v in enumerate(values) if isinstance(v, str)]
        bound.append(_Bound(compiled, compiled.run, compiled.function, compiled.packed_metadata, (*grid, 1, 1)[:3],
                            tuple(values), slots))
    model._stream = driver.active.get_current_stream
    model._device_index = driver.active.get_current_device()
    model._hooks = knobs.runtime
    return bound


def _unbound(model: TritonModel, reason: str) -> list[_Bound]:
    model.unbound = reason
    return []


def _to_numpy(torch: Any, tensor: Any) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def load_triton(root: Path, manifest: dict[str, Any]) -> TritonModel:
    """The model of a triton artifact directory (called by `einc.load`)."""
    try:
        source = (root / SOURCE).read_text()
        weights = (root / WEIGHTS).read_bytes()
    except FileNotFoundError as err:
        raise EincError(f"not an einc artifact: {err.filename} is missing", file=str(root)) from None
    return TritonModel(manifest, source, weights)
