"""Markdown, to paste into a pull request or a GitHub step summary."""

from __future__ import annotations

from ....text_escape import inert_lines, md_code, md_fence, md_text
from ....units import fmt_bytes
from ...report_file import TOP_FRAMES, frame_lines
from ..evaluate import OFFENDING, GateResult
from . import Output, register


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
        lines += md_fence(frame_lines(c.frames(frames)))
        lines += [""]
    if result.stale:
        lines.append("Baseline entries not seen in this report (can be removed): "
                     + ", ".join(md_code(e["id"]) for e in result.stale) + ".")
        lines.append("")
    return "\n".join(lines)


@register("markdown")
def print_markdown(result: GateResult, out: Output) -> None:
    out.stdout.write(inert_lines(render_markdown(result)))
