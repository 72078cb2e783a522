"""`--rounds auto` (how many rounds are added, the report's note, the capture's check of the event) and the
screen's switch to Python allocator tracing (which counters are suspect): pure logic on handmade data."""

from __future__ import annotations

import pytest

from tracer.analysis.added_rounds import describe_added
from tracer.analysis.verdicts import Thresholds
from tracer.capture import check_event
from tracer.errors import UsageError
from tracer.record.auto_rounds import rounds_to_add
from tracer.record.screen import HEAP, screened_counters

MiB = 2**20
GROUP = {"id": "h1", "component": "user or plugin code", "owner": "get_new_blocks_recording_ids plant.py:17",
         "bytes": 32768, "slope_bytes_per_round": 4096.0, "p_rising": 0.0001}


def added_event(checks: list[dict], added: int) -> dict:
    return {"type": "rounds_added", "time_ms": 1.0, "planned": 8, "added": added, "max_rounds": 32, "checks": checks}


def test_rounds_double_up_to_the_cap():
    assert [rounds_to_add(done, 32) for done in (8, 16, 32)] == [8, 16, 0]
    assert rounds_to_add(8, 12) == 4 and rounds_to_add(12, 12) == 0


def test_note_says_which_groups_were_undecided_and_how_many_rounds_were_added():
    event = added_event([{"after": 8, "undecided": [GROUP], "added": 8},
                         {"after": 16, "undecided": [GROUP], "added": 16},
                         {"after": 32, "undecided": [GROUP], "added": 0}], added=24)
    note = describe_added(check_event(event, "events.jsonl"))
    assert note.startswith("--rounds auto added 24 measured round(s)")
    assert "after 8 rounds 1 group(s) had an undecided trend" in note and "so 8 round(s) were added" in note
    assert "4.0 KiB/round" in note and "get_new_blocks_recording_ids" in note
    assert "the cap of 32 rounds was reached" in note


def test_note_when_nothing_was_undecided():
    note = describe_added(added_event([{"after": 8, "undecided": [], "added": 0}], added=0))
    assert "after 8 measured rounds no group's trend was undecided, so no rounds were added" in note


@pytest.mark.parametrize("bad", [{"planned": -1}, {"checks": "x"}, {"checks": [{"after": 8, "added": 0}]},
                                 {"checks": [{"after": 8, "added": 0, "undecided": [{**GROUP, "bytes": "x"}]}]},
                                 {"checks": [{"after": 8, "added": 0, "undecided": [{**GROUP, "p_rising": None}]}]}])
def test_malformed_rounds_added_event_is_bad_input(bad):
    with pytest.raises(UsageError, match="rounds_added event"):
        check_event({**added_event([], 0), **bad}, "events.jsonl")


def test_only_the_counters_over_the_limit_are_suspect():
    base = {"heap_bytes": 0, "gpu_allocated_bytes": 0}
    rounds = [{"heap_bytes": k * MiB, "gpu_allocated_bytes": 0} for k in range(1, 9)]
    suspects, reasons = screened_counters(base, rounds, {"heap_bytes": 8 * MiB, "gpu_allocated_bytes": 0}, Thresholds())
    assert suspects == [HEAP] and len(reasons) == 2
    suspects, _ = screened_counters(base, rounds, {"heap_bytes": 0, "gpu_allocated_bytes": 64 * MiB}, Thresholds())
    assert suspects == ["gpu_allocated_bytes"]
