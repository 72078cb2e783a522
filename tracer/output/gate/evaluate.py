"""The CI gate: does a report hold a new leak above the limits? Pure functions over report and baseline dicts.

A finding offends when the analysis called it a `leak` (or a `cycle`, unless cycles are accepted), the baseline does not accept its id, and it exceeds a
limit: more bytes per round than `max_leak_per_round` or more live bytes at the end than `max_leak`. With no
limit given, every new leak offends. A `leak?` finding in domain `rss` (RSS growth no allocation explains)
offends the same way, against `max_rss_per_round` (default: `max_leak_per_round`). The formats (tracer.output.gate.formats) render a `GateResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...analysis.stacks import Frame
from ...analysis.verdicts import CYCLE, LEAK, SUSPECTED
from ...text_escape import one_line
from ...units import fmt_bytes
from ..report_file import TOP_FRAMES, bytes_per_round, measured_rounds, top_frames, validate_report
from .baseline import accepted_by_id

OFFENDING, ACCEPTED, WITHIN = "new leak", "accepted", "under the limits"


@dataclass(frozen=True)
class Limits:
    """None: no limit of that kind. With neither set, any new leak fails the gate."""

    max_leak_per_round: int | None = None
    max_leak: int | None = None
    max_rss_per_round: int | None = None  # for `leak?` findings of unexplained RSS (default: max_leak_per_round)

    def describe(self) -> str:
        parts = []
        if self.max_rss_per_round is not None:
            parts.append(f"unexplained RSS per round > {fmt_bytes(self.max_rss_per_round)}")
        if self.max_leak_per_round is not None:
            parts.append(f"per round > {fmt_bytes(self.max_leak_per_round)}")
        if self.max_leak is not None:
            parts.append(f"live at the end > {fmt_bytes(self.max_leak)}")
        return "fail on " + (" or ".join(parts) if parts else "any new leak")

    def exceeded(self, per_round: float, total: int) -> list[str]:
        over = []
        if self.max_leak_per_round is not None and per_round > self.max_leak_per_round:
            over.append(f"{fmt_bytes(per_round)}/round > {fmt_bytes(self.max_leak_per_round)}/round")
        if self.max_leak is not None and total > self.max_leak:
            over.append(f"{fmt_bytes(total)} live > {fmt_bytes(self.max_leak)}")
        return over


@dataclass
class Checked:
    """One leak finding of the report and what the gate made of it."""

    finding: dict
    per_round: float
    status: str  # OFFENDING, ACCEPTED or WITHIN
    why: str

    @property
    def id(self) -> str:
        return self.finding["id"]

    @property
    def component(self) -> str:
        return str(self.finding.get("component") or "unknown")

    @property
    def domain(self) -> str:
        return str(self.finding.get("domain") or "?")

    @property
    def bytes(self) -> int:
        return self.finding["bytes"]

    def frames(self, depth: int = TOP_FRAMES) -> list[Frame]:
        return top_frames(self.finding, depth)

    def headline(self) -> str:
        """One line; the report's text in it is shown with its controls escaped."""
        return one_line(f"{self.id} {self.domain}, {self.component}: {fmt_bytes(self.per_round)}/round, "
                        f"{fmt_bytes(self.bytes)} live at the end")


@dataclass
class GateResult:
    report: dict
    limits: Limits
    checked: list[Checked]
    stale: list[dict] = field(default_factory=list)  # baseline entries no leak finding of this report matches
    problem: str | None = None  # why the report cannot pass whatever its findings (no measured round)
    notes: list[str] = field(default_factory=list)
    source: str | None = None  # where the report was read from
    baseline_source: str | None = None

    def of_status(self, status: str) -> list[Checked]:
        return [c for c in self.checked if c.status == status]

    @property
    def offenders(self) -> list[Checked]:
        return self.of_status(OFFENDING)

    @property
    def accepted(self) -> list[Checked]:
        return self.of_status(ACCEPTED)

    @property
    def within(self) -> list[Checked]:
        return self.of_status(WITHIN)

    @property
    def passed(self) -> bool:
        return not self.offenders and self.problem is None

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def headline(self) -> str:
        if self.problem:
            return f"tracer gate: FAIL: {self.problem}"
        n = len(self.offenders)
        if n:
            return f"tracer gate: FAIL: {n} new leak finding{'s' if n != 1 else ''} over the limits ({self.limits.describe()})"
        return f"tracer gate: PASS: no new leak over the limits ({self.limits.describe()})"

    def context(self) -> str:
        rep = self.report
        status = rep.get("status", "complete")
        where = f"report {self.source}: " if self.source else "report: "
        base = f"; baseline {self.baseline_source} accepts {len(self.accepted)}" if self.baseline_source else ""
        return one_line(f"{where}verdict {rep.get('verdict', '?')}, {measured_rounds(rep)} measured round(s)"
                        + (f", {status}" if status != "complete" else "") + base)


def is_rss_suspect(finding: dict) -> bool:
    return finding.get("verdict") == SUSPECTED and finding.get("domain") == "rss"


def evaluate(report: dict, baseline: dict | None = None, max_leak_per_round: int | None = None,
             max_leak: int | None = None, *, max_rss_per_round: int | None = None, source: str | None = None,
             baseline_source: str | None = None, accept_cycles: bool = False) -> GateResult:
    """Gate one report. `baseline` is a "tracer.baseline/1" dict (see tracer.baseline); its ids are accepted."""
    validate_report(report, source or "report")
    accepted = accepted_by_id(baseline, baseline_source or "baseline") if baseline is not None else {}
    limits = Limits(max_leak_per_round, max_leak,
                    max_rss_per_round if max_rss_per_round is not None else max_leak_per_round)
    rounds = measured_rounds(report)
    checked = []
    for f in report["findings"]:
        if f["verdict"] != LEAK and (f["verdict"] != CYCLE or accept_cycles) and not is_rss_suspect(f):
            continue
        per_round = bytes_per_round(f, rounds)
        entry = accepted.get(f["id"])
        over = limits.exceeded(per_round, f["bytes"])
        kind = "reference cycle" if f["verdict"] == CYCLE else "leak"
        if is_rss_suspect(f):
            limit = limits.max_rss_per_round
            over = ([f"{fmt_bytes(per_round)}/round > {fmt_bytes(limit)}/round"]
                    if limit is not None and per_round > limit else [])
        if entry is not None:
            status, why = ACCEPTED, f"accepted by the baseline: {entry.get('reason') or 'no reason given'}"
        elif is_rss_suspect(f) and limits.max_rss_per_round is None:
            status, why = OFFENDING, "RSS growth no allocation explains (no per-round limit set: it fails)"
        elif not is_rss_suspect(f) and limits.max_leak_per_round is None and limits.max_leak is None:
            status, why = OFFENDING, f"new {kind} (no limit set: any new leak fails)"
        elif over:
            status, why = OFFENDING, f"new {kind} over the limit: " + "; ".join(over)
        else:
            status, why = WITHIN, f"new {kind} under the limits"
        checked.append(Checked(f, per_round, status, why))
    leak_ids = {c.id for c in checked}
    stale = [e for i, e in accepted.items() if i not in leak_ids]
    problem = None
    notes = []
    if report.get("verdict") == "inconclusive":
        problem = "the report is inconclusive: no measured round was recorded, so nothing can be gated"
    elif report.get("status", "complete") != "complete":
        notes.append(f"partial run ({report.get('error') or report.get('status')}): gated on the rounds done")
    return GateResult(report, limits, checked, stale, problem, notes, source, baseline_source)
