"""Arena planning: offsets for buffers with known lifetimes, by several planners, and a checker.

The problem is dynamic storage allocation: every buffer has a size and a closed
interval of program steps, and two buffers whose intervals meet must not share a
byte. The arena is the highest byte any buffer reaches; the lower bound is the
most bytes live at one step, which no placement can beat. The planners here are
those of production compilers, each a placement order fed to one best-fit
engine (the gaps left between buffers that meet in time are reused), plus an
exact search for small instances:

  greedy-by-size      largest first (TFLite's GreedyBySize, XLA's heap simulator
                      with spatial order)
  greedy-by-lifetime  longest-lived first (XLA's temporal order)
  greedy-by-breadth   the busiest step first, its buffers largest first (TFLite)
  linear-scan         program order, as an allocator would see them at run time
  local-search        the best greedy order, perturbed by random swaps (seeded, a
                      fixed number of tries) while the arena does not grow: one
                      swap often closes the last gap to the lower bound
  exact               depth-first search over canonical placements (MiniMalloc):
                      buffers are placed in non-decreasing offset order, each at
                      its lowest fit; some order of that kind reaches every
                      optimum, so a finished search proves the result optimal.

This module is plain Python on plain data: no IR, so tests can throw random
interval sets at it.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ALIGNMENT = 64
"""Every offset and size is a multiple of this: a cache line, and an AVX-512 vector."""


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class Buffer:
    """A buffer to place: `size` bytes (aligned) live from step `start` to `end` inclusive."""

    name: str
    size: int
    start: int
    end: int

    def meets(self, other: Buffer) -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class Placement:
    """Offsets (one per buffer, in the problem's order), the arena they need, and who made them."""

    algorithm: str
    offsets: tuple[int, ...]
    arena: int
    optimal: bool = False
    """True when the arena is proven minimal (it meets the lower bound, or the exact search finished)."""


class OverlapError(AssertionError):
    """A plan puts two buffers that are live at the same step on the same bytes."""


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """The most bytes live at one step: no placement needs less arena."""
    events = sorted([(b.start, b.size) for b in buffers] + [(b.end + 1, -b.size) for b in buffers])
    live = peak = 0
    for _, delta in events:  # at one step, ends (negative) sort before starts
        live += delta
        peak = max(peak, live)
    return peak


def conflicts(buffers: Sequence[Buffer]) -> list[list[int]]:
    """For each buffer, the buffers whose lifetimes meet it (a sweep over start steps)."""
    order = sorted(range(len(buffers)), key=lambda i: buffers[i].start)
    adjacent: list[list[int]] = [[] for _ in buffers]
    active: list[int] = []
    for i in order:
        start = buffers[i].start
        active = [j for j in active if buffers[j].end >= start]
        for j in active:
            adjacent[i].append(j)
            adjacent[j].append(i)
        active.append(i)
    return adjacent


def check_plan(buffers: Sequence[Buffer], offsets: Sequence[int], arena: int | None = None) -> None:
    """Prove a plan sound: aligned, inside the arena, and no two live buffers share a byte."""
    if len(offsets) != len(buffers):
        raise OverlapError(f"{len(offsets)} offsets for {len(buffers)} buffers")
    for b, off in zip(buffers, offsets):
        if off < 0 or off % ALIGNMENT:
            raise OverlapError(f"buffer '{b.name}' at offset {off}: negative or not {ALIGNMENT}-byte aligned")
        if arena is not None and off + b.size > arena:
            raise OverlapError(f"buffer '{b.name}' ends at {off + b.size}, past the arena of {arena} bytes")
    for i, adjacent in enumerate(conflicts(buffers)):
        lo, hi = offsets[i], offsets[i] + buffers[i].size
        for j in adjacent:
            if j > i and offsets[j] < hi and lo < offsets[j] + buffers[j].size:
                a, b = buffers[i], buffers[j]
                raise OverlapError(
                    f"buffers '{a.name}' [{lo}, {hi}) steps {a.start}..{a.end} and '{b.name}' "
                    f"[{offsets[j]}, {offsets[j] + b.size}) steps {b.start}..{b.end} overlap"
                )


def _fit(size: int, spans: list[tuple[int, int]], best_fit: bool) -> int:
    """The offset for `size` bytes among occupied `spans`: the tightest gap (or the lowest), else the top."""
    spans.sort()
    top = 0
    best, best_gap = -1, 0
    for lo, hi in spans:
        gap = lo - top
        if gap >= size:
            if not best_fit:
                return top
            if best < 0 or gap < best_gap:
                best, best_gap = top, gap
        top = max(top, hi)
    return best if best >= 0 else top


def place_in_order(
    buffers: Sequence[Buffer], order: Sequence[int], adjacent: list[list[int]], best_fit: bool = True
) -> list[int]:
    """Place buffers one by one in `order`, each in a gap left by those already placed that meet it."""
    offsets = [-1] * len(buffers)
    for i in order:
        spans = [(offsets[j], offsets[j] + buffers[j].size) for j in adjacent[i] if offsets[j] >= 0]
        offsets[i] = _fit(buffers[i].size, spans, best_fit)
    return offsets


def _by_breadth(buffers: Sequence[Buffer]) -> list[int]:
    """TFLite's order: steps by the bytes live there, busiest first; at each, its buffers largest first."""
    steps = sorted({b.start for b in buffers})  # the live set only grows at a start
    live: list[list[int]] = [[] for _ in steps]
    for i, b in enumerate(buffers):
        for k in range(bisect_left(steps, b.start), bisect_right(steps, b.end)):
            live[k].append(i)
    seen: set[int] = set()
    order: list[int] = []
    for k in sorted(range(len(steps)), key=lambda k: (-sum(buffers[i].size for i in live[k]), k)):
        for i in sorted(live[k], key=lambda i: (-buffers[i].size, i)):
            if i not in seen:
                seen.add(i)
                order.append(i)
    return order


ORDERS: dict[str, Callable[[Sequence[Buffer]], list[int]]] = {
    "greedy-by-size": lambda bs: sorted(range(len(bs)), key=lambda i: (-bs[i].size, bs[i].start - bs[i].end, bs[i].start, i)),
    "greedy-by-lifetime": lambda bs: sorted(range(len(bs)), key=lambda i: (bs[i].start - bs[i].end, -bs[i].size, bs[i].start, i)),
    "greedy-by-breadth": _by_breadth,
    "linear-scan": lambda bs: sorted(range(len(bs)), key=lambda i: (bs[i].start, -bs[i].size, i)),
}
"""The greedy planners: each is the order in which the best-fit engine places buffers."""


def greedy(buffers: Sequence[Buffer], algorithm: str, adjacent: list[list[int]] | None = None) -> Placement:
    """Plan with one greedy planner of ORDERS."""
    adjacent = conflicts(buffers) if adjacent is None else adjacent
    offsets = place_in_order(buffers, ORDERS[algorithm](buffers), adjacent)
    return Placement(algorithm, tuple(offsets), max((o + b.size for o, b in zip(offsets, buffers)), default=0))


@dataclass
class _Search:
    """State of the exact search: placed offsets, the best arena so far, and the budget."""

    buffers: Sequence[Buffer]
    adjacent: list[list[int]]
    best: int
    floor: int
    node_budget: int
    deadline: float
    offsets: list[int] = field(default_factory=list)
    best_offsets: list[int] | None = None
    nodes: int = 0
    exhausted: bool = False

    def run(self) -> None:
        n = len(self.buffers)
        self.offsets = [-1] * n
        # Identical buffers are interchangeable: place them in index order only.
        first_of: dict[tuple[int, int, int], int] = {}
        self.twin = [first_of.setdefault((b.size, b.start, b.end), i) for i, b in enumerate(self.buffers)]
        self.prev_twin = [-1] * n
        last: dict[int, int] = {}
        for i, t in enumerate(self.twin):
            self.prev_twin[i] = last.get(t, -1)
            last[t] = i
        # Bytes of unplaced buffers live at each start step: the bound's main term.
        self.points = sorted({b.start for b in self.buffers})
        index = {t: k for k, t in enumerate(self.points)}
        self.covers = [[index[t] for t in self.points if b.start <= t <= b.end] for b in self.buffers]
        self.unplaced = [0] * len(self.points)
        for i in range(n):
            for k in self.covers[i]:
                self.unplaced[k] += self.buffers[i].size
        self._dfs(set(range(n)), -1, -1, 0)

    def _first_fit(self, i: int) -> int:
        spans = [(self.offsets[j], self.offsets[j] + self.buffers[j].size) for j in self.adjacent[i] if self.offsets[j] >= 0]
        return _fit(self.buffers[i].size, spans, best_fit=False)

    def _dfs(self, todo: set[int], last_off: int, last_i: int, top: int) -> None:
        if self.best <= self.floor:
            return
        self.nodes += 1
        if self.nodes > self.node_budget or (self.nodes % 256 == 0 and time.perf_counter() > self.deadline):
            self.exhausted = True
            return
        if not todo:
            if top < self.best:
                self.best, self.best_offsets = top, list(self.offsets)
            return
        fits = {i: self._first_fit(i) for i in todo}
        # A gap wholly below the last offset stays free (later buffers go higher),
        # so a buffer that fits there can never be placed in canonical order.
        if any(fits[i] + self.buffers[i].size <= last_off for i in todo):
            return
        bound = max(top, max(max(fits[i], last_off) + self.buffers[i].size for i in todo))
        # At each step, the unplaced buffers stack above the last offset, beside
        # whatever placed buffers reach above it there.
        level = max(last_off, 0)
        above = [0] * len(self.points)
        for j, off in enumerate(self.offsets):
            reach = off + self.buffers[j].size - level
            if off >= 0 and reach > 0:
                part = min(reach, self.buffers[j].size)
                for k in self.covers[j]:
                    above[k] += part
        bound = max(bound, level + max(u + a for u, a in zip(self.unplaced, above) if u) if any(self.unplaced) else 0)
        if bound >= self.best:
            return
        candidates = [
            i for i in todo
            if (fits[i], i) > (last_off, last_i) and (self.prev_twin[i] < 0 or self.offsets[self.prev_twin[i]] >= 0)
        ]
        candidates.sort(key=lambda i: (fits[i], -self.buffers[i].size, i))
        for i in candidates:
            off, size = fits[i], self.buffers[i].size
            if off + size >= self.best:
                continue
            self.offsets[i] = off
            for k in self.covers[i]:
                self.unplaced[k] -= size
            todo.discard(i)
            self._dfs(todo, off, i, max(top, off + size))
            todo.add(i)
            for k in self.covers[i]:
                self.unplaced[k] += size
            self.offsets[i] = -1
            if self.exhausted or self.best <= self.floor:
                return


def local_search(
    buffers: Sequence[Buffer], start: Placement, adjacent: list[list[int]], floor: int, tries: int | None = None
) -> Placement:
    """Swap buffers in the winning greedy order at random, keeping changes that do not grow the arena.

    Deterministic (a fixed seed and number of tries, fewer for large instances),
    so artifacts stay byte-identical; stops at the lower bound.
    """
    n = len(buffers)
    if n < 2 or start.arena <= floor:
        return start
    tries = max(50, min(2_000, 200_000 // n)) if tries is None else tries
    rng = random.Random(n)
    order = ORDERS[start.algorithm](buffers) if start.algorithm in ORDERS else sorted(range(n), key=lambda i: start.offsets[i])
    best, best_offsets = start.arena, list(start.offsets)
    for _ in range(tries):
        trial = list(order)
        for _ in range(rng.randrange(1, 4)):
            i, j = rng.randrange(n), rng.randrange(n)
            trial[i], trial[j] = trial[j], trial[i]
        for best_fit in (True, False):
            offsets = place_in_order(buffers, trial, adjacent, best_fit)
            arena = max(o + b.size for o, b in zip(offsets, buffers))
            if arena <= best:
                improved = arena < best
                order, best, best_offsets = trial, arena, offsets
                if improved:
                    break
        if best <= floor:
            break
    if best >= start.arena:
        return start
    return Placement("local-search", tuple(best_offsets), best, best <= floor)


def exact(
    buffers: Sequence[Buffer],
    upper: Placement | None = None,
    node_budget: int = 20_000,
    time_budget: float | None = None,
    adjacent: list[list[int]] | None = None,
) -> Placement:
    """Search canonical placements depth-first for an arena below `upper`'s.

    Returns the best placement found (`upper` itself when nothing beats it),
    marked optimal when the search finished within its budget of nodes (and of
    time, if given: a time limit makes the result depend on the machine's load).
    """
    adjacent = conflicts(buffers) if adjacent is None else adjacent
    floor = lower_bound(buffers)
    best = upper.arena if upper is not None else sum(b.size for b in buffers) + ALIGNMENT
    deadline = math.inf if time_budget is None else time.perf_counter() + time_budget
    search = _Search(buffers, adjacent, best, floor, node_budget, deadline)
    search.run()
    proved = not search.exhausted
    if search.best_offsets is not None:
        return Placement("exact", tuple(search.best_offsets), search.best, proved or search.best <= floor)
    assert upper is not None, "the search always finds a placement without an upper bound"
    return Placement(upper.algorithm, upper.offsets, upper.arena, upper.optimal or proved)


@dataclass(frozen=True)
class PlanResult:
    """Every planner's placement, the winner, and the lower bound they are judged by."""

    best: Placement
    results: dict[str, Placement]
    lower_bound: int
    exact_ran: bool


def plan(
    buffers: Sequence[Buffer],
    algorithms: Sequence[str] | None = None,
    exact_limit: int = 64,
    node_budget: int = 20_000,
    time_budget: float | None = None,
) -> PlanResult:
    """Run the greedy planners, local search, then the exact search on small instances; keep the smallest arena.

    Ties go to the planner listed first (greedy-by-size), so results are stable.
    """
    names = list(ORDERS) if algorithms is None else [a for a in algorithms if a in ORDERS]
    adjacent = conflicts(buffers)
    floor = lower_bound(buffers)
    results = {name: greedy(buffers, name, adjacent) for name in names}
    best = min(results.values(), key=lambda p: p.arena, default=None)
    if best is not None and best.arena <= floor:
        best = Placement(best.algorithm, best.offsets, best.arena, True)
    if best is not None and (algorithms is None or "local-search" in algorithms) and best.arena > floor:
        results["local-search"] = best = local_search(buffers, best, adjacent, floor)
    want_exact = algorithms is None or "exact" in algorithms
    ran = want_exact and len(buffers) <= exact_limit and (best is None or best.arena > floor)
    if ran:
        found = exact(buffers, best, node_budget, time_budget, adjacent)
        results["exact"] = found
        best = found
    assert best is not None, "no planner given"
    check_plan(buffers, best.offsets, best.arena)
    return PlanResult(best, results, floor, ran)
