"""The compile cache: artifacts on disk, keyed by what determines their bytes.

`einc.compile` looks here first. The key hashes the model's serialised bytes,
the target, the input shapes, einc's version *and its source files* (a
changed compiler must never hand back code an older one made), the host CPU
and its features (code is compiled for them) and the thread count the
kernels plan their work split for. Entries are artifact directories
(`CompiledModel.save`), written to a temporary name and renamed, so a reader
never sees half an entry. Location: $EINC_CACHE_DIR, else ~/.cache/einc;
EINC_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from einc.runtime import CompiledModel, load


def cache_dir() -> Path | None:
    if os.environ.get("EINC_CACHE", "1") == "0":
        return None
    return Path(os.environ.get("EINC_CACHE_DIR") or Path.home() / ".cache" / "einc")


@lru_cache(maxsize=1)
def _compiler_fingerprint() -> str:
    """einc's version, its sources, and the host the code is built for."""
    import llvmlite.binding as llvm

    import einc

    h = hashlib.sha256(einc.__version__.encode())
    root = Path(einc.__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    h.update(llvm.get_host_cpu_name().encode())
    h.update(llvm.get_host_cpu_features().flatten().encode())
    return h.hexdigest()


def cache_key(model_bytes: bytes, target: str, input_shapes: dict[str, Sequence[int]] | None) -> str:
    from einc.backends.llvm.ukernels.pool import thread_count

    h = hashlib.sha256(_compiler_fingerprint().encode())
    h.update(hashlib.sha256(model_bytes).digest())
    h.update(repr((target, sorted((k, tuple(v)) for k, v in (input_shapes or {}).items()), thread_count())).encode())
    return h.hexdigest()[:32]


def model_bytes(model: Any) -> bytes | None:
    """The serialised model: a file's bytes, or a ModelProto's serialisation (None if unreadable:
    the importer then reports the problem as an einc error)."""
    try:
        if isinstance(model, (str, os.PathLike)):
            return Path(model).read_bytes()
        return model.SerializeToString()
    except (OSError, AttributeError):
        return None


def cached(key: str, build: Callable[[], CompiledModel]) -> CompiledModel:
    """The artifact under `key`, built and stored on a miss."""
    root = cache_dir()
    if root is None:
        return build()
    entry = root / key
    if (entry / "manifest.json").exists():
        try:
            return load(entry)
        except Exception:  # a damaged entry is rebuilt, never an error
            shutil.rmtree(entry, ignore_errors=True)
    compiled = build()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        compiled.save(tmp)
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(locals().get("tmp", root / ".none"), ignore_errors=True)  # full or read-only disk: no cache
    return compiled
