"""The `tile` pass: block sizes for every group, from the host's caches.

Contraction groups get the five sizes of a BLIS-style GEMM (recorded as the
group attribute `einc.tile`):

- NR x MR, the register tile: NR is two vectors (32 floats with AVX-512, 16
  with AVX2) and MR the most rows whose MR * NR / lanes accumulators leave
  registers for the B vectors and a broadcast (14 of 32 zmm, 6 of 16 ymm);
- KC, the depth of a packed block: a KC x NR sliver of B takes a quarter of
  L2, between 256 and 1024. Measured on Zen 5 (1024 x 1024 x K, one thread):
  deeper blocks win (fewer partial-sum round trips through C), and the sliver
  streams well from L2; sizing it for L1d (KC = 128) lost 10-20%;
- MC, the rows of a packed A block, about half of L2 at depth KC;
- NC, the columns of a B block, bounded by a share of L3 per core.

Cache sizes come from /sys/devices/system/cpu/cpu0/cache (or the options);
the vector width from the host features llvmlite reports. The sizes are the
rank partitioning of the tiling design (m -> m1, m0 with m0 = MR, ...)
recorded for the backend's kernel, not loops rewritten here: the kernel
generator owns the loop nest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from einc.ir.ein import GroupOp

CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"


def host_caches() -> dict[str, int]:
    """Data and unified cache sizes in bytes by level ('l1', 'l2', 'l3'); defaults where unreadable."""
    sizes = {"l1": 32 << 10, "l2": 1 << 20, "l3": 16 << 20}
    try:
        for entry in sorted(os.listdir(CACHE_DIR)):
            path = os.path.join(CACHE_DIR, entry)
            if not entry.startswith("index"):
                continue
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            if kind == "Instruction":
                continue
            with open(os.path.join(path, "level")) as f:
                level = int(f.read())
            with open(os.path.join(path, "size")) as f:
                text = f.read().strip()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
            sizes[f"l{level}"] = int(text.rstrip("KMG")) * scale
    except OSError:
        pass
    return sizes


def host_lanes() -> int:
    """f32 lanes of the widest vector the host has: 16 (AVX-512), 8 (AVX2) or 4."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if features.get("avx512f"):
        return 16
    return 8 if features.get("avx2") else 4


def gemm_tiles(lanes: int, l1: int, l2: int, l3: int, cores: int) -> dict[str, int]:
    nr = 2 * lanes
    registers = 32 if lanes == 16 else 16
    mr = (registers - 4) // 2
    kc = min(1024, max(256, (l2 // 4) // (nr * 4) // 16 * 16))
    mc = max(mr, (l2 // 2) // (kc * 4) // mr * mr)
    nc = max(nr, min(2048, (l3 // (2 * max(1, cores))) // (kc * 4) // nr * nr))
    return {"mr": mr, "nr": nr, "kc": kc, "mc": mc, "nc": nc, "lanes": lanes}


@dataclass(frozen=True)
class Tile(ModulePass):
    """Record cache-derived tile sizes on every contraction group."""

    name: ClassVar[str] = "tile"

    mr: int = 0
    """Rows of the register tile (0: from the vector registers)."""
    nr: int = 0
    """Columns of the register tile, a multiple of the vector width (0: two vectors)."""
    kc: int = 0
    """Depth of a packed block (0: from L1d)."""
    mc: int = 0
    """Rows of a packed A block (0: from L2)."""
    nc: int = 0
    """Columns of a B block (0: from L3)."""
    lanes: int = 0
    """f32 lanes per vector (0: the host's)."""
    l1: int = 0
    """L1d bytes (0: the host's)."""
    l2: int = 0
    """L2 bytes (0: the host's)."""
    l3: int = 0
    """L3 bytes (0: the host's)."""

    def sizes(self) -> dict[str, int]:
        caches = host_caches()
        lanes = self.lanes or host_lanes()
        tiles = gemm_tiles(
            lanes, self.l1 or caches["l1"], self.l2 or caches["l2"], self.l3 or caches["l3"], len(os.sched_getaffinity(0))
        )
        for key in ("mr", "nr", "kc", "mc", "nc"):
            if getattr(self, key):
                tiles[key] = getattr(self, key)
        return tiles

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        tiles = self.sizes()
        attr = DictionaryAttr({k: IntegerAttr(v, i64) for k, v in tiles.items()})
        for fn in op.ops:
            if isinstance(fn, func.FuncOp) and not fn.is_declaration:
                for group in fn.body.block.ops:
                    if isinstance(group, GroupOp) and group.kind.data == "contraction":
                        group.attributes["einc.tile"] = attr
