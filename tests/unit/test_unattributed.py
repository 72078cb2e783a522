"""Unattributed growth: what the counters grew by beyond what the findings explain (pure logic)."""

from tracer.analysis.findings import Finding
from tracer.analysis.unattributed import unattributed_growth

MiB = 2**20


def g(after):
    return {"growth": after, "growth_after_drain": after}


def test_pinned_host_growth_is_always_unattributed():
    rows = unattributed_growth({"pinned_host_bytes": g(34 * MiB)}, [], drained=True)
    assert [r["counter"] for r in rows] == ["pinned_host_bytes"]
    assert rows[0]["unattributed"] == 34 * MiB and "pin_memory" in rows[0]["hint"]


def test_findings_explain_the_heap_and_the_heap_explains_rss():
    leak = Finding("host", (), 10 * MiB, 3, [])
    growth = {"heap_bytes": g(10 * MiB), "rss_bytes": g(30 * MiB)}
    rows = unattributed_growth(growth, [leak], drained=True)
    assert [(r["counter"], r["unattributed"]) for r in rows] == [("rss_bytes", 20 * MiB)]


def test_gpu_layers_allocated_reserved_used():
    block = Finding("gpu", (), 90 * MiB, 8, [])
    growth = {"gpu_allocated_bytes": g(90 * MiB), "gpu_reserved_bytes": g(136 * MiB), "gpu_used_bytes": g(136 * MiB)}
    rows = unattributed_growth(growth, [block], drained=True)
    assert [(r["counter"], r["unattributed"]) for r in rows] == [("gpu_reserved_bytes", 46 * MiB)]


def test_small_remainders_are_not_reported():
    assert unattributed_growth({"rss_bytes": g(100_000)}, [], drained=True) == []
