"""Memory levels: a hierarchy described as data, and a cost model that places tensors in it.

A hierarchy lists levels from the smallest and fastest to the backing store
(DRAM). The CPU's is read from the host (L2 and L3 sizes) with DRAM behind; an
accelerator's names a scratchpad for input tiles and an accumulator for output
tiles. The cost model keeps an intermediate in the smallest level that holds it
(with everything else kept there) at every step of its life, preferring the
buffers that move the most bytes per byte of capacity, and counts the bytes each
level serves: every op reads each operand once and writes its output once.
Tensors outside the arena (inputs, outputs, weights) come from and go to DRAM.
A level that must stage an op's tiles (`holds`) but cannot hold the smallest
tile the op needs is an error naming the level and the tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.ir import Operation

from einc.diagnostics import EincError
from einc.ir.dtypes import type_to_numpy
from einc.ir.ein import EinsumOp
from einc.passes.memplan.liveness import Liveness, nbytes, source, uses

GB = 1e9


@dataclass(frozen=True)
class Level:
    """One memory level: its capacity (None: unbounded), bandwidth, and the tiles it must stage."""

    name: str
    capacity: int | None
    bandwidth: float
    """Bytes per second between this level and the compute units."""
    holds: tuple[str, ...] = ()
    """Operand kinds ("input", "output") whose tiles must pass through this level."""


@dataclass(frozen=True)
class Hierarchy:
    name: str
    levels: tuple[Level, ...]
    """Innermost first; the last is the backing store."""


def _cache_sizes(root: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind in ("Unified", "Data"):
            scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1], 1)
            sizes[f"L{level}"] = int(text.rstrip("KMG")) * scale
    return sizes


def cpu_hierarchy(cache_dir: str = "/sys/devices/system/cpu/cpu0/cache") -> Hierarchy:
    """This host's L2 and L3 (from sysfs; 1 MiB and 32 MiB where unreadable) with DRAM behind.

    Bandwidths are round figures for a current x86 core, enough to rank placements.
    """
    sizes = _cache_sizes(Path(cache_dir))
    return Hierarchy(
        "cpu",
        (
            Level("L2", sizes.get("L2", 1 << 20), 200 * GB),
            Level("L3", sizes.get("L3", 32 << 20), 100 * GB),
            Level("DRAM", None, 20 * GB),
        ),
    )


def accelerator_hierarchy(
    scratchpad: int = 256 << 10,
    accumulator: int = 64 << 10,
    scratchpad_bandwidth: float = 512 * GB,
    accumulator_bandwidth: float = 512 * GB,
    dram_bandwidth: float = 16 * GB,
) -> Hierarchy:
    """A systolic-array accelerator: input tiles in the scratchpad, output tiles in the accumulator."""
    return Hierarchy(
        "accelerator",
        (
            Level("accumulator", accumulator, accumulator_bandwidth, ("output",)),
            Level("scratchpad", scratchpad, scratchpad_bandwidth, ("input",)),
            Level("DRAM", None, dram_bandwidth),
        ),
    )


@dataclass(frozen=True)
class Tile:
    """The smallest block of one operand an op streams: a row along its innermost index."""

    op: str
    operand: str
    kind: str
    shape: tuple[int, ...]
    nbytes: int

    def __str__(self) -> str:
        return f"{self.operand} of '{self.op}' ({'x'.join(map(str, self.shape))}, {self.nbytes} bytes)"


def required_tiles(ops: Sequence[Operation]) -> list[Tile]:
    """Each einsum's smallest tiles: every index 1 except the innermost loop's, which runs in full."""
    tiles = []
    for step, op in enumerate(ops):
        if not isinstance(op, EinsumOp):
            continue
        extents = op.extents()
        inner = (op.output_vars or op.reduction_vars() or [None])[-1]
        label = op.output.name_hint or f"step {step}: {op.name}"
        operands = [(f"input {k}", "input", exprs, v) for k, (exprs, v) in enumerate(zip(op.input_exprs, op.inputs))]
        for name, kind, exprs, value in operands:
            shape = tuple(max(1, e.max_value({**dict.fromkeys(extents, 0), inner: extents[inner] - 1}) + 1) if inner in e.variables else 1 for e in exprs)  # type: ignore[index]
            tiles.append(Tile(label, name, kind, shape, math.prod(shape) * _itemsize(value)))
        out_shape = tuple(extents[v] if v == inner else 1 for v in op.output_vars)
        tiles.append(Tile(label, "output", "output", out_shape, math.prod(out_shape) * _itemsize(op.output)))
    return tiles


def _itemsize(value) -> int:
    return type_to_numpy(value.type.get_element_type()).itemsize


def check_tiles(hierarchy: Hierarchy, tiles: Sequence[Tile]) -> None:
    """Every tile fits the levels that must stage it, or a clear error names both."""
    for level in hierarchy.levels:
        for tile in tiles:
            if tile.kind in level.holds and level.capacity is not None and tile.nbytes > level.capacity:
                raise EincError(
                    f"memory level '{level.name}' of the {hierarchy.name} hierarchy holds {level.capacity} bytes, "
                    f"too few for the {tile}"
                )


@dataclass
class LevelPlan:
    """Which level holds each arena buffer, and the bytes each level serves."""

    level_of: list[str]
    served: dict[str, int] = field(default_factory=dict)
    dram_only: int = 0
    """The bytes DRAM would serve with every tensor there (the baseline)."""
    seconds: float = 0.0


def assign_levels(hierarchy: Hierarchy, live: Liveness) -> LevelPlan:
    """Place each arena buffer in the smallest level that holds it at every step of its life."""
    check_tiles(hierarchy, required_tiles(live.steps))
    index = live.buffer_of()
    traffic = [size for size in live.raw_bytes]  # written once
    external = 0
    for op in live.steps:
        for value in uses(op):
            b = index.get(source(value))
            if b is None:
                external += nbytes(value)
            else:
                traffic[b] += live.raw_bytes[b]
        external += sum(nbytes(r) for r in op.results if source(r) not in index)
    backing = hierarchy.levels[-1]
    steps = max((b.end for b in live.buffers), default=-1) + 1
    used = {level.name: [0] * steps for level in hierarchy.levels if level.capacity is not None}
    level_of = [backing.name] * len(live.buffers)
    for b in sorted(range(len(live.buffers)), key=lambda b: (-traffic[b] / live.buffers[b].size, b)):
        buf = live.buffers[b]
        for level in hierarchy.levels[:-1]:
            load = used[level.name]
            if all(load[t] + buf.size <= level.capacity for t in range(buf.start, buf.end + 1)):  # type: ignore[operator]
                for t in range(buf.start, buf.end + 1):
                    load[t] += buf.size
                level_of[b] = level.name
                break
    served = {level.name: 0 for level in hierarchy.levels}
    served[backing.name] = external
    for b, name in enumerate(level_of):
        served[name] += traffic[b]
    bandwidth = {level.name: level.bandwidth for level in hierarchy.levels}
    seconds = sum(n / bandwidth[name] for name, n in served.items())
    return LevelPlan(level_of, served, external + sum(traffic), seconds)
