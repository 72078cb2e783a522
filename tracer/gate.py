"""The CI gate: does a report hold a new leak above the limits? Pure functions over report and baseline dicts.

A finding offends when the analysis called it a `leak`, the baseline does not accept its id, and it exceeds a
limit: more bytes per round than `max_leak_per_round` or more live bytes at the end than `max_leak`. With no
limit given, every new leak offends. The renderers turn a `GateResult` into text, GitHub annotations,
Markdown or JUnit XML; `emit` writes them where CI looks (stdout, `$GITHUB_STEP_SUMMARY`, a JUnit file).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from xml.etree import ElementTree as ET

from .errors import UsageError
from .safe_files import parse_json, read_inside, read_user_file, write_text
from .stacks import Frame, owner_index, short_path
from .text_escape import github_data, github_property, inert_lines, md_code, md_fence, md_text, one_line, xml_text

REPORT_SCHEMA = "tracer.report/1"
FORMATS = ("text", "github", "junit", "markdown")
JUNIT_FILE = "tracer-gate.xml"
OFFENDING, ACCEPTED, WITHIN = "new leak", "accepted", "under the limits"
TOP_FRAMES = 3


def fmt_bytes(n: float) -> str:
    """Bytes for people: `812 B`, `64.0 KiB`, `1.69 MiB`, `2.10 GiB`."""
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 1024:
        return f"{sign}{n:.0f} B"
    if n < 1024**2:
        return f"{sign}{n / 1024:.1f} KiB"
    if n < 1024**3:
        return f"{sign}{n / 1024**2:.2f} MiB"
    return f"{sign}{n / 1024**3:.2f} GiB"


# --- reading and checking a report -------------------------------------------------------------------------

def validate_report(report: object, source: str = "report") -> dict:
    """Check what the gate reads from a report dict; a UsageError (one line) says what is wrong."""
    if not isinstance(report, dict):
        raise UsageError(f"{source}: not a tracer report (a JSON object is expected)")
    if report.get("schema") != REPORT_SCHEMA:
        raise UsageError(f"{source}: schema {report.get('schema')!r}, expected {REPORT_SCHEMA!r}")
    findings = report.get("findings")
    if not isinstance(findings, list):
        raise UsageError(f"{source}: no findings list")
    for i, f in enumerate(findings):
        if not isinstance(f, dict) or not isinstance(f.get("id"), str) or not isinstance(f.get("verdict"), str):
            raise UsageError(f"{source}: finding {i} has no id or verdict")
        if not is_byte_count(f.get("bytes")):
            raise UsageError(f"{source}: finding {i} has no bytes (a byte count from 0 to 2**63)")
        series = f.get("per_round_bytes", [])
        if not isinstance(series, list) or not all(is_byte_count(b) for b in series):
            raise UsageError(f"{source}: finding {i} has a bad per_round_bytes")
        stack = f.get("stack", [])
        if not isinstance(stack, list) or not all(_is_frame(d) for d in stack):
            raise UsageError(f"{source}: finding {i} has a bad stack")
        if not isinstance(f.get("details", {}), dict):
            raise UsageError(f"{source}: finding {i} has bad details")
    for key in ("run", "growth", "vllm_check"):
        if not isinstance(report.get(key) or {}, dict):
            raise UsageError(f"{source}: {key} is not an object")
    if not isinstance(report.get("rounds") or [], list):
        raise UsageError(f"{source}: rounds is not a list")
    return report


MAX_BYTES = 2**63


def is_byte_count(value: object) -> bool:
    """A byte count a report may hold: a finite int or float from 0 to 2**63 (no NaN, infinity, negatives)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 0 <= value <= MAX_BYTES  # False for NaN; infinity is past the bound


def _is_frame(d: object) -> bool:
    if not isinstance(d, dict):
        return False
    line = d.get("line") or 0
    return (all(isinstance(d.get(k), (str, type(None))) for k in ("function", "file", "name", "filename"))
            and isinstance(line, int) and not isinstance(line, bool) and abs(line) < MAX_BYTES)


def report_file(path: Path) -> Path:
    """REPORT as given on the command line: a report directory or its report.json."""
    path = Path(path)
    return path / "report.json" if path.is_dir() else path


def load_report(path: Path) -> dict:
    file = report_file(path)
    if not file.exists():
        raise UsageError(f"{file}: no such report (give a report directory or its report.json)")
    # inside a report directory, report.json must be a regular file there, not a link out of it
    data = read_inside(file.parent, file.name, "report") if file != Path(path) else read_user_file(file, "report")
    return validate_report(parse_json(data, str(file)), str(file))


def measured_rounds(report: dict) -> int:
    rows = [r for r in report.get("rounds") or [] if isinstance(r, dict) and r.get("phase") == "measured"]
    if rows:
        return len(rows)
    planned = (report.get("run") or {}).get("rounds")
    return planned if isinstance(planned, int) and planned > 0 else 1


def bytes_per_round(finding: dict, rounds: int = 1) -> float:
    """Growth per measured round: from the per-round series when it has two points or more, else the bytes
    live at the end spread over the rounds (GPU groups without per-round snapshots have no series)."""
    series = finding.get("per_round_bytes") or []
    if len(series) >= 2:
        return (series[-1] - series[0]) / (len(series) - 1)
    if len(series) == 1:
        return float(series[0])
    return finding["bytes"] / max(rounds, 1)


# tracer's own round drivers: the frames outside the user's round function, left out of what is shown.
_DRIVERS = re.compile(r"(^|/)tracer/(recorder|session|pytest_plugin)\.py$")


def top_frames(finding: dict, depth: int = TOP_FRAMES) -> list[Frame]:
    """Up to `depth` frames from the owner (the innermost frame that is not allocator plumbing) outwards, ending
    before tracer's own round drivers."""
    stack = tuple(Frame.from_dict(d) for d in finding.get("stack") or [] if isinstance(d, dict))
    if not stack:
        return []
    start = owner_index(stack)
    out = []
    for frame in stack[start:start + depth]:
        if out and _DRIVERS.search(frame.file.replace("\\", "/")):
            break
        out.append(frame)
    return out


def frame_text(frame: Frame) -> str:
    return f"{frame.function}  {short_path(frame.file)}:{frame.line}"


def _frame_lines(frames: list[Frame]) -> list[str]:
    """The frames as printed, owner marked `->`, each on one line whatever its names hold."""
    return [one_line(f"{'->' if i == 0 else '  '} {frame_text(fr)}") for i, fr in enumerate(frames)]


# --- the verdict ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """None: no limit of that kind. With neither set, any new leak fails the gate."""

    max_leak_per_round: int | None = None
    max_leak: int | None = None

    def describe(self) -> str:
        parts = []
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


def evaluate(report: dict, baseline: dict | None = None, max_leak_per_round: int | None = None,
             max_leak: int | None = None, *, source: str | None = None,
             baseline_source: str | None = None) -> GateResult:
    """Gate one report. `baseline` is a "tracer.baseline/1" dict (see tracer.baseline); its ids are accepted."""
    from .baseline import accepted_by_id

    validate_report(report, source or "report")
    accepted = accepted_by_id(baseline, baseline_source or "baseline") if baseline is not None else {}
    limits = Limits(max_leak_per_round, max_leak)
    rounds = measured_rounds(report)
    checked = []
    for f in report["findings"]:
        if f["verdict"] != "leak":
            continue
        per_round = bytes_per_round(f, rounds)
        entry = accepted.get(f["id"])
        over = limits.exceeded(per_round, f["bytes"])
        if entry is not None:
            status, why = ACCEPTED, f"accepted by the baseline: {entry.get('reason') or 'no reason given'}"
        elif limits.max_leak_per_round is None and limits.max_leak is None:
            status, why = OFFENDING, "new leak (no limit set: any new leak fails)"
        elif over:
            status, why = OFFENDING, "new leak over the limit: " + "; ".join(over)
        else:
            status, why = WITHIN, "new leak under the limits"
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


# --- renderers -----------------------------------------------------------------------------------------------

ACCEPT_HINT = ('to accept a finding: tracer baseline REPORT -o baseline.json --reason "why it is fine", '
               "then gate with --baseline baseline.json")


def render_text(result: GateResult, frames: int = TOP_FRAMES, accept_hint: str | None = ACCEPT_HINT) -> str:
    lines = [result.headline(), f"  {result.context()}"]
    lines += [f"  note: {one_line(n)}" for n in result.notes]
    for k, c in enumerate(result.offenders, 1):
        lines.append(f"  [{k}] {c.headline()}")
        lines.append(f"      {one_line(c.why)}")
        reason = (c.finding.get("details") or {}).get("reason")
        if reason:
            lines.append(f"      analysis: {one_line(reason)}")
        lines += [f"      {line}" for line in _frame_lines(c.frames(frames))]
    for title, group in (("accepted by the baseline", result.accepted), ("under the limits", result.within)):
        for c in group:
            lines.append(f"  {title}: {c.headline()}" + (f" ({one_line(c.why.split(': ', 1)[1])})"
                                                          if c.status == ACCEPTED else ""))
    for e in result.stale:
        lines.append(one_line(f"  baseline entry not seen in this report (can be removed): {e['id']} "
                              f"{e.get('component', '')}".rstrip()))
    if result.offenders and accept_hint:
        lines.append(f"  {accept_hint}")
    return inert_lines("\n".join(lines) + "\n")


def render_markdown(result: GateResult, frames: int = TOP_FRAMES) -> str:
    status = "FAIL" if not result.passed else "PASS"
    lines = [f"### tracer gate: {status}", "", md_text(result.headline().split(": ", 2)[-1]) + ".", "",
             f"{md_text(result.context())}.", ""]
    lines += [f"> {md_text(n)}" for n in result.notes]
    if result.checked:
        lines += ["| finding | domain | component | per round | live at the end | gate |", "|---|---|---|---|---|---|"]
        for c in result.checked:
            mark = f"**{c.status}**" if c.status == OFFENDING else c.status
            lines.append(f"| {md_code(c.id, in_table=True)} | {md_text(c.domain)} | {md_text(c.component)} | "
                         f"{fmt_bytes(c.per_round)} | {fmt_bytes(c.bytes)} | {mark} |")
        lines.append("")
    for c in result.offenders:
        lines += [f"#### {md_code(c.id)} {md_text(c.component)}", "", md_text(c.why), ""]
        lines += md_fence(_frame_lines(c.frames(frames)))
        lines += [""]
    if result.stale:
        lines.append("Baseline entries not seen in this report (can be removed): "
                     + ", ".join(md_code(e["id"]) for e in result.stale) + ".")
        lines.append("")
    return "\n".join(lines)


def _workspace_location(frames: list[Frame], workspace: str | None) -> tuple[str, int] | None:
    """The first of the top frames inside the checkout, as a path GitHub can annotate."""
    if not workspace:
        return None
    root = Path(workspace).resolve()
    for fr in frames:
        try:
            rel = Path(fr.file).resolve().relative_to(root)
        except (ValueError, OSError):
            continue
        if fr.line > 0 and ".venv" not in rel.parts and "site-packages" not in rel.parts:
            return rel.as_posix(), fr.line
    return None


def render_github(result: GateResult, frames: int = TOP_FRAMES, workspace: str | None = None) -> str:
    """GitHub Actions workflow commands: one `::error` per offending finding (at the frame in the checkout, when
    one of the top frames is there), a `::warning` for stale baseline entries, a `::notice` when it passes."""
    lines = []
    for c in result.offenders:
        top = c.frames(frames)
        props = [f"title={github_property(f'tracer gate: new leak in {c.component}')}"]
        where = _workspace_location(top, workspace)
        if where:
            props = [f"file={github_property(where[0])}", f"line={where[1]}"] + props
        body = "\n".join([c.headline(), c.why] + _frame_lines(top))
        lines.append(f"::error {','.join(props)}::{github_data(body)}")
    if result.problem:
        lines.append(f"::error title=tracer gate::{github_data(result.problem)}")
    if result.stale:
        ids = ", ".join(e["id"] for e in result.stale)
        lines.append(f"::warning title=tracer gate::{github_data(f'baseline entries not seen in this report: {ids}')}")
    if result.passed:
        lines.append(f"::notice title=tracer gate::{github_data(result.headline())}")
    return "\n".join(lines) + "\n"


def render_junit(result: GateResult, frames: int = 8) -> str:
    """JUnit XML: a test case per leak finding (failed when it offends, skipped when the baseline accepts it)
    and one for the gate itself."""
    suites = ET.Element("testsuites", name="tracer")
    suite = ET.SubElement(suites, "testsuite", name="tracer.gate")
    props = ET.SubElement(suite, "properties")
    for name, value in (("report", result.source or ""), ("verdict", str(result.report.get("verdict"))),
                        ("limits", result.limits.describe()), ("baseline", result.baseline_source or "")):
        ET.SubElement(props, "property", name=name, value=xml_text(value))
    failures = skipped = 0
    for c in result.checked:
        top = c.frames(frames)
        owner = f": {top[0].function} ({short_path(top[0].file)})" if top else ""
        case = ET.SubElement(suite, "testcase", classname=xml_text(one_line(f"tracer.gate.{c.domain}")),
                             name=xml_text(one_line(f"{c.id} {c.component}{owner}")), time="0")
        body = xml_text("\n".join([c.headline(), one_line(c.why)] + _frame_lines(top)))
        if c.status == OFFENDING:
            failures += 1
            ET.SubElement(case, "failure", message=xml_text(one_line(f"{c.why}: {fmt_bytes(c.per_round)}/round")),
                          type="leak").text = body
        elif c.status == ACCEPTED:
            skipped += 1
            ET.SubElement(case, "skipped", message=xml_text(one_line(c.why)))
        else:
            ET.SubElement(case, "system-out").text = body
    gate = ET.SubElement(suite, "testcase", classname="tracer.gate", name="gate", time="0")
    if not result.passed:
        failures += 1
        ET.SubElement(gate, "failure", message=xml_text(result.headline()), type="gate").text = xml_text(
            render_text(result))
    else:
        ET.SubElement(gate, "system-out").text = xml_text(render_text(result))
    tests = len(result.checked) + 1
    for el in (suites, suite):
        el.set("tests", str(tests))
        el.set("failures", str(failures))
        el.set("errors", "0")
        el.set("skipped", str(skipped))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def emit(result: GateResult, fmt: str = "text", out: TextIO | None = None, junit_file: Path | None = None,
         env: dict | None = None) -> list[Path]:
    """Write the gate's outcome in `fmt` to `out` (stdout), plus the files CI reads: the Markdown summary
    appended to `$GITHUB_STEP_SUMMARY` (github), the JUnit XML (junit, or whenever `junit_file` is given).
    Returns the files written."""
    out = out or sys.stdout
    env = os.environ if env is None else env
    if fmt not in FORMATS:
        raise UsageError(f"unknown gate format {fmt!r}: use one of {', '.join(FORMATS)}")
    written = []
    if fmt == "markdown":
        out.write(inert_lines(render_markdown(result)))
    else:
        out.write(render_text(result))
    if fmt == "github":
        out.write(render_github(result, workspace=env.get("GITHUB_WORKSPACE")))
        summary = env.get("GITHUB_STEP_SUMMARY")
        if summary:
            try:
                with open(summary, "a") as fh:
                    fh.write(render_markdown(result) + "\n")
            except OSError as exc:
                raise UsageError(f"GITHUB_STEP_SUMMARY={summary}: cannot append the summary ({exc.strerror})") from exc
            written.append(Path(summary))
    if fmt == "junit" or junit_file is not None:
        written.append(write_text(Path(junit_file or JUNIT_FILE), render_junit(result)))
    out.flush()
    return written
