"""`tracer analyze`: rebuild the report offline from a saved capture."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import analysis_settings, threshold_options
from .outcome import print_outcome


@click.command()
@click.argument("capture", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the report. Default: the directory that holds the capture.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@threshold_options
def analyze(capture, out_dir, as_json, min_leak_per_round, min_leak, rules):
    """Rebuild the report offline from a saved capture (a report directory or its capture/)."""
    from ..analysis.analyze import analyze as analyze_capture
    from ..capture import read_capture
    from ..output.report import write_report

    thresholds, extra_rules = analysis_settings(min_leak_per_round, min_leak, rules)
    cap = read_capture(capture)
    out_dir = out_dir or cap.dir.parent
    start = time.perf_counter()
    report = write_report(analyze_capture(cap, thresholds, extra_rules), out_dir)
    click.echo(f"[tracer] analysed {cap.dir} in {time.perf_counter() - start:.2f} s", err=True)
    print_outcome(report, out_dir, as_json)
