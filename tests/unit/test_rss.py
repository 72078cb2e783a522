"""RSS by mapping (pure logic on handmade mapping tables and events): growth per mapping, first touch, what the C
heap explains, allocator retention, GPU memory outside PyTorch, and the `leak?` finding."""

from pathlib import Path

import pytest

from tracer.analysis.rss import (LISTED_GROWTH, Mapping, Owner, Table, account, first_touch_rows, gpu_outside_allocator,
                                 gpu_retention, grown, mapping_tables, retention, rss_analysis, rss_finding)
from tracer.analysis.verdicts import SUSPECTED, Thresholds
from tracer.capture import Capture, check_event
from tracer.errors import UsageError
from tracer.output.gate.evaluate import evaluate
from tracer.record.active_malloc import allocator_name, malloc_library
from tracer.record.smaps import ANON, ARENA, FILE, HEAP, THREAD_STACK, classify

MiB = 2**20
TH = Thresholds()


def table(mark, index, *maps):
    return Table(mark, index, {m.start: m for m in maps})


def test_classify_kinds_from_smaps_rows():
    arena = 0x7F0000000000  # 64 MiB-aligned
    rows = [(0x1000, 0x5000, "rw-p", b"[heap]", 8192),
            (arena, arena + 8 * MiB, "rw-p", b"", 4 * MiB), (arena + 8 * MiB, arena + 64 * MiB, "---p", b"", 0),
            (0x7F1000000000, 0x7F1000001000, "---p", b"", 0),
            (0x7F1000001000, 0x7F1000801000, "rw-p", b"", 64 * 1024),
            (0x7F2000000000, 0x7F2000100000, "rw-p", b"", MiB),
            (0x7F3000000000, 0x7F3000100000, "r-xp", b"/usr/lib/libc.so.6", 0),
            (0x7F3000100000, 0x7F3000200000, "r--p", b"/usr/lib/libc.so.6", 4096)]
    kinds = {s: v[1] for s, v in classify(rows).items()}
    assert kinds == {0x1000: HEAP, arena: ARENA, 0x7F1000001000: THREAD_STACK, 0x7F2000000000: ANON,
                     0x7F3000100000: FILE}  # reserved ranges and non-resident file pages are left out


def test_merged_anonymous_mapping_is_matched_by_range():
    """The kernel merges an adjacent new anonymous mapping into an old one: the start moves down, the growth is
    only the new pages."""
    base = table("baseline", None, Mapping(0x20000, 0x30000, ANON, "", 16 * 4096))
    now = table("round", 1, Mapping(0x10000, 0x30000, ANON, "", 32 * 4096))
    (m, g), = grown(base, now)
    assert m.start == 0x10000 and g == 16 * 4096


def test_heap_growth_covered_by_malloc_in_use_is_explained():
    base = table("baseline", None, Mapping(0x1000, 0x100000, HEAP, "[heap]", 100 * MiB))
    now = table("round", 1, Mapping(0x1000, 0x200000, HEAP, "[heap]", 110 * MiB))
    a = account(base, now, heap_growth=10 * MiB, owners=[], noise=LISTED_GROWTH)
    assert a.growth == 10 * MiB and a.heap_in_use == 10 * MiB and a.unexplained == 0
    b = account(base, now, heap_growth=2 * MiB, owners=[], noise=LISTED_GROWTH)
    assert b.unexplained == 8 * MiB  # freed memory the heap keeps (or malloc nobody traced): before the trim


def test_trimmed_heap_does_not_hide_anonymous_growth():
    base = table("baseline", None, Mapping(0x1000, 0x100000, HEAP, "[heap]", 100 * MiB))
    now = table("drained", None, Mapping(0x1000, 0x100000, HEAP, "[heap]", 70 * MiB),
                Mapping(0x7F0000000000, 0x7F0003000000, ANON, "", 48 * MiB))
    a = account(base, now, heap_growth=0, owners=[], noise=LISTED_GROWTH)
    assert a.unexplained == 48 * MiB
    assert a.grown[0]["range"] == "7f0000000000-7f0003000000" and a.grown[0]["grew"] == 48 * MiB


def test_first_touch_is_bounded_by_the_buffer_and_explained():
    staging = Owner("plugin.staging", "ndarray", 0x7F0000000010, 256 * MiB, before_baseline=True)
    m = lambda rss: Mapping(0x7F0000000000, 0x7F0010001000, ANON, "", rss)  # noqa: E731
    base = table("baseline", None, m(24 * MiB))
    rounds = [table("round", k, m((24 + 24 * k) * MiB)) for k in range(1, 7)]
    a = account(base, rounds[-1], heap_growth=0, owners=[staging], noise=LISTED_GROWTH)
    assert a.first_touch == 144 * MiB and a.unexplained == 0 and "first touch of plugin.staging" in a.grown[0]["owner"]
    (row,) = first_touch_rows(base, rounds, rounds[-1], [staging])
    assert row["bound"] == 256 * MiB and row["resident_per_round"][-1] == 168 * MiB
    assert row["touched_fraction"] == round(168 / 256, 3) and row["flattening"] is False
    flat = [table("round", k, m(min(24 + 24 * k, 72) * MiB)) for k in range(1, 7)]
    assert first_touch_rows(base, flat, flat[-1], [staging])[0]["flattening"] is True


def accounting(unexplained_series, end):
    base = table("baseline", None)
    make = lambda mark, i, u: account(  # noqa: E731
        base, table(mark, i, Mapping(0x7F0000000000, 0x7F1000000000, ANON, "", u)), 0, [], LISTED_GROWTH)
    return [make("round", i, u) for i, u in enumerate(unexplained_series)], make("drained", None, end)


def test_steady_unexplained_growth_after_drain_and_trim_is_a_leak_suspect():
    rounds, end = accounting([8 * MiB * k for k in range(1, 7)], 48 * MiB)
    f = rss_finding(rounds, end, TH)
    assert f.verdict == SUSPECTED and f.domain == "rss" and f.bytes == 48 * MiB
    assert f.details["mappings"][0]["kind"] == ANON and "8.00 MiB/round" in f.details["reason"]
    again = rss_finding(*accounting([8 * MiB * k for k in range(1, 7)], 48 * MiB), TH)
    assert again.id == f.id and f.id.startswith("r")  # stable: a baseline can accept it


def test_growth_the_trim_returns_or_that_does_not_keep_growing_is_no_finding():
    assert rss_finding(*accounting([8 * MiB * k for k in range(1, 7)], 0), TH) is None  # retention
    assert rss_finding(*accounting([40 * MiB] * 6, 40 * MiB), TH) is None  # one jump, then flat
    assert rss_finding(*accounting([0] * 6, 0), TH) is None  # flat RSS


def events_capture(events, manifest=None) -> Capture:
    return Capture(Path("."), manifest or {"status": "complete"}, events)


def test_mapping_tables_rebuild_each_mark_from_changed_rows():
    events = [{"type": "smaps", "mark": "baseline", "index": None, "full": True, "gone": [],
               "rows": [[1, 2, HEAP, "[heap]", 10], [5, 6, ANON, "", 3]]},
              {"type": "smaps", "mark": "round", "index": 1, "full": False, "gone": [5],
               "rows": [[1, 2, HEAP, "[heap]", 20]]}]
    base, r1 = mapping_tables(events_capture(events))
    assert set(base.maps) == {1, 5} and set(r1.maps) == {1} and r1.maps[1].rss == 20


def test_retention_from_the_trim_event_with_remedies():
    malloc = lambda free: {"arena_bytes": 300 * MiB, "in_use_bytes": 200 * MiB, "free_bytes": free,  # noqa: E731
                           "mmapped_bytes": 0, "trimmable_bytes": 0}
    e = {"type": "allocator_trim", "trimmed": True, "before": {"rss_bytes": 900 * MiB, "malloc": malloc(60 * MiB)},
         "after": {"rss_bytes": 860 * MiB, "malloc": malloc(20 * MiB)}}
    r = retention(events_capture([e]))
    assert r["trim_returned"] == 40 * MiB and r["retained"] and any("MALLOC_ARENA_MAX" in x for x in r["remedies"])
    e["after"]["rss_bytes"] = 900 * MiB
    e["before"]["malloc"] = malloc(0)
    assert retention(events_capture([e]))["retained"] is False


def test_gpu_memory_outside_the_allocator_and_reserved_free_segments():
    rows = [{"index": 1, "gpu_used_bytes": 2000 * MiB, "gpu_reserved_bytes": 1500 * MiB,
             "gpu_allocated_bytes": 1200 * MiB},
            {"index": 2, "gpu_used_bytes": 2100 * MiB, "gpu_reserved_bytes": 1500 * MiB,
             "gpu_allocated_bytes": 1200 * MiB},
            {"index": 3, "rss_bytes": 1}]
    assert gpu_outside_allocator(rows) == [{"index": 1, "outside_allocator": 500 * MiB, "reserved_free": 300 * MiB},
                                           {"index": 2, "outside_allocator": 600 * MiB, "reserved_free": 300 * MiB}]
    g = gpu_retention({"before": {"reserved_bytes": 1500 * MiB, "allocated_bytes": 1200 * MiB},
                       "after": {"reserved_bytes": 1250 * MiB, "allocated_bytes": 1200 * MiB, "used_bytes": 1}})
    assert g["empty_cache_returned"] == 250 * MiB and g["free_in_segments_before"] == 300 * MiB


def rss_report(per_round_bytes, baseline_ids=()):
    f = {"id": "r0123456789abcde", "domain": "rss", "verdict": SUSPECTED, "bytes": per_round_bytes[-1],
         "per_round_bytes": per_round_bytes, "stack": [], "component": "native memory"}
    rounds = [{"index": i, "phase": "measured"} for i in range(len(per_round_bytes))]
    return {"schema": "tracer.report/1", "verdict": SUSPECTED, "status": "complete", "findings": [f],
            "rounds": rounds}


def test_gate_fails_on_an_rss_suspect_unless_under_its_limit_or_accepted():
    report = rss_report([8 * MiB * k for k in range(1, 7)])
    assert evaluate(report).exit_code == 1
    assert evaluate(report, max_rss_per_round=16 * MiB).exit_code == 0
    assert evaluate(report, max_rss_per_round=1 * MiB).exit_code == 1
    assert evaluate(report, max_leak_per_round=16 * MiB).exit_code == 0  # the leak limit is the default
    baseline = {"schema": "tracer.baseline/1", "accepted": [{"id": "r0123456789abcde", "reason": "known"}]}
    assert evaluate(report, baseline).exit_code == 0


def test_rss_analysis_end_to_end_on_events():
    heap = lambda rss: [1, 2, HEAP, "[heap]", rss]  # noqa: E731
    events = [{"type": "mark", "name": "baseline", "index": None, "heap_bytes": 100},
              {"type": "smaps", "mark": "baseline", "index": None, "full": True, "rows": [heap(50 * MiB)], "gone": []}]
    for k in range(1, 5):
        events += [{"type": "mark", "name": "round", "index": k, "heap_bytes": 100},
                   {"type": "smaps", "mark": "round", "index": k, "rows": [[0x7F0000000000 - k * 8 * MiB,
                                                                           0x7F0000000000, ANON, "", k * 8 * MiB]],
                    "gone": [0x7F0000000000 - (k - 1) * 8 * MiB] if k > 1 else []}]
    events += [{"type": "mark", "name": "drained", "index": None, "heap_bytes": 100},
               {"type": "smaps", "mark": "drained", "index": None, "rows": [], "gone": []}]
    section, finding = rss_analysis(events_capture(events), TH)
    assert [a["unexplained"] for a in section["per_round"]] == [8 * MiB * k for k in range(1, 5)]
    assert finding is not None and finding.bytes == 32 * MiB
    assert finding.details["mappings"][0]["range"] == f"{0x7F0000000000 - 32 * MiB:x}-7f0000000000"


def test_retention_under_jemalloc_names_its_release_call_and_no_glibc_remedy():
    state = lambda resident: {"allocator": "jemalloc", "in_use_bytes": 200 * MiB,  # noqa: E731
                              "active_bytes": 210 * MiB, "resident_bytes": resident, "mapped_bytes": 400 * MiB}
    e = {"type": "allocator_trim", "trimmed": True, "before": {"rss_bytes": 900 * MiB, "malloc": state(300 * MiB)},
         "after": {"rss_bytes": 880 * MiB, "malloc": state(280 * MiB)}}
    r = retention(events_capture([e]))
    assert (r["allocator"], r["release_call"]) == ("jemalloc", "mallctl arena.<all>.purge")
    assert r["trim_returned"] == 20 * MiB and r["retained"] and r["remedies"]
    assert not any("MALLOC_ARENA_MAX" in x or "MALLOC_TRIM" in x for x in r["remedies"])
    e["before"]["malloc"] = e["after"]["malloc"] = {"allocator": "libmymalloc.so"}
    r = retention(events_capture([e]))
    assert r["release_call"] is None and r["remedies"] == []
    del e["before"]["malloc"]  # a capture from before the allocator was recorded: glibc
    assert retention(events_capture([e]))["release_call"] == "malloc_trim(0)"


def test_allocator_named_by_the_library_defining_malloc():
    assert allocator_name("/lib/x86_64-linux-gnu/libc.so.6") == "glibc"
    assert allocator_name("/usr/lib/libjemalloc.so.2") == "jemalloc"
    assert allocator_name("/lib/libtcmalloc_minimal.so.4") == "tcmalloc"
    assert allocator_name("/opt/libmimalloc.so.2") == "libmimalloc.so.2" and allocator_name(None) == "unknown"
    assert malloc_library() is not None and allocator_name(malloc_library()) == "glibc"  # this test process


def test_allocator_trim_events_name_their_allocator_in_text_and_nothing_else():
    ok = {"allocator": "jemalloc", "in_use_bytes": 5, "retained_bytes": None}
    row = lambda malloc: {"type": "allocator_trim", "before": {"rss_bytes": 1, "malloc": malloc},  # noqa: E731
                          "after": {"rss_bytes": 1, "malloc": malloc}}
    assert check_event(row(ok), "here")["before"]["malloc"]["allocator"] == "jemalloc"
    for bad in ({"allocator": 3}, {"allocator": "glibc", "free_bytes": "many"}, {"in_use_bytes": -1}):
        with pytest.raises(UsageError):
            check_event(row(bad), "here")
