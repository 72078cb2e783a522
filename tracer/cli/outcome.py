"""What a command prints at the end of a run: the verdict, the top findings and where the report is."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..analysis.verdicts import FAILING, REPORTED
from ..output.report_file import bytes_per_round, frame_text, measured_rounds, top_frames
from ..text_escape import inert_lines, one_line
from ..units import fmt_bytes

_COLOURS = {"leak": "red", "clean": "green", "inconclusive": "yellow"}
TOP = 3


def say(text: str, err: bool = False) -> None:
    """Print one line whose fields may come from a stranger's file: controls escaped, no workflow command."""
    click.echo(inert_lines(one_line(text)), err=err)


def colour_on(stream=None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    stream = stream or sys.stdout
    return not os.environ.get("NO_COLOR") and stream.isatty()


def print_outcome(report: dict, out_dir: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    leaks = [f for f in report["findings"] if f["verdict"] in FAILING]
    verdict = one_line(str(report["verdict"]).upper())
    if colour_on():
        verdict = click.style(verdict, fg=_COLOURS.get(report["verdict"]), bold=True)
    partial = one_line(f" ({report['status']})") if report["status"] != "complete" else ""
    click.echo(f"verdict: {verdict}{partial}; {len(leaks)} leak or cycle finding(s)", color=colour_on())
    rounds = measured_rounds(report)
    kept = [f for f in report["findings"] if f["verdict"] in REPORTED]
    for f in kept[:TOP]:
        frames = top_frames(f, 1)
        owner = frame_text(frames[0]) if frames else "?"
        role = f" [{f['role']}]" if f.get("role") else ""
        say(f"  {f['verdict']:<5} {f['id']} {f['domain']}{role} {f['component']}: "
            f"{fmt_bytes(bytes_per_round(f, rounds))}/round, {fmt_bytes(f['bytes'])} at the end; {owner}")
        for path in (f.get("details") or {}).get("holders", [])[:1]:
            say(f"        held by {path}")
        cycle = ((f.get("details") or {}).get("cycle") or {}).get("path")
        if cycle:
            say(f"        reference cycle: {cycle}")
    for label, name in (("page", "report.html"), ("report", "summary.md")):
        if (out_dir / name).exists():
            say(f"{label}: {out_dir / name}")
