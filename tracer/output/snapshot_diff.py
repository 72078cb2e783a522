"""`tracer snapshot-diff`: two torch CUDA snapshot files a user already has, as findings and report files."""

from __future__ import annotations

from pathlib import Path

from ..analysis.findings import Finding
from ..safe_files import prepare_out_dir, write_json, write_text
from ..text_escape import md_code, md_fence, md_text
from ..units import mib
from .html import render_html
from .summary import stack_lines

SCHEMA = "tracer.snapshot-diff/1"


def write_snapshot_diff(baseline: Path, final: Path, out_dir: Path | None) -> dict:
    """Diff two torch CUDA snapshot files a user already has; with `out_dir`, also write the report files."""
    from ..analysis.components import classify_component
    from ..analysis.snapshots import diff_snapshots, growth_accounting

    findings = diff_snapshots(baseline, final)
    for f in findings:
        f.component = classify_component(f.stack)
    report = {"schema": SCHEMA, "baseline": str(baseline), "final": str(final),
              "growth": growth_accounting(baseline, final), "findings": [f.as_dict() for f in findings]}
    if out_dir is not None:
        prepare_out_dir(out_dir, explicit=True)
        write_json(out_dir / "report.json", report)
        write_text(out_dir / "summary.md", render_snapshot_diff(report, findings))
        page = {**report, "verdict": "snapshot diff", "status": "complete",
                "run": {"command": f"tracer snapshot-diff {baseline} {final}"}}
        write_text(out_dir / "report.html", render_html(page))
    return report


def render_snapshot_diff(report: dict, findings: list[Finding]) -> str:
    g = report["growth"]
    lines = [f"# tracer snapshot-diff: {len(findings)} group(s) of new GPU blocks", "",
             f"- baseline: {md_code(report['baseline'])}", f"- final: {md_code(report['final'])}",
             f"- allocated growth {mib(g['allocated_growth'])} = new {mib(g['new_bytes'])} in {g['new_blocks']} "
             f"blocks - freed {mib(g['freed_bytes'])} in {g['freed_blocks']} blocks", ""]
    for f in findings[:20]:
        pool = " (CUDA-graph pool)" if f.details.get("in_graph_pool") else ""
        lines += [f"### {md_code(f.id)} {mib(f.bytes)} in {f.count} blocks - {md_text(f.component)}{pool}", "",
                  *md_fence(stack_lines(f)), ""]
    return "\n".join(lines)
