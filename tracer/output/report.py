"""report.json (schema "tracer.report/1") and summary.md, the files a person attaches to a bug report."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from ..analysis.analyze import Analysis
from ..analysis.verdicts import CACHE, LEAK
from ..capture import COUNTERS
from ..json_files import write_json_atomic
from .flamegraph import write_flamegraph
from .report_file import REPORT_SCHEMA
from .summary import render_summary

ROUND_FIELDS = ("index", "phase", "seconds") + COUNTERS + ("processes",)
RUN_FIELDS = ("model", "model_path", "warmup", "rounds", "batch", "images", "max_tokens", "seed", "engine_args",
              "preload", "tracing", "env", "device", "command", "engine_load_seconds", "engine", "drain_steps",
              "missing_drain_steps", "processes")
MAX_TRANSIENT = 20


def build_report(a: Analysis) -> dict:
    run = a.capture.manifest.get("run", {})
    versions = run.get("versions", {})
    kept = [f for f in a.findings if f.verdict in (LEAK, CACHE)]
    rest = [f for f in a.findings if f.verdict not in (LEAK, CACHE)]
    return {
        "schema": REPORT_SCHEMA,
        "status": a.capture.status,
        "error": a.capture.manifest.get("error"),
        "verdict": a.verdict,
        "run": {**{k: versions.get(k) for k in ("tracer", "vllm", "torch", "python", "memray")},
                **{k: run.get(k) for k in RUN_FIELDS}},
        "rounds": [{k: r[k] for k in ROUND_FIELDS if k in r} for r in a.capture.rounds],
        "growth": a.growth,
        "unattributed": a.unattributed,
        "vllm_check": a.vllm_check,
        "thresholds": asdict(a.thresholds),
        "findings": [f.as_dict() for f in kept + rest[:MAX_TRANSIENT]],
        "omitted": {"count": max(0, len(rest) - MAX_TRANSIENT), "bytes": sum(f.bytes for f in rest[MAX_TRANSIENT:])},
        "notes": a.notes,
    }


def write_report(a: Analysis, out_dir: Path) -> dict:
    """Write report.json, summary.md and the flamegraphs into `out_dir`; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(a)
    command = report["run"].get("command") or "tracer diff"
    files = {"summary": "summary.md", "report": "report.json"}
    for domain in ("host", "gpu"):
        # what was live at the end of the last round: leaks, and caches at their fill before the final drain
        survivors = [replace(f, bytes=max(f.bytes, f.details.get("undrained_bytes", 0)))
                     for f in a.findings if f.domain == domain]
        survivors = [f for f in survivors if f.bytes > 0]
        if survivors:
            name = f"{domain}-flamegraph.html"
            write_flamegraph(out_dir / name, survivors, f"new {domain} allocations live after the last round", command)
            files[f"{domain}_flamegraph"] = name
    report["files"] = files
    write_json_atomic(out_dir / "report.json", report)
    (out_dir / "summary.md").write_text(render_summary(report, a.findings))
    return report
