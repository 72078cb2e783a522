"""Surviving host allocations from a memray capture, with live bytes at every round boundary.

memray's C++ aggregator turns the capture into per-stack intervals `[allocated_before_snapshot,
deallocated_before_snapshot)` indexed by its periodic memory snapshots; tracer places every round boundary
between two such snapshots, so the intervals say exactly which round an allocation came from and until when
it lived, without a Python loop over millions of raw records.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from ..own_frames import is_observer_stack
from .findings import Finding
from .stacks import Frame


@dataclass(frozen=True)
class Boundaries:
    """Memory-snapshot indexes of the marks: an allocation with `allocated_before_snapshot <= b` came before b."""

    baseline: int
    rounds: list[int]
    end: int  # the last round, or the drained mark after it
    undrained_end: int
    steps: tuple[tuple[str, int], ...] = ()  # (drain step, boundary after it), in order; the last one ends at `end`


def boundaries_from_marks(snapshot_times_ms: list[float], baseline_ms: float, round_ms: list[float],
                          drained_ms: float | None, interval_ms: float = 10,
                          steps_ms: list[tuple[str, float]] = ()) -> Boundaries:
    """Each mark is followed by a pause of several snapshot intervals (`interval_ms`, from the stream's
    settings); the boundary is the count of snapshots taken up to a point inside that pause."""

    def index(t_ms: float) -> int:
        return bisect.bisect_right(snapshot_times_ms, t_ms + 2 * interval_ms)

    rounds = [index(t) for t in round_ms]
    undrained = rounds[-1] if rounds else index(baseline_ms)
    end = index(drained_ms) if drained_ms is not None else undrained
    steps = tuple((name, index(t)) for name, t in steps_ms) if drained_ms is not None else ()
    return Boundaries(index(baseline_ms), rounds, end, undrained, steps)


def released_by_step(live: dict[int, int], b: Boundaries, last_step: str) -> dict[str, int]:
    """Bytes each drain step released: live before it minus live after it (`live` by boundary). The marks name
    every step but the last, which ends at the drained mark."""
    if not b.steps and b.end == b.undrained_end:
        return {}
    out, before = {}, b.undrained_end
    for name, after in (*b.steps, (last_step, b.end)):
        out[name] = live[before] - live[after]
        before = after
    return out


def _first_points(points: list[int]) -> list[int]:
    """`first[s]`: index of the first of the sorted `points` at or after snapshot index s, for s up to the last."""
    first, i = [], 0
    for s in range(points[-1] + 1):
        while points[i] < s:
            i += 1
        first.append(i)
    return first


def _live_at_points(intervals, baseline: int, points: list[int],
                    first: list[int] | None = None) -> tuple[list[int], list[int]] | None:
    """Bytes and counts allocated after `baseline` and live at each of the sorted, distinct `points`, or None
    when no such interval is live at any point.

    One pass over the intervals: `[start, stop)` is live at the points from the first one at or after `start` up
    to the last one before `stop`, both looked up in `first` (see `_first_points`), and a difference array sums
    the spans. Most intervals are freed before the first point they could be seen at and cost two lookups.
    """
    if first is None:
        first = _first_points(points)
    last, n = points[-1], len(points)
    diff_bytes = diff_count = None
    for iv in intervals:
        start = iv.allocated_before_snapshot
        if start <= baseline or start > last:
            continue
        lo = first[start]
        stop = iv.deallocated_before_snapshot
        if stop is None or stop > last:
            hi = n
        elif stop <= points[lo]:
            continue
        else:
            hi = first[stop]
        if diff_bytes is None:
            diff_bytes, diff_count = [0] * (n + 1), [0] * (n + 1)
        size, count = iv.n_bytes, iv.n_allocations
        diff_bytes[lo] += size
        diff_bytes[hi] -= size
        diff_count[lo] += count
        diff_count[hi] -= count
    if diff_bytes is None:
        return None
    return list(accumulate(diff_bytes[:n])), list(accumulate(diff_count[:n]))


# memray thins its memory snapshots out to this many by default, which would coarsen the round boundaries of long
# captures (one every 10 ms * stride); keep every one (24 bytes each).
_MAX_MEMORY_RECORDS = 2**31 - 1


def host_findings(path: Path, marks: dict, native: bool = False, interval_ms: float = 10,
                  last_step: str = "gc") -> list[Finding]:
    """Groups of host allocations made after the baseline that are live at the end or at the undrained end.

    `marks`: {"baseline": ms, "rounds": [ms, ...], "drained": ms | None, "drain_steps": [(step, ms), ...]}; each
    group's details say what each drain step released (`released_by`, the collector's step named `last_step`).

    memray's C++ reader builds the per-stack intervals (its constructor's pass over the file and the temporal
    pass are most of the time); Python makes one pass over each stack's intervals for all boundaries at once
    (`_live_at_points`), and resolves a call stack only for groups that survive, once per distinct stack.
    """
    import memray

    reader = memray.FileReader(str(path), max_memory_records=_MAX_MEMORY_RECORDS)
    times = [s.time for s in reader.get_memory_snapshots()]
    b = boundaries_from_marks(times, marks["baseline"], marks["rounds"], marks.get("drained"), interval_ms,
                              marks.get("drain_steps", ()))
    points = sorted({*b.rounds, b.end, b.undrained_end, *(p for _, p in b.steps)})
    at = {p: i for i, p in enumerate(points)}
    i_end, i_undrained, i_rounds = at[b.end], at[b.undrained_end], [at[r] for r in b.rounds]
    first = _first_points(points)
    frames: dict[tuple, Frame] = {}
    stacks: dict[tuple, tuple[tuple[Frame, ...], bool]] = {}
    out = []
    for record in reader.get_temporal_allocation_records(merge_threads=True):
        live = _live_at_points(record.intervals, b.baseline, points, first)
        if live is None:
            continue
        sizes, counts = live
        end_bytes, undrained_bytes = sizes[i_end], sizes[i_undrained]
        if not end_bytes and not undrained_bytes:
            continue
        key = ((record.tid, record.stack_id, record.native_stack_id, record.native_segment_generation) if native
               else (record.tid, record.stack_id))
        known = stacks.get(key)
        if known is None:
            raw = record.hybrid_stack_trace() if native else record.stack_trace()
            stack = []
            for entry in raw:
                frame = frames.get(entry)
                if frame is None:
                    fn, file, line = entry
                    frame = frames[entry] = Frame(str(fn), str(file), int(line or 0))
                stack.append(frame)
            stack = tuple(stack)
            known = stacks[key] = (stack, is_observer_stack(stack))
        stack, observer = known
        if observer:
            continue
        details = {"undrained_bytes": undrained_bytes, "undrained_count": counts[i_undrained]}
        released = released_by_step({p: sizes[at[p]] for p in points}, b, last_step)
        if released:
            details["released_by"] = released
        out.append(Finding("host", stack, end_bytes, counts[i_end], [sizes[i] for i in i_rounds],
                           details=details, sources=[(record.stack_id, record.native_stack_id)]))
    reader.close()
    return out
