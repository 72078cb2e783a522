"""Reading a report.json back (gate, baseline, compare): load it, check what they read, and the views of a finding
they share: growth per round and the top frames from the owner outwards."""

from __future__ import annotations

from pathlib import Path

from ..analysis.stacks import Frame, owner_index, short_path
from ..errors import UsageError
from ..json_files import read_json, require_schema
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
        if not _is_number(f.get("bytes")):
            raise UsageError(f"{source}: finding {f['id']} has no bytes")
        series = f.get("per_round_bytes", [])
        if not isinstance(series, list) or not all(_is_number(b) for b in series):
            raise UsageError(f"{source}: finding {f['id']} has a bad per_round_bytes")
        if not isinstance(f.get("stack", []), list):
            raise UsageError(f"{source}: finding {f['id']} has a bad stack")
    return report


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def report_file(path: Path) -> Path:
    """REPORT as given on the command line: a report directory or its report.json."""
    path = Path(path)
    return path / "report.json" if path.is_dir() else path


def load_report(path: Path) -> dict:
    file = report_file(path)
    return validate_report(read_json(file, "report", "give a report directory or its report.json"), str(file))


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
