"""Surviving allocations as stacks weighted by bytes: folded stacks and speedscope files other tools open.

A survivor is a finding's allocations live at the end of the last round: leaks, and caches at their fill before
the final drain (`details.undrained_bytes`). Stacks come from finding dicts (`Finding.as_dict()`, or the
`findings` of report.json), innermost frame first; exports list them root first, as both formats want.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..analysis.stacks import Frame, short_path
from ..own_frames import driver_start

EXPORT_FORMATS = ("speedscope", "folded")
FILES = {"speedscope": "survivors.speedscope.json", "folded": "survivors.folded"}
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
DOMAINS = ("host", "gpu")


def frame_name(frame: dict) -> str:
    return f"{frame.get('function') or '?'} ({short_path(frame.get('file') or '?')}:{frame.get('line') or 0})"


def live_bytes(finding: dict) -> int:
    """Bytes live at the end of the last round: after the drain, or the cache's fill before it."""
    return max(finding.get("bytes", 0), finding.get("details", {}).get("undrained_bytes", 0))


def _below_round_loop(stack: list[dict]) -> list[dict]:
    """The frames inside one round: tracer's round loop and what calls it are the same for every allocation."""
    frames = [Frame.from_dict(d) for d in stack]
    end = driver_start(frames)
    return stack[:end] or stack


def survivors(findings: list[dict], domain: str) -> list[tuple[list[dict], int]]:
    """(stack root first, from the round loop inwards; bytes) of one domain's findings with live bytes."""
    return [(list(reversed(_below_round_loop(f["stack"]))) or [{"function": "<unknown>"}], live_bytes(f))
            for f in findings if f["domain"] == domain and live_bytes(f) > 0]


def folded(findings: list[dict]) -> str:
    """`host;outer;...;inner bytes` lines (flamegraph.pl, inferno); the first frame is the domain."""
    lines = []
    for domain in DOMAINS:
        for stack, size in survivors(findings, domain):
            names = [domain] + [frame_name(fr).replace(";", ":") for fr in stack]
            lines.append(f"{';'.join(names)} {size}")
    return "\n".join(lines) + ("\n" if lines else "")


def speedscope(findings: list[dict], name: str) -> dict:
    """speedscope's file format: one sampled profile per domain, each sample a stack weighted by its bytes."""
    frames: list[dict] = []
    index: dict[tuple, int] = {}

    def frame_index(fr: dict) -> int:
        key = (fr.get("function") or "?", fr.get("file") or "?", int(fr.get("line") or 0))
        if key not in index:
            index[key] = len(frames)
            frames.append({"name": key[0], "file": key[1], "line": key[2]})
        return index[key]

    profiles = []
    for domain in DOMAINS:
        stacks = survivors(findings, domain)
        if not stacks:
            continue
        weights = [size for _, size in stacks]
        profiles.append({"type": "sampled", "name": f"{domain} allocations live after the last round",
                         "unit": "bytes", "startValue": 0, "endValue": sum(weights),
                         "samples": [[frame_index(fr) for fr in stack] for stack, _ in stacks], "weights": weights})
    return {"$schema": SPEEDSCOPE_SCHEMA, "name": name, "exporter": f"tracer {__version__}",
            "activeProfileIndex": 0, "shared": {"frames": frames}, "profiles": profiles}


def write_exports(findings: list[dict], formats, out_dir: Path, name: str) -> dict[str, str]:
    """Write the asked formats into `out_dir`; returns {format: file name}."""
    written = {}
    for fmt in dict.fromkeys(formats):
        path = out_dir / FILES[fmt]
        if fmt == "folded":
            path.write_text(folded(findings))
        else:
            path.write_text(json.dumps(speedscope(findings, name)) + "\n")
        written[fmt] = FILES[fmt]
    return written
