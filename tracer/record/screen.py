"""Two-stage runs: a cheap untraced pass decides from counters whether anything grows, before paying for tracing.

Only exact counters are screened (C heap in use, CUDA allocated bytes, pinned host bytes); RSS is left out,
since page reuse hides leaks in it and allocator caches pose as growth. The screen is deliberately eager: what
survives the final drain above the per-round leak threshold times the rounds (at least twice the total threshold:
the C heap moves by a few hundred KiB between drains on its own) sends the run on to the traced pass,
which attributes and classifies; a false alarm costs time, never a verdict.

When the C heap is what kept growing, the traced pass also records Python's own allocator (pymalloc) one
allocation at a time: small Python objects (a list of ints a few KiB a round, its ints) live in pymalloc's arenas,
which memray otherwise sees only as whole 1 MiB arenas, or not at all once an arena is reused.

A server (`tracer diff --serve`) is screened process by process: each process's own counters are judged on their
own, never their sum (one process's growth would hide in the others' noise, and the sum's noise is theirs added
up); only the processes that kept growth are traced, each with pymalloc recorded when its own C heap grew.
"""

from __future__ import annotations

from ..analysis.verdicts import Thresholds

HEAP = "heap_bytes"  # the C heap's bytes in use (glibc mallinfo2, or the preloaded allocator's own count)
SCREENED = (HEAP, "gpu_allocated_bytes", "pinned_host_bytes")


def screen(baseline: dict, rounds: list[dict], drained: dict, thresholds: Thresholds) -> tuple[bool, list[str]]:
    """(suspect, reasons): whether a counter kept more than the limit from `baseline` to `drained`."""
    suspects, reasons = screened_counters(baseline, rounds, drained, thresholds)
    return bool(suspects), reasons


def screened_counters(baseline: dict, rounds: list[dict], drained: dict,
                      thresholds: Thresholds) -> tuple[list[str], list[str]]:
    """(suspect counters, reasons): the counters that kept more than the limit from `baseline` to `drained`."""
    limit = max(2 * thresholds.min_total, len(rounds) * thresholds.min_per_round)
    suspects, reasons = [], []
    for name in SCREENED:
        if baseline.get(name) is None or drained.get(name) is None:
            continue
        kept = drained[name] - baseline[name]
        peak = max((r[name] - baseline[name] for r in rounds), default=kept)
        if kept > limit:
            suspects.append(name)
        reasons.append(f"{name} {kept / 2**20:+.2f} MiB after the drain (peak {peak / 2**20:+.2f} MiB, "
                       f"limit {limit / 2**20:.2f} MiB)")
    return suspects, reasons


def screen_each_process(baseline: dict, rounds: list[dict], drained: dict,
                        thresholds: Thresholds) -> dict[str, dict]:
    """role -> {suspect, suspects, reasons}: each process of a server judged on its own
    counters (the rows' `processes`); empty for rows of one process."""
    results = {}
    for role, start in (baseline.get("processes") or {}).items():
        end = (drained.get("processes") or {}).get(role)
        if end is None:
            continue
        series = [r["processes"][role] for r in rounds if role in (r.get("processes") or {})]
        suspects, reasons = screened_counters(start, series, end, thresholds)
        results[role] = {"suspect": bool(suspects), "suspects": suspects, "reasons": reasons}
    return results
