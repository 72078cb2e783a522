"""From a capture on disk to attributed, classified findings: pure functions, runnable offline anywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .capture import Capture
from .components import Rule, classify_component
from .findings import Finding, merge_by_id
from .host_analysis import host_findings
from .unattributed import unattributed_growth
from .verdicts import CACHE, LEAK, Thresholds, apply_verdicts

COUNTERS = ("rss_bytes", "uss_bytes", "maxrss_bytes", "heap_bytes", "gpu_allocated_bytes", "gpu_reserved_bytes",
            "gpu_used_bytes", "pinned_host_bytes")
_ORDER = {LEAK: 0, CACHE: 1}


@dataclass
class Analysis:
    capture: Capture
    findings: list[Finding]
    growth: dict
    vllm_check: dict
    unattributed: list[dict]
    thresholds: Thresholds
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if any(f.verdict == LEAK for f in self.findings):
            return "leak"
        screened = self.capture.of_type("screen")
        return "clean" if self.capture.round_marks() or (screened and not screened[-1]["suspect"]) else "inconclusive"


def _marks_ms(capture: Capture) -> dict | None:
    baseline = capture.mark("baseline")
    if baseline is None:
        return None
    drained = capture.mark("drained")
    return {"baseline": baseline["time_ms"], "rounds": [m["time_ms"] for m in capture.round_marks()],
            "drained": drained["time_ms"] if drained else None}


def gpu_findings(capture: Capture) -> list[Finding]:
    """New GPU blocks at the end of the last round, with live bytes per round, and what survived the drain."""
    files = capture.gpu_snapshot_files()
    rounds = capture.round_snapshot_files()
    if "baseline" not in files or not rounds:
        return []
    from .gpu_snapshot import diff_series, diff_snapshots

    findings = diff_series(files["baseline"], rounds)
    if len(rounds) < len(capture.round_marks()):  # no snapshot per round: growth is known only at the end
        for f in findings:
            f.per_round_bytes = []
    if "drained" in files:
        after = {f.id: f for f in diff_snapshots(files["baseline"], files["drained"])}
        for f in findings:
            kept = after.pop(f.id, None)
            f.details.update(undrained_bytes=f.bytes, undrained_count=f.count)
            f.bytes, f.count = (kept.bytes, kept.count) if kept else (0, 0)
        findings += list(after.values())  # new during the drain itself
    return findings


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


def analyze(capture: Capture, thresholds: Thresholds | None = None, rules: tuple[Rule, ...] = ()) -> Analysis:
    thresholds = thresholds or Thresholds()
    marks = _marks_ms(capture)
    findings: list[Finding] = []
    notes: list[str] = []
    tracing = capture.manifest.get("run", {}).get("tracing", {})
    if capture.host_file is not None and marks is not None and marks["rounds"]:
        findings += merge_by_id(host_findings(capture.host_file, marks, native=bool(tracing.get("native_traces"))))
    elif tracing.get("host") and marks is not None:
        notes.append("no host capture in this capture directory (the run ended before the first measured round, "
                     "or host.memray was left out)")
    findings += gpu_findings(capture)
    for result in capture.of_type("screen"):
        notes.append(("Screening pass (untraced): growth seen, so the rounds were traced. " if result["suspect"] else
                      "Screening pass (untraced): nothing grows, so no traced pass ran. ") + "; ".join(result["reasons"]))
    holders = capture.holders()
    for f in findings:
        f.component = classify_component(f.stack, rules)
        if f.id in holders:
            f.details["holders"] = holders[f.id]
    apply_verdicts(findings, thresholds, drained=capture.mark("drained") is not None)
    findings.sort(key=lambda f: (_ORDER.get(f.verdict, 2), -f.bytes))
    growth = growth_table(capture)
    drained = capture.mark("drained") is not None
    return Analysis(capture, findings, growth, vllm_check(capture),
                    unattributed_growth(growth, findings, drained), thresholds, notes)


def analyze_dir(directory: Path, **kwargs) -> Analysis:
    from .capture import read_capture

    return analyze(read_capture(directory), **kwargs)
