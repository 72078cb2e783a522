"""What a capture read from disk must look like before the analysis touches it.

A capture may come from a stranger: every field the analysis and the report read is checked here for its type
and range (counters are byte counts from 0 to 2**63, times finite numbers, names text), so a bad capture ends as
one line and exit code 2 instead of a traceback deep in the analysis. Messages name the file and line, never the
content.
"""

from __future__ import annotations

import math

from .errors import UsageError

MAX_COUNT = 2**63
COUNTERS = ("rss_bytes", "uss_bytes", "maxrss_bytes", "heap_bytes", "gpu_allocated_bytes", "gpu_reserved_bytes",
            "gpu_used_bytes", "pinned_host_bytes")
_RUN_DICTS = ("versions", "tracing", "engine_args", "env")
_RUN_TEXT = ("model", "model_path", "images", "device", "command", "image_size")
_RUN_INTS = ("warmup", "rounds", "batch", "max_tokens", "seed", "words")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    return (_is_int(v) and abs(v) < MAX_COUNT) or (isinstance(v, float) and math.isfinite(v))


def _is_count(v) -> bool:
    return _is_int(v) and 0 <= v < MAX_COUNT


def check_manifest(manifest: object, where: str) -> dict:
    if not isinstance(manifest, dict):
        raise UsageError(f"{where}: not a tracer capture manifest (a JSON object is expected)")
    if not isinstance(manifest.get("status", "partial"), str):
        raise UsageError(f"{where}: status is not text")
    if manifest.get("error") is not None and not isinstance(manifest["error"], str):
        raise UsageError(f"{where}: error is not text")
    run = manifest.get("run", {})
    if not isinstance(run, dict):
        raise UsageError(f"{where}: run is not an object")
    for key in _RUN_DICTS:
        if run.get(key) is not None and not isinstance(run[key], dict):
            raise UsageError(f"{where}: run.{key} is not an object")
    for key in _RUN_TEXT:
        if run.get(key) is not None and not isinstance(run[key], str):
            raise UsageError(f"{where}: run.{key} is not text")
    for key in _RUN_INTS:
        if run.get(key) is not None and not _is_finite(run[key]):
            raise UsageError(f"{where}: run.{key} is not a number")
    if run.get("preload") is not None and not isinstance(run["preload"], list):
        raise UsageError(f"{where}: run.preload is not a list")
    if run.get("engine_load_seconds") is not None and not _is_finite(run["engine_load_seconds"]):
        raise UsageError(f"{where}: run.engine_load_seconds is not a finite number")
    return manifest


def check_event(row: object, where: str) -> dict | None:
    """The event if tracer can use it; None for a kind tracer does not read; a UsageError for a malformed one."""
    if not isinstance(row, dict):
        raise UsageError(f"{where}: an event is not a JSON object")
    kind = row.get("type")
    if kind not in ("round", "mark", "gpu_snapshot", "screen", "screen_mark", "drain"):
        return None
    if not _is_finite(row.get("time_ms")):
        raise UsageError(f"{where}: {kind} event without a finite time_ms")
    if kind in ("round", "mark", "screen_mark"):
        for name in COUNTERS:
            if row.get(name) is not None and not _is_count(row[name]):
                raise UsageError(f"{where}: {kind} event has a bad {name} (a byte count from 0 to 2**63 is expected)")
    if kind == "round":
        if not _is_int(row.get("index")) or not isinstance(row.get("phase"), str):
            raise UsageError(f"{where}: round event without an integer index and a phase")
        if not _is_finite(row.get("seconds")) or row["seconds"] < 0:
            raise UsageError(f"{where}: round event without a finite, non-negative seconds")
        if row["phase"] == "measured" and not _is_count(row.get("maxrss_bytes")):
            raise UsageError(f"{where}: measured round event without maxrss_bytes")
    elif kind in ("mark", "screen_mark"):
        if not isinstance(row.get("name"), str) or not (row.get("index") is None or _is_int(row["index"])):
            raise UsageError(f"{where}: mark event without a name, or with an index that is not an integer")
    elif kind == "gpu_snapshot":
        if not isinstance(row.get("mark"), str) or not isinstance(row.get("file"), str):
            raise UsageError(f"{where}: gpu_snapshot event without a mark and a file")
        if not (row.get("index") is None or (_is_int(row["index"]) and abs(row["index"]) < MAX_COUNT)):
            raise UsageError(f"{where}: gpu_snapshot event with an index that is not an integer")
    elif kind == "screen":
        reasons = row.get("reasons")
        if not isinstance(row.get("suspect"), bool) or not isinstance(reasons, list) or not all(
                isinstance(r, str) for r in reasons):
            raise UsageError(f"{where}: screen event without suspect (true/false) and reasons (a list of text)")
    return row


def check_holders(holders: object, where: str) -> dict[str, list[str]]:
    if not isinstance(holders, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in holders.values()):
        raise UsageError(f"{where}: not a map of finding id to a list of reference paths")
    return holders
