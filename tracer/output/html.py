"""report.html: the report dict as one self-contained page that renders offline.

Jinja2 lays the page out; Chart.js (with its annotation plugin) draws the counter and per-finding charts and
d3-flame-graph the host and GPU icicles. The libraries are vendored in `vendor/` and inlined, so the page loads
nothing from anywhere.
"""

from __future__ import annotations

import json
from importlib import resources

from jinja2 import Environment, PackageLoader, select_autoescape

from ..analysis.verdicts import CACHE, FAILING
from ..analysis.stacks import Frame, owner_index
from ..own_frames import driver_start
from .exports import DOMAINS, frame_name, live_bytes, survivors
from .timeline import COUNTER_LABELS, growth_series

VENDOR_SCRIPTS = ("chart.js/chart.umd.min.js", "chartjs-plugin-annotation/chartjs-plugin-annotation.min.js",
                  "d3-selection/d3-selection.min.js", "d3-flame-graph/d3-flamegraph.min.js")
VENDOR_STYLES = ("d3-flame-graph/d3-flamegraph.css",)
ENV_KEYS = ("tracer", "vllm", "torch", "python", "memray", "device", "model", "warmup", "rounds", "batch", "images",
            "max_tokens", "seed", "engine_load_seconds")


def _vendor(name: str) -> str:
    text = resources.files(__package__).joinpath("vendor", name).read_text(encoding="utf-8")
    # a source-map comment would make an open devtools panel fetch a file that is not there
    return "\n".join(line for line in text.splitlines() if not line.startswith("//# sourceMappingURL="))


def _script_json(data) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def flame_tree(findings: list[dict], domain: str, role: str | None = None) -> dict | None:
    """The survivors of one domain (of one process, `role`) as d3-flame-graph's hierarchy: {name, value (bytes,
    inclusive), children}."""
    stacks = survivors(findings, domain)
    if not stacks:
        return None
    root = {"name": f"{domain} allocations live after the last round" + (f" in {role}" if role else ""), "value": 0,
            "children": {}}
    for stack, size in stacks:
        root["value"] += size
        node = root
        for fr in stack:
            node = node["children"].setdefault(frame_name(fr), {"name": frame_name(fr), "value": 0, "children": {}})
            node["value"] += size

    def as_lists(node: dict) -> dict:
        return {"name": node["name"], "value": node["value"],
                "children": [as_lists(c) for c in node["children"].values()]}

    return as_lists(root)


def flame_sections(findings: list[dict], processes: list[str] | None = None) -> list[dict]:
    """The flamegraphs of a report: one per domain or, in a server's report (findings with a `role`), one per
    process and domain, since each process has its own heap and stacks. Each {key, role, domain, tree}; `key`
    names the page element (`flame-<key>`): the domain, or `<role>-<domain>`."""
    roles = list(dict.fromkeys([*(processes or []), *(f["role"] for f in findings if f.get("role"))]))
    if not any(f.get("role") for f in findings):
        roles = [None]
    sections = []
    for role in roles:
        mine = [f for f in findings if f.get("role") == role]
        for domain in DOMAINS:
            tree = flame_tree(mine, domain, role)
            if tree:
                sections.append({"key": domain if role is None else f"{role}-{domain}", "role": role,
                                 "domain": domain, "tree": tree})
    return sections


def stack_from_owner(finding: dict, depth: int = 14) -> list[dict]:
    """Frames from the owner outwards, up to tracer's round loop; each {text, owner}."""
    stack = tuple(Frame.from_dict(d) for d in finding.get("stack", []))
    frames = stack[owner_index(stack):] if stack else ()
    end = driver_start(frames)
    return [{"text": frame_name(fr.as_dict()), "owner": i == 0} for i, fr in enumerate(frames[:min(end, depth)])]


def _finding_view(f: dict) -> dict:
    details = f.get("details", {})
    owner = f.get("owner") or {}
    return {**f, "name": frame_name(owner) if owner else f["id"],
            "live": live_bytes(f), "frames": stack_from_owner(f), "holders": details.get("holders", []),
            "cycle_path": (details.get("cycle") or {}).get("path"), "reason": details.get("reason"),
            "undrained": details.get("undrained_bytes")}


CACHE_CARDS = 10  # caches drawn as cards; the rest are folded into one row per process and component


def folded_caches(caches: list[dict]) -> tuple[list[dict], list[dict]]:
    """The largest caches as cards, and the rest as rows of (role, component, count, live bytes): a CPU server's
    worker, traced with native stacks, keeps one cache group per oneDNN kernel (80 and more)."""
    ranked = sorted(caches, key=lambda f: f["live"], reverse=True)
    rows: dict[tuple, dict] = {}
    for f in ranked[CACHE_CARDS:]:
        row = rows.setdefault((f.get("role"), f["component"]),
                              {"role": f.get("role"), "component": f["component"], "count": 0, "live": 0})
        row["count"] += 1
        row["live"] += f["live"]
    return ranked[:CACHE_CARDS], sorted(rows.values(), key=lambda r: r["live"], reverse=True)


def render_html(report: dict, all_findings: list[dict] | None = None) -> str:
    """The page for `report` (report.json's dict). `all_findings` feeds the flamegraphs (default: the report's)."""
    timeline = report.get("timeline") or []
    series = growth_series(timeline)
    kept = [_finding_view(f) for f in report.get("findings", []) if f["verdict"] != "transient"]
    run = report.get("run", {})
    flames = flame_sections(all_findings if all_findings is not None else report.get("findings", []),
                            run.get("processes"))
    chart_data = {
        "growth": {"labels": [p["label"] for p in timeline], "kinds": [p["kind"] for p in timeline],
                   "datasets": [{"label": COUNTER_LABELS[k], "data": v} for k, v in series.items()]},
        "findings": {f["id"]: f["per_round_bytes"] for f in kept},
        "flames": {section["key"]: section["tree"] for section in flames},
    }
    cache_cards, cache_rows = folded_caches([f for f in kept if f["verdict"] == CACHE])
    env = Environment(loader=PackageLoader(__package__, "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["mib"] = lambda n: "-" if n is None else f"{n / 2**20:.2f} MiB"
    env.filters["tojson_script"] = _script_json
    return env.get_template("report.html.j2").render(
        report=report, run=run, env_rows=[(k, run.get(k)) for k in ENV_KEYS if k in run],
        leaks=[f for f in kept if f["verdict"] in FAILING], caches=[f for f in kept if f["verdict"] == CACHE],
        cache_cards=cache_cards, folded_caches=cache_rows,
        others=[f for f in kept if f["verdict"] not in (*FAILING, CACHE)],
        chart_data=chart_data, scripts=[_vendor(n) for n in VENDOR_SCRIPTS], styles=[_vendor(n) for n in VENDOR_STYLES],
        flames=flames)
