"""Surviving host allocations from a memray capture, with live bytes at every round boundary.

memray's C++ aggregator turns the capture into per-stack intervals `[allocated_before_snapshot,
deallocated_before_snapshot)` indexed by its periodic memory snapshots; tracer places every round boundary
between two such snapshots, so the intervals say exactly which round an allocation came from and until when
it lived, without a Python loop over millions of raw records.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

from .findings import Finding
from .stacks import Frame, is_observer


@dataclass(frozen=True)
class Boundaries:
    """Memory-snapshot indexes of the marks: an allocation with `allocated_before_snapshot <= b` came before b."""

    baseline: int
    rounds: list[int]
    end: int  # the last round, or the drained mark after it
    undrained_end: int


def boundaries_from_marks(snapshot_times_ms: list[float], baseline_ms: float, round_ms: list[float],
                          drained_ms: float | None) -> Boundaries:
    """Each mark is followed by a pause of several snapshot intervals; the boundary is the count of snapshots
    taken up to a point inside that pause."""
    from .host_trace import MEMORY_INTERVAL_MS

    def index(t_ms: float) -> int:
        return bisect.bisect_right(snapshot_times_ms, t_ms + 2 * MEMORY_INTERVAL_MS)

    rounds = [index(t) for t in round_ms]
    undrained = rounds[-1] if rounds else index(baseline_ms)
    end = index(drained_ms) if drained_ms is not None else undrained
    return Boundaries(index(baseline_ms), rounds, end, undrained)


def _live_new_bytes(intervals, baseline: int, at: int) -> tuple[int, int]:
    """Bytes and count allocated after `baseline` and still live at boundary `at`."""
    size = count = 0
    for iv in intervals:
        start, stop = iv.allocated_before_snapshot, iv.deallocated_before_snapshot
        if baseline < start <= at and (stop is None or stop > at):
            size += iv.n_bytes
            count += iv.n_allocations
    return size, count


def host_findings(path: Path, marks: dict, native: bool = False) -> list[Finding]:
    """Groups of host allocations made after the baseline that are live at the end or at the undrained end.

    `marks`: {"baseline": ms, "rounds": [ms, ...], "drained": ms | None}.
    """
    import memray

    reader = memray.FileReader(str(path))
    times = [s.time for s in reader.get_memory_snapshots()]
    b = boundaries_from_marks(times, marks["baseline"], marks["rounds"], marks.get("drained"))
    out = []
    for record in reader.get_temporal_allocation_records(merge_threads=True):
        intervals = record.intervals
        end_bytes, end_count = _live_new_bytes(intervals, b.baseline, b.end)
        undrained_bytes, undrained_count = _live_new_bytes(intervals, b.baseline, b.undrained_end)
        if not end_bytes and not undrained_bytes:
            continue
        raw = record.hybrid_stack_trace() if native else record.stack_trace()
        stack = tuple(Frame(str(fn), str(file), int(line or 0)) for fn, file, line in raw)
        if is_observer(stack):
            continue
        per_round = [_live_new_bytes(intervals, b.baseline, r)[0] for r in b.rounds]
        out.append(Finding("host", stack, end_bytes, end_count, per_round,
                           details={"undrained_bytes": undrained_bytes, "undrained_count": undrained_count},
                           sources=[(record.stack_id, record.native_stack_id)]))
    reader.close()
    return out
