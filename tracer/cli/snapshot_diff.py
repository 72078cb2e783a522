"""`tracer snapshot-diff`: diff two torch CUDA snapshot files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .outcome import say


@click.command("snapshot-diff")
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("final", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write report.json, summary.md and report.html (with a GPU flamegraph) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
def snapshot_diff(baseline, final, out_dir, as_json):
    """Diff two torch CUDA memory snapshots (what torch.cuda.memory._dump_snapshot writes; pickle, gzip or JSON).

    Lists the blocks live in FINAL that were not live in BASELINE, grouped by allocation stack. Pickles are read
    with a loader that refuses every global, so a file from a bug report cannot run code.
    """
    from ..output.snapshot_diff import write_snapshot_diff

    report = write_snapshot_diff(baseline, final, out_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    g = report["growth"]
    say(f"allocated growth {g['allocated_growth'] / 2**20:.2f} MiB: {g['new_blocks']} new blocks "
               f"({g['new_bytes'] / 2**20:.2f} MiB), {g['freed_blocks']} freed ({g['freed_bytes'] / 2**20:.2f} MiB)")
    for f in report["findings"][:15]:
        owner = f["owner"] or {}
        say(f"  {f['id']} {f['bytes'] / 2**20:10.2f} MiB {f['count']:5d} blocks  {f['component']}: "
                   f"{owner.get('function')} ({owner.get('file')}:{owner.get('line')})")
    if out_dir:
        say(f"report: {out_dir / 'summary.md'}")
