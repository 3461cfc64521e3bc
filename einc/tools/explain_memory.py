"""`einc explain MODEL --memory`: the arena plan of a model, as text, JSON and a picture.

It runs the CPU pipeline up to `memplan`, plans @main as the pass would, and
reports the arena against its lower bound (the most bytes live at one step),
every planner's arena, the schedules tried, where the cost model of memory
levels puts each buffer, and writes the plan as an HTML page with an inline SVG
(buffers as rectangles of time x offset, the live-bytes profile beside them).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from xdsl.dialects import func

from einc.passes.memplan import MemoryPlan, plan_function
from einc.passes.memplan.levels import LevelPlan, assign_levels, cpu_hierarchy


def plan_model(model: str, input_shapes: dict[str, Sequence[int]] | None) -> MemoryPlan:
    """Import and lower `model` up to the memory planner, and plan its @main."""
    from einc.frontend.onnx import import_model
    from einc.passes.pipeline import CPU_LOOPS, Pipeline

    imported = import_model(model, input_shapes)
    Pipeline(CPU_LOOPS.split(",memplan")[0]).apply(imported.module)
    main = next(op for op in imported.module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "main")
    return plan_function(main)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n} bytes)"


def report(model: str, memory: MemoryPlan, levels: LevelPlan) -> dict:
    best, live = memory.result.best, memory.liveness
    exact = memory.result.results.get("exact")
    return {
        "model": model,
        "arena_bytes": best.arena,
        "lower_bound_bytes": memory.lower_bound,
        "ratio": round(best.arena / memory.lower_bound, 4) if memory.lower_bound else 1.0,
        "algorithm": best.algorithm,
        "optimal": best.optimal,
        "schedule": memory.schedule,
        "no_reuse_bytes": sum(b.size for b in live.buffers),
        "buffers": len(live.buffers),
        "in_place": len(live.inplace),
        "algorithms": {name: p.arena for name, p in memory.result.results.items() if name != "exact"}
        | ({"exact": exact.arena} if exact is not None else {}),
        "exact_improved": exact is not None and exact.algorithm == "exact",
        "schedules": {name: {"lower_bound_bytes": lb, "arena_bytes": arena} for name, (lb, arena) in memory.schedule_bounds.items()},
        "levels": {"served_bytes": levels.served, "dram_only_bytes": levels.dram_only},
        "plan": [
            {"name": b.name, "offset": off, "size": b.size, "start": b.start, "end": b.end, "level": level}
            for b, off, level in zip(live.buffers, best.offsets, levels.level_of)
        ],
    }


def text(data: dict, picture: str | None) -> str:
    lines = [
        f"memory plan of {data['model']} (@main)",
        f"  arena           {_mib(data['arena_bytes'])}",
        f"  lower bound     {_mib(data['lower_bound_bytes'])}: the most bytes live at one step",
        f"  ratio           {data['ratio']:.3f}{' (optimal)' if data['optimal'] else ''}",
        f"  algorithm       {data['algorithm']}, schedule {data['schedule']}",
        (
            f"  buffers         {data['buffers']} in the arena, {data['in_place']} outputs written in place; "
            f"{_mib(data['no_reuse_bytes'])} without reuse"
        ),
        "  planners        " + ", ".join(f"{k} {v}" for k, v in data["algorithms"].items()),
        "  schedules       " + ", ".join(f"{k} {v['arena_bytes']} (bound {v['lower_bound_bytes']})" for k, v in data["schedules"].items()),
        (
            "  memory levels   " + ", ".join(f"{k} serves {v}" for k, v in data["levels"]["served_bytes"].items())
            + f" bytes ({data['levels']['dram_only_bytes']} from DRAM with no caches)"
        ),
    ]
    if picture:
        lines.append(f"  picture         {picture}")
    return "\n".join(lines) + "\n"


def picture(data: dict) -> str:
    """The plan as an HTML page: one SVG rectangle per buffer (x: steps, y: offset), hover for details."""
    plan = data["plan"]
    steps = max((b["end"] for b in plan), default=0) + 1
    arena = max(data["arena_bytes"], 1)
    width, height, left, top = 900, 500, 60, 20
    sx, sy = (width - left - 20) / steps, (height - top - 40) / arena
    shapes = []
    for n, b in enumerate(plan):
        hue = (n * 137) % 360
        x, y = left + b["start"] * sx, top + (arena - b["offset"] - b["size"]) * sy
        w, h = (b["end"] - b["start"] + 1) * sx, max(b["size"] * sy, 1)
        tip = html.escape(f"{b['name']}: {b['size']} bytes at {b['offset']}, steps {b['start']}..{b['end']}, {b['level']}")
        shapes.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="hsl({hue},60%,70%)" '
            f'stroke="#333" stroke-width="0.5"><title>{tip}</title></rect>'
        )
    bound_y = top + (arena - data["lower_bound_bytes"]) * sy
    shapes.append(f'<line x1="{left}" x2="{width - 20}" y1="{bound_y:.1f}" y2="{bound_y:.1f}" stroke="red" stroke-dasharray="4"/>')
    shapes.append(f'<text x="{left}" y="{height - 10}" font-size="12">steps 0..{steps - 1} (x) by arena offset (y, 0 at the bottom); dashed: lower bound</text>')
    shapes.append(f'<text x="4" y="{top + 10}" font-size="11">{arena} B</text>')
    title = html.escape(f"einc memory plan: {data['model']}")
    summary = html.escape(
        f"arena {data['arena_bytes']} bytes, lower bound {data['lower_bound_bytes']} bytes "
        f"(ratio {data['ratio']}), {data['algorithm']}, schedule {data['schedule']}"
    )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">' + "".join(shapes) + "</svg>"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body><h3>{title}</h3><p>{summary}</p>{svg}</body></html>\n"


def explain_memory(model: str, input_shapes: dict[str, Sequence[int]] | None, as_json: bool = False, picture_path: str | None = None) -> str:
    """The report `einc explain --memory` prints; writes the picture (default: MODEL.memory.html here)."""
    memory = plan_model(model, input_shapes)
    data = report(model, memory, assign_levels(cpu_hierarchy(), memory.liveness))
    path = picture_path or f"{Path(model).stem}.memory.html"
    Path(path).write_text(picture(data))
    if as_json:
        return json.dumps({k: v for k, v in data.items() if k != "plan"} | {"picture": path}, indent=1) + "\n"
    return text(data, path)
