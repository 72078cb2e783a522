"""Leak, cache or transient: from a group's per-round series and what the drain released."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .components import NATIVE_KERNELS
from .findings import Finding

LEAK, CACHE, TRANSIENT = "leak", "cache", "transient"
SUSPECTED = "leak?"  # growth at a leak rate that no traced allocation explains (the `rss` domain)

# Native caches that are bounded by design though no vLLM API empties them.
BOUNDED_NATIVE = {NATIVE_KERNELS: "JIT kernels cached per input shape (oneDNN primitive cache, ideep and brgemm "
                                  "kernel caches): bounded, grows only with new shapes"}


@dataclass(frozen=True)
class Thresholds:
    """A leak must grow by `min_per_round` bytes a round on average and keep `min_total` bytes at the end.

    `noise` is the step below which a round counts as flat (allocator rounding, one stray buffer);
    `min_growing_fraction` of round-to-round steps must grow, so one noisy round does not decide.
    """

    min_per_round: int = 64 * 1024
    min_total: int = 256 * 1024
    noise: int = 16 * 1024
    min_growing_fraction: float = 0.6


def classify(f: Finding, th: Thresholds, drained: bool) -> tuple[str, str]:
    """(verdict, reason) for one finding."""
    series = f.per_round_bytes
    undrained = f.details.get("undrained_bytes", series[-1] if series else f.bytes)
    if drained and undrained > 0 and f.bytes <= 0.1 * undrained:
        if undrained < th.min_total:
            return TRANSIENT, "small, released by the drain"
        return CACHE, f"released by the drain: {undrained} bytes filled, {f.bytes} left"
    if f.component in BOUNDED_NATIVE:
        return CACHE, BOUNDED_NATIVE[f.component]
    steps = [b - a for a, b in zip(series, series[1:])]
    if not steps:
        return (LEAK, "survives (too few rounds to see growth)") if f.bytes >= th.min_total else (
            TRANSIENT, "small, too few rounds to see growth")
    growing = sum(1 for s in steps if s > th.noise)
    rate = statistics.median(steps)  # one jump (a buffer grown once) does not make a per-round rate
    half = len(steps) // 2
    plateau = half >= 2 and all(s <= th.noise for s in steps[half:]) and any(s > th.noise for s in steps[:half])
    if plateau:
        return CACHE, "grew, then stayed flat for the second half of the rounds (bounded)"
    if drained and series and series[-1] > 0 and f.bytes < max(2.0, 0.5 * len(series)) * series[-1] / len(series):
        if undrained - f.bytes >= th.min_total:  # the drain released a fill: a cache whose last round is in use
            return CACHE, (f"released by the drain: {undrained} bytes filled, {f.bytes} left (about the last "
                           "round's worth, still in use)")
        return TRANSIENT, (f"grows until the drain, which leaves {f.bytes} bytes: about the last round's worth, "
                           "not one piece per round")
    if f.bytes >= th.min_total and rate >= th.min_per_round and growing / len(steps) >= th.min_growing_fraction:
        return LEAK, f"grows {rate / 1024:.0f} KiB/round in {growing} of {len(steps)} rounds and survives the end"
    return TRANSIENT, "does not grow steadily across rounds"


def apply_verdicts(findings: list[Finding], th: Thresholds, drained: bool) -> None:
    for f in findings:
        f.verdict, f.details["reason"] = classify(f, th, drained)
