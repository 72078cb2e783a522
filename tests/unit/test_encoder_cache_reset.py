"""The encoder-cache drain step that stands in for `reset_encoder_cache` on vLLM 0.13 to 0.15: which releases get
it, what it empties, and how the report shows it. The engine run on 0.13.0 is in bench/compat.py."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest

from tracer.analysis.analyze import analyze_dir
from tracer.errors import UsageError
from tracer.output.report import build_report
from tracer.output.summary import render_summary
from tracer.workload import encoder_cache_reset
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
