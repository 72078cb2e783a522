"""Leak, cache, cycle or transient: from a group's per-round series and what each drain step released."""

from __future__ import annotations

from dataclasses import dataclass

from .components import NATIVE_KERNELS
from .findings import Finding
from .trend import Trend, trend

LEAK, CACHE, TRANSIENT = "leak", "cache", "transient"
CYCLE = "cycle"  # garbage in reference cycles: only the garbage collector frees it
# Growth at a leak rate with incomplete evidence: RSS that no traced allocation explains (domain `rss`), or a
# group that grew through every round where a drain step that would have told was missing.
SUSPECTED = "leak?"

FAILING = (LEAK, CYCLE)  # what fails the gate and makes the run's verdict "leak" (rss `leak?`: its own limit)
REPORTED = (LEAK, CYCLE, SUSPECTED, CACHE)  # shown in full; the rest are transient
COLLECTOR = "gc"  # the drain's last step, the garbage collector (tracer.record.driver names it so)

# Native caches that are bounded by design though no vLLM API empties them.
BOUNDED_NATIVE = {NATIVE_KERNELS: "JIT kernels cached per input shape (oneDNN primitive cache, ideep and brgemm "
                                  "kernel caches): bounded, grows only with new shapes"}

# Components a drain step empties: when the installed vLLM lacks the step, their groups are judged on their series.
DRAINED_BY = {"mm_cache": ("multimodal processor cache", "mm receiver cache", "HF image processing"),
              "encoder_cache": ("encoder cache", "vision encoder"),
              "prefix_cache": ("prefix cache",)}


@dataclass(frozen=True)
class Thresholds:
    """Minimum sizes: a leak grows by at least `min_per_round` bytes a round (Theil-Sen slope) and keeps at least
    `min_total` bytes at the end. Whether it grows at all is the trend test's call (tracer.analysis.trend)."""

    min_per_round: int = 64 * 1024
    min_total: int = 256 * 1024


def classify(f: Finding, th: Thresholds, drained: bool, missing_steps: tuple[str, ...] = ()) -> tuple[str, str]:
    """(verdict, reason) for one finding; `missing_steps`: drain steps the installed library lacks."""
    series = f.per_round_bytes
    undrained = f.details.get("undrained_bytes", series[-1] if series else f.bytes)
    t = trend(series)
    f.details["trend"] = t.as_dict()
    missing = [s for s in missing_steps if f.component in DRAINED_BY.get(s, ())]
    if missing:
        return _without_drain_step(f, th, t, missing)
    released = drained and undrained > 0 and f.bytes <= 0.1 * undrained
    by_collector = f.details.get("released_by", {}).get(COLLECTOR, 0)
    if drained and by_collector >= max(th.min_total, 2 * t.slope) and grows(series, th, t):
        return CYCLE, (f"grew {t.slope / 1024:.1f} KiB/round, and {by_collector} of its {undrained} bytes outlived "
                       f"every cache reset: only the garbage collector freed them (at least two rounds' worth), so "
                       f"objects in reference cycles keep it until a full collection")
    if released:
        if undrained < th.min_total:
            return TRANSIENT, "small, released by the drain"
        return CACHE, f"released by the drain: {undrained} bytes filled, {f.bytes} left"
    if f.component in BOUNDED_NATIVE:
        return CACHE, BOUNDED_NATIVE[f.component]
    if len(series) < 2:
        return (LEAK, "survives (too few rounds to see growth)") if f.bytes >= th.min_total else (
            TRANSIENT, "small, too few rounds to see growth")
    if _bounded(series, th):
        return CACHE, "grew, then stopped growing for the second half of the rounds (bounded)"
    if drained and series and series[-1] > 0 and f.bytes < max(2.0, 0.5 * len(series)) * series[-1] / len(series):
        if undrained - f.bytes >= th.min_total:  # the drain released a fill: a cache whose last round is in use
            return CACHE, (f"released by the drain: {undrained} bytes filled, {f.bytes} left (about the last "
                           "round's worth, still in use)")
        return TRANSIENT, (f"grows until the drain, which leaves {f.bytes} bytes: about the last round's worth, "
                           "not one piece per round")
    if f.bytes >= th.min_total and grows(series, th, t):
        return LEAK, f"grows {t.slope / 1024:.1f} KiB/round ({_evidence(t)}) and survives the end"
    return TRANSIENT, "does not grow steadily across rounds"


def grows(series: list[int], th: Thresholds, t: Trend | None = None) -> bool:
    """A rising trend at a leak's rate whose level rises too (a sawtooth's troughs climb)."""
    t = t or trend(series)
    if t.slope < th.min_per_round:
        return False
    if len(series) < 4:  # too few pairs for the test: every step must rise
        return all(b > a for a, b in zip(series, series[1:]))
    third = max(1, len(series) // 3)
    return t.rising and min(series[-third:]) > min(series[:third])


def _bounded(series: list[int], th: Thresholds) -> bool:
    """Grew in the first half, then grew less than a leak's minimum rate in the second."""
    half = len(series) // 2
    if half < 2:
        return False
    early, late = trend(series[: half + 1]), trend(series[half:])
    return early.slope >= th.min_per_round and late.slope < th.min_per_round


def _evidence(t: Trend) -> str:
    return f"Mann-Kendall p={t.p_rising:.3g} over {t.rounds} rounds" if t.rounds >= 4 else f"every one of {t.rounds} rounds"


def _without_drain_step(f: Finding, th: Thresholds, t: Trend, missing: list[str]) -> tuple[str, str]:
    """A group whose drain step this library lacks: the drain cannot tell a cache, so the series alone decides."""
    steps = ", ".join(missing)
    note = f"its drain step ({steps}) is missing in the installed vLLM, so the drain could not empty it"
    if _bounded(f.per_round_bytes, th):
        return CACHE, f"bounded: grew, then stopped growing ({note})"
    if f.bytes >= th.min_total and grows(f.per_round_bytes, th, t):
        return SUSPECTED, f"grows {t.slope / 1024:.1f} KiB/round ({_evidence(t)}), suspected only: {note}"
    return TRANSIENT, f"does not grow steadily across rounds ({note})"


def undecided(f: Finding, th: Thresholds) -> bool:
    """Not called a leak, yet it may be growing at a leak's rate: more rounds would tell. Either the trend is not
    yet significant, or it rises at a leak's rate but has not yet kept `min_total` bytes."""
    if f.verdict != TRANSIENT or len(f.per_round_bytes) < 2:
        return False
    t = trend(f.per_round_bytes)
    if t.slope < th.min_per_round:
        return False
    return t.undecided or (t.rounds < 4 and t.slope > 0) or (f.bytes < th.min_total and grows(f.per_round_bytes, th, t))


def apply_verdicts(findings: list[Finding], th: Thresholds, drained: bool, missing_steps: tuple[str, ...] = ()) -> None:
    for f in findings:
        f.verdict, f.details["reason"] = classify(f, th, drained, missing_steps)
