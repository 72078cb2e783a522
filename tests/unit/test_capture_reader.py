"""The capture reader on handmade captures: what a traced process writes, what reading it back gives, and the
exact one-line error for each malformed field a stranger's capture may hold."""

from __future__ import annotations

import json
import os
import time

import pytest

from tracer.capture import (MAIN_ROLE, SCHEMA, Capture, CaptureError, CaptureWriter, Stream, check_cycles,
                            check_event, check_holders, check_manifest, check_streams, read_capture)
from tracer.errors import UsageError

W = "events.jsonl:3"
ROUND = {"type": "round", "time_ms": 1.0, "index": 1, "phase": "measured", "seconds": 0.5, "maxrss_bytes": 10}


def message(check, value, where: str = W) -> str:
    with pytest.raises(UsageError) as err:
        check(value, where)
    return str(err.value)


@pytest.mark.parametrize("row, expected", [
    ([], "an event is not a JSON object"),
    ({"type": 3}, "an event without a type"),
    ({"type": "mark", "name": "x"}, "mark event without a finite time_ms"),
    ({"type": "drain"}, "drain event without a finite time_ms"),
    ({"type": "mark", "time_ms": 1, "name": "x", "uss_bytes": -1},
     "mark event has a bad uss_bytes (a byte count from 0 to 2**63 is expected)"),
    ({"type": "round", "time_ms": float("inf")}, "round event without a finite time_ms"),
    ({**ROUND, "rss_bytes": -1}, "round event has a bad rss_bytes (a byte count from 0 to 2**63 is expected)"),
    ({**ROUND, "pinned_host_bytes": 2**63}, "round event has a bad pinned_host_bytes (a byte count from 0 to 2**63 is expected)"),
    ({"type": "drain_step", "time_ms": 1, "step": "gc", "when": "after", "gpu_allocated_bytes": True},
     "drain_step event has a bad gpu_allocated_bytes (a byte count from 0 to 2**63 is expected)"),
    ({"type": "screen_mark", "time_ms": 1, "name": "x", "heap_bytes": 1.5},
     "screen_mark event has a bad heap_bytes (a byte count from 0 to 2**63 is expected)"),
    ({**ROUND, "index": True}, "round event without an integer index and a phase"),
    ({**ROUND, "phase": None}, "round event without an integer index and a phase"),
    ({**ROUND, "seconds": -0.1}, "round event without a finite, non-negative seconds"),
    ({**ROUND, "seconds": None}, "round event without a finite, non-negative seconds"),
    ({**ROUND, "maxrss_bytes": None}, "measured round event without maxrss_bytes"),
    ({"type": "mark", "time_ms": 1, "name": 1}, "mark event without a name, or with an index that is not an integer"),
    ({"type": "screen_mark", "time_ms": 1, "name": "x", "index": "1"},
     "mark event without a name, or with an index that is not an integer"),
    ({"type": "snapshot", "time_ms": 1, "mark": "baseline"}, "snapshot event without a mark and a file"),
    ({"type": "gpu_snapshot", "time_ms": 1, "file": "a"}, "gpu_snapshot event without a mark and a file"),
    ({"type": "snapshot", "time_ms": 1, "mark": "round", "file": "a", "stream": 1},
     "snapshot event whose stream is not text"),
    ({"type": "snapshot", "time_ms": 1, "mark": "round", "file": "a", "index": 2**63},
     "snapshot event with an index that is not an integer"),
    ({"type": "snapshot", "time_ms": 1, "mark": "round", "file": "a", "index": 1.0},
     "snapshot event with an index that is not an integer"),
    ({"type": "drain_step", "time_ms": 1, "step": "gc"}, "drain_step event without a step and a when (text)"),
    ({"type": "drain_step", "time_ms": 1, "when": "after"}, "drain_step event without a step and a when (text)"),
    ({"type": "screen", "time_ms": 1, "suspect": 1, "reasons": []},
     "screen event without suspect (true/false) and reasons (a list of text)"),
    ({"type": "screen", "time_ms": 1, "suspect": True, "reasons": [1]},
     "screen event without suspect (true/false) and reasons (a list of text)"),
    ({"type": "screen", "time_ms": 1, "suspect": True, "reasons": "x"},
     "screen event without suspect (true/false) and reasons (a list of text)"),
    ({"type": "screen", "time_ms": 1, "suspect": False, "reasons": [], "python_allocators": "yes"},
     "screen event whose python_allocators is not true/false"),
])
def test_bad_events_are_named_exactly(row, expected):
    assert message(check_event, row) == f"{W}: {expected}"


@pytest.mark.parametrize("row", [
    ROUND,
    {**ROUND, "phase": "warmup", "maxrss_bytes": None, "seconds": 0, "time_ms": -5},  # only measured rounds need maxrss
    {**ROUND, "rss_bytes": 0, "gpu_used_bytes": 2**63 - 1, "uss_bytes": None},
    {"type": "mark", "time_ms": 1, "name": "round", "index": 3},
    {"type": "mark", "time_ms": 1.5, "name": "baseline"},
    {"type": "snapshot", "time_ms": 1, "mark": "round", "file": "main/gpu/1.pickle.gz", "index": -(2**63) + 1},
    {"type": "gpu_snapshot", "time_ms": 1, "mark": "baseline", "file": "gpu/0.pickle"},
    {"type": "drain", "time_ms": 1},
    {"type": "drain_step", "time_ms": 1, "step": "gc", "when": "after", "rss_bytes": 5},
    {"type": "screen", "time_ms": 1, "suspect": True, "reasons": ["grows"], "python_allocators": True},
    {"type": "from_a_newer_tracer", "anything": [1, {"x": None}]},
])
def test_good_events_come_back_as_they_are(row):
    assert check_event(row, W) is row


@pytest.mark.parametrize("row, expected", [
    ({"type": "smaps", "index": 1}, "smaps event without a mark, or with an index that is not an integer"),
    ({"type": "smaps", "mark": "m", "index": "1"}, "smaps event without a mark, or with an index that is not an integer"),
    ({"type": "smaps", "mark": "m", "rows": [[0, 1, "anon", "", 5, 6]]},
     "smaps rows must be [start, end, kind, path, rss] with byte counts"),
    ({"type": "smaps", "mark": "m", "rows": [[0, 2**64, "anon", "", 5]]},
     "smaps rows must be [start, end, kind, path, rss] with byte counts"),
    ({"type": "smaps", "mark": "m", "rows": [[-1, 1, "anon", "", 5]]},
     "smaps rows must be [start, end, kind, path, rss] with byte counts"),
    ({"type": "smaps", "mark": "m", "rows": [[0, 1, 2, "", 5]]},
     "smaps rows must be [start, end, kind, path, rss] with byte counts"),
    ({"type": "smaps", "mark": "m", "rows": [[0, 1, "anon", None, 5]]},
     "smaps rows must be [start, end, kind, path, rss] with byte counts"),
    ({"type": "smaps", "mark": "m", "rows": [[0, 1, "anon", "", 2**63]]},
     "smaps rows must be [start, end, kind, path, rss] with byte counts"),
    ({"type": "smaps", "mark": "m", "rows": {}}, "smaps rows must be [start, end, kind, path, rss] with byte counts"),
    ({"type": "smaps", "mark": "m", "gone": [-1]}, "smaps event with a bad gone list or seconds"),
    ({"type": "smaps", "mark": "m", "gone": 5}, "smaps event with a bad gone list or seconds"),
    ({"type": "smaps", "mark": "m", "seconds": float("nan")}, "smaps event with a bad gone list or seconds"),
    ({"type": "allocator_trim", "after": {"rss_bytes": 1}}, "allocator_trim event without before.rss_bytes and byte counts"),
    ({"type": "allocator_trim", "before": {"rss_bytes": 1}, "after": {"rss_bytes": 1, "malloc": {"arena": -1}}},
     "allocator_trim event without after.rss_bytes and byte counts"),
    ({"type": "allocator_trim", "before": {"rss_bytes": 1}, "after": {"rss_bytes": 1, "malloc": 3}},
     "allocator_trim event without after.rss_bytes and byte counts"),
    ({"type": "allocator_trim", "before": {"rss_bytes": 1}, "after": {"rss_bytes": 1}, "gpu": {"before": {"x": -1}}},
     "allocator_trim event with a bad gpu part"),
    ({"type": "allocator_trim", "before": {"rss_bytes": 1}, "after": {"rss_bytes": 1}, "gpu": {"before": 1}},
     "allocator_trim event with a bad gpu part"),
    ({"type": "allocator_trim", "before": {"rss_bytes": 1}, "after": {"rss_bytes": 1}, "gpu": []},
     "allocator_trim event with a bad gpu part"),
    ({"type": "rss_owners", "owners": [{"path": "x", "kind": "anon", "address": 1, "nbytes": 2}]},
     "rss_owners event without a list of owners (path, kind, address, nbytes, before_baseline)"),
    ({"type": "rss_owners", "owners": [{"path": "x", "kind": "anon", "address": 2**64, "nbytes": 2,
                                        "before_baseline": False}]},
     "rss_owners event without a list of owners (path, kind, address, nbytes, before_baseline)"),
    ({"type": "rss_owners", "owners": [{"path": "x", "kind": "anon", "address": 1, "nbytes": 2,
                                        "before_baseline": 0}]},
     "rss_owners event without a list of owners (path, kind, address, nbytes, before_baseline)"),
    ({"type": "rss_owners"}, "rss_owners event without a list of owners (path, kind, address, nbytes, before_baseline)"),
    ({"type": "gc_during_rounds", "collections": [1, 2, 3], "collected": [1, 2]},
     "gc_during_rounds event without collected (three counts)"),
    ({"type": "gc_during_rounds", "collections": [1, 2, -3], "collected": [1, 2, 3]},
     "gc_during_rounds event without collections (three counts)"),
    ({"type": "gc_during_rounds", "collections": None, "collected": [1, 2, 3]},
     "gc_during_rounds event without collections (three counts)"),
])
def test_bad_analysis_events_are_named_exactly(row, expected):
    assert message(check_event, row) == f"{W}: {expected}"


GROUP = {"id": "h1", "component": "user code", "owner": None, "bytes": 5, "slope_bytes_per_round": 1.5,
         "p_rising": 0.1}
ADDED = {"type": "rounds_added", "planned": 4, "added": 2, "max_rounds": 8,
         "checks": [{"after": 4, "added": 2, "undecided": [GROUP]}]}


@pytest.mark.parametrize("change", [
    {"planned": -1}, {"added": None}, {"max_rounds": 1.5}, {"checks": {}},
    {"checks": [{"after": -1, "added": 2, "undecided": []}]},
    {"checks": [{"after": 4, "added": "2", "undecided": []}]},
    {"checks": [{"after": 4, "added": 2, "undecided": {}}]},
    {"checks": [{"after": 4, "added": 2, "undecided": [{**GROUP, "id": 1}]}]},
    {"checks": [{"after": 4, "added": 2, "undecided": [{**GROUP, "component": None}]}]},
    {"checks": [{"after": 4, "added": 2, "undecided": [{**GROUP, "owner": 3}]}]},
    {"checks": [{"after": 4, "added": 2, "undecided": [{**GROUP, "bytes": -1}]}]},
    {"checks": [{"after": 4, "added": 2, "undecided": [{**GROUP, "slope_bytes_per_round": None}]}]},
    {"checks": [{"after": 4, "added": 2, "undecided": [{**GROUP, "p_rising": float("nan")}]}]},
    {"checks": [1]},
])
def test_bad_rounds_added_events(change):
    assert message(check_event, {**ADDED, **change}) == (
        f"{W}: rounds_added event without planned, added, max_rounds (counts) and checks (after, added, undecided "
        "groups)")


def test_good_analysis_events_come_back_as_they_are():
    rows = [
        ADDED, {**ADDED, "checks": [{"after": 4, "added": 0, "undecided": [{**GROUP, "owner": "f  a.py:1"}]}]},
        {"type": "smaps", "mark": "baseline", "index": None, "rows": [[0, 2**64 - 1, "anon", "", 0]], "gone": [0],
         "seconds": 2},
        {"type": "smaps", "mark": "round", "index": 2},
        {"type": "allocator_trim", "before": {"rss_bytes": 5, "malloc": {"arena": 1}}, "after": {"rss_bytes": 4},
         "gpu": {"before": {"reserved": 1}, "after": {}}},
        {"type": "rss_owners", "owners": [{"path": "x", "kind": "anon", "address": 2**64 - 1, "nbytes": 2,
                                           "before_baseline": True}]},
        {"type": "rss_owners", "owners": []},
        {"type": "gc_during_rounds", "collections": [0, 0, 0], "collected": [1, 2, 3]},
    ]
    for row in rows:
        assert check_event(row, W) is row


@pytest.mark.parametrize("manifest, expected", [
    ([], "not a tracer capture manifest (a JSON object is expected)"),
    ({"status": 1}, "status is not text"),
    ({"error": 1}, "error is not text"),
    ({"run": []}, "run is not an object"),
    ({"run": {"versions": "1"}}, "run.versions is not an object"),
    ({"run": {"env": []}}, "run.env is not an object"),
    ({"run": {"engine_args": 1}}, "run.engine_args is not an object"),
    ({"run": {"tracing": True}}, "run.tracing is not an object"),
    ({"run": {"model": 1}}, "run.model is not text"),
    ({"run": {"image_size": 224}}, "run.image_size is not text"),
    ({"run": {"command": ["tracer"]}}, "run.command is not text"),
    ({"run": {"rounds": "4"}}, "run.rounds is not a number"),
    ({"run": {"max_rounds": True}}, "run.max_rounds is not a number"),
    ({"run": {"warmup": 2**63}}, "run.warmup is not a number"),
    ({"run": {"seed": float("inf")}}, "run.seed is not a number"),
    ({"run": {"preload": "x.py"}}, "run.preload is not a list"),
    ({"run": {"engine_load_seconds": "3"}}, "run.engine_load_seconds is not a finite number"),
])
def test_bad_manifests_are_named_exactly(manifest, expected):
    assert message(check_manifest, manifest, "manifest.json") == f"manifest.json: {expected}"


def test_a_manifest_needs_none_of_its_fields():
    full = {"status": "complete", "error": None, "run": {"versions": {}, "model": "m", "rounds": 4, "preload": [],
                                                         "engine_load_seconds": 1.5, "words": None}}
    for manifest in ({}, full):
        assert check_manifest(manifest, "m") is manifest


@pytest.mark.parametrize("streams, expected", [
    ({}, "streams is not a list"),
    ([{"role": "main", "backend": "memray"}], "a stream without role, backend and domain (text)"),
    ([["main"]], "a stream without role, backend and domain (text)"),
    ([{"role": "main", "backend": "memray", "domain": "host", "file": 1}],
     "a stream whose file is not text or whose settings are not an object"),
    ([{"role": "main", "backend": "memray", "domain": "host", "settings": [1]}],
     "a stream whose file is not text or whose settings are not an object"),
    ([{"role": "main", "backend": "memray", "domain": "host", "pid": -1}], "a stream whose pid is not a number"),
])
def test_bad_streams_are_named_exactly(streams, expected):
    assert message(check_streams, streams, "manifest.json") == f"manifest.json: {expected}"


def test_streams_are_read_with_their_defaults():
    streams = check_streams([{"role": "main", "backend": "memray", "domain": "host", "file": "main/host.memray",
                              "pid": 12, "settings": {"native_traces": True}},
                             {"role": "engine", "backend": "torch", "domain": "gpu", "settings": None}], "m")
    assert streams == [Stream("main", 12, "memray", "host", "main/host.memray"),
                       Stream("engine", None, "torch", "gpu", None)]
    assert (streams[0].settings, streams[1].settings) == ({"native_traces": True}, {})


@pytest.mark.parametrize("data, expected", [
    ([], "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": {}}, "not a description of reference cycles (cycles with path, counts, types)"),
    ({"types": {"dict": -1}}, "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": 1}]}, "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": "a", "types": {"list": "2"}}]},
     "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": "a", "bytes": -1}]}, "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": "a", "objects": 1.0}]},
     "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": "a", "cycles": None}]},
     "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": "a", "addresses": [2**64]}]},
     "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": "a", "addresses": 5}]},
     "not a description of reference cycles (cycles with path, counts, types)"),
    ({"cycles": [{"path": "a"}], "findings": {"h1": 1}}, "findings must map finding ids to indexes of its cycles"),
    ({"cycles": [{"path": "a"}], "findings": {"h1": -1}}, "findings must map finding ids to indexes of its cycles"),
    ({"cycles": [{"path": "a"}], "findings": {"h1": True}}, "findings must map finding ids to indexes of its cycles"),
    ({"cycles": [], "findings": []}, "findings must map finding ids to indexes of its cycles"),
])
def test_bad_cycles_are_named_exactly(data, expected):
    assert message(check_cycles, data, "cycles.json") == f"cycles.json: {expected}"


def test_good_cycles_and_holders():
    data = {"types": {"dict": 3}, "cycles": [{"path": "a.b", "types": {"list": 2}, "cycles": 1, "objects": 2,
                                               "bytes": 100, "addresses": [0, 2**64 - 1]}], "findings": {"h1": 0}}
    assert check_cycles(data, "c") is data and check_cycles({}, "c") == {}
    holders = {"h1": ["llm.cache", "gc"], "h2": []}
    assert check_holders(holders, "h") is holders
    for bad in ([], {"h1": "llm"}, {"h1": [1]}):
        assert message(check_holders, bad, "holders.json") == (
            "holders.json: not a map of finding id to a list of reference paths")


def write_capture(directory, manifest: dict | None = None, events: list | None = None, **files) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"schema": SCHEMA, "status": "complete", "streams": []} if manifest is None else manifest
    (directory / "manifest.json").write_text(json.dumps(manifest))
    if events is not None:
        (directory / "events.jsonl").write_text("".join(
            (e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    for name, content in files.items():
        (directory / name.replace("__", ".")).write_text(content if isinstance(content, str) else json.dumps(content))


def test_writer_and_reader_round_trip(tmp_path):
    writer = CaptureWriter(tmp_path / "cap", {"run": {"rounds": 2, "model": "tiny"}})
    assert json.loads((tmp_path / "cap" / "manifest.json").read_text())["status"] == "running"
    writer.add_stream(Stream("main", 7, "memray", "host", "main/host.memray", {"native_traces": False}))
    writer.add_stream(Stream("main", 7, "torch", "gpu"))
    assert writer.stream_dir("engine") == tmp_path / "cap" / "engine" and (tmp_path / "cap" / "engine").is_dir()
    row = writer.event("mark", name="baseline", rss_bytes=5)
    assert row["type"] == "mark" and row["name"] == "baseline" and row["time_ms"] > 0
    writer.event("round", index=1, phase="measured", seconds=0.5, maxrss_bytes=9)
    writer.event("mark", name="round", index=1)
    writer.finish("complete", None, rounds_done=1)
    capture = read_capture(tmp_path / "cap")
    assert capture.status == "complete" and capture.manifest["rounds_done"] == 1
    assert capture.manifest["error"] is None and capture.run == {"rounds": 2, "model": "tiny"}
    assert capture.streams == [Stream("main", 7, "memray", "host", "main/host.memray"), Stream("main", 7, "torch", "gpu")]
    assert capture.streams[0].settings == {"native_traces": False}
    assert [e["type"] for e in capture.events] == ["mark", "round", "mark"]
    assert [r["index"] for r in capture.rounds] == [1] and len(capture.marks) == 2
    assert capture.mark("baseline")["rss_bytes"] == 5 and capture.mark("drained") is None
    assert [m["index"] for m in capture.round_marks()] == [1]
    assert capture.roles == ["main"] and not capture.several_processes
    assert [s.domain for s in capture.streams_of("torch")] == ["gpu"] and capture.streams_of("py-spy") == []


def test_several_processes_and_defaults(tmp_path):
    capture = Capture(tmp_path, {}, streams=[Stream("main", 1, "memray", "host"), Stream("engine", 2, "memray", "host"),
                                             Stream("main", 1, "torch", "gpu")])
    assert capture.roles == ["main", "engine"] and capture.several_processes
    assert capture.status == "partial" and capture.run == {}
    assert capture.holders() == {} and capture.holder_misses() == {} and capture.cycles() == {}


def test_reading_a_report_directory_reads_its_capture(tmp_path):
    write_capture(tmp_path / "capture")
    assert read_capture(tmp_path).dir == tmp_path / "capture"


def test_a_running_capture_reads_as_partial(tmp_path):
    write_capture(tmp_path, {"schema": SCHEMA, "status": "running", "streams": []})
    capture = read_capture(tmp_path)
    assert capture.status == "partial"
    assert capture.manifest["error"] == "the traced process ended without finishing the capture"
    write_capture(tmp_path, {"schema": SCHEMA, "status": "running", "error": "killed by signal 9", "streams": []})
    assert read_capture(tmp_path).manifest["error"] == "killed by signal 9"


def test_event_lines_cut_short_are_skipped_and_bad_ones_named(tmp_path):
    write_capture(tmp_path, events=[{"type": "mark", "time_ms": 1, "name": "baseline"}, '{"type": "ma', ""])
    assert [e["name"] for e in read_capture(tmp_path).events] == ["baseline"]
    write_capture(tmp_path, events=[{"type": "mark", "time_ms": 1, "name": "a"}, '{"type": "mark", "time_ms": NaN}'])
    with pytest.raises(CaptureError) as err:
        read_capture(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'events.jsonl'}:2: a value JSON does not allow, an integer too long, "
                              "or nesting too deep")
    write_capture(tmp_path, events=[{"type": "mark", "time_ms": 1, "name": "a"}, {"type": "mark", "time_ms": 1}])
    with pytest.raises(UsageError) as err:
        read_capture(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'events.jsonl'}:2: mark event without a name, or with an index that is "
                              "not an integer")


def test_manifest_errors(tmp_path):
    with pytest.raises(CaptureError) as err:
        read_capture(tmp_path)
    assert str(err.value) == f"{tmp_path}: not a tracer capture (no manifest.json)"
    write_capture(tmp_path, {"schema": "tracer.capture/9"})
    with pytest.raises(CaptureError) as err:
        read_capture(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'manifest.json'}: schema 'tracer.capture/9', expected one of "
                              "tracer.capture/1, tracer.capture/2")
    write_capture(tmp_path, {"schema": SCHEMA, "status": 3})
    with pytest.raises(CaptureError) as err:
        read_capture(tmp_path)
    assert str(err.value) == f"{tmp_path / 'manifest.json'}: status is not text"
    write_capture(tmp_path, {"schema": SCHEMA, "streams": {}})
    with pytest.raises(UsageError) as err:
        read_capture(tmp_path)
    assert str(err.value) == f"{tmp_path / 'manifest.json'}: streams is not a list"


def test_schema_1_capture_is_one_main_process(tmp_path):
    events = [{"type": "gpu_snapshot", "time_ms": 1, "mark": "baseline", "file": "gpu/base.pickle"},
              {"type": "gpu_snapshot", "time_ms": 2, "mark": "round", "index": 2, "file": "gpu/r2.pickle"},
              {"type": "gpu_snapshot", "time_ms": 2, "mark": "round", "index": 10, "file": "gpu/r10.pickle"},
              {"type": "gpu_snapshot", "time_ms": 3, "mark": "drained", "file": "gpu/drained.pickle"}]
    write_capture(tmp_path, {"schema": "tracer.capture/1", "run": {"tracing": {"host": True, "native_traces": 1}}},
                  events)
    (tmp_path / "gpu").mkdir()
    for name in ("base", "r2", "r10", "drained"):
        (tmp_path / "gpu" / f"{name}.pickle").write_bytes(b"x")
    capture = read_capture(tmp_path)
    assert capture.streams == [Stream(MAIN_ROLE, None, "memray", "host", "host.memray"),
                               Stream(MAIN_ROLE, None, "torch", "gpu")]
    assert capture.streams[0].settings == {"native_traces": True, "memory_interval_ms": 10}
    assert {e["type"] for e in capture.events} == {"snapshot"}
    assert capture.snapshot_files() == {"baseline": tmp_path / "gpu/base.pickle", "round:2": tmp_path / "gpu/r2.pickle",
                                        "round:10": tmp_path / "gpu/r10.pickle",
                                        "drained": tmp_path / "gpu/drained.pickle"}
    assert capture.round_snapshot_files() == [tmp_path / "gpu/r2.pickle", tmp_path / "gpu/r10.pickle"]
    assert capture.snapshot_files("engine") == {} and capture.round_snapshot_files("engine") == []


def test_schema_1_streams_from_what_is_there(tmp_path):
    write_capture(tmp_path, {"schema": "tracer.capture/1"})
    assert read_capture(tmp_path).streams == []
    (tmp_path / "host.memray").write_bytes(b"x")
    (streams,) = [read_capture(tmp_path).streams]
    assert streams == [Stream(MAIN_ROLE, None, "memray", "host", "host.memray")]
    assert streams[0].settings == {"native_traces": False, "memory_interval_ms": 10}


def test_snapshots_of_other_processes_by_stream(tmp_path):
    events = [{"type": "snapshot", "time_ms": 1, "mark": "round", "index": 1, "file": "engine/gpu/1.pickle",
               "stream": "engine"},
              {"type": "snapshot", "time_ms": 1, "mark": "round", "index": 1, "file": "main/gpu/1.pickle"}]
    write_capture(tmp_path, events=events)
    for role in ("engine", "main"):
        (tmp_path / role / "gpu").mkdir(parents=True)
        (tmp_path / role / "gpu" / "1.pickle").write_bytes(b"x")
    capture = read_capture(tmp_path)
    assert capture.snapshot_files("engine") == {"round:1": tmp_path / "engine/gpu/1.pickle"}
    assert capture.snapshot_files() == {"round:1": tmp_path / "main/gpu/1.pickle"}


def test_stream_file_only_when_there_and_not_empty(tmp_path):
    write_capture(tmp_path)
    capture = read_capture(tmp_path)
    stream = Stream("main", 1, "memray", "host", "main/host.memray")
    assert capture.stream_file(Stream("main", 1, "torch", "gpu")) is None
    assert capture.stream_file(stream) is None  # not there
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "host.memray").write_bytes(b"")
    assert capture.stream_file(stream) is None  # empty: the process died before writing
    (tmp_path / "main" / "host.memray").write_bytes(b"x")
    assert capture.stream_file(stream) == tmp_path / "main" / "host.memray"
    os.symlink("/etc/hostname", tmp_path / "main" / "out.memray")
    with pytest.raises(UsageError) as err:
        capture.stream_file(Stream("main", 1, "memray", "host", "main/out.memray"))
    assert str(err.value) == (f"{tmp_path / 'main' / 'out.memray'}: the memray file of main is a symlink or not "
                              "inside the capture; refused")


def test_holders_misses_and_cycles_files(tmp_path):
    write_capture(tmp_path, holders__json={"h1": ["llm.x"]}, holder_misses__json={"h2": "no referrer"},
                  cycles__json={"cycles": [{"path": "a"}], "findings": {"h3": 0}})
    capture = read_capture(tmp_path)
    assert capture.holders() == {"h1": ["llm.x"]} and capture.holder_misses() == {"h2": "no referrer"}
    assert capture.cycles()["findings"] == {"h3": 0}
    write_capture(tmp_path, holders__json={"h1": "llm.x"}, holder_misses__json={"h2": 3}, cycles__json={"cycles": 1})
    capture = read_capture(tmp_path)
    for read, expected in ((capture.holders, "holders.json: not a map of finding id to a list of reference paths"),
                           (capture.holder_misses, "holder_misses.json: not a map of finding id to a reason (text)"),
                           (capture.cycles, "cycles.json: not a description of reference cycles (cycles with path, "
                                            "counts, types)")):
        with pytest.raises(UsageError) as err:
            read()
        assert str(err.value) == f"{tmp_path}/{expected}"
    write_capture(tmp_path, holder_misses__json=["h2"], cycles__json="{")
    with pytest.raises(UsageError) as err:
        read_capture(tmp_path).holder_misses()
    assert str(err.value) == f"{tmp_path}/holder_misses.json: not a map of finding id to a reason (text)"
    with pytest.raises(UsageError) as err:
        read_capture(tmp_path).cycles()
    assert str(err.value).startswith(f"{tmp_path}/cycles.json: not valid JSON")


def test_writer_makes_its_folders_stamps_events_and_records_the_end(tmp_path):
    directory = tmp_path / "runs" / "today" / "capture"
    writer = CaptureWriter(directory, {})
    writer.add_stream(Stream("main", 7, "torch", "gpu"))
    writer.add_stream(Stream("main", 7, "memray", "host", "main/host.memray", {"native_traces": True}))
    entries = json.loads((directory / "manifest.json").read_text())["streams"]
    assert entries == [{"role": "main", "pid": 7, "backend": "torch", "domain": "gpu", "file": None},
                       {"role": "main", "pid": 7, "backend": "memray", "domain": "host", "file": "main/host.memray",
                        "settings": {"native_traces": True}}]
    assert writer.stream_dir("main") == writer.stream_dir("main") == directory / "main"  # a second call is fine
    before = time.time() * 1000.0
    stamp = writer.event("drain")["time_ms"]
    assert before <= stamp <= time.time() * 1000.0
    writer.finish("failed", "engine died in round 2", rounds_done=1)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert (manifest["status"], manifest["error"], manifest["rounds_done"]) == ("failed", "engine died in round 2", 1)
    again = CaptureWriter(directory, {})  # a second writer on the same folder appends to its events
    again.event("mark", name="baseline")
    again.finish("complete")
    assert [e["type"] for e in read_capture(directory).events] == ["drain", "mark"]


def test_capture_files_that_link_out_or_are_not_json_are_named(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    capture_dir = tmp_path / "cap"
    write_capture(capture_dir, events=[{"type": "snapshot", "time_ms": 1, "mark": "baseline", "file": "gpu.pickle"}])
    for name in ("holders.json", "holder_misses.json", "cycles.json", "gpu.pickle"):
        os.symlink(outside, capture_dir / name)
    capture = read_capture(capture_dir)
    for read, what in ((capture.holders, "holders.json"), (capture.holder_misses, "holder_misses.json"),
                       (capture.cycles, "cycles.json"), (capture.snapshot_files, "a GPU snapshot named in events.jsonl")):
        with pytest.raises(UsageError) as err:
            read()
        name = "gpu.pickle" if what.startswith("a GPU") else what
        assert str(err.value) == f"{capture_dir / name}: {what} is a symlink or not inside the capture; refused"
    (capture_dir / "holders.json").unlink()
    (capture_dir / "holders.json").write_text("[")
    with pytest.raises(UsageError) as err:
        capture.holders()
    assert str(err.value).startswith(f"{capture_dir / 'holders.json'}: not valid JSON (line 1")


def test_manifest_and_events_that_link_out_or_break_are_named(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("{}")
    capture_dir = tmp_path / "cap"
    write_capture(capture_dir)
    os.symlink(outside, capture_dir / "events.jsonl")
    with pytest.raises(UsageError) as err:
        read_capture(capture_dir)
    assert str(err.value) == f"{capture_dir / 'events.jsonl'}: events.jsonl is a symlink or not inside the capture; refused"
    (capture_dir / "manifest.json").unlink()
    os.symlink(outside, capture_dir / "manifest.json")
    with pytest.raises(CaptureError) as err:
        read_capture(capture_dir)
    assert str(err.value) == (f"{capture_dir / 'manifest.json'}: manifest.json is a symlink or not inside the capture; "
                              "refused")
    (capture_dir / "manifest.json").unlink()
    (capture_dir / "manifest.json").write_text("{")
    with pytest.raises(CaptureError) as err:
        read_capture(capture_dir)
    assert str(err.value).startswith(f"{capture_dir / 'manifest.json'}: not valid JSON (line 1")
    write_capture(capture_dir, {"schema": "x" * 60})
    with pytest.raises(CaptureError) as err:
        read_capture(capture_dir)
    assert str(err.value) == (f"{capture_dir / 'manifest.json'}: schema {repr('x' * 60)[:40]}, expected one of "
                              "tracer.capture/1, tracer.capture/2")


def test_bytes_that_are_not_utf8_in_events_are_replaced(tmp_path):
    write_capture(tmp_path)
    (tmp_path / "events.jsonl").write_bytes(b'{"type": "mark", "time_ms": 1, "name": "base\xffline"}\n')
    assert read_capture(tmp_path).events[0]["name"] == "base\ufffdline"


def test_a_cut_line_between_events_skips_only_itself(tmp_path):
    write_capture(tmp_path, events=[{"type": "mark", "time_ms": 1, "name": "a"}, '{"type": "ma',
                                    {"type": "mark", "time_ms": 2, "name": "b"}])
    assert [e["name"] for e in read_capture(tmp_path).events] == ["a", "b"]


def test_a_manifest_without_streams_has_none(tmp_path):
    write_capture(tmp_path, {"schema": SCHEMA, "status": "complete"})
    assert read_capture(tmp_path).streams == []
