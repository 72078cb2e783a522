"""`tracer gate`: fail CI on new leaks in a report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import gate_exit, gate_options


@click.command("gate")
@click.argument("report", type=click.Path(exists=True, path_type=Path))
@gate_options
def gate_command(report, baseline_file, accept_cycles, max_leak_per_round, max_leak, max_rss_per_round, gate_format,
                 junit_file):
    """Fail CI on new leaks: exit 0 when no new leak finding of REPORT exceeds the limits, 1 when one does
    (and only then), 2 for bad input, 3 for an internal error.

    REPORT is a report directory (tracer diff --out) or its report.json. A finding fails the gate when the
    analysis called it a leak (or a reference cycle, unless --accept-cycles), the baseline does not accept its id,
    and it is over a limit (any new leak when no limit is given); a `leak?` finding of RSS growth that no
    allocation explains fails it the same way (limit --max-rss-per-round). The output names each one with its
    component, bytes per round and top frames.
    """
    from ..output.gate.baseline import load_baseline
    from ..output.report_file import load_report, report_file

    data = load_report(report)
    baseline = load_baseline(baseline_file) if baseline_file else None
    sys.exit(gate_exit(data, str(report_file(report)), baseline, baseline_file, max_leak_per_round, max_leak,
                        gate_format, junit_file, max_rss_per_round=max_rss_per_round, accept_cycles=accept_cycles))
