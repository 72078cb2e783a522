"""Reading report.json back: what the validation accepts and the exact one-line error for what it refuses, the
measured-round count, growth per round, the top frames, and where a report may be read from."""

from __future__ import annotations

import json
import math
import os

import pytest

from tracer.analysis.stacks import Frame
from tracer.errors import UsageError
from tracer.output.report_file import (bytes_per_round, frame_lines, is_byte_count, load_report, measured_rounds,
                                       top_frames, validate_report)


def report(*findings: dict, **fields) -> dict:
    return {"schema": "tracer.report/1", "findings": list(findings), **fields}


def finding(**fields) -> dict:
    return {"id": "h1", "verdict": "leak", "bytes": 10, **fields}


@pytest.mark.parametrize("value, ok", [
    (0, True), (0.5, True), (2**63, True), (-1, False), (2**63 + 1, False), (True, False), ("1", False),
    (None, False), (math.nan, False), (math.inf, False)])
def test_byte_counts_run_from_zero_to_two_to_the_63(value, ok):
    assert is_byte_count(value) is ok


def test_a_finding_needs_only_id_verdict_and_bytes():
    r = report(finding())
    assert validate_report(r) is r
    full = report(finding(per_round_bytes=[0, 5, 10], details={"reason": "x"},
                          stack=[{"function": "f", "file": "a.py", "line": 3, "name": None, "filename": "a.py"},
                                 {"function": "g"}]),
                  run={"rounds": 3}, growth={}, vllm_check=None, rounds=[])
    assert validate_report(full) is full


@pytest.mark.parametrize("bad, message", [
    (report(finding(stack={"function": "f"})), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=["f"])), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=[{"function": "f", "line": "3"}])), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=[{"function": "f", "line": True}])), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=[{"function": "f", "line": 2**63}])), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=[{"function": 1}])), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=[{"file": 1}])), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=[{"name": 1}])), "r.json: finding 0 has a bad stack"),
    (report(finding(stack=[{"filename": 1}])), "r.json: finding 0 has a bad stack"),
    (report(finding(), finding(per_round_bytes=None)), "r.json: finding 1 has a bad per_round_bytes"),
    (report(finding(per_round_bytes=[1, -1])), "r.json: finding 0 has a bad per_round_bytes"),
    (report(finding(details=[])), "r.json: finding 0 has bad details"),
    (report(finding(bytes=-1)), "r.json: finding 0 has no bytes (a byte count from 0 to 2**63)"),
    (report(finding(verdict=None)), "r.json: finding 0 has no id or verdict"),
    (report(run=[1]), "r.json: run is not an object"),
    (report(growth="x"), "r.json: growth is not an object"),
    (report(vllm_check=[1]), "r.json: vllm_check is not an object"),
    (report(rounds={"a": 1}), "r.json: rounds is not a list"),
    ({"schema": "tracer.report/1", "findings": {}}, "r.json: no findings list"),
    ({"schema": "tracer.report/2", "findings": []}, "r.json: schema 'tracer.report/2', expected 'tracer.report/1'"),
])
def test_bad_reports_are_named_exactly(bad, message):
    with pytest.raises(UsageError) as err:
        validate_report(bad, "r.json")
    assert str(err.value) == message


def test_without_a_source_the_error_says_report():
    with pytest.raises(UsageError) as err:
        validate_report({"schema": None})
    assert str(err.value) == "report: schema None, expected 'tracer.report/1'"


@pytest.mark.parametrize("fields, rounds", [
    ({"rounds": [{"phase": "warmup"}, {"phase": "measured"}, "x", {"phase": "measured"}], "run": {"rounds": 8}}, 2),
    ({"rounds": [{"phase": "warmup"}], "run": {"rounds": 8}}, 8),  # no measured row: the planned rounds
    ({"rounds": None, "run": {"rounds": 1}}, 1),
    ({"run": {"rounds": 0}}, 1),
    ({"run": {"rounds": -3}}, 1),
    ({"run": {"rounds": "4"}}, 1),
    ({"run": None}, 1),
    ({}, 1),
])
def test_measured_rounds(fields, rounds):
    assert measured_rounds(report(**fields)) == rounds


def test_bytes_per_round():
    assert bytes_per_round({"bytes": 0, "per_round_bytes": [100, 300]}) == 200  # two points are a slope
    assert bytes_per_round({"bytes": 0, "per_round_bytes": [100, 300, 700]}) == 300
    assert bytes_per_round({"bytes": 0, "per_round_bytes": [300]}) == 300
    assert bytes_per_round({"bytes": 800}) == 800  # one round unless told
    assert bytes_per_round({"bytes": 800, "per_round_bytes": None}, 4) == 200


def test_top_frames_from_the_owner_stop_at_the_driver_but_keep_the_owner():
    plumbing = {"function": "c10::alloc_cpu", "file": "", "line": 0}
    own = [{"function": f"f{k}", "file": f"/repo/app/m{k}.py", "line": k} for k in range(5)]
    assert [f.function for f in top_frames({"stack": [plumbing] + own})] == ["f0", "f1", "f2"]
    assert [f.function for f in top_frames({"stack": own}, 4)] == ["f0", "f1", "f2", "f3"]
    driver = {"function": "tracer_workload_call", "file": "/repo/tracer/own_frames.py", "line": 1}
    assert [f.function for f in top_frames({"stack": own[:1] + [driver] + own[1:]})] == ["f0"]
    legacy = {"function": "one_round", "file": "/repo/tracer/session.py", "line": 9}  # an old capture's driver
    assert [f.function for f in top_frames({"stack": [legacy] + own})] == ["one_round"]
    assert top_frames({"stack": []}) == [] and top_frames({}) == []


def test_frame_lines_mark_the_owner_and_escape_controls():
    frames = [Frame("f\nx", "/repo/app/m.py", 3), Frame("g", "/repo/app/n.py", 4)]
    assert frame_lines(frames) == ["-> f\\x0ax  repo/app/m.py:3", "   g  repo/app/n.py:4"]


def test_load_from_the_directory_or_the_file(tmp_path):
    r = report(finding(), run={"rounds": 2})
    (tmp_path / "report.json").write_text(json.dumps(r))
    assert load_report(tmp_path) == r == load_report(tmp_path / "report.json")
    link = tmp_path / "chosen.json"
    os.symlink(tmp_path / "report.json", link)
    assert load_report(link) == r  # a link the user named is followed


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothing.json"
    with pytest.raises(UsageError) as err:
        load_report(missing)
    assert str(err.value) == f"report {missing}: no such file (give a report directory or its report.json)"
    with pytest.raises(UsageError) as err:
        load_report(tmp_path)
    assert str(err.value) == (f"report {tmp_path / 'report.json'}: no such file "
                              "(give a report directory or its report.json)")
    (tmp_path / "report.json").write_text("[1,")
    with pytest.raises(UsageError) as err:
        load_report(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'report.json'}: not valid JSON (line 1")
    (tmp_path / "report.json").write_text('{"schema": "tracer.report/1"}')
    for given in (tmp_path, tmp_path / "report.json"):
        with pytest.raises(UsageError) as err:
            load_report(given)
        assert str(err.value) == f"{tmp_path / 'report.json'}: no findings list"


def test_inside_a_report_directory_report_json_must_not_be_a_link(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(report()))
    (tmp_path / "run").mkdir()
    os.symlink(elsewhere, tmp_path / "run" / "report.json")
    with pytest.raises(UsageError) as err:
        load_report(tmp_path / "run")
    assert str(err.value) == (f"{tmp_path / 'run' / 'report.json'}: report is a symlink or not inside the capture; "
                              "refused")
