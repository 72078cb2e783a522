"""Two-stage runs: the screening decision (pure logic), and both outcomes on the real vLLM CPU engine."""

from __future__ import annotations

import pytest

from conftest import PLANTS, load_report, run_tracer
from tracer.record.screen import screen
from tracer.analysis.verdicts import Thresholds

MiB = 2**20


def rows(values):
    return [{"heap_bytes": v, "gpu_allocated_bytes": 0} for v in values]


def test_cache_released_by_the_drain_is_not_suspect():
    suspect, reasons = screen(rows([0])[0], rows([5 * MiB, 9 * MiB, 12 * MiB]), rows([40_000])[0], Thresholds())
    assert not suspect and reasons[0].startswith("heap_bytes +0.04 MiB")


def test_growth_that_survives_the_drain_is_suspect():
    suspect, _ = screen(rows([0])[0], rows([1 * MiB, 2 * MiB, 3 * MiB]), rows([3 * MiB])[0], Thresholds())
    assert suspect


def test_gpu_counter_alone_can_make_it_suspect():
    base = {"heap_bytes": 0, "gpu_allocated_bytes": 0}
    end = {"heap_bytes": 0, "gpu_allocated_bytes": 64 * MiB}
    assert screen(base, [end] * 8, end, Thresholds())[0]


def test_missing_counters_are_skipped():
    assert screen({"heap_bytes": None}, [{"heap_bytes": None}], {"heap_bytes": None}, Thresholds()) == (False, [])


@pytest.mark.engine
def test_clean_run_stops_after_the_screen(tmp_path):
    out = tmp_path / "screened"
    result = run_tracer("diff", "--rounds", "4", "--screen", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    report = load_report(out)
    assert report["verdict"] == "clean" and report["findings"] == []
    assert [r["phase"] for r in report["rounds"]] == ["warmup"] + ["screen"] * 4
    assert not (out / "capture" / "main" / "host.memray").exists()
    assert any("nothing grows, so no traced pass ran" in note for note in report["notes"]), report["notes"]


@pytest.mark.engine
def test_leaking_run_goes_on_to_the_traced_pass(tmp_path):
    out = tmp_path / "traced"
    result = run_tracer("diff", "--rounds", "4", "--screen", "--out", str(out),
                        "--preload", str(PLANTS / "host_image_bytes.py"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = load_report(out)
    assert [r["phase"] for r in report["rounds"]] == ["warmup"] + ["screen"] * 4 + ["measured"] * 4
    assert report["verdict"] == "leak"
    assert any(fr["function"] == "remember_images" for fr in report["findings"][0]["stack"][:3])
