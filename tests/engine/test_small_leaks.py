"""Small leaks on the real vLLM CPU engine: a list of KV block ids growing about 4 KiB a round
(tests/plants/kv_block_id_list.py), found with `--rounds auto` at lowered thresholds; and the screen switching
Python allocator tracing on for the traced pass when the C heap kept growth past the drain.

Thresholds: `--min-leak-per-round 2KiB --min-leak 64KiB`, so a 4 KiB/round list keeps too little after 8 rounds
(about 32 KiB) and `--rounds auto` must add rounds until it is a leak. The defaults (64 KiB a round) are 16 times
its rate: no trend that slow is looked at.
"""

from __future__ import annotations

import pytest

from conftest import PLANTS, load_report, run_tracer

pytestmark = pytest.mark.engine

LIST_PLANT = PLANTS / "kv_block_id_list.py"
THRESHOLDS = ("--min-leak-per-round", "2KiB", "--min-leak", "64KiB")


def on_stack(finding: dict, function: str) -> bool:
    return any(fr["function"] == function for fr in finding["stack"])


def describe(report: dict, n: int = 6) -> list[str]:
    return [f"{f['verdict']} {f['component']} {f['bytes']} {f['per_round_bytes']} {f['owner']}"
            for f in report["findings"][:n]]


def test_small_list_growth_is_the_top_leak_with_rounds_auto(tmp_path):
    out = tmp_path / "auto"
    result = run_tracer("diff", "--rounds", "auto", "--out", str(out), "--preload", str(LIST_PLANT), *THRESHOLDS,
                        timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    measured = [r for r in report["rounds"] if r["phase"] == "measured"]
    assert report["run"]["rounds_added"] > 0 and report["run"]["max_rounds"] == 32
    assert len(measured) == report["run"]["rounds"] == 8 + report["run"]["rounds_added"] <= 32
    note = next(n for n in report["notes"] if n.startswith("--rounds auto added"))
    assert "undecided trend" in note and "get_new_blocks_recording_ids" in note, note
    assert report["verdict"] == "leak"
    leaks = [f for f in report["findings"] if f["verdict"] in ("leak", "cycle")]
    assert len(leaks) == 1 and on_stack(leaks[0], "get_new_blocks_recording_ids"), describe(report)
    top = leaks[0]
    slope = top["details"]["trend"]["slope_bytes_per_round"]
    assert 3 * 1024 <= slope <= 6 * 1024, top["details"]["trend"]
    # the series covers the rounds before the first check too: it rises within the first 8 rounds
    series = top["per_round_bytes"]
    assert len(series) == len(measured) and series[7] >= series[0] + 4 * 1024, series
    assert any(h.startswith("kv_block_id_list._allocated_ids") for h in top["details"]["holders"]), top["details"]


def test_screen_traces_python_allocators_when_the_c_heap_grows(tmp_path):
    out = tmp_path / "screened"
    result = run_tracer("diff", "--rounds", "8", "--screen", "--out", str(out), "--preload",
                        str(PLANTS / "host_image_bytes.py"), "--preload", str(LIST_PLANT), *THRESHOLDS)
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    assert [r["phase"] for r in report["rounds"]].count("measured") == 8
    assert report["run"]["tracing"]["python_allocators"] is True
    assert any("trace_python_allocators" in n and "C heap" in n for n in report["notes"]), report["notes"]
    leaks = [f for f in report["findings"] if f["verdict"] == "leak"]
    assert any(on_stack(f, "remember_images") for f in leaks), describe(report)
    # the list is seen one pymalloc step at a time: a group of the planted function that rises every round
    listed = [f for f in report["findings"] if on_stack(f, "get_new_blocks_recording_ids")]
    assert listed and max(f["per_round_bytes"][-1] for f in listed) >= 8 * 4 * 1024 * 0.5, describe(report)
