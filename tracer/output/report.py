"""report.json (schema "tracer.report/1") and summary.md, the files a person attaches to a bug report."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..analysis.analyze import Analysis
from ..analysis.screened import screen_outcome
from ..analysis.verdicts import REPORTED
from ..capture import COUNTERS
from ..safe_files import prepare_out_dir, write_json, write_text
from .exports import write_exports
from .growth_png import write_growth_png
from .html import render_html
from .report_file import REPORT_SCHEMA
from .summary import render_summary
from .timeline import build_timeline

ROUND_FIELDS = ("index", "phase", "seconds") + COUNTERS + ("processes",)
RUN_FIELDS = ("model", "model_path", "warmup", "rounds", "batch", "images", "max_tokens", "seed", "engine_args",
              "preload", "tracing", "env", "device", "command", "engine_load_seconds", "engine", "drain_steps",
              "substitute_drain_steps", "missing_drain_steps", "engine_notes", "allocator", "processes",
              "rounds_added", "max_rounds")
MAX_TRANSIENT = 20


def build_report(a: Analysis) -> dict:
    run = a.capture.manifest.get("run", {})
    versions = run.get("versions", {})
    kept = [f for f in a.findings if f.verdict in REPORTED]
    rest = [f for f in a.findings if f.verdict not in REPORTED]
    return {
        "schema": REPORT_SCHEMA,
        "status": a.capture.status,
        "error": a.capture.manifest.get("error"),
        "verdict": a.verdict,
        "run": {**{k: versions.get(k) for k in ("tracer", "vllm", "transformers", "torch", "python", "memray")},
                **{k: run.get(k) for k in RUN_FIELDS}},
        "rounds": [{k: r[k] for k in ROUND_FIELDS if k in r} for r in a.capture.rounds],
        "timeline": build_timeline(a.capture.events),
        "growth": a.growth,
        "unattributed": a.unattributed,
        "vllm_check": a.vllm_check,
        "rss": a.rss,
        "thresholds": asdict(a.thresholds),
        "findings": [f.as_dict() for f in kept + rest[:MAX_TRANSIENT]],
        "omitted": {"count": max(0, len(rest) - MAX_TRANSIENT), "bytes": sum(f.bytes for f in rest[MAX_TRANSIENT:])},
        "notes": [*(run.get("engine_notes") or []), *a.notes],
        "screen": screen_outcome(a.capture),
    }


def write_report(a: Analysis, out_dir: Path, explicit: bool = True, exports: tuple[str, ...] = ()) -> dict:
    """Write report.json, summary.md, report.html, growth.png and the asked `exports` into `out_dir`; each file is
    created fresh (a symlink there is replaced, not followed; `explicit`: the user named `out_dir`, so it may itself
    be a symlink). Returns the report."""
    prepare_out_dir(out_dir, explicit)
    report = build_report(a)
    files = {"summary": "summary.md", "report": "report.json", "html": "report.html"}
    if write_growth_png(report["timeline"], out_dir / "growth.png"):
        files["growth_png"] = "growth.png"
    survivors = [f.as_dict() for f in a.findings]  # every survivor, also transients the report leaves out
    name = f"tracer: {report['run'].get('command') or 'tracer diff'}"
    files.update(write_exports(survivors, exports, out_dir, name))
    report["files"] = files
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "summary.md", render_summary(report, a.findings))
    write_text(out_dir / "report.html", render_html(report, survivors))
    return report
