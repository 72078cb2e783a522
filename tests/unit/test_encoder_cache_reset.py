"""The encoder-cache drain step: the substitute for `reset_encoder_cache` on vLLM 0.13 to 0.15 (which releases get
it, what it empties, how the report shows it) and the check, before the reset, of what the cache holds that the
scheduler no longer tracks. The engine runs are in bench/compat.py (0.13, 0.15) and
tests/engine/test_encoder_cache_untracked.py (0.32)."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest

from tracer.analysis.analyze import analyze_dir
from tracer.analysis.encoder_cache_bound import final_audit, judge_untracked
from tracer.analysis.findings import Finding
from tracer.analysis.verdicts import Thresholds
from tracer.capture import read_capture
from tracer.errors import UsageError
from tracer.output.report import build_report
from tracer.output.summary import render_summary
from tracer.workload import encoder_cache_reset
from tracer.workload.encoder_cache_audit import audit
from tracer.workload.encoder_cache_reset import applies, reset_manager, substitute_reset

H100_RUN = Path(__file__).parents[1] / "fixtures" / "h100-vllm0.25" / "clean"


@pytest.mark.parametrize("version, expected", [
    ("0.13.0", True), ("0.15.1", True), ("0.14.0+cpu", True), ("0.15.99", True),
    ("0.12.0", False), ("0.16.0", False), ("0.32.0", False), ("0.16.0rc1", False),
    (None, False), ("", False), ("not a version", False)])
def test_only_the_releases_without_the_reset_get_the_substitute(version, expected):
    assert applies(version) is expected


def manager_with_entries() -> SimpleNamespace:
    """The fields of vLLM 0.13's EncoderCacheManager after two images: one in use, one freeable, one evicted."""
    return SimpleNamespace(cache_size=4096, cached={"img-a": {"req-1"}, "img-b": set()},
                           freeable=OrderedDict({"img-b": 144}), freed=["img-c"],
                           num_free_slots=4096 - 288, num_freeable_slots=4096 - 144)


def test_manager_is_back_to_empty_with_its_whole_capacity_free():
    manager = manager_with_entries()
    reset_manager(manager)
    assert (manager.cached, list(manager.freeable), manager.freed) == ({}, [], [])
    assert manager.num_free_slots == manager.num_freeable_slots == 4096


class Executor:
    """Runs a `collective_rpc` callable on its workers, as vLLM's executors do."""

    def __init__(self, workers):
        self.workers = workers

    def collective_rpc(self, method):
        return [method(w) for w in self.workers]


def engine(manager, workers) -> SimpleNamespace:
    core = SimpleNamespace(scheduler=SimpleNamespace(encoder_cache_manager=manager), model_executor=Executor(workers))
    return SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace(engine_core=core)))


def test_reset_empties_the_manager_and_every_workers_encoder_cache():
    manager = manager_with_entries()
    workers = [SimpleNamespace(model_runner=SimpleNamespace(encoder_cache={"img-a": b"x" * 8, "img-b": b"y"}))
               for _ in range(2)]
    reset = substitute_reset(engine(manager, workers), "0.13.0")
    assert reset is not None
    reset()
    assert [w.model_runner.encoder_cache for w in workers] == [{}, {}]
    assert manager.cached == {} and manager.num_free_slots == 4096


def test_no_substitute_outside_the_range_or_without_the_internals():
    workers = [SimpleNamespace(model_runner=SimpleNamespace(encoder_cache={}))]
    assert substitute_reset(engine(manager_with_entries(), workers), "0.16.0") is None
    assert substitute_reset(engine(manager_with_entries(), workers), "0.12.0") is None
    # the engine core in another process: the client has no `engine_core` of its own
    assert substitute_reset(SimpleNamespace(llm_engine=SimpleNamespace(engine_core=object())), "0.13.0") is None
    # a manager whose fields changed (the encoder-decoder manager has no `cached` or `freeable`)
    changed = SimpleNamespace(cache_size=10, num_free_slots=10, allocated=[], to_free=[])
    assert substitute_reset(engine(changed, workers), "0.15.1") is None


def test_report_and_summary_name_the_substitute_step(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(H100_RUN, run_dir)
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["run"]["substitute_drain_steps"] = {"encoder_cache": encoder_cache_reset.describe()}
    manifest_path.write_text(json.dumps(manifest))
    analysis = analyze_dir(run_dir)
    report = build_report(analysis)
    step = report["run"]["substitute_drain_steps"]["encoder_cache"]
    assert step["replaces"] == "llm_engine.reset_encoder_cache" and step["releases"] == "vLLM >=0.13,<0.16"
    summary = render_summary(report, analysis.findings)
    (line,) = [ln for ln in summary.splitlines() if "substituted" in ln]
    assert "encoder\\_cache" in line and "reset\\_encoder\\_cache" in line and "0.13" in line, line


def test_a_capture_whose_substitute_steps_are_not_an_object_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(H100_RUN, run_dir)
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["run"]["substitute_drain_steps"] = ["encoder_cache"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="substitute_drain_steps"):
        analyze_dir(run_dir)


def test_audit_counts_what_the_runners_hold_that_the_scheduler_neither_tracks_nor_is_freeing():
    manager = manager_with_entries()  # tracks img-a, img-b; img-c evicted, its free notice not yet sent
    held = {"img-a": 10, "img-b": 20, "img-c": 30, "img-lost": 40}  # entry -> bytes (a buffer with `nbytes`)
    workers = [SimpleNamespace(model_runner=SimpleNamespace(
        encoder_cache={key: memoryview(bytes(size)) for key, size in held.items()}))]
    found = audit(engine(manager, workers))
    assert found == {"entries": 4, "bytes": 100, "untracked_entries": 1, "untracked_bytes": 40,
                     "capacity_embeddings": 4096}


def test_no_audit_without_the_fields_it_reads():
    workers = [SimpleNamespace(model_runner=SimpleNamespace(encoder_cache={}))]
    assert audit(SimpleNamespace(llm_engine=SimpleNamespace(engine_core=object()))) is None
    changed = SimpleNamespace(cache_size=10, allocated=[], to_free=[])
    assert audit(engine(changed, workers)) is None
    no_dict = [SimpleNamespace(model_runner=SimpleNamespace(encoder_cache=object()))]
    assert audit(engine(manager_with_entries(), no_dict)) is None


def finding(series, released, component="encoder cache", verdict="cache") -> Finding:
    f = Finding("host", (), bytes=1000, count=1, per_round_bytes=series, component=component, verdict=verdict)
    f.details = {"released_by": {"encoder_cache": released}, "reason": "released by the drain",
                 "trend": {"slope_bytes_per_round": 442464.0}}
    return f


GROWING = [442464 * k for k in range(1, 9)]
UNTRACKED = {"entries": 32, "bytes": 32 * 110592, "untracked_entries": 4, "untracked_bytes": 4 * 110592,
             "capacity_embeddings": 4096}


def test_an_encoder_cache_released_by_the_reset_with_untracked_entries_is_a_leak():
    f = finding(GROWING, released=3539712)
    judge_untracked([f], UNTRACKED, Thresholds())
    assert f.verdict == "leak"
    assert "4 of its 32 entries (442368 bytes)" in f.details["reason"] and "4096 embeddings" in f.details["reason"]
    assert f.details["encoder_cache_audit"] == UNTRACKED


@pytest.mark.parametrize("case", ["nothing untracked", "below the leak minimum", "flat series", "not released by "
                                  "the reset", "another component", "already a leak?"])
def test_the_encoder_cache_stays_as_judged(case):
    audit_found = dict(UNTRACKED)
    f = finding(GROWING, released=3539712)
    if case == "nothing untracked":
        audit_found.update(untracked_entries=0, untracked_bytes=0)
    elif case == "below the leak minimum":
        audit_found.update(untracked_entries=2, untracked_bytes=2 * 110592)
    elif case == "flat series":
        f = finding([3098684] * 8, released=3098684)
    elif case == "not released by the reset":
        f = finding(GROWING, released=0)
    elif case == "another component":
        f = finding(GROWING, released=3539712, component="HF image processing")
    else:
        f = finding(GROWING, released=3539712, verdict="leak?")
    before = (f.verdict, f.details["reason"])
    judge_untracked([f], audit_found, Thresholds())
    assert (f.verdict, f.details["reason"]) == before


def test_no_audit_recorded_changes_nothing():
    f = finding(GROWING, released=3539712)
    judge_untracked([f], None, Thresholds())
    assert f.verdict == "cache" and "encoder_cache_audit" not in f.details


def test_the_final_drains_audit_is_read_and_a_malformed_one_refused(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(H100_RUN, run_dir)
    events = run_dir / "events.jsonl"
    original = events.read_text()
    step = {"type": "drain_step", "time_ms": 1.0, "step": "encoder_cache", "ok": True}
    rows = [dict(step, when="baseline", found=dict(UNTRACKED, untracked_entries=0)),
            dict(step, when="final", found=UNTRACKED)]
    events.write_text(original + "".join(json.dumps(r) + "\n" for r in rows))
    assert final_audit(read_capture(run_dir)) == UNTRACKED
    events.write_text(original + json.dumps(dict(step, when="final", found={"entries": "many"})) + "\n")
    with pytest.raises(UsageError, match="found"):
        read_capture(run_dir)
