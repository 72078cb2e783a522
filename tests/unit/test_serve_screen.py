"""`--screen` in serve mode and a server report's flamegraphs, from small handmade counters and findings: each
process judged on its own counters, the outcome in the notes and the report, one flamegraph per process."""

from __future__ import annotations

import json

import pytest

from tracer.analysis.screened import describe_screen
from tracer.analysis.verdicts import Thresholds
from tracer.capture import Capture, Stream, check_event, check_manifest
from tracer.errors import UsageError
from tracer.output.html import flame_sections, render_html
from tracer.record.screen import screen_each_process

MiB = 2**20


def server_row(api_heap: int, core_heap: int) -> dict:
    processes = {"api-server": {"heap_bytes": api_heap, "rss_bytes": 500 * MiB},
                 "engine-core": {"heap_bytes": core_heap, "rss_bytes": 900 * MiB}}
    return {"heap_bytes": api_heap + core_heap, "processes": processes}


def test_each_process_is_judged_on_its_own_counters():
    """The engine core keeps 3 MiB past the drain; the API server gives back what it grew."""
    baseline = server_row(100 * MiB, 200 * MiB)
    rounds = [server_row((100 + i) * MiB, (200 + i) * MiB) for i in (1, 2, 3)]
    drained = server_row(100 * MiB, 203 * MiB)
    each = screen_each_process(baseline, rounds, drained, Thresholds())
    assert list(each) == ["api-server", "engine-core"]
    assert not each["api-server"]["suspect"] and each["api-server"]["suspects"] == []
    assert each["engine-core"]["suspect"] and each["engine-core"]["suspects"] == ["heap_bytes"]
    assert each["engine-core"]["reasons"][0].startswith("heap_bytes +3.00 MiB after the drain (peak +3.00 MiB")


def test_growth_in_one_process_is_not_hidden_by_another_shrinking():
    """The sum stays flat (the API server frees what the engine core keeps); the engine core is still suspect."""
    baseline = server_row(100 * MiB, 200 * MiB)
    rounds = [server_row((100 - i) * MiB, (200 + i) * MiB) for i in (1, 2, 3)]
    drained = server_row(97 * MiB, 203 * MiB)
    assert drained["heap_bytes"] == baseline["heap_bytes"]
    each = screen_each_process(baseline, rounds, drained, Thresholds())
    assert [role for role, r in each.items() if r["suspect"]] == ["engine-core"]


def test_rows_of_one_process_have_no_per_process_screen():
    row = {"heap_bytes": MiB}
    assert screen_each_process(row, [row], row, Thresholds()) == {}


def test_a_process_gone_by_the_drain_is_left_out():
    baseline, row = server_row(MiB, MiB), server_row(MiB, MiB)
    drained = {"processes": {"api-server": row["processes"]["api-server"]}}
    assert list(screen_each_process(baseline, [row], drained, Thresholds())) == ["api-server"]


SCREENED = {"type": "screen", "time_ms": 1.0, "suspect": True, "suspects": ["heap_bytes"],
            "reasons": ["api-server: heap_bytes +0.01 MiB", "engine-core: heap_bytes +3.00 MiB"],
            "python_allocators": True,
            "processes": {"api-server": {"suspect": False, "suspects": [], "reasons": ["heap_bytes +0.01 MiB"],
                                         "python_allocators": False},
                          "engine-core": {"suspect": True, "suspects": ["heap_bytes"],
                                          "reasons": ["heap_bytes +3.00 MiB"], "python_allocators": True}}}


def test_note_names_the_processes_traced_and_why():
    note = describe_screen(SCREENED)
    assert note.startswith("Screening pass (untraced), each process on its own counters: growth seen in "
                           "engine-core, so only it was traced.")
    assert "api-server (not traced): heap_bytes +0.01 MiB" in note
    assert "engine-core (traced): heap_bytes +3.00 MiB; its C heap kept growth, so the traced pass also recorded" \
        in note
    clean = {**SCREENED, "suspect": False,
             "processes": {r: {**p, "suspect": False, "python_allocators": False}
                           for r, p in SCREENED["processes"].items()}}
    assert "nothing grows in any process, so no traced pass ran" in describe_screen(clean)


def test_in_process_note_is_unchanged():
    note = describe_screen({"suspect": False, "reasons": ["heap_bytes +0.04 MiB"]})
    assert note == "Screening pass (untraced): nothing grows, so no traced pass ran. heap_bytes +0.04 MiB"


def test_screen_event_with_malformed_processes_is_refused():
    assert check_event(SCREENED, "events.jsonl")["processes"]["engine-core"]["suspect"] is True
    for bad in ([], {"api-server": {"suspect": "yes", "reasons": []}},
                {"api-server": {"suspect": True, "reasons": [1]}}, {"api-server": None}):
        with pytest.raises(UsageError, match="screen event whose processes"):
            check_event({**SCREENED, "processes": bad}, "events.jsonl")


def test_a_server_capture_with_one_traced_process_still_has_roles():
    """`--screen` may trace only the process that grew: its findings still carry their role (and their ids)."""
    stream = {"role": "engine-core", "pid": 2, "backend": "memray", "domain": "host", "file": "engine-core/h.memray"}
    served = Capture(dir=None, manifest={"run": {"processes": ["api-server", "engine-core"]}},
                     streams=[Stream(**stream)])
    assert served.several_processes
    assert not Capture(dir=None, manifest={"run": {}}, streams=[Stream(**stream)]).several_processes
    with pytest.raises(UsageError, match="run.processes"):
        check_manifest({"run": {"processes": "api-server"}}, "manifest.json")


def finding(role: str | None, function: str, size: int, domain: str = "host") -> dict:
    frame = {"function": function, "file": f"/src/{function}.py", "line": 3}
    return {"id": f"h{abs(hash((role, function))) % 16**15:015x}", "domain": domain, "bytes": size, "count": 1,
            "verdict": "leak", "per_round_bytes": [size], "stack": [frame], "owner": frame,
            "component": "user or plugin code", "details": {}, **({"role": role} if role else {})}


def test_one_flamegraph_per_process_and_domain():
    findings = [finding("engine-core", "keep_features", 3 * MiB), finding("api-server", "keep_image", 2 * MiB),
                finding("engine-core", "keep_blocks", MiB, domain="gpu"), finding("worker-0", "nothing", 0)]
    sections = flame_sections(findings, ["api-server", "engine-core", "worker-0"])
    assert [s["key"] for s in sections] == ["api-server-host", "engine-core-host", "engine-core-gpu"]
    api, core, _ = sections
    assert api["role"] == "api-server" and api["tree"]["value"] == 2 * MiB
    assert [c["name"] for c in api["tree"]["children"]] == ["keep_image (/src/keep_image.py:3)"]
    assert [c["name"] for c in core["tree"]["children"]] == ["keep_features (/src/keep_features.py:3)"]
    assert core["tree"]["name"] == "host allocations live after the last round in engine-core"

    page = render_html({"verdict": "leak", "run": {"processes": ["api-server", "engine-core"]},
                        "timeline": [], "findings": findings, "notes": []})
    data = json.loads(page.split('<script id="chart-data" type="application/json">')[1].split("</script>")[0])
    assert list(data["flames"]) == ["api-server-host", "engine-core-host", "engine-core-gpu"]
    assert 'id="flame-engine-core-host"' in page and "in process engine-core</h2>" in page
    assert 'id="flame-host"' not in page


def test_in_process_report_keeps_one_flamegraph_per_domain():
    sections = flame_sections([finding(None, "keep", MiB), finding(None, "block", MiB, domain="gpu")])
    assert [(s["key"], s["role"]) for s in sections] == [("host", None), ("gpu", None)]
