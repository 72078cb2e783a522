"""Property-based fuzzing (hypothesis, fixed seed, bounded examples) of everything that reads a stranger's file:
the snapshot loader, the capture reader, the report and baseline loaders, and every renderer of their text.
Properties: exit code 0, 1 or 2 and never a traceback; nothing written outside the output directory; outputs
parse (JSON, XML) and hold no injected workflow command or Markdown heading, link, image or HTML."""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from hostile_helpers import (INJECTIONS, PLANTED_CAPTURE, assert_clean_exit, assert_inert_markdown,
                             assert_no_injected_command, assert_xml_parses, copy_capture, invoke, tree)

FUZZ = settings(derandomize=True, max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

texts = st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=30))
numbers = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 2**63, -1, 10**30]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(texts, inner, max_size=3)), max_leaves=8)


def _mutate(data, path: list, value):
    """`data` with the value at `path` (keys or indexes, taken modulo the container's size) replaced."""
    if not path or not isinstance(data, (dict, list)) or not data:
        return value
    if isinstance(data, dict):
        key = sorted(data, key=str)[path[0] % len(data)]
        return {**data, key: _mutate(data[key], path[1:], value)}
    i = path[0] % len(data)
    return data[:i] + [_mutate(data[i], path[1:], value)] + data[i + 1:]


paths = st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=6)


def _workdir():
    return Path(tempfile.mkdtemp(prefix="tracer-fuzz-"))


# --- snapshot loader -------------------------------------------------------------------------------------------

def _snapshot() -> dict:
    frames = [{"name": "f", "filename": "/src/a.py", "line": 1}, {"name": "g", "filename": "/src/b.py", "line": 2}]
    return {"segments": [{"device": 0, "stream": 0, "total_size": 4096, "allocated_size": 1024,
                          "segment_pool_id": [0, 0],
                          "blocks": [{"state": "active_allocated", "size": 512, "requested_size": 500,
                                      "address": 4096, "frames": frames},
                                     {"state": "active_allocated", "size": 512, "address": 4608, "frames": frames},
                                     {"state": "inactive", "size": 3072, "address": 5120}]}]}


@FUZZ
@given(path=paths, value=values, encoding=st.sampled_from(["pickle", "json", "gzip"]))
def test_snapshot_diff_of_mutated_snapshots(path, value, encoding):
    work = _workdir()
    try:
        snap = _mutate(_snapshot(), path, value)
        if encoding == "json":
            data = json.dumps(snap, allow_nan=True).encode()
        else:
            data = pickle.dumps(snap, protocol=4)
            data = gzip.compress(data) if encoding == "gzip" else data
        base = work / "base.bin"
        base.write_bytes(pickle.dumps({"segments": []}, protocol=4))
        final = work / "final.bin"
        final.write_bytes(data)
        _check_command_output(work, "snapshot-diff", str(base), str(final), "--out", str(work / "out"))
    finally:
        shutil.rmtree(work)


def _check_command_output(work, *args: str) -> None:
    """The command exits 0 or 2 without a traceback, writes nothing outside work/out, and what it writes parses
    and holds no injected command or Markdown."""
    before = tree(work)
    code, out, err = invoke(*args)
    assert_clean_exit(code, out, err, allowed=(0, 2))
    assert_no_injected_command(out + err)
    assert _outside_out(tree(work)) == _outside_out(before)
    if code == 0:
        json.loads((work / "out" / "report.json").read_text(), parse_constant=_no_constant)
        assert_inert_markdown((work / "out" / "summary.md").read_text())


@FUZZ
@given(data=st.binary(max_size=300))
def test_snapshot_loader_on_random_bytes(data):
    from tracer.analysis.snapshots import SnapshotError, diff_snapshots, load_snapshot

    work = _workdir()
    try:
        for blob in (data, gzip.compress(data), b"\x80\x04" + data):
            (work / "s").write_bytes(blob)
            try:
                diff_snapshots({"segments": []}, load_snapshot(work / "s"))
            except SnapshotError as exc:
                assert "\n" not in str(exc)
    finally:
        shutil.rmtree(work)


# --- capture reader --------------------------------------------------------------------------------------------

@FUZZ
@given(which=st.sampled_from(["manifest", "event", "holders"]), path=paths, value=values)
def test_analyze_of_mutated_captures(which, path, value):
    work = _workdir()
    try:
        capture = copy_capture(PLANTED_CAPTURE, work / "capture")
        if which == "manifest":
            data = json.loads((capture / "manifest.json").read_text())
            (capture / "manifest.json").write_text(json.dumps(_mutate(data, path, value), allow_nan=True))
        elif which == "holders":
            data = json.loads((capture / "holders.json").read_text())
            (capture / "holders.json").write_text(json.dumps(_mutate(data, path, value), allow_nan=True))
        else:
            rows = [json.loads(line) for line in (capture / "events.jsonl").read_text().splitlines()]
            rows = _mutate(rows, path, value)
            (capture / "events.jsonl").write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
        _check_command_output(work, "analyze", str(capture), "--out", str(work / "out"), "--json")
    finally:
        shutil.rmtree(work)


# --- report and baseline loaders, gate renderers ---------------------------------------------------------------

def _report() -> dict:
    frame = {"function": "keep", "file": "/src/plug.py", "line": 4}
    finding = {"id": "h0123456789abcdef", "domain": "host", "bytes": 3 * 2**20, "count": 3,
               "per_round_bytes": [2**20, 2 * 2**20, 3 * 2**20], "stack": [frame], "owner": frame,
               "component": "user or plugin code", "verdict": "leak", "details": {"reason": "grows"}}
    return {"schema": "tracer.report/1", "status": "complete", "error": None, "verdict": "leak",
            "run": {"command": "tracer diff", "rounds": 3},
            "rounds": [{"index": i, "phase": "measured", "seconds": 0.1} for i in range(3)],
            "growth": {}, "unattributed": [], "vllm_check": {}, "findings": [finding, {**finding, "id": "h2"}],
            "notes": []}


def _baseline() -> dict:
    return {"schema": "tracer.baseline/1", "accepted": [{"id": "h2", "component": "c", "reason": "fine",
                                                          "bytes": 1, "bytes_per_round": 1.0}]}


@FUZZ
@given(target=st.sampled_from(["report", "baseline"]), path=paths, value=values,
       fmt=st.sampled_from(["text", "github", "junit", "markdown"]))
def test_gate_and_baseline_of_mutated_reports(target, path, value, fmt):
    work = _workdir()
    try:
        report, baseline = _report(), _baseline()
        if target == "report":
            report = _mutate(report, path, value)
        else:
            baseline = _mutate(baseline, path, value)
        (work / "report.json").write_text(json.dumps(report, allow_nan=True))
        (work / "baseline.json").write_text(json.dumps(baseline, allow_nan=True))
        out_dir = work / "out"
        out_dir.mkdir()
        before = tree(work)
        os.environ["GITHUB_STEP_SUMMARY"] = str(out_dir / "summary.md")
        try:
            code, out, err = invoke("gate", str(work / "report.json"), "--baseline", str(work / "baseline.json"),
                                    "--format", fmt, "--junit-file", str(out_dir / "gate.xml"))
        finally:
            del os.environ["GITHUB_STEP_SUMMARY"]
        assert_clean_exit(code, out, err)
        assert_no_injected_command(out + err)
        if code in (0, 1):
            assert_xml_parses((out_dir / "gate.xml").read_bytes())
            if fmt == "markdown":
                assert_inert_markdown(out, headings={"tracer gate", "`"})
            if fmt == "github":
                assert_inert_markdown((out_dir / "summary.md").read_text(), headings={"tracer gate", "`"})
        code, out, err = invoke("baseline", str(work / "report.json"), "-o", str(out_dir / "baseline.json"))
        assert_clean_exit(code, out, err, allowed=(0, 2))
        assert_no_injected_command(out + err)
        if code == 0:
            json.loads((out_dir / "baseline.json").read_text(), parse_constant=_no_constant)
        assert _outside_out(tree(work)) == _outside_out(before)
    finally:
        shutil.rmtree(work)


def _outside_out(files: dict) -> dict:
    return {k: v for k, v in files.items() if k != "out" and not k.startswith("out/")}


def _no_constant(name):
    raise AssertionError(f"non-finite number {name} in strict JSON output")


def test_mutation_helper_reaches_nested_values():
    assert _mutate({"a": [1, {"b": 2}]}, [0, 1, 0], "x") == {"a": [1, {"b": "x"}]}
    assert math.isnan(_mutate([0.0], [0], float("nan"))[0])
