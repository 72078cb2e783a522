"""summary.md: the report as a person reads it, to attach to a bug report."""

from __future__ import annotations

import json

from ..analysis.findings import Finding
from ..analysis.stacks import owner_index, short_path
from ..analysis.verdicts import CACHE, LEAK
from ..own_frames import driver_start
from ..units import mib
from .processes import by_process, process_round_table


def stack_lines(f: Finding, depth: int = 12) -> list[str]:
    """The stack from the owner frame outwards, up to tracer's own round loop."""
    start = owner_index(f.stack)
    frames = f.stack[start:]
    end = driver_start(frames)
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
    out += ["", "```", *stack_lines(f), "```", ""]
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
    for key in ("tracer", "vllm", "torch", "python", "memray", "device", "model", "warmup", "rounds", "batch",
                "images", "max_tokens", "seed"):
        lines.append(f"| {key} | {run.get(key)} |")
    lines.append(f"| engine args | `{json.dumps(run.get('engine_args'))}` |")
    lines.append(f"| tracing | `{json.dumps(run.get('tracing'))}` |")
    if run.get("engine"):
        lines.append(f"| engine | {run['engine']} |")
    if run.get("missing_drain_steps"):
        lines.append(f"| drain steps missing in this vLLM | {', '.join(run['missing_drain_steps'])} |")
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
    per_process = process_round_table(report["rounds"])
    if per_process:
        lines += ["", "Per process (the columns above are their sums):", "", *per_process]
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
            for role, mine in by_process(group[:10]):
                if role is not None:
                    lines += [f"### process {role}", ""]
                for f in mine:
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
