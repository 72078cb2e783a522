"""GitHub Actions: workflow commands (annotations), and the Markdown summary for $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

from pathlib import Path

from ....analysis.stacks import Frame
from ....errors import UsageError
from ....text_escape import github_data, github_property
from ...report_file import TOP_FRAMES, frame_lines
from ..evaluate import GateResult
from . import Output, register
from .markdown import render_markdown
from .text import render_text


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
        body = "\n".join([c.headline(), c.why] + frame_lines(top))
        lines.append(f"::error {','.join(props)}::{github_data(body)}")
    if result.problem:
        lines.append(f"::error title=tracer gate::{github_data(result.problem)}")
    if result.stale:
        ids = ", ".join(e["id"] for e in result.stale)
        lines.append(f"::warning title=tracer gate::{github_data(f'baseline entries not seen in this report: {ids}')}")
    if result.passed:
        lines.append(f"::notice title=tracer gate::{github_data(result.headline())}")
    return "\n".join(lines) + "\n"


@register("github")
def print_github(result: GateResult, out: Output) -> None:
    """The text, the annotations, and the Markdown summary appended to `$GITHUB_STEP_SUMMARY` when it is set."""
    out.stdout.write(render_text(result))
    out.stdout.write(render_github(result, workspace=out.env.get("GITHUB_WORKSPACE")))
    summary = out.env.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a") as fh:
                fh.write(render_markdown(result) + "\n")
        except OSError as exc:
            raise UsageError(f"GITHUB_STEP_SUMMARY={summary}: cannot append the summary ({exc.strerror})") from exc
        out.written.append(Path(summary))
