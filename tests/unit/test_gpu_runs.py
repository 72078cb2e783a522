"""Analysis of real captures from `tracer diff --rounds 8 --model qwen3-vl-4b` on an H100 (vLLM 0.25, torch 2.11),
run offline here: a clean run and one with tests/plants/gpu_encoder_outputs.py (host.memray left out: 40+ MiB)."""

from __future__ import annotations

import json
from pathlib import Path

from tracer.analysis.analyze import analyze_dir
from tracer.output.report import build_report
from tracer.output.summary import render_summary

RUNS = Path(__file__).parents[1] / "fixtures" / "h100-vllm0.25"
MiB = 2**20


def gpu(analysis):
    return [f for f in analysis.findings if f.domain == "gpu"]


def test_clean_run_encoder_cache_is_a_cache_not_a_leak():
    a = analyze_dir(RUNS / "clean")
    assert a.verdict == "clean"
    (cache,) = [f for f in gpu(a) if f.verdict == "cache"]
    assert cache.component == "encoder cache"
    assert cache.bytes == 0 and cache.details["undrained_bytes"] == 90 * MiB
    series = cache.per_round_bytes
    assert len(series) == 8 and all(b > a for a, b in zip(series, series[1:]))
    growth = a.growth["gpu_allocated_bytes"]
    assert growth["growth"] == 90 * MiB and growth["growth_after_drain"] == 0


def test_planted_leak_is_top_and_findings_sum_to_allocated_growth():
    a = analyze_dir(RUNS / "planted")
    assert a.verdict == "leak"
    leaks = [f for f in a.findings if f.verdict == "leak"]
    assert len(leaks) == 1
    top = leaks[0]
    assert top.domain == "gpu" and top.owner.function == "keep_encoder_outputs"
    assert top.component == "user or plugin code"
    assert top.details["holders"][0].startswith("gpu_encoder_outputs._kept[")  # found on the H100, by address
    assert len(top.per_round_bytes) == 8 and all(b > a for a, b in zip(top.per_round_bytes, top.per_round_bytes[1:]))
    growth = a.growth["gpu_allocated_bytes"]
    undrained = sum(f.details.get("undrained_bytes", f.bytes) for f in gpu(a))
    assert undrained == growth["growth"]  # every byte of growth is attributed to a stack
    assert sum(f.bytes for f in gpu(a)) == growth["growth_after_drain"] == top.bytes
    for k, mark in enumerate(a.capture.round_marks()):  # and round by round
        attributed = sum(f.per_round_bytes[k] for f in gpu(a))
        assert attributed == mark["gpu_allocated_bytes"] - a.capture.mark("baseline")["gpu_allocated_bytes"]


def test_report_schema_carries_the_cuda_counters():
    report = build_report(analyze_dir(RUNS / "planted"))
    json.dumps(report)
    assert report["run"]["device"].startswith("cuda: NVIDIA H100")
    assert report["run"]["vllm"] == "0.25.0"
    for row in report["rounds"]:
        for key in ("gpu_allocated_bytes", "gpu_reserved_bytes", "gpu_used_bytes", "pinned_host_bytes"):
            assert isinstance(row[key], int)
    measured = [row for row in report["rounds"] if row["phase"] == "measured"]
    assert len(measured) == 8
    for key in ("gpu_allocated_bytes", "gpu_reserved_bytes", "gpu_used_bytes"):
        assert all(row[key] > 0 for row in measured), key  # a model on the GPU: never zero
    assert all(row["gpu_used_bytes"] >= row["gpu_reserved_bytes"] >= row["gpu_allocated_bytes"] for row in measured)
    allocated = [row["gpu_allocated_bytes"] for row in measured]
    assert all(b > a for a, b in zip(allocated, allocated[1:]))  # the plant's blocks, every round
    assert report["findings"][0]["domain"] == "gpu" and report["findings"][0]["verdict"] == "leak"


def test_gpu_ranges_are_the_planted_blocks_of_the_final_snapshot():
    """The holder search on the H100 starts from these ranges: the leak's blocks live in the drained snapshot."""
    from tracer.analysis.snapshots import live_blocks
    from tracer.record.holders import AddressRanges, gpu_ranges

    a = analyze_dir(RUNS / "planted")
    (leak,) = [f for f in a.findings if f.verdict == "leak"]
    final = a.capture.snapshot_files()["drained"]
    planted = {(b.address, b.size) for b in live_blocks(final)
               if any(fr.function == "keep_encoder_outputs" for fr in b.stack)}
    ranges = gpu_ranges(final, {leak.id})
    assert planted and {(address, size) for address, size, _ in ranges} == planted
    assert {tag for _, _, tag in ranges} == {leak.id}
    assert sum(size for _, size, _ in ranges) == leak.bytes
    others = {f.id for f in gpu(a) if f.id != leak.id}
    assert not {(address, size) for address, size, _ in gpu_ranges(final, others)} & planted
    lookup = AddressRanges(ranges)
    assert all(lookup.find(address + size - 1) == leak.id for address, size in planted)


def test_vllm_check_and_unattributed_sections_of_the_planted_run():
    """vLLM's own check (any growth of peak RSS or device memory fails) and the growth no finding explains."""
    report = build_report(analyze_dir(RUNS / "planted"))
    measured = [row for row in report["rounds"] if row["phase"] == "measured"]
    used = measured[-1]["gpu_used_bytes"] - measured[0]["gpu_used_bytes"]
    assert used > 0 and report["vllm_check"] == {
        "maxrss_growth": measured[-1]["maxrss_bytes"] - measured[0]["maxrss_bytes"], "threshold_bytes": 0,
        "gpu_used_growth": used, "would_fail": True}
    (reserved,) = report["unattributed"]
    growth = report["growth"]["gpu_reserved_bytes"]["growth"]
    assert reserved["counter"] == "gpu_reserved_bytes" and reserved["growth"] == growth
    allocated = report["growth"]["gpu_allocated_bytes"]["growth"]
    assert 0 < reserved["explained"] <= allocated and reserved["unattributed"] == growth - reserved["explained"] > 0
    assert "empty_cache" in reserved["hint"]


def test_device_memory_outside_the_allocator_is_reported_per_mark_on_the_h100():
    """The H100 capture predates the mapping tables; its CUDA counters alone still give the rss section's `gpu`
    rows: the baseline and the 8 rounds, the CUDA context and libraries steady outside the caching allocator."""
    a = analyze_dir(RUNS / "clean")
    rows = a.rss["gpu"]
    assert [r["index"] for r in rows] == [None, *range(1, 9)]
    outside = {r["outside_allocator"] for r in rows}
    assert len(outside) == 1 and 256 * MiB < outside.pop() < 4096 * MiB
    assert all(0 < r["reserved_free"] < 1024 * MiB for r in rows)
    assert not [f for f in a.findings if f.domain == "rss"]
    report = build_report(a)
    assert report["rss"] == {"gpu": rows}
    summary = render_summary(report, a.findings)
    assert "## Device memory outside PyTorch's allocator" in summary and "## RSS by mapping" not in summary
    assert f"(used minus reserved) per mark (MiB): {rows[0]['outside_allocator'] / MiB:.1f}, " in summary
