"""Summary parts for captures of several processes (`tracer diff --serve`): the round table with one column group
per process, and findings grouped by the process that holds them."""

from __future__ import annotations

from ..analysis.findings import Finding

PROCESS_COUNTERS = (("RSS", "rss_bytes"), ("USS", "uss_bytes"), ("C heap", "heap_bytes"),
                    ("GPU alloc", "gpu_allocated_bytes"))


def process_roles(rounds: list[dict]) -> list[str]:
    return list(dict.fromkeys(role for r in rounds for role in (r.get("processes") or {})))


def process_round_table(rounds: list[dict]) -> list[str]:
    """Markdown lines: round, phase, then (RSS, USS, C heap[, GPU alloc]) MiB for each process; empty when the
    rounds carry no per-process counters."""
    roles = process_roles(rounds)
    if not roles:
        return []
    counters = [(label, key) for label, key in PROCESS_COUNTERS
                if any((r.get("processes") or {}).get(role, {}).get(key) is not None for r in rounds for role in roles)]
    cols = ["round", "phase"] + [f"{role} {label} MiB" for role in roles for label, _ in counters]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rounds:
        per = r.get("processes") or {}
        vals = [str(r["index"]), r["phase"]]
        for role in roles:
            for _, key in counters:
                value = per.get(role, {}).get(key)
                vals.append(f"{value / 2**20:.1f}" if value is not None else "-")
        lines.append("| " + " | ".join(vals) + " |")
    return lines


def by_process(findings: list[Finding]) -> list[tuple[str | None, list[Finding]]]:
    """(role, findings) in first-seen order; one group with role None when the findings carry no roles."""
    groups: dict[str | None, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.role, []).append(f)
    return list(groups.items())
