"""Plain text: the headline, each offending finding with its top frames, what the baseline accepted."""

from __future__ import annotations

from ....text_escape import inert_lines, one_line
from ...report_file import TOP_FRAMES, frame_lines
from ..evaluate import ACCEPTED, GateResult
from . import Output, register

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
        lines += [f"      {line}" for line in frame_lines(c.frames(frames))]
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


@register("text")
def print_text(result: GateResult, out: Output) -> None:
    out.stdout.write(render_text(result))
