"""Baselines: leak findings a team has looked at and accepted, by stable id, each with a reason.

A baseline file (schema "tracer.baseline/1") is JSON:

    {"schema": "tracer.baseline/1", "created": "...", "source": {...},
     "accepted": [{"id": "h0123456789abcde", "domain": "host", "component": "...", "owner": "...",
                   "frames": ["..."], "bytes": 123, "bytes_per_round": 45.0, "reason": "..."}]}

Only `schema` and each entry's `id` are required; the rest says what was accepted, for the people reviewing it.
`tracer gate --baseline FILE` fails only on leak findings whose id is not in it.
"""

from __future__ import annotations

import time
from pathlib import Path

from ...analysis.verdicts import LEAK, SUSPECTED
from ...errors import UsageError
from ...safe_files import read_json, require_schema, write_json
from ..report_file import bytes_per_round, frame_text, measured_rounds, top_frames, validate_report

SCHEMA = "tracer.baseline/1"
DEFAULT_REASON = "accepted with tracer baseline (no reason given)"


def validate_baseline(data: object, source: str = "baseline") -> dict:
    """Check a baseline dict; a UsageError (one line) says what is wrong with it."""
    require_schema(data, SCHEMA, f"baseline {source}", "baseline")
    accepted = data.get("accepted")
    if not isinstance(accepted, list):
        raise UsageError(f"baseline {source}: 'accepted' must be a list of findings")
    for i, entry in enumerate(accepted):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"].strip():
            raise UsageError(f"baseline {source}: accepted entry {i} has no id")
        for key in ("bytes", "bytes_per_round"):
            value = entry.get(key)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and abs(value) <= 2**63):  # NaN fails the comparison
                raise UsageError(f"baseline {source}: accepted entry {i} has a bad {key} (a finite number)")
        if entry.get("reason") is not None and not isinstance(entry["reason"], str):
            raise UsageError(f"baseline {source}: accepted entry {entry['id']} has a reason that is not text")
    return data


def accepted_by_id(baseline: dict, source: str = "baseline") -> dict[str, dict]:
    return {e["id"]: e for e in validate_baseline(baseline, source)["accepted"]}


def load_baseline(path: Path) -> dict:
    data = read_json(path, "baseline", f"make one with: tracer baseline REPORT -o {path}")
    return validate_baseline(data, str(path))


def build_baseline(report: dict, reason: str | None = None, previous: dict | None = None,
                   source: str | None = None) -> dict:
    """A baseline that accepts every leak finding of `report`; entries of `previous` are kept as they were."""
    validate_report(report, source or "report")
    entries = {e["id"]: e for e in (validate_baseline(previous)["accepted"] if previous else [])}
    rounds = measured_rounds(report)
    for f in report["findings"]:
        if f["verdict"] not in (LEAK, SUSPECTED) or f["id"] in entries:
            continue
        frames = top_frames(f, 3)
        entries[f["id"]] = {
            "id": f["id"],
            "domain": f.get("domain"),
            "component": f.get("component"),
            "owner": frame_text(frames[0]) if frames else None,
            "frames": [frame_text(fr) for fr in frames],
            "bytes": f["bytes"],
            "bytes_per_round": round(bytes_per_round(f, rounds), 1),
            "reason": reason or DEFAULT_REASON,
        }
    run = report.get("run") or {}
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"report": source, "command": run.get("command"), "model": run.get("model"),
                   "vllm": run.get("vllm"), "tracer": run.get("tracer"), "device": run.get("device")},
        "accepted": list(entries.values()),
    }


def write_baseline(path: Path, baseline: dict) -> None:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; -o takes the baseline file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, validate_baseline(baseline, str(path)))
