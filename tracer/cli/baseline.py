"""`tracer baseline`: accept the leak findings of a report, by stable id."""

from __future__ import annotations

from pathlib import Path

import click

from .outcome import say



@click.command("baseline")
@click.argument("report", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Baseline file to write (JSON, schema tracer.baseline/1); commit it next to the CI config.")
@click.option("--reason", help="Why these findings are accepted (stored with each one).")
@click.option("--merge", is_flag=True, help="Keep the entries already in the --out file (and their reasons).")
def baseline_command(report, out_file, reason, merge):
    """Accept the leak findings of REPORT: write their stable ids to a baseline file, so that
    `tracer gate --baseline FILE` fails only on new ones.

    REPORT is a report directory or its report.json.
    """
    from ..units import fmt_bytes
    from ..output.gate.baseline import build_baseline, load_baseline, write_baseline
    from ..output.report_file import load_report, report_file

    data = load_report(report)
    previous = load_baseline(out_file) if merge and out_file.exists() else None
    baseline = build_baseline(data, reason, previous, source=str(report_file(report)))
    write_baseline(out_file, baseline)
    entries = baseline["accepted"]
    say(f"baseline: {len(entries)} accepted leak finding(s) written to {out_file}")
    for e in entries:
        say(f"  {e['id']} {e.get('domain')} {e.get('component')}: "
                   f"{fmt_bytes(e.get('bytes_per_round') or 0)}/round, {e.get('owner')}")
    if data.get("verdict") == "inconclusive":
        click.echo("[tracer] warning: the report is inconclusive (no measured round); it has no findings to accept",
                   err=True)
