"""Markdown, to paste into a pull request or a GitHub step summary."""

from __future__ import annotations

from ....units import fmt_bytes
from ...report_file import TOP_FRAMES, frame_text
from ..evaluate import OFFENDING, GateResult
from . import Output, register


def render_markdown(result: GateResult, frames: int = TOP_FRAMES) -> str:
    status = "FAIL" if not result.passed else "PASS"
    lines = [f"### tracer gate: {status}", "", result.headline().split(": ", 2)[-1] + ".", "",
             f"{result.context()}.", ""]
    lines += [f"> {n}" for n in result.notes]
    if result.checked:
        lines += ["| finding | domain | component | per round | live at the end | gate |", "|---|---|---|---|---|---|"]
        for c in result.checked:
            mark = f"**{c.status}**" if c.status == OFFENDING else c.status
            lines.append(f"| `{c.id}` | {c.domain} | {c.component} | {fmt_bytes(c.per_round)} | "
                         f"{fmt_bytes(c.bytes)} | {mark} |")
        lines.append("")
    for c in result.offenders:
        lines += [f"#### `{c.id}` {c.component}", "", c.why, "", "```"]
        lines += [f"{'->' if i == 0 else '  '} {frame_text(fr)}" for i, fr in enumerate(c.frames(frames))]
        lines += ["```", ""]
    if result.stale:
        lines.append("Baseline entries not seen in this report (can be removed): "
                     + ", ".join(f"`{e['id']}`" for e in result.stale) + ".")
        lines.append("")
    return "\n".join(lines)


@register("markdown")
def print_markdown(result: GateResult, out: Output) -> None:
    out.stdout.write(render_markdown(result))
