"""report.json (schema "tracer.report/1") and summary.md, the files a person attaches to a bug report."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from .analysis import Analysis
from .capture import write_json_atomic
from .findings import Finding
from .flamegraph import write_flamegraph
from .stacks import is_tracer_frame, owner_index, short_path
from .verdicts import CACHE, LEAK

SCHEMA = "tracer.report/1"
ROUND_FIELDS = ("index", "phase", "seconds", "rss_bytes", "uss_bytes", "maxrss_bytes", "heap_bytes", "gpu_allocated_bytes",
                "gpu_reserved_bytes", "gpu_used_bytes", "pinned_host_bytes")
RUN_FIELDS = ("model", "model_path", "warmup", "rounds", "batch", "images", "max_tokens", "seed", "engine_args",
              "preload", "tracing", "env", "device", "command", "engine_load_seconds", "engine_notes")
MAX_TRANSIENT = 20


def mib(n: int | float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:+.2f} MiB" if n < 0 else f"{n / 2**20:.2f} MiB"


def build_report(a: Analysis) -> dict:
    run = a.capture.manifest.get("run", {})
    versions = run.get("versions", {})
    kept = [f for f in a.findings if f.verdict in (LEAK, CACHE)]
    rest = [f for f in a.findings if f.verdict not in (LEAK, CACHE)]
    return {
        "schema": SCHEMA,
        "status": a.capture.status,
        "error": a.capture.manifest.get("error"),
        "verdict": a.verdict,
        "run": {**{k: versions.get(k) for k in ("tracer", "vllm", "transformers", "torch", "python", "memray")},
                **{k: run.get(k) for k in RUN_FIELDS}},
        "rounds": [{k: r[k] for k in ROUND_FIELDS if k in r} for r in a.capture.rounds],
        "growth": a.growth,
        "unattributed": a.unattributed,
        "vllm_check": a.vllm_check,
        "thresholds": asdict(a.thresholds),
        "findings": [f.as_dict() for f in kept + rest[:MAX_TRANSIENT]],
        "omitted": {"count": max(0, len(rest) - MAX_TRANSIENT), "bytes": sum(f.bytes for f in rest[MAX_TRANSIENT:])},
        "notes": [*(run.get("engine_notes") or []), *a.notes],
    }


def _stack_lines(f: Finding, depth: int = 12) -> list[str]:
    """The stack from the owner frame outwards, up to tracer's own round loop."""
    start = owner_index(f.stack)
    frames = f.stack[start:]
    end = next((i for i, fr in enumerate(frames) if is_tracer_frame(fr)), len(frames))
    lines = [f"{'->' if i == 0 else '  '} {fr.function}  {short_path(fr.file)}:{fr.line}"
             for i, fr in enumerate(frames[:min(end, depth)])]
    if end > depth:
        lines.append(f"   ... {end - depth} more frames")
    if end < len(frames):
        lines.append("   (called from tracer's round loop)")
    return lines


def _finding_md(f: Finding) -> list[str]:
    series = ", ".join(f"{b / 2**20:.2f}" for b in f.per_round_bytes)
    undrained = f.details.get("undrained_bytes")
    if f.verdict == CACHE and undrained:
        head = f"### `{f.id}` cache: {mib(undrained)} filled ({mib(f.bytes)} left after the drain) - {f.component}"
    else:
        head = f"### `{f.id}` {f.verdict}: {mib(f.bytes)} in {f.count} {f.domain} allocations - {f.component}"
    out = [head, "", f"- why: {f.details.get('reason', '-')}",
           f"- live new bytes at the end of each measured round (MiB): {series or '-'}"]
    if undrained is not None:
        out.append(f"- before the final drain: {mib(undrained)}; after: {mib(f.bytes)}")
    for path in f.details.get("holders", []):
        out.append(f"- held by: `{path}`")
    if f.details.get("in_graph_pool"):
        out.append("- in a CUDA-graph private pool")
    out += ["", "```", *_stack_lines(f), "```", ""]
    return out


def render_summary(report: dict, findings: list[Finding]) -> str:
    run = report["run"]
    lines = [f"# tracer report: {report['verdict'].upper()}" + (" (partial run)" if report["status"] != "complete"
                                                                   else ""), ""]
    if report.get("error"):
        lines += [f"> Run ended early: {report['error']}. The rounds done are analysed below.", ""]
    leaks = [f for f in findings if f.verdict == LEAK]
    caches = [f for f in findings if f.verdict == CACHE]
    lines += [f"{len(leaks)} leak finding(s) totalling {mib(sum(f.bytes for f in leaks))}; "
              f"{len(caches)} cache(s) holding {mib(sum(f.details.get('undrained_bytes', f.bytes) for f in caches))}.", ""]
    lines += ["## Environment", "", "| | |", "|---|---|"]
    for key in ("tracer", "vllm", "transformers", "torch", "python", "memray", "device", "model", "warmup", "rounds",
                "batch", "images", "max_tokens", "seed"):
        lines.append(f"| {key} | {run.get(key)} |")
    lines.append(f"| engine args | `{json.dumps(run.get('engine_args'))}` |")
    lines.append(f"| tracing | `{json.dumps(run.get('tracing'))}` |")
    lines.append("| engine | in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) |")
    lines += ["", "## Rounds", ""]
    gpu = any("gpu_allocated_bytes" in r for r in report["rounds"])
    cols = ["round", "phase", "seconds", "RSS MiB", "USS MiB", "peak RSS MiB", "C heap MiB"] + (
        ["GPU alloc MiB", "GPU reserved MiB", "device used MiB", "pinned host MiB"] if gpu else [])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report["rounds"]:
        vals = [r["index"], r["phase"], f"{r['seconds']:.3f}"] + [
            f"{r[k] / 2**20:.1f}" if r.get(k) is not None else "-"
            for k in ("rss_bytes", "uss_bytes", "maxrss_bytes", "heap_bytes") + (
                ("gpu_allocated_bytes", "gpu_reserved_bytes", "gpu_used_bytes", "pinned_host_bytes") if gpu else ())]
        lines.append("| " + " | ".join(map(str, vals)) + " |")
    if report["growth"]:
        lines += ["", "## Growth over the measured rounds", "", "| counter | baseline | end | growth | after drain |",
                  "|---|---|---|---|---|"]
        for name, g in report["growth"].items():
            lines.append(f"| {name} | {mib(g['baseline'])} | {mib(g['end'])} | {mib(g['growth'])} | "
                         f"{mib(g.get('growth_after_drain'))} |")
    if report["unattributed"]:
        lines += ["", "Growth no traced allocation explains:", ""]
        for row in report["unattributed"]:
            lines.append(f"- {row['counter']}: {mib(row['unattributed'])} of {mib(row['growth'])} - {row['hint']}")
    check = report["vllm_check"]
    if check:
        lines += ["", f"vLLM's own check (peak RSS and device used memory, 0 MiB threshold) would "
                      f"{'FAIL' if check['would_fail'] else 'pass'}: peak RSS {mib(check['maxrss_growth'])}"
                      + (f", device used {mib(check['gpu_used_growth'])}" if "gpu_used_growth" in check else "")
                      + "; it names no allocation."]
    for title, group in (("Leaks", leaks), ("Caches (released by the drain or bounded)", caches)):
        if group:
            lines += ["", f"## {title}", ""]
            for f in group[:10]:
                lines += _finding_md(f)
    rest = [f for f in findings if f.verdict not in (LEAK, CACHE)][:5]
    if rest:
        lines += ["", "## Largest other survivors (transient)", ""]
        for f in rest:
            owner = f.stack[owner_index(f.stack)].short() if f.stack else "?"
            lines.append(f"- `{f.id}` {mib(f.bytes)} in {f.count} {f.domain} allocations, {f.component}: {owner}")
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    lines += ["", "## Reproduce", "", "```", run.get("command") or "tracer diff", "```", "",
              "Files: `report.json` (all numbers), `host-flamegraph.html` / `gpu-flamegraph.html` (surviving "
              "allocations, open offline), `capture/` (raw capture; `tracer analyze` rebuilds this report).", ""]
    return "\n".join(lines)


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


def write_snapshot_diff(baseline: Path, final: Path, out_dir: Path | None) -> dict:
    """Diff two torch CUDA snapshot files a user already has; with `out_dir`, also write the report files."""
    from .components import classify_component
    from .gpu_snapshot import diff_snapshots, growth_accounting

    findings = diff_snapshots(baseline, final)
    for f in findings:
        f.component = classify_component(f.stack)
    report = {"schema": "tracer.snapshot-diff/1", "baseline": str(baseline), "final": str(final),
              "growth": growth_accounting(baseline, final), "findings": [f.as_dict() for f in findings]}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "report.json", report)
        (out_dir / "summary.md").write_text(render_snapshot_diff(report, findings))
        if findings:
            write_flamegraph(out_dir / "gpu-flamegraph.html", findings, "new GPU blocks",
                             f"tracer snapshot-diff {baseline} {final}")
    return report


def render_snapshot_diff(report: dict, findings: list[Finding]) -> str:
    g = report["growth"]
    lines = [f"# tracer snapshot-diff: {len(findings)} group(s) of new GPU blocks", "",
             f"- baseline: `{report['baseline']}`", f"- final: `{report['final']}`",
             f"- allocated growth {mib(g['allocated_growth'])} = new {mib(g['new_bytes'])} in {g['new_blocks']} "
             f"blocks - freed {mib(g['freed_bytes'])} in {g['freed_blocks']} blocks", ""]
    for f in findings[:20]:
        pool = " (CUDA-graph pool)" if f.details.get("in_graph_pool") else ""
        lines += [f"### `{f.id}` {mib(f.bytes)} in {f.count} blocks - {f.component}{pool}", "", "```",
                  *_stack_lines(f), "```", ""]
    return "\n".join(lines)
