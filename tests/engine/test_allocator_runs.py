"""`tracer diff --allocator jemalloc|tcmalloc` on the real vLLM CPU engine: the traced process really runs on that
malloc (its library is mapped, `malloc` resolves to it), the report says so, the C heap counters and the
retention at the drain are that allocator's own (not glibc's idle arena), and a clean run stays clean."""

from __future__ import annotations

import ctypes.util
import json

import pytest

from conftest import load_report, run_tracer

pytestmark = pytest.mark.engine

ROUNDS = 4
MiB = 2**20
LIBRARIES = {"jemalloc": "jemalloc", "tcmalloc": "tcmalloc_minimal"}


@pytest.mark.parametrize("allocator", ["jemalloc", "tcmalloc"])
def test_clean_run_under_another_allocator(tmp_path, allocator):
    if ctypes.util.find_library(LIBRARIES[allocator]) is None:
        pytest.skip(f"lib{LIBRARIES[allocator]} is not installed (.ci/run installs it)")
    out = tmp_path / "report"
    result = run_tracer("diff", "--rounds", str(ROUNDS), "--out", str(out), "--allocator", allocator)
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out)
    run = report["run"]["allocator"]
    assert run["name"] == allocator and run["preloaded"] == allocator and allocator in run["library"], run
    baseline = next(json.loads(line) for line in (out / "capture" / "events.jsonl").read_text().splitlines()
                    if '"smaps"' in line and json.loads(line).get("full"))
    assert any(allocator in path for *_, path, _ in baseline["rows"]), "the library is not mapped in the process"
    # in-use bytes are the allocator's own: glibc's mallinfo2 would read its idle arena, near zero
    assert all(r["heap_bytes"] > 50 * MiB for r in report["rounds"]), [r["heap_bytes"] for r in report["rounds"]]
    retention = report["rss"]["retention"]
    assert retention["allocator"] == allocator and retention["release_call"] != "malloc_trim(0)", retention
    assert retention["malloc_before"]["allocator"] == allocator and "arena_bytes" not in retention["malloc_before"]
    assert not any("MALLOC_ARENA_MAX" in r for r in retention.get("remedies", []))
    assert report["verdict"] == "clean", [(f["domain"], f["verdict"], f["details"].get("reason"))
                                          for f in report["findings"] if f["verdict"] in ("leak", "cycle", "leak?")]
    summary = (out / "summary.md").read_text()
    assert f"| malloc | {allocator} (" in summary and retention["release_call"] in summary
