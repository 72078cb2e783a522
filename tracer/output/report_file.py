"""Reading a report.json back (gate, baseline, compare): load it, check what they read, and the views of a finding
they share: growth per round and the top frames from the owner outwards."""

from __future__ import annotations

import os
from pathlib import Path

from ..analysis.stacks import Frame, owner_index, short_path
from ..errors import UsageError
from ..safe_files import parse_json, read_inside, read_json, require_schema
from ..text_escape import one_line
from ..own_frames import driver_start

REPORT_SCHEMA = "tracer.report/1"
TOP_FRAMES = 3


def validate_report(report: object, source: str = "report") -> dict:
    """Check what the gate reads from a report dict; a UsageError (one line) says what is wrong."""
    require_schema(report, REPORT_SCHEMA, source, "report")
    findings = report.get("findings")
    if not isinstance(findings, list):
        raise UsageError(f"{source}: no findings list")
    for i, f in enumerate(findings):
        if not isinstance(f, dict) or not isinstance(f.get("id"), str) or not isinstance(f.get("verdict"), str):
            raise UsageError(f"{source}: finding {i} has no id or verdict")
        if not is_byte_count(f.get("bytes")):
            raise UsageError(f"{source}: finding {i} has no bytes (a byte count from 0 to 2**63)")
        series = f.get("per_round_bytes", [])
        if not isinstance(series, list) or not all(is_byte_count(b) for b in series):
            raise UsageError(f"{source}: finding {i} has a bad per_round_bytes")
        stack = f.get("stack", [])
        if not isinstance(stack, list) or not all(_is_frame(d) for d in stack):
            raise UsageError(f"{source}: finding {i} has a bad stack")
        if not isinstance(f.get("details", {}), dict):
            raise UsageError(f"{source}: finding {i} has bad details")
    for key in ("run", "growth", "vllm_check"):
        if not isinstance(report.get(key) or {}, dict):
            raise UsageError(f"{source}: {key} is not an object")
    if not isinstance(report.get("rounds") or [], list):
        raise UsageError(f"{source}: rounds is not a list")
    return report


MAX_BYTES = 2**63


def is_byte_count(value: object) -> bool:
    """A byte count a report may hold: a finite int or float from 0 to 2**63 (no NaN, infinity, negatives)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 0 <= value <= MAX_BYTES  # False for NaN; infinity is past the bound


def _is_frame(d: object) -> bool:
    if not isinstance(d, dict):
        return False
    line = d.get("line") or 0
    return (all(isinstance(d.get(k), (str, type(None))) for k in ("function", "file", "name", "filename"))
            and isinstance(line, int) and not isinstance(line, bool) and abs(line) < MAX_BYTES)


def report_file(path: Path) -> Path:
    """REPORT as given on the command line: a report directory or its report.json."""
    path = Path(path)
    return path / "report.json" if path.is_dir() else path


def load_report(path: Path) -> dict:
    file = report_file(path)
    if file != Path(path) and os.path.lexists(file):
        # inside a report directory, report.json must be a regular file there, not a link out of it
        data = parse_json(read_inside(file.parent, file.name, "report"), str(file))
    else:
        data = read_json(file, "report", "give a report directory or its report.json")
    return validate_report(data, str(file))


def measured_rounds(report: dict) -> int:
    rows = [r for r in report.get("rounds") or [] if isinstance(r, dict) and r.get("phase") == "measured"]
    if rows:
        return len(rows)
    planned = (report.get("run") or {}).get("rounds")
    return planned if isinstance(planned, int) and planned > 0 else 1


def bytes_per_round(finding: dict, rounds: int = 1) -> float:
    """Growth per measured round: from the per-round series when it has two points or more, else the bytes
    live at the end spread over the rounds (GPU groups without per-round snapshots have no series)."""
    series = finding.get("per_round_bytes") or []
    if len(series) >= 2:
        return (series[-1] - series[0]) / (len(series) - 1)
    if len(series) == 1:
        return float(series[0])
    return finding["bytes"] / max(rounds, 1)


def top_frames(finding: dict, depth: int = TOP_FRAMES) -> list[Frame]:
    """Up to `depth` frames from the owner (the innermost frame that is not allocator plumbing) outwards, ending
    before tracer's own round drivers."""
    stack = tuple(Frame.from_dict(d) for d in finding.get("stack") or [] if isinstance(d, dict))
    if not stack:
        return []
    start = owner_index(stack)
    frames = stack[start:start + depth]
    return list(frames[:max(driver_start(frames), 1)])


def frame_text(frame: Frame) -> str:
    return f"{frame.function}  {short_path(frame.file)}:{frame.line}"


def frame_lines(frames: list[Frame]) -> list[str]:
    """The frames as printed, owner marked `->`, each on one line whatever its names hold."""
    return [one_line(f"{'->' if i == 0 else '  '} {frame_text(fr)}") for i, fr in enumerate(frames)]
