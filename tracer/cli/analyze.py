"""`tracer analyze`: rebuild the report offline from a saved capture."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import analysis_settings, export_option, threshold_options
from .outcome import print_outcome, say


@click.command()
@click.argument("capture", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the report. Default: the report directory given, or for a bare capture "
                   "directory a new one next to it (CAPTURE-report).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@threshold_options
@export_option
def analyze(capture, out_dir, as_json, min_leak_per_round, min_leak, rules, exports):
    """Rebuild the report offline from a saved capture (a report directory or its capture/).

    Output files are created fresh (a symlink in the output directory is replaced, never written through).
    """
    from ..analysis.analyze import analyze as analyze_capture
    from ..capture import read_capture
    from ..output.report import write_report
    from ..safe_files import new_sibling_dir

    thresholds, extra_rules = analysis_settings(min_leak_per_round, min_leak, rules)
    cap = read_capture(capture)
    explicit = out_dir is not None
    start = time.perf_counter()
    analysis = analyze_capture(cap, thresholds, extra_rules)
    if out_dir is None:
        # a report directory was given: write there; a bare capture directory: never into its parent
        out_dir = cap.dir.parent if cap.dir != Path(capture) else new_sibling_dir(cap.dir, "-report")
    report = write_report(analysis, out_dir, explicit=explicit, exports=exports)
    say(f"[tracer] analysed {cap.dir} in {time.perf_counter() - start:.2f} s; report files in {out_dir}", err=True)
    print_outcome(report, out_dir, as_json)
