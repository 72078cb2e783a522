"""Holder search in a server: the driver finds the leaked addresses of each process in the capture, and that
process's agent walks its own objects for them (the objects live only there)."""

from __future__ import annotations

from pathlib import Path

from ...capture import HOLDERS, read_capture
from ...safe_files import write_json


def record_server_holders(processes, capture_dir: Path, thresholds: dict | None = None,
                          rules_file: str | None = None) -> dict[str, list[str]]:
    """Analyse the capture so far; for every process with leak findings, find who holds them there. Writes
    holders.json (finding ids carry the role, so one file serves every process)."""
    from ...analysis.analyze import analyze
    from ...analysis.components import load_rules
    from ...analysis.verdicts import LEAK, Thresholds
    from ..holders import gpu_ranges, host_ranges

    capture = read_capture(capture_dir)
    rules = load_rules(rules_file) if rules_file else ()
    leaks = [f for f in analyze(capture, Thresholds(**(thresholds or {})), rules).findings if f.verdict == LEAK]
    holders: dict[str, list[str]] = {}
    for role, pid in processes.roles.items():
        mine = [f for f in leaks if f.role == role]
        if not mine:
            continue
        sources = {src: f.id for f in mine if f.domain == "host" for src in f.sources}
        host = []
        for stream in capture.streams_of("memray"):
            path = capture.stream_file(stream)
            if stream.role == role and sources and path is not None:
                host += host_ranges(path, sources)
        snapshots = capture.snapshot_files(role)
        final = snapshots.get("drained") or next(reversed(capture.round_snapshot_files(role)), None)
        gpu_ids = {f.id for f in mine if f.domain == "gpu"}
        gpu = gpu_ranges(final, gpu_ids, role) if gpu_ids and final else []
        reply = processes.call(pid, "holders", timeout=180.0, host=host, gpu=gpu)
        holders.update(reply["holders"])
    write_json(capture.dir / HOLDERS, holders)
    return holders
