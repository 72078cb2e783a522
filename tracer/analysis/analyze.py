"""From a capture on disk to attributed, classified findings: pure functions, runnable offline anywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..capture import Capture, read_capture
from .added_rounds import describe_added
from .components import Rule, classify_component
from .counters import growth_table, vllm_check
from .encoder_cache_bound import final_audit, judge_untracked
from .findings import Finding, merge_by_id
from .gpu import gpu_findings
from .host import host_findings
from .rss import rss_analysis
from .screened import describe_screen
from .unattributed import unattributed_growth
from .verdicts import CACHE, COLLECTOR, CYCLE, FAILING, LEAK, SUSPECTED, Thresholds, apply_verdicts

_ORDER = {LEAK: 0, CYCLE: 0, SUSPECTED: 1, CACHE: 2}


@dataclass
class Analysis:
    capture: Capture
    findings: list[Finding]
    growth: dict
    vllm_check: dict
    unattributed: list[dict]
    thresholds: Thresholds
    notes: list[str] = field(default_factory=list)
    rss: dict | None = None  # RSS by mapping: growth per round, first touch, allocator retention

    @property
    def verdict(self) -> str:
        if any(f.verdict in FAILING for f in self.findings):
            return "leak"
        if any(f.verdict == SUSPECTED for f in self.findings):
            return SUSPECTED
        screened = self.capture.of_type("screen")
        return "clean" if self.capture.round_marks() or (screened and not screened[-1]["suspect"]) else "inconclusive"


def _marks_ms(capture: Capture) -> dict | None:
    baseline = capture.mark("baseline")
    if baseline is None:
        return None
    drained = capture.mark("drained")
    return {"baseline": baseline["time_ms"], "rounds": [m["time_ms"] for m in capture.round_marks()],
            "drained": drained["time_ms"] if drained else None,
            "drain_steps": [(m.get("step") or f"step {m.get('index')}", m["time_ms"])
                            for m in capture.marks if m["name"] == "drain_step"]}


WHOLE_DRAIN = "drain"  # the final drain of a capture recorded before drains were staged


def last_drain_step(capture: Capture) -> str:
    """The name of what ran between the last step mark and the drained mark: the collector, in a staged drain
    (recorded with a `drain_step` event per step); in older captures the whole drain, every cache reset and the
    collector at once, which must not be put down to the collector alone (caches would read as cycles)."""
    staged = any(e.get("when") == "final" for e in capture.of_type("drain_step"))
    return COLLECTOR if staged else WHOLE_DRAIN


def stream_findings(capture: Capture) -> tuple[list[Finding], list[str]]:
    """Findings of every stream (process and backend), each carrying its process role when there are several."""
    marks = _marks_ms(capture)
    last_step = last_drain_step(capture)
    findings: list[Finding] = []
    notes: list[str] = []
    for stream in capture.streams:
        if stream.backend == "memray":
            path = capture.stream_file(stream)
            if path is None or marks is None or not marks["rounds"]:
                where = f"process {stream.role}" if capture.several_processes else "this capture directory"
                notes.append(f"no host capture in {where} (the run ended before the first measured round, "
                             f"or {stream.file} was left out)")
                continue
            found = merge_by_id(host_findings(path, marks, native=bool(stream.settings.get("native_traces")),
                                              interval_ms=stream.settings.get("memory_interval_ms", 10),
                                              last_step=last_step))
        elif stream.backend == "torch":
            found = gpu_findings(capture, stream)
        else:
            notes.append(f"stream {stream.role}/{stream.backend}: unknown backend, skipped")
            continue
        if capture.several_processes:
            for f in found:
                f.role = stream.role
        findings += found
    return findings, notes


def analyze(capture: Capture, thresholds: Thresholds | None = None, rules: tuple[Rule, ...] = ()) -> Analysis:
    thresholds = thresholds or Thresholds()
    findings, notes = stream_findings(capture)
    notes += [describe_screen(result) for result in capture.of_type("screen")]
    for event in capture.of_type("rounds_added"):
        notes.append(describe_added(event))
    holders = capture.holders()
    for f in findings:
        f.component = classify_component(f.stack, rules)
        if f.id in holders:
            f.details["holders"] = holders[f.id]
    drained = capture.mark("drained") is not None
    apply_verdicts(findings, thresholds, drained=drained,
                   missing_steps=tuple(capture.run.get("missing_drain_steps") or ()))
    judge_untracked(findings, final_audit(capture), thresholds)
    notes += describe_cycles(capture, findings)
    misses = capture.holder_misses()
    for f in findings:
        if f.verdict == LEAK and "holders" not in f.details:
            f.details["no_holder"] = misses.get(f.id, "no holder search ran for this finding (--no-holders, an "
                                                      "interrupted run, or other thresholds than the run's)")
    rss, rss_leak = rss_analysis(capture, thresholds, rules)
    if rss_leak is not None:
        findings.append(rss_leak)
    findings.sort(key=lambda f: (_ORDER.get(f.verdict, 2), -f.bytes))
    growth = growth_table(capture)
    return Analysis(capture, findings, growth, vllm_check(capture),
                    unattributed_growth(growth, findings, drained), thresholds, notes, rss)


def describe_cycles(capture: Capture, findings: list[Finding]) -> list[str]:
    """Attach to each cycle finding the reference cycle that held it (cycles.json); notes on the collections
    the workload ran itself during the rounds, which free such garbage and can hide its growth."""
    garbage = capture.cycles()
    shapes, owners = garbage.get("cycles", []), garbage.get("findings", {})
    for f in findings:
        if f.verdict != CYCLE:
            continue
        shape = shapes[owners[f.id]] if f.id in owners and owners[f.id] < len(shapes) else None
        if shape is not None:
            f.details["cycle"] = {k: shape[k] for k in ("path", "cycles", "objects", "bytes", "types") if k in shape}
        elif garbage:
            f.details["cycle"] = {"garbage_types": garbage.get("types", {}),
                                  "why_no_path": "no reference cycle in the garbage owns this group's memory"}
        else:
            f.details["cycle"] = {"why_no_path": "the capture has no description of the garbage (cycles.json)"}
    notes = []
    for event in capture.of_type("gc_during_rounds"):
        runs, freed = event["collections"], sum(event["collected"])
        if freed:
            notes.append(f"The workload's own garbage collections ran during the measured rounds (generation 0/1/2: "
                         f"{runs[0]}/{runs[1]}/{runs[2]} times) and freed {freed} objects: reference-cycle garbage "
                         "they freed does not show as growth, so a cycle can look smaller, or sawtoothed, than "
                         "between collections.")
    return notes


def analyze_dir(directory: Path, **kwargs) -> Analysis:
    return analyze(read_capture(directory), **kwargs)
