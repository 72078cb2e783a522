"""The per-round counters over the measured window: growth of each, and what vLLM's own check concludes."""

from __future__ import annotations

from ..capture import COUNTERS, Capture


def growth_table(capture: Capture) -> dict:
    """Each counter at the baseline, at the end of the last round and after the final drain."""
    baseline, rounds, drained = capture.mark("baseline"), capture.round_marks(), capture.mark("drained")
    out = {}
    if baseline is None or not rounds:
        return out
    for name in COUNTERS:
        if baseline.get(name) is None or rounds[-1].get(name) is None:
            continue
        row = {"baseline": baseline[name], "end": rounds[-1][name], "growth": rounds[-1][name] - baseline[name]}
        if drained and drained.get(name) is not None:
            row["after_drain"] = drained[name]
            row["growth_after_drain"] = drained[name] - baseline[name]
        out[name] = row
    return out


def vllm_check(capture: Capture) -> dict:
    """What vLLM's own test (PR #39268) concludes: fail on any growth of peak RSS or of device used memory."""
    rounds = [r for r in capture.rounds if r["phase"] == "measured"]
    if not rounds:
        return {}
    first, last = rounds[0], rounds[-1]
    out = {"maxrss_growth": last["maxrss_bytes"] - first["maxrss_bytes"], "threshold_bytes": 0}
    if last.get("gpu_used_bytes") is not None and first.get("gpu_used_bytes") is not None:
        out["gpu_used_growth"] = last["gpu_used_bytes"] - first["gpu_used_bytes"]
    out["would_fail"] = any(v > 0 for k, v in out.items() if k.endswith("_growth"))
    return out
