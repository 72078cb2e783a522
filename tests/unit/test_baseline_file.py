"""Baseline files field by field: what `tracer baseline` writes for each accepted finding, when it was made and
from which run, and the one-line errors for a bad entry, a bad report, a missing file or a directory."""

from __future__ import annotations

import calendar
import json
import math
import time

import pytest

from report_samples import USER_STACK as STACK
from tracer.errors import UsageError
from tracer.output.gate.baseline import (DEFAULT_REASON, accepted_by_id, build_baseline, load_baseline,
                                         validate_baseline, write_baseline)

MiB = 1 << 20
RUN = {"rounds": 4, "command": "tracer diff --rounds 4", "model": "tiny-qwen3-vl", "vllm": "0.32.0",
       "tracer": "0.9.0", "device": "cpu"}


def report(*findings: dict, run: dict | None = RUN, measured: int = 3) -> dict:
    return {"schema": "tracer.report/1", "verdict": "leak", "run": run, "rounds": [{"phase": "measured"}] * measured,
            "findings": list(findings)}


def finding(fid: str, verdict: str = "leak", series: list[int] | None = None, stack: list[dict] = STACK,
            domain: str = "host", total: int = 3001) -> dict:
    return {"id": fid, "domain": domain, "component": "user code", "verdict": verdict, "bytes": total,
            "per_round_bytes": [0, 1000, 2000, 3001] if series is None else series, "stack": stack}


def test_each_leak_and_suspect_becomes_an_entry_with_every_field():
    r = report(finding("h1"), finding("r1", "leak?", domain="rss"), finding("c1", "cache"), finding("t1", "transient"))
    entries = build_baseline(r, reason="known")["accepted"]
    assert entries[0] == {
        "id": "h1", "domain": "host", "component": "user code",
        "owner": "remember_images  tests/plants/host_image_bytes.py:14",
        "frames": ["remember_images  tests/plants/host_image_bytes.py:14",
                   "chat  tests/plants/host_image_bytes.py:18", "serve  repo/app/serve.py:7"],
        "bytes": 3001, "bytes_per_round": 1000.3, "reason": "known"}  # (3001 - 0) / 3, to one decimal
    assert [(e["id"], e["domain"]) for e in entries] == [("h1", "host"), ("r1", "rss")]
    assert build_baseline(report(finding("h1")))["accepted"][0]["reason"] == DEFAULT_REASON


def test_an_entry_without_a_stack_has_no_owner_and_a_series_less_one_spreads_over_the_measured_rounds():
    (entry,) = build_baseline(report(finding("g1", stack=[], series=[], total=9 * MiB, domain="gpu")))["accepted"]
    assert entry["owner"] is None and entry["frames"] == []
    assert entry["bytes_per_round"] == 3 * MiB  # 9 MiB over the 3 measured rounds


def test_the_source_names_the_report_and_its_run():
    b = build_baseline(report(finding("h1")), source="out/report.json")
    assert b["source"] == {"report": "out/report.json", "command": "tracer diff --rounds 4",
                           "model": "tiny-qwen3-vl", "vllm": "0.32.0", "tracer": "0.9.0", "device": "cpu"}
    assert build_baseline(report(run=None))["source"] == {
        "report": None, "command": None, "model": None, "vllm": None, "tracer": None, "device": None}


def test_created_is_the_utc_time_in_iso_form(monkeypatch):
    monkeypatch.setenv("TZ", "IST-5:30")  # a local time far from UTC: the stamp must not follow it
    time.tzset()
    try:
        before = time.time()
        created = build_baseline(report())["created"]
        after = time.time()
    finally:
        monkeypatch.undo()
        time.tzset()
    stamp = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    assert int(before) <= stamp <= after


def test_merging_keeps_the_previous_entries_untouched():
    previous = {"schema": "tracer.baseline/1", "accepted": [{"id": "h1", "reason": "old"}]}
    merged = build_baseline(report(finding("h1"), finding("h2")), reason="new", previous=previous)
    assert merged["accepted"][0] == {"id": "h1", "reason": "old"}
    assert [e["id"] for e in merged["accepted"]] == ["h1", "h2"]


@pytest.mark.parametrize("entry, message", [
    ({"id": "h1", "bytes": "12"}, "baseline b.json: accepted entry 0 has a bad bytes (a finite number)"),
    ({"id": "h1", "bytes": True}, "baseline b.json: accepted entry 0 has a bad bytes (a finite number)"),
    ({"id": "h1", "bytes": 2**63 + 1}, "baseline b.json: accepted entry 0 has a bad bytes (a finite number)"),
    ({"id": "h1", "bytes_per_round": math.nan},
     "baseline b.json: accepted entry 0 has a bad bytes_per_round (a finite number)"),
    ({"id": "h1", "bytes_per_round": "1 MiB"},
     "baseline b.json: accepted entry 0 has a bad bytes_per_round (a finite number)"),
    ({"id": " "}, "baseline b.json: accepted entry 0 has no id"),
    ({"id": "h1", "reason": 3}, "baseline b.json: accepted entry h1 has a reason that is not text"),
])
def test_bad_entries_are_named_exactly(entry, message):
    with pytest.raises(UsageError) as err:
        validate_baseline({"schema": "tracer.baseline/1", "accepted": [entry]}, "b.json")
    assert str(err.value) == message


def test_numbers_up_to_two_to_the_63_are_accepted_either_sign():
    entries = [{"id": "h1", "bytes": 2**63, "bytes_per_round": -(2**63)}, {"id": "h2", "bytes": 0.5}]
    assert accepted_by_id({"schema": "tracer.baseline/1", "accepted": entries}) == {"h1": entries[0], "h2": entries[1]}


def test_errors_without_a_source_say_baseline_or_report():
    with pytest.raises(UsageError) as err:
        validate_baseline({"schema": "tracer.baseline/1", "accepted": {}})
    assert str(err.value) == "baseline baseline: 'accepted' must be a list of findings"
    with pytest.raises(UsageError) as err:
        accepted_by_id({"schema": "tracer.baseline/1", "accepted": [{}]})
    assert str(err.value) == "baseline baseline: accepted entry 0 has no id"
    with pytest.raises(UsageError) as err:
        accepted_by_id({"schema": "tracer.baseline/1", "accepted": [{}]}, "ci/b.json")
    assert str(err.value) == "baseline ci/b.json: accepted entry 0 has no id"
    with pytest.raises(UsageError) as err:
        build_baseline({"schema": "tracer.report/1"})
    assert str(err.value) == "report: no findings list"
    with pytest.raises(UsageError) as err:
        build_baseline({"schema": "tracer.report/1"}, source="out/report.json")
    assert str(err.value) == "out/report.json: no findings list"


def test_load_names_the_missing_file_and_how_to_make_one(tmp_path):
    path = tmp_path / "b.json"
    with pytest.raises(UsageError) as err:
        load_baseline(path)
    assert str(err.value) == f"baseline {path}: no such file (make one with: tracer baseline REPORT -o {path})"
    path.write_text('{"schema": "tracer.baseline/1", "accepted": 1}')
    with pytest.raises(UsageError) as err:
        load_baseline(path)
    assert str(err.value) == f"baseline {path}: 'accepted' must be a list of findings"


def test_write_makes_the_folders_and_refuses_a_directory_or_a_bad_baseline(tmp_path):
    path = tmp_path / "ci" / "gate" / "baseline.json"
    baseline = build_baseline(report(finding("h1")))
    write_baseline(path, baseline)
    assert json.loads(path.read_text())["accepted"] == baseline["accepted"]
    with pytest.raises(UsageError) as err:
        write_baseline(tmp_path / "ci", baseline)
    assert str(err.value) == f"{tmp_path / 'ci'}: is a directory; -o takes the baseline file to write"
    with pytest.raises(UsageError) as err:
        write_baseline(tmp_path / "bad.json", {"schema": "tracer.baseline/1", "accepted": [{}]})
    assert str(err.value) == f"baseline {tmp_path / 'bad.json'}: accepted entry 0 has no id"
    assert not (tmp_path / "bad.json").exists()
