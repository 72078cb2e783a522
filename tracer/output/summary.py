"""summary.md: the report as a person reads it, to attach to a bug report."""

from __future__ import annotations

import json

from ..analysis.findings import Finding
from ..analysis.stacks import owner_index, short_path
from ..analysis.verdicts import CACHE, CYCLE, LEAK, REPORTED, SUSPECTED
from ..own_frames import driver_start
from ..text_escape import md_code, md_fence, md_text
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


def _rss_finding_md(f: Finding) -> list[str]:
    series = ", ".join(f"{b / 2**20:.2f}" for b in f.per_round_bytes)
    out = [f"### {md_code(f.id)} {md_text(f.verdict)}: {mib(f.bytes)} of RSS that no allocation explains - "
           f"{md_text(f.component)}", "", f"- why: {md_text(f.details.get('reason', '-'))}",
           f"- unexplained RSS at the end of each measured round (MiB): {series or '-'}", "- grown mappings:"]
    out += [f"  - {md_text(m['kind'])} {md_code(m['range'])} {md_text(m['path'])} +{mib(m['grew'])}"
            for m in f.details.get("mappings", [])]
    return out + [""]


def _finding_md(f: Finding) -> list[str]:
    if f.domain == "rss":
        return _rss_finding_md(f)
    series = ", ".join(f"{b / 2**20:.2f}" for b in f.per_round_bytes)
    undrained = f.details.get("undrained_bytes")
    if f.verdict == CACHE and undrained:
        head = (f"### {md_code(f.id)} cache: {mib(undrained)} filled ({mib(f.bytes)} left after the drain) - "
                f"{md_text(f.component)}")
    else:
        head = (f"### {md_code(f.id)} {md_text(f.verdict)}: {mib(f.bytes)} in {f.count} {md_text(f.domain)} "
                f"allocations - {md_text(f.component)}")
    out = [head, "", f"- why: {md_text(f.details.get('reason', '-'))}",
           f"- live new bytes at the end of each measured round (MiB): {series or '-'}"]
    if undrained is not None:
        out.append(f"- before the final drain: {mib(undrained)}; after: {mib(f.bytes)}")
    for path in f.details.get("holders", []):
        out.append(f"- held by: {md_code(path)}")
    if f.details.get("no_holder"):
        out.append(f"- no holder named: {md_text(f.details['no_holder'])}")
    cycle = f.details.get("cycle") or {}
    if cycle.get("path"):
        types = ", ".join(f"{name} {n}" for name, n in cycle.get("types", {}).items())
        out.append(f"- reference cycle: {md_code(cycle['path'])} ({md_text(cycle.get('cycles'))} such cycles in the "
                   f"garbage, keeping {md_text(cycle.get('objects'))} objects: {md_text(types)})")
    elif cycle.get("why_no_path"):
        out.append(f"- reference cycle not named: {md_text(cycle['why_no_path'])}")
    if f.details.get("released_by"):
        out.append("- released by each drain step: " + ", ".join(
            f"{md_text(step)} {mib(b)}" for step, b in f.details["released_by"].items()))
    if f.details.get("in_graph_pool"):
        out.append("- in a CUDA-graph private pool")
    out += ["", *md_fence(stack_lines(f)), ""]
    return out


def render_summary(report: dict, findings: list[Finding]) -> str:
    run = report["run"]
    lines = [f"# tracer report: {md_text(report['verdict'].upper())}" + (
        " (partial run)" if report["status"] != "complete" else ""), ""]
    if report.get("error"):
        lines += [f"> Run ended early: {md_text(report['error'])}. The rounds done are analysed below.", ""]
    leaks = [f for f in findings if f.verdict in (LEAK, SUSPECTED)]
    caches = [f for f in findings if f.verdict == CACHE]
    lines += [f"{len(leaks)} leak finding(s) totalling {mib(sum(f.bytes for f in leaks))}; "
              f"{len(caches)} cache(s) holding {mib(sum(f.details.get('undrained_bytes', f.bytes) for f in caches))}.", ""]
    if "growth_png" in report.get("files", {}):
        lines += ["![Growth of every counter per round, warmup shaded, drains marked](growth.png)", ""]
    lines += ["## Environment", "", "| | |", "|---|---|"]
    for key in ("tracer", "vllm", "transformers", "torch", "python", "memray", "device", "model", "warmup", "rounds",
                "batch", "images", "max_tokens", "seed"):
        lines.append(f"| {key} | {md_text(run.get(key))} |")
    lines.append(f"| engine args | {md_code(json.dumps(run.get('engine_args')), in_table=True)} |")
    lines.append(f"| tracing | {md_code(json.dumps(run.get('tracing')), in_table=True)} |")
    if run.get("engine"):
        lines.append(f"| engine | {md_text(run['engine'])} |")
    for name, step in (run.get("substitute_drain_steps") or {}).items():
        step = step if isinstance(step, dict) else {}
        lines.append(f"| drain step {md_text(name)} substituted | {md_text(step.get('how'))}, in place of "
                     f"{md_text(step.get('replaces'))}, which {md_text(step.get('releases'))} lacks |")
    if run.get("allocator"):
        a = run["allocator"]
        lines.append(f"| malloc | {md_text(a.get('name'))} ({md_code(a.get('library') or '?', in_table=True)})"
                     + (f", preloaded by {md_code('--allocator ' + a['preloaded'], in_table=True)}"
                        if a.get("preloaded") else "") + " |")
    if run.get("missing_drain_steps"):
        lines.append(f"| drain steps missing in this vLLM | {md_text(', '.join(run['missing_drain_steps']))} |")
    lines += ["", "## Rounds", ""]
    gpu = any("gpu_allocated_bytes" in r for r in report["rounds"])
    cols = ["round", "phase", "seconds", "RSS MiB", "USS MiB", "peak RSS MiB", "C heap MiB"] + (
        ["GPU alloc MiB", "GPU reserved MiB", "device used MiB", "pinned host MiB"] if gpu else [])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report["rounds"]:
        vals = [r["index"], md_text(r["phase"]), f"{r['seconds']:.3f}"] + [
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
            lines.append(f"- {md_text(row['counter'])}: {mib(row['unattributed'])} of {mib(row['growth'])} - "
                         f"{md_text(row['hint'])}")
    check = report["vllm_check"]
    if check:
        lines += ["", f"vLLM's own check (peak RSS and device used memory, 0 MiB threshold) would "
                      f"{'FAIL' if check['would_fail'] else 'pass'}: peak RSS {mib(check['maxrss_growth'])}"
                      + (f", device used {mib(check['gpu_used_growth'])}" if "gpu_used_growth" in check else "")
                      + "; it names no allocation."]
    cycles = [f for f in findings if f.verdict == CYCLE]
    suspected = [f for f in findings if f.verdict == SUSPECTED and f.domain != "rss"]
    if cycles:
        lines += [f"{len(cycles)} reference-cycle finding(s) totalling "
                  f"{mib(sum(f.details.get('undrained_bytes', f.bytes) for f in cycles))} before the final collection.", ""]
    # a host or GPU `leak?` has its own section below ("Suspected leaks"); only the rss one is listed with leaks
    listed_leaks = [f for f in leaks if f.verdict == LEAK or f.domain == "rss"]
    for title, group in (("Leaks (`leak?` in domain rss: RSS growth no allocation explains)", listed_leaks),
                         ("Reference cycles (only the garbage collector frees them)", cycles),
                         ("Suspected leaks (a drain step is missing)", suspected),
                         ("Caches (released by the drain or bounded)", caches)):
        if group:
            lines += ["", f"## {title}", ""]
            for role, mine in by_process(group[:10]):
                if role is not None:
                    lines += [f"### process {md_text(role)}", ""]
                for f in mine:
                    lines += _finding_md(f)
            if len(group) > 10:
                lines += ["", f"{len(group) - 10} more: report.json lists every finding, and report.html sums them "
                              "by process and component."]
    if report.get("rss"):
        lines += rss_section(report["rss"])
    rest = [f for f in findings if f.verdict not in REPORTED][:5]
    if rest:
        lines += ["", "## Largest other survivors (transient)", ""]
        for f in rest:
            owner = f.stack[owner_index(f.stack)].short() if f.stack else "?"
            lines.append(f"- {md_code(f.id)} {mib(f.bytes)} in {f.count} {md_text(f.domain)} allocations, "
                         f"{md_text(f.component)}: {md_text(owner)}")
    for note in report["notes"]:
        lines += ["", f"Note: {md_text(note)}"]
    lines += ["", "## Reproduce", "", *md_fence([run.get("command") or "tracer diff"]), "",
              "Files: `report.html` (charts, holders, host and GPU flamegraphs; opens offline), `report.json` "
              "(all numbers), `growth.png`, `capture/` (raw capture; `tracer analyze` rebuilds this report).", ""]
    return "\n".join(lines)


def rss_section(rss: dict) -> list[str]:
    """RSS growth over the baseline by mapping kind and by what explains it, per round and after the drain; first
    touch, allocator retention and device memory outside PyTorch's allocator."""
    if "per_round" not in rss:  # a capture recorded without mapping tables: only its CUDA counters
        return ["", "## Device memory outside PyTorch's allocator", "", *gpu_outside_lines(rss)]
    rows = rss["per_round"] + ([rss["after_drain"]] if rss.get("after_drain") else [])
    lines = ["", "## RSS by mapping", "",
             "Growth over the baseline of the process's mappings (/proc/self/smaps) and what explains it: pages of "
             "buffers allocated before the baseline (first touch), malloc's in-use bytes (heap, arenas, large "
             "blocks), file-backed and stack pages (bounded), and the rest. After the drain means after "
             f"`{(rss.get('retention') or {}).get('release_call') or 'malloc_trim(0)'}` too.", "",
             "| at | RSS growth | heap | arenas | anonymous | file | stacks | first touch | C heap in use | unexplained |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in rows:
        k = a["by_kind"]
        at = f"round {a['index']}" if a["mark"] == "round" else "after drain + release"
        lines.append(f"| {at} | {mib(a['growth'])} | {mib(k.get('heap', 0))} | {mib(k.get('arena', 0))} | "
                     f"{mib(k.get('anonymous', 0))} | {mib(k.get('file', 0))} | "
                     f"{mib(k.get('stack', 0) + k.get('thread stack', 0))} | {mib(a['first_touch'])} | "
                     f"{mib(a['heap_in_use'])} | {mib(a['unexplained'])} |")
    last = rss.get("after_drain") or (rss["per_round"][-1] if rss["per_round"] else None)
    if last and last["grown"]:
        lines += ["", "Mappings grown at the end:", ""]
        for g in last["grown"]:
            lines.append(f"- {md_text(g['kind'])} {md_code(g['range'])} {md_text(g['path'])} +{mib(g['grew'])} "
                         f"(now {mib(g['rss'])})" + (f": {md_text(g['owner'])}" if g.get("owner") else ""))
    lines += allocations_in_mappings(rss.get("allocations"),
                                     (rss.get("retention") or {}).get("release_call") or "malloc_trim(0)")
    for t in rss.get("first_touch", []):
        lines += ["", f"First touch of {md_code(t['owner'])} ({md_text(t['kind'])}): bounded by its size, {mib(t['bound'])}; "
                      f"{mib(t['resident_at_end'])} touched ({t['touched_fraction'] * 100:.0f}%), "
                      f"{'flattening' if t['flattening'] else 'still growing'}; resident per round (MiB): "
                      + ", ".join(f"{b / 2**20:.1f}" for b in t["resident_per_round"]) + ". Not a leak."]
    ret = rss.get("retention")
    if ret:
        before, after = ret.get("malloc_before") or {}, ret.get("malloc_after") or {}
        allocator = ret.get("allocator", "glibc")
        if allocator == "glibc":
            state = (f"glibc's arenas held {mib(before.get('arena_bytes'))} with {mib(before.get('free_bytes'))} "
                     f"free before the trim ({mib(after.get('free_bytes'))} after), "
                     f"{mib(before.get('in_use_bytes'))} in use.")
        else:
            state = (f"the process ran on {md_text(allocator)} (glibc's malloc statistics do not apply); before the "
                     "release " + ", ".join(f"{k.removesuffix('_bytes').replace('_', ' ')} {mib(v)}"
                                            for k, v in before.items() if k.endswith("_bytes") and v is not None) + ".")
        call = ret.get("release_call") or "malloc_trim(0)"
        lines += ["", f"Allocator retention: `{call}` at the final drain returned {mib(ret['trim_returned'])} "
                      f"of RSS; {state}"]
        if ret.get("retained"):
            lines += ["Memory the allocator keeps after free is fragmentation, not a leak. Remedies:"]
            lines += [f"- {r}" for r in ret["remedies"]]
        if ret.get("gpu"):
            g = ret["gpu"]
            lines += ["", f"CUDA caching allocator: {mib(g['free_in_segments_before'])} reserved but free at the "
                          f"drain; `empty_cache` returned {mib(g['empty_cache_returned'])} (allocator retention)."]
    return lines + ["", *gpu_outside_lines(rss)] if rss.get("gpu") else lines


def gpu_outside_lines(rss: dict) -> list[str]:
    """Device memory outside PyTorch's allocator and reserved-but-free bytes, at the baseline and each round."""
    return ["- Device memory outside PyTorch's allocator (used minus reserved) per mark (MiB): "
            + ", ".join(f"{g['outside_allocator'] / 2**20:.1f}" for g in rss["gpu"]),
            "- Reserved but free in the caching allocator's segments per mark (MiB): "
            + ", ".join(f"{g['reserved_free'] / 2**20:.1f}" for g in rss["gpu"])]


def allocations_in_mappings(matched: dict | None, release_call: str) -> list[str]:
    """Each grown heap, arena or anonymous mapping with memray's live allocations in it and the growth they leave
    unexplained."""
    if not matched or not matched["mappings"]:
        return []
    lines = ["", "Traced allocations in the grown mappings (memray's allocations live at the end, matched by address; "
                 "growth no allocation or first-touch buffer covers is allocator retention before the "
                 "allocator's release call at the drain, and memory no hook saw after it):", ""]
    for m in matched["mappings"]:
        touched = f", first touch {mib(m['first_touch'])}" if m["first_touch"] else ""
        lines.append(f"- {md_text(m['kind'])} {md_code(m['range'])} {md_text(m['path'])} +{mib(m['grew'])} by the "
                     f"drain, +{mib(m['grew_after_trim'])} after `{release_call}`; {m['allocations']} live allocations "
                     f"hold {mib(m['allocated_bytes'])}{touched}; unexplained {mib(m['unexplained_before_trim'])} "
                     f"before it, {mib(m['unexplained'])} after")
        for st in m["stacks"]:
            lines.append(f"  - {mib(st['bytes'])} in {st['count']}: {md_text(st['component'])}, "
                         f"{md_code(st['owner'] or '?')} ({md_code(st['id'])})")
    return lines
