"""Which traced allocations lie in the mappings that grew: memray's allocations live at the end of the run,
matched to the heap, arena and anonymous ranges by address.

A mapping's growth is pages; an allocation live in it names whose pages they can be. The growth that no live
allocation (and no first-touch buffer) covers is what the allocator kept after free, or memory no hook saw (a
raw mmap system call, a native library's own page allocator).

memray's aggregated readers merge allocations by stack and keep one address per stack, so the live set with
every address comes from one pass over the raw records: an allocation is live from its record until the FREE
(or MUNMAP) of its address. memray records `realloc` as the FREE of the old block and a REALLOC of the new one.
pymalloc's objects (recorded one by one only with `trace_python_allocators`) are skipped: they lie inside
pymalloc's arenas, which memray records as the mmap calls that made them. Tracking stops right after the final
mark, so what is live then is what was live at that mark; memray saw only what was allocated after the baseline.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from pathlib import Path

from ..own_frames import is_observer_stack, is_workload_marker
from .components import Rule, classify_component
from .stacks import Frame, fingerprint, module_key, owner_index

TOP_STACKS = 3
STACK_FRAMES = 4


@dataclass(frozen=True)
class LiveBlock:
    """An allocation live at the end: address, bytes, and the key of its call stack."""

    address: int
    size: int
    stack: object


@dataclass(frozen=True)
class GrownRange:
    """A heap, arena or anonymous mapping that grew over the baseline; `grew` by the end of the drain, before
    malloc_trim(0), `after_trim` at the final mark; `first_touch` the bytes of buffers allocated before the
    baseline that lie in it (they explain growth that memray, started at the baseline, cannot see)."""

    start: int
    end: int
    kind: str
    path: str
    grew: int
    after_trim: int
    first_touch: int = 0


def _unmap(maps: dict[int, tuple[int, object]], address: int, size: int) -> None:
    """Remove [address, address + size) from the live mmap'd ranges (start -> (size, record)), keeping the pieces
    of a range that a partial munmap leaves, each with the record of the mmap that made it."""
    end = address + size
    for start, (length, rec) in [(s, v) for s, v in maps.items() if s < end and address < s + v[0]]:
        del maps[start]
        if start < address:
            maps[start] = (address - start, rec)
        if start + length > end:
            maps[end] = (start + length - end, rec)


def is_tracer_own(stack: tuple[Frame, ...]) -> bool:
    """tracer's own allocation: under its observer marker, or made by its driver outside the workload's round (at
    the final mark; memray leaves out the frames that were already running when tracking started, the marker's
    among them, so such a stack ends in a tracer module)."""
    return is_observer_stack(stack) or bool(stack) and module_key(stack[-1].file).startswith("tracer/") and not any(
        is_workload_marker(f) for f in stack)


def live_blocks(path: Path, native: bool = False) -> tuple[list[LiveBlock], dict[object, tuple[Frame, ...]]]:
    """The allocations live when memray stopped tracking, in address order, with the stack of each key (tracer's
    own allocations left out). The loop keeps each live record as it is and builds stack keys only for the
    survivors: most records are freed again, and the loop is the cost (about 1 us a record)."""
    import memray

    free = {int(memray.AllocatorType.FREE), int(memray.AllocatorType.PYMALLOC_FREE)}
    skipped = {int(memray.AllocatorType.PYMALLOC_MALLOC), int(memray.AllocatorType.PYMALLOC_CALLOC),
               int(memray.AllocatorType.PYMALLOC_REALLOC)}
    mmap, munmap = int(memray.AllocatorType.MMAP), int(memray.AllocatorType.MUNMAP)
    heap: dict[int, object] = {}
    maps: dict[int, tuple[int, object]] = {}
    reader = memray.FileReader(str(path))
    try:
        for rec in reader.get_allocation_records():
            kind = rec.allocator
            if kind in free:
                heap.pop(rec.address, None)
            elif kind in skipped:
                continue
            elif kind == munmap:
                _unmap(maps, rec.address, rec.size)
            elif kind == mmap:
                _unmap(maps, rec.address, rec.size)
                maps[rec.address] = (rec.size, rec)
            else:
                heap[rec.address] = rec
    finally:
        reader.close()

    def key(rec) -> tuple:
        return ((rec.tid, rec.stack_id, rec.native_stack_id, rec.native_segment_generation) if native
                else (rec.tid, rec.stack_id))

    live = [(a, rec.size, rec) for a, rec in heap.items()] + [(a, size, rec) for a, (size, rec) in maps.items()]
    blocks, examples = [], {}
    for a, size, rec in live:
        k = key(rec)
        examples.setdefault(k, rec)
        blocks.append(LiveBlock(a, size, k))
    stacks: dict[object, tuple[Frame, ...]] = {}
    for k, rec in examples.items():
        raw = rec.hybrid_stack_trace() if native else rec.stack_trace()
        stacks[k] = tuple(Frame(str(fn), str(file), int(line or 0)) for fn, file, line in raw)
    observer = {k for k, st in stacks.items() if is_tracer_own(st)}
    return sorted((b for b in blocks if b.stack not in observer), key=lambda b: b.address), stacks


def blocks_in(blocks: list[LiveBlock], starts: list[int], lo: int, hi: int) -> list[tuple[LiveBlock, int]]:
    """(block, bytes of it inside [lo, hi)) for the blocks (sorted by address, `starts` their addresses) that
    overlap the range; a block can start below it (a large buffer spanning mappings)."""
    out = []
    i = bisect.bisect_left(starts, lo)
    if i and blocks[i - 1].address + blocks[i - 1].size > lo:
        i -= 1
    while i < len(blocks) and blocks[i].address < hi:
        b = blocks[i]
        inside = min(b.address + b.size, hi) - max(b.address, lo)
        if inside > 0:
            out.append((b, inside))
        i += 1
    return out


def describe_stack(stack: tuple[Frame, ...], rules: tuple[Rule, ...]) -> dict:
    """Component, owner frame, the host finding id a group of this stack has, and a few frames from the owner
    outwards."""
    owner = owner_index(stack) if stack else 0
    return {"component": classify_component(stack, rules), "owner": stack[owner].short() if stack else None,
            "id": fingerprint("host", stack), "frames": [f.short() for f in stack[owner:owner + STACK_FRAMES]]}


def match_ranges(ranges: list[GrownRange], blocks: list[LiveBlock], stacks: dict[object, tuple[Frame, ...]],
                 rules: tuple[Rule, ...] = ()) -> list[dict]:
    """For each grown range: the live allocations in it (count, bytes, the largest stacks) and the growth they
    do not explain, before the trim and after it."""
    starts = [b.address for b in blocks]
    out = []
    for r in ranges:
        by_stack: dict[object, list[int]] = {}
        for block, inside in blocks_in(blocks, starts, r.start, r.end):
            entry = by_stack.setdefault(block.stack, [0, 0])
            entry[0] += inside
            entry[1] += 1
        allocated = sum(v[0] for v in by_stack.values())
        known = allocated + r.first_touch
        top = sorted(by_stack.items(), key=lambda kv: -kv[1][0])[:TOP_STACKS]
        out.append({"range": f"{r.start:x}-{r.end:x}", "kind": r.kind, "path": r.path, "grew": r.grew,
                    "grew_after_trim": r.after_trim, "allocated_bytes": allocated,
                    "allocations": sum(v[1] for v in by_stack.values()), "first_touch": r.first_touch,
                    "unexplained_before_trim": max(0, r.grew - known),
                    "unexplained": max(0, r.after_trim - known),
                    "stacks": [{"bytes": n, "count": c, **describe_stack(stacks[key], rules)}
                               for key, (n, c) in top]})
    return out


def allocations_in_ranges(path: Path, ranges: list[GrownRange], native: bool = False,
                          rules: tuple[Rule, ...] = ()) -> dict:
    """The report's `rss.allocations`: the grown ranges matched against memray's live allocations."""
    started = time.perf_counter()
    blocks, stacks = live_blocks(path, native)
    return {"live_allocations": len(blocks), "live_bytes": sum(b.size for b in blocks),
            "mappings": match_ranges(ranges, blocks, stacks, rules),
            "seconds": round(time.perf_counter() - started, 2)}
