"""Encoder-cache entries vLLM no longer tracks: a leak the encoder-cache reset would release, so the drain alone
would call it a cache.

The final drain's encoder-cache step records, before it empties the cache, what the model runner held and how
much of it the scheduler's EncoderCacheManager neither tracks nor is about to free
(tracer.workload.encoder_cache_audit). vLLM frees an encoder output only when the manager tells the runner to, so
an untracked entry stays until a reset that production never calls; the manager's capacity bounds the rest. A
group of the encoder cache that the reset released is a leak when the untracked entries reach the leak minimum
and the group grew through the rounds.
"""

from __future__ import annotations

from ..capture import Capture
from .findings import Finding
from .verdicts import CACHE, LEAK, TRANSIENT, Thresholds, grows

STEP = "encoder_cache"
ENCODER_COMPONENTS = ("encoder cache", "vision encoder")
FIELDS = ("entries", "bytes", "untracked_entries", "untracked_bytes", "capacity_embeddings")


def final_audit(capture: Capture) -> dict | None:
    """What the final drain's encoder-cache step found (counts, checked by the capture reader), or None when it
    recorded nothing (another vLLM, the engine core in another process, or a capture from before this check)."""
    found = [e["found"] for e in capture.of_type("drain_step")
             if e.get("when") == "final" and e.get("step") == STEP and e.get("found") is not None]
    return found[-1] if found and all(k in found[-1] for k in FIELDS) else None


def judge_untracked(findings: list[Finding], audit: dict | None, th: Thresholds) -> None:
    """Encoder-cache groups released by the reset become leaks when the runner held untracked entries."""
    if audit is None:
        return
    for f in findings:
        released = f.details.get("released_by", {}).get(STEP, 0)
        if f.component not in ENCODER_COMPONENTS or released <= 0 or f.verdict not in (CACHE, TRANSIENT):
            continue
        f.details["encoder_cache_audit"] = audit
        if audit["untracked_bytes"] >= th.min_total and grows(f.per_round_bytes, th):
            f.verdict = LEAK
            slope = f.details.get("trend", {}).get("slope_bytes_per_round", 0)
            f.details["reason"] = (
                f"grows {slope / 1024:.1f} KiB/round; the encoder-cache reset released it, but before the reset "
                f"vLLM's encoder cache held {audit['untracked_entries']} of its {audit['entries']} entries "
                f"({audit['untracked_bytes']} bytes) that the scheduler no longer tracks (its capacity: "
                f"{audit['capacity_embeddings']} embeddings): vLLM never frees those, only the reset did")
