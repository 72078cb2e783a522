"""RSS that no allocation explains, on the real vLLM CPU engine (`tracer diff --preload PLANT.py`, 6 rounds each):
a raw mmap leak no hook sees is a `leak?` in domain `rss` and fails the gate; a preallocated buffer filling up is
first touch, bounded by its size; a fragmented heap is allocator retention that malloc_trim returns. The grown
mappings are matched to memray's live allocations: none lies in the raw pages, while the heap holds the bytes a
second plant keeps (under the leak thresholds) with that plant on their stack."""

from __future__ import annotations

import pytest

from conftest import PLANTS, load_report, run_tracer

pytestmark = pytest.mark.engine

ROUNDS = 6
MiB = 2**20


def run_plant(tmp_path_factory, stem: str, *more: str) -> tuple:
    out = tmp_path_factory.mktemp(stem) / "report"
    plants = [a for s in (stem, *more) for a in ("--preload", str(PLANTS / f"{s}.py"))]
    result = run_tracer("diff", "--rounds", str(ROUNDS), "--out", str(out), *plants)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, load_report(out)


def rss_findings(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["domain"] == "rss"]


def test_raw_mmap_leak_is_an_rss_suspect_and_fails_the_gate(tmp_path_factory):
    out, report = run_plant(tmp_path_factory, "raw_mmap_leak", "kept_heap_bytes")
    (finding,) = rss_findings(report)
    assert finding["verdict"] == "leak?" and report["verdict"] == "leak?"
    assert finding["bytes"] >= ROUNDS * 8 * MiB * 0.9, finding
    steps = [b - a for a, b in zip(finding["per_round_bytes"], finding["per_round_bytes"][1:])]
    # 8 MiB a round, less what the heap's pages reused or kept in that round add or take (up to about 4 MiB)
    assert len(steps) == ROUNDS - 1 and all(s >= 2 * MiB for s in steps), finding["per_round_bytes"]
    assert sorted(steps)[len(steps) // 2] >= 6 * MiB, finding["per_round_bytes"]
    grown = finding["details"]["mappings"]
    assert grown and all(m["kind"] == "anonymous" for m in grown)
    assert sum(m["grew"] for m in grown) >= ROUNDS * 8 * MiB
    assert not [f for f in report["findings"] if f["verdict"] == "leak"]  # memray saw nothing of it
    matched = {m["range"]: m for m in report["rss"]["allocations"]["mappings"]}
    for m in grown:  # no live allocation lies in the raw pages: all of their growth stays unexplained
        assert m["allocated_bytes"] == 0 and matched[m["range"]]["allocations"] == 0, matched.get(m["range"])
        assert matched[m["range"]]["unexplained"] == m["grew"]
    (heap,) = [m for m in matched.values() if m["kind"] == "heap"]  # the bytes kept by kept_heap_bytes.py
    (kept,) = [s for s in heap["stacks"] if s["owner"].startswith("chat_keeping_heap_bytes (")]
    assert kept["count"] == ROUNDS * 8 and ROUNDS * 8 * 4096 <= kept["bytes"] < ROUNDS * 8 * 4200, kept
    assert kept["component"] == "user or plugin code" and heap["allocated_bytes"] >= kept["bytes"]
    gate = run_tracer("gate", str(out))
    assert gate.returncode == 1 and finding["id"] in gate.stdout, gate.stdout
    assert run_tracer("gate", str(out), "--max-rss-per-round", "16MiB").returncode == 0


def test_preallocated_buffer_filling_up_is_first_touch(tmp_path_factory):
    _, report = run_plant(tmp_path_factory, "first_touch_buffer")
    assert rss_findings(report) == [] and report["verdict"] == "clean"
    (touch,) = [t for t in report["rss"]["first_touch"] if t["owner"] == "first_touch_buffer.staging"]
    assert touch["bound"] == 256 * MiB and touch["kind"] == "ndarray"
    series = touch["resident_per_round"]
    assert len(series) == ROUNDS and all(b - a >= 20 * MiB for a, b in zip(series, series[1:])), series
    assert touch["resident_at_end"] <= touch["bound"] and not touch["flattening"]
    end = report["rss"]["after_drain"]
    assert end["first_touch"] >= ROUNDS * 24 * MiB * 0.9 and end["unexplained"] < MiB, end


def test_fragmented_heap_is_allocator_retention(tmp_path_factory):
    _, report = run_plant(tmp_path_factory, "fragmented_heap")
    assert rss_findings(report) == [] and report["verdict"] == "clean"
    before_trim = [a["unexplained"] for a in report["rss"]["per_round"]]
    assert before_trim[-1] - before_trim[0] >= 4 * MiB, before_trim  # the heap grows past malloc's in-use bytes
    retention = report["rss"]["retention"]
    assert retention["retained"] and retention["trim_returned"] >= before_trim[-1], retention
    assert any("jemalloc" in r for r in retention["remedies"])
    assert report["rss"]["after_drain"]["unexplained"] < MiB
