"""Surviving GPU blocks of one process, from the torch snapshots taken at the marks."""

from __future__ import annotations

from ..capture import Capture, Stream
from .findings import Finding


def gpu_findings(capture: Capture, stream: Stream) -> list[Finding]:
    """New GPU blocks at the end of the last round, with live bytes per round, and what survived the drain."""
    files = capture.snapshot_files(stream.role)
    rounds = capture.round_snapshot_files(stream.role)
    if "baseline" not in files or not rounds:
        return []
    from .snapshots import diff_series, diff_snapshots

    findings = diff_series(files["baseline"], rounds)
    if len(rounds) < len(capture.round_marks()):  # no snapshot per round: growth is known only at the end
        for f in findings:
            f.per_round_bytes = []
    if "drained" in files:
        after = {f.id: f for f in diff_snapshots(files["baseline"], files["drained"])}
        for f in findings:
            kept = after.pop(f.id, None)
            f.details.update(undrained_bytes=f.bytes, undrained_count=f.count)
            f.bytes, f.count = (kept.bytes, kept.count) if kept else (0, 0)
        findings += list(after.values())  # new during the drain itself
    return findings
