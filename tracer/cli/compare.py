"""`tracer compare`: what changed from one report to another (two vLLM releases, two commits)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import SIZE


@click.command("compare")
@click.argument("report_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("report_b", metavar="B", type=click.Path(path_type=Path))
@click.option("--max-leak-per-round", "max_leak_per_round", type=SIZE, default=None,
              help="Fail only on a new or grown leak of B growing more than this per round (e.g. '1 MiB'). "
                   "Without it, any new or grown leak fails.")
@click.option("--format", "compare_format", type=click.Choice(("text", "markdown", "json")), default="text",
              show_default=True, help="markdown: to paste into a bug report; json: for scripts.")
def compare_command(report_a, report_b, max_leak_per_round, compare_format):
    """What changed from report A to report B: findings matched by stable id (new, gone, grown, verdict
    changes), counters and environments side by side.

    A and B are report directories or report.json files, e.g. the same `tracer diff` on two vLLM releases.
    Exit codes: 0 when B has no new or grown leak over the limit, 1 when it has, 2 for bad input.
    """
    from ..output.compare import compare, render
    from ..output.report_file import load_report, report_file

    a, b = load_report(report_a), load_report(report_b)
    result = compare(a, b, max_leak_per_round, source_a=str(report_file(report_a)),
                     source_b=str(report_file(report_b)))
    click.echo(render(result, compare_format), nl=False)
    sys.exit(result.exit_code)
