"""The interval maths behind per-round live bytes: round boundaries between memray's memory snapshots, and the
bytes of intervals live at each boundary (handmade intervals, no memray file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracer.analysis.analyze import WHOLE_DRAIN, last_drain_step
from tracer.analysis.host import Boundaries, _first_points, _live_at_points, boundaries_from_marks, \
    released_by_step
from tracer.analysis.findings import Finding
from tracer.capture import Capture
from tracer.analysis.stacks import Frame
from tracer.analysis.verdicts import CACHE, COLLECTOR, CYCLE, Thresholds, classify


@dataclass
class Interval:
    allocated_before_snapshot: int
    deallocated_before_snapshot: int | None
    n_bytes: int
    n_allocations: int = 1


def test_each_mark_falls_between_the_snapshots_of_its_pause():
    times = [float(t) for t in range(0, 1000, 10)]  # one memory snapshot every 10 ms
    b = boundaries_from_marks(times, baseline_ms=100.5, round_ms=[300.5, 500.5], drained_ms=700.5, interval_ms=10)
    assert (b.baseline, b.rounds, b.end, b.undrained_end) == (13, [33, 53], 73, 53)


def test_without_a_drain_the_end_is_the_last_round():
    times = [float(t) for t in range(0, 500, 10)]
    b = boundaries_from_marks(times, 100.0, [200.0, 300.0], None, interval_ms=10)
    assert b.end == b.undrained_end == b.rounds[-1]


def test_first_points_indexes_the_next_boundary():
    assert _first_points([2, 5]) == [0, 0, 0, 1, 1, 1]


def test_live_bytes_at_each_boundary():
    points = [10, 20, 30]
    intervals = [
        Interval(5, None, 1000),  # before the baseline: not new
        Interval(12, None, 100),  # new in round 2, never freed
        Interval(12, 25, 10),  # new in round 2, freed in round 3
        Interval(22, 24, 7),  # allocated and freed between boundaries: never seen
        Interval(28, None, 1, 3),  # three allocations in round 3
    ]
    sizes, counts = _live_at_points(intervals, baseline=8, points=points)
    assert sizes == [0, 110, 101]
    assert counts == [0, 2, 4]


def test_nothing_new_and_live_is_none():
    assert _live_at_points([Interval(2, None, 50), Interval(12, 15, 5)], baseline=8, points=[10, 20]) is None


def test_each_drain_step_releases_what_was_live_before_it_minus_after_it():
    b = Boundaries(baseline=0, rounds=[10, 20], end=50, undrained_end=20, steps=(("mm_cache", 30), ("encoder_cache", 40)))
    live = {20: 900, 30: 400, 40: 350, 50: 0}
    assert released_by_step(live, b, COLLECTOR) == {"mm_cache": 500, "encoder_cache": 50, COLLECTOR: 350}


def test_a_drain_without_step_marks_is_not_put_down_to_the_collector():
    """Captures recorded before drains were staged ran every cache reset and the collector in one step, with no
    `drain_step` events: a clean run's processor cache, freed by that drain, once read as `cycle` because the
    collector was named for the whole drain."""
    staged = [{"type": "drain_step", "when": "final", "step": s, "ok": True} for s in ("mm_cache", COLLECTOR)]
    assert last_drain_step(Capture(Path("."), {}, [{"type": "drain", "when": "final", "reset": []}, *staged])) == COLLECTOR
    older = Capture(Path("."), {}, [{"type": "drain", "when": "final", "reset": ["mm_cache", "encoder_cache"]}])
    assert last_drain_step(older) == WHOLE_DRAIN
    b = Boundaries(baseline=0, rounds=[10, 20], end=30, undrained_end=20)
    series = [(i + 1) * 3_540_128 for i in range(8)]  # a clean run's processor cache: the pixel values of each round
    released = released_by_step({20: series[-1], 30: 0}, b, last_drain_step(older))
    assert released == {WHOLE_DRAIN: series[-1]}
    processor_cache = Finding("host", (Frame("patchify", "transformers/image_processing_qwen2_vl.py", 204),), 0, 1,
                              series, details={"undrained_bytes": series[-1], "released_by": released})
    assert classify(processor_cache, Thresholds(), True)[0] == CACHE
    processor_cache.details["released_by"] = {COLLECTOR: series[-1]}  # had the collector alone freed it
    assert classify(processor_cache, Thresholds(), True)[0] == CYCLE
