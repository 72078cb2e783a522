"""`tracer compare A B`: what changed between two reports (two vLLM releases, two commits, a patch or not).

Findings are matched by their stable id (a fingerprint of the stack, the same across machines and runs), in
both domains. B's leaks and caches that A lacks are new, A's that B lacks are gone; a finding in both whose
growth per round or bytes at the end rose by more than `GROWTH_RATIO` (and `GROWTH_MIN_BYTES`) has grown;
one whose verdict differs is a verdict change. Counters and environments are put side by side. Pure functions
over report dicts; the renderers turn a `Comparison` into text, Markdown or JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..units import fmt_bytes
from .report_file import bytes_per_round, frame_text, measured_rounds, top_frames, validate_report

FORMATS = ("text", "markdown", "json")
LEAK, CACHE = "leak", "cache"
# A matched finding has grown when B's value is more than this many times A's and larger by GROWTH_MIN_BYTES:
# run-to-run noise of one stack group stays well under both.
GROWTH_RATIO = 1.25
GROWTH_MIN_BYTES = 64 * 1024
# The counters of a report's `growth`, in the order shown.
COUNTERS = (("rss_bytes", "RSS"), ("uss_bytes", "USS"), ("heap_bytes", "C heap"),
            ("gpu_allocated_bytes", "GPU allocated"), ("gpu_reserved_bytes", "GPU reserved"),
            ("gpu_used_bytes", "GPU used"), ("pinned_host_bytes", "pinned host"))
ENVIRONMENT = ("vllm", "transformers", "torch", "python", "memray", "tracer", "device", "model", "rounds", "batch",
               "images", "engine_args")


def ratio(a: float, b: float) -> float | None:
    """b / a; None when a is not positive (no finite ratio)."""
    return b / a if a > 0 else None


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


@dataclass
class Side:
    """One finding as one report has it: its verdict, growth per measured round and bytes live at the end."""

    verdict: str
    per_round: float
    bytes: int

    @classmethod
    def of(cls, finding: dict, rounds: int) -> "Side":
        return cls(finding["verdict"], bytes_per_round(finding, rounds), finding["bytes"])


@dataclass
class Match:
    """A finding id and how it appears in A and B (None: absent from that report)."""

    id: str
    domain: str
    component: str
    frames: list[str]
    a: Side | None
    b: Side | None

    @property
    def change(self) -> str:
        """new, gone, verdict, grown or same."""
        if self.a is None:
            return "new"
        if self.b is None:
            return "gone"
        if self.a.verdict != self.b.verdict:
            return "verdict"
        return "grown" if self.grown else "same"

    @property
    def grown(self) -> bool:
        if self.a is None or self.b is None:
            return False
        return any(b > a * GROWTH_RATIO and b - a > GROWTH_MIN_BYTES
                   for a, b in ((self.a.per_round, self.b.per_round), (self.a.bytes, self.b.bytes)))

    @property
    def leaks_in_b(self) -> bool:
        """B calls it a leak and A did not (new, or another verdict in A), or it leaks faster or more in B."""
        if self.b is None or self.b.verdict != LEAK:
            return False
        return self.a is None or self.a.verdict != LEAK or self.grown

    def as_dict(self) -> dict:
        out = {"id": self.id, "domain": self.domain, "component": self.component, "change": self.change,
               "frames": self.frames}
        for name, side in (("a", self.a), ("b", self.b)):
            out[name] = None if side is None else {"verdict": side.verdict, "bytes_per_round": side.per_round,
                                                  "bytes": side.bytes}
        if self.a is not None and self.b is not None:
            out["ratio_per_round"] = ratio(self.a.per_round, self.b.per_round)
            out["ratio_bytes"] = ratio(self.a.bytes, self.b.bytes)
        return out


@dataclass
class Comparison:
    a: dict
    b: dict
    source_a: str
    source_b: str
    matches: list[Match]
    max_leak_per_round: int | None = None
    notes: list[str] = field(default_factory=list)

    def of_change(self, change: str) -> list[Match]:
        return [m for m in self.matches if m.change == change]

    @property
    def offenders(self) -> list[Match]:
        """B's new or grown leaks over the limit (any of them when no limit is set)."""
        limit = self.max_leak_per_round
        return [m for m in self.matches if m.leaks_in_b and (limit is None or m.b.per_round > limit)]

    @property
    def exit_code(self) -> int:
        return 1 if self.offenders else 0

    def environment(self) -> list[tuple[str, object, object]]:
        ra, rb = self.a.get("run") or {}, self.b.get("run") or {}
        return [(key, ra.get(key), rb.get(key)) for key in ENVIRONMENT]

    def counters(self) -> list[tuple[str, dict, dict]]:
        ga, gb = self.a.get("growth") or {}, self.b.get("growth") or {}
        return [(label, ga.get(key) or {}, gb.get(key) or {}) for key, label in COUNTERS if key in ga or key in gb]

    def headline(self) -> str:
        counts = {c: len(self.of_change(c)) for c in ("new", "gone", "grown", "verdict")}
        summary = (f"{counts['new']} new, {counts['gone']} gone, {counts['grown']} grown, "
                   f"{counts['verdict']} verdict change(s)")
        limit = (f" over {fmt_bytes(self.max_leak_per_round)}/round" if self.max_leak_per_round is not None
                 else "")
        n = len(self.offenders)
        verdict = (f"FAIL: B has {n} new or grown leak(s){limit}" if n
                   else f"PASS: B has no new or grown leak{limit}")
        return f"tracer compare: {verdict}; {summary}"

    def as_dict(self) -> dict:
        return {
            "schema": "tracer.compare/1",
            "a": {"source": self.source_a, "verdict": self.a.get("verdict")},
            "b": {"source": self.source_b, "verdict": self.b.get("verdict")},
            "passed": not self.offenders,
            "max_leak_per_round": self.max_leak_per_round,
            "offenders": [m.id for m in self.offenders],
            "environment": {k: {"a": a, "b": b, "differs": a != b} for k, a, b in self.environment()},
            "counters": {label: {"a": a, "b": b} for label, a, b in self.counters()},
            "findings": [m.as_dict() for m in self.matches if m.change != "same"],
            "unchanged": len(self.of_change("same")),
            "notes": self.notes,
        }


def compare(a: dict, b: dict, max_leak_per_round: int | None = None, *, source_a: str = "A",
            source_b: str = "B") -> Comparison:
    """Match the findings of reports A and B by id. Transients only in one report are left out: a report lists
    only its largest ones, so their absence from the other says nothing."""
    validate_report(a, source_a)
    validate_report(b, source_b)
    rounds_a, rounds_b = measured_rounds(a), measured_rounds(b)
    by_id_a = {(f.get("domain"), f["id"]): f for f in a["findings"]}
    by_id_b = {(f.get("domain"), f["id"]): f for f in b["findings"]}
    matches = []
    for key in list(by_id_b) + [k for k in by_id_a if k not in by_id_b]:
        fa, fb = by_id_a.get(key), by_id_b.get(key)
        if (fa is None or fb is None) and (fa or fb)["verdict"] not in (LEAK, CACHE):
            continue
        shown = fb or fa
        matches.append(Match(shown["id"], str(shown.get("domain") or "?"), str(shown.get("component") or "unknown"),
                             [frame_text(fr) for fr in top_frames(shown)],
                             Side.of(fa, rounds_a) if fa else None, Side.of(fb, rounds_b) if fb else None))
    order = {"new": 0, "verdict": 1, "grown": 2, "gone": 3, "same": 4}
    matches.sort(key=lambda m: (order[m.change], -(m.b or m.a).per_round))
    notes = []
    for name, rep in (("A", a), ("B", b)):
        if rep.get("status", "complete") != "complete":
            notes.append(f"{name} is a partial run ({rep.get('error') or rep.get('status')})")
        if rep.get("verdict") == "inconclusive":
            notes.append(f"{name} is inconclusive: no measured round was recorded")
    if (a.get("thresholds") or {}) != (b.get("thresholds") or {}):
        notes.append("the reports were analysed with different thresholds")
    return Comparison(a, b, source_a, source_b, matches, max_leak_per_round, notes)


# --- renderers -----------------------------------------------------------------------------------------------

_TITLES = (("new", "New in B"), ("verdict", "Verdict changed"), ("grown", "Grown in B"), ("gone", "Gone in B"))


def _size(value: object) -> str:
    return fmt_bytes(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _side_text(side: Side | None) -> str:
    if side is None:
        return "-"
    return f"{side.verdict} {fmt_bytes(side.per_round)}/round, {fmt_bytes(side.bytes)} at the end"


def _env_value(value: object) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def render_text(c: Comparison) -> str:
    lines = [c.headline(), f"  A: {c.source_a} (verdict {c.a.get('verdict')})",
             f"  B: {c.source_b} (verdict {c.b.get('verdict')})"]
    lines += [f"  note: {n}" for n in c.notes]
    lines.append("environment (* differs):")
    for key, a, b in c.environment():
        lines.append(f"    {key:<13} {_env_value(a)}" if a == b
                     else f"  * {key:<13} A {_env_value(a)}  |  B {_env_value(b)}")
    rows = c.counters()
    if rows:
        lines.append("counters (growth over the measured rounds; after the drain):")
        for label, a, b in rows:
            lines.append(f"  {label:<14} A {_size(a.get('growth')):>11} ({_size(a.get('growth_after_drain')):>11})"
                         f"   B {_size(b.get('growth')):>11} ({_size(b.get('growth_after_drain')):>11})")
    for change, title in _TITLES:
        group = c.of_change(change)
        if not group:
            continue
        lines.append(f"{title}:")
        for m in group:
            lines.append(f"  {m.id} {m.domain}, {m.component}")
            lines.append(f"      A: {_side_text(m.a)}")
            lines.append(f"      B: {_side_text(m.b)}")
            if m.a is not None and m.b is not None:
                lines.append(f"      ratio B/A: {fmt_ratio(ratio(m.a.per_round, m.b.per_round))} per round, "
                             f"{fmt_ratio(ratio(m.a.bytes, m.b.bytes))} at the end")
            lines += [f"      {'->' if i == 0 else '  '} {fr}" for i, fr in enumerate(m.frames)]
    lines.append(f"unchanged findings: {len(c.of_change('same'))}")
    return "\n".join(lines) + "\n"


def render_markdown(c: Comparison) -> str:
    status, rest = c.headline().split(": ", 1)[1].split(": ", 1)
    lines = [f"### tracer compare: {status}", "", rest[0].upper() + rest[1:] + ".", "",
             f"- A: `{c.source_a}` (verdict {c.a.get('verdict')})", f"- B: `{c.source_b}` (verdict "
                                                                         f"{c.b.get('verdict')})", ""]
    lines += [f"> {n}" for n in c.notes] + ([""] if c.notes else [])
    lines += ["| | A | B |", "|---|---|---|"]
    for key, a, b in c.environment():
        cell = (lambda v: f"`{_env_value(v)}`") if key == "engine_args" else _env_value
        mark = "" if a == b else " **differs**"
        lines.append(f"| {key}{mark} | {cell(a)} | {cell(b)} |")
    rows = c.counters()
    if rows:
        lines += ["", "| counter | A growth | A after drain | B growth | B after drain |", "|---|---|---|---|---|"]
        for label, a, b in rows:
            lines.append(f"| {label} | {_size(a.get('growth'))} | {_size(a.get('growth_after_drain'))} | "
                         f"{_size(b.get('growth'))} | {_size(b.get('growth_after_drain'))} |")
    changed = [m for m in c.matches if m.change != "same"]
    if changed:
        lines += ["", "| finding | change | domain | component | A | B | ratio per round | ratio at the end |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in changed:
            both = m.a is not None and m.b is not None
            lines.append(f"| `{m.id}` | {m.change} | {m.domain} | {m.component} | {_side_text(m.a)} | "
                         f"{_side_text(m.b)} | {fmt_ratio(ratio(m.a.per_round, m.b.per_round)) if both else '-'} | "
                         f"{fmt_ratio(ratio(m.a.bytes, m.b.bytes)) if both else '-'} |")
    for m in c.offenders:
        lines += ["", f"#### `{m.id}` {m.component} ({m.change})", "", "```"]
        lines += [f"{'->' if i == 0 else '  '} {fr}" for i, fr in enumerate(m.frames)] + ["```"]
    lines += ["", f"Unchanged findings: {len(c.of_change('same'))}.", ""]
    return "\n".join(lines)


def render(c: Comparison, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(c.as_dict(), indent=2) + "\n"
    return render_markdown(c) if fmt == "markdown" else render_text(c)
