"""The capture directory: the boundary between the traced processes and everything that runs offline.

Layout (paths relative to the capture directory):
  manifest.json   run description, status ("running", "complete", "partial", "failed"), error, and the
                  `streams`: one per traced process and tracing backend, each with the process `role` and
                  `pid`, the `backend` (memray, torch), its `domain` (host, gpu) and its `file` or folder
  events.jsonl    one JSON object a line, appended as they happen: rounds with their counters, marks (baseline,
                  round ends, drain steps, the drained end), drain steps, snapshots a backend took at a mark
                  (`snapshot`, with its stream's role and file), so an interrupted or crashed run keeps what it did
  <role>/         each process's stream files (e.g. main/host.memray, main/gpu/*.pickle.gz)
  holders.json    finding id -> reference paths that keep its leaked objects alive (absent without leaks)
  holder_misses.json  finding id -> why no holder chain was found for that leak
  cycles.json     the garbage just before the final drain's collection: object types, reference-cycle shapes
                  (path, types, owned addresses), and which finding each shape holds (tracer.record.cycles)
  engine.log      what the workload printed (vLLM's log), when tracer ran it in a child process

Captures of schema tracer.capture/1 (one process: host.memray and gpu/ at the top, `gpu_snapshot` events) are
read as one stream of role "main".

A capture may come from a stranger: the reader opens only regular files inside the capture directory (no
absolute paths, `..` or links out, no devices or FIFOs), and checks every field the analysis reads for its type
and range (counters are byte counts from 0 to 2**63, times finite numbers, names text), so a bad capture ends as
one line and exit code 2 instead of a traceback deep in the analysis. Messages name the file and line, never the
content.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .safe_files import open_inside, parse_json, read_inside, write_json

SCHEMA = "tracer.capture/2"
READABLE_SCHEMAS = ("tracer.capture/1", SCHEMA)
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
HOLDERS = "holders.json"
HOLDER_MISSES = "holder_misses.json"
CYCLES = "cycles.json"
ENGINE_LOG = "engine.log"
MAIN_ROLE = "main"

# Counters read after every round and at every mark (see tracer.record.probes); None where not available.
HOST_COUNTERS = ("rss_bytes", "uss_bytes", "maxrss_bytes", "heap_bytes")
GPU_COUNTERS = ("gpu_allocated_bytes", "gpu_reserved_bytes", "gpu_used_bytes", "pinned_host_bytes")
COUNTERS = HOST_COUNTERS + GPU_COUNTERS
MAX_COUNT = 2**63


class CaptureError(UsageError):
    """A directory that is not a readable tracer capture."""


@dataclass(frozen=True)
class Stream:
    """What one tracing backend recorded in one process."""

    role: str
    pid: int | None
    backend: str  # "memray" or "torch"
    domain: str  # "host" or "gpu"
    file: str | None = None  # the backend's file (memray); torch snapshots are named by `snapshot` events
    settings: dict = field(default_factory=dict, hash=False, compare=False)


class CaptureWriter:
    """Used by the traced process: every write lands on disk at once."""

    def __init__(self, directory: Path, manifest: dict):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = {"schema": SCHEMA, "status": "running", "streams": [], **manifest}
        self._events = open(self.dir / EVENTS, "a", buffering=1)
        self.save_manifest()

    def save_manifest(self) -> None:
        write_json(self.dir / MANIFEST, self.manifest)

    def stream_dir(self, role: str) -> Path:
        path = self.dir / role
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_stream(self, stream: Stream) -> None:
        entry = {"role": stream.role, "pid": stream.pid, "backend": stream.backend, "domain": stream.domain,
                 "file": stream.file, **({"settings": stream.settings} if stream.settings else {})}
        self.manifest["streams"].append(entry)
        self.save_manifest()

    def event(self, kind: str, **fields) -> dict:
        row = {"type": kind, "time_ms": time.time() * 1000.0, **fields}
        self._events.write(json.dumps(row) + "\n")
        self._events.flush()
        return row

    def finish(self, status: str, error: str | None = None, **extra) -> None:
        self.manifest.update(status=status, error=error, **extra)
        self.save_manifest()
        self._events.close()


@dataclass
class Capture:
    """A capture read back from disk."""

    dir: Path
    manifest: dict
    events: list[dict] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def run(self) -> dict:
        return self.manifest.get("run", {})

    @property
    def rounds(self) -> list[dict]:
        return self.of_type("round")

    @property
    def marks(self) -> list[dict]:
        return self.of_type("mark")

    @property
    def status(self) -> str:
        return self.manifest.get("status", "partial")

    @property
    def roles(self) -> list[str]:
        return list(dict.fromkeys(s.role for s in self.streams))

    @property
    def several_processes(self) -> bool:
        """A server's capture, even when `--screen` traced only one of its processes (`run.processes`)."""
        return len(set(self.roles) | set(self.run.get("processes") or ())) > 1

    def streams_of(self, backend: str) -> list[Stream]:
        return [s for s in self.streams if s.backend == backend]

    def stream_file(self, stream: Stream) -> Path | None:
        """The stream's file when it is a non-empty regular file inside the capture (a link out or a FIFO is
        refused)."""
        if stream.file is None or not os.path.lexists(self.dir / stream.file):
            return None
        fd = open_inside(self.dir, stream.file, f"the {stream.backend} file of {stream.role}")
        try:
            return self.dir / stream.file if os.fstat(fd).st_size > 0 else None
        finally:
            os.close(fd)

    def mark(self, name: str) -> dict | None:
        return next((m for m in self.marks if m["name"] == name), None)

    def round_marks(self) -> list[dict]:
        return [m for m in self.marks if m["name"] == "round"]

    def holders(self) -> dict[str, list[str]]:
        if not os.path.lexists(self.dir / HOLDERS):
            return {}
        where = str(self.dir / HOLDERS)
        return check_holders(parse_json(read_inside(self.dir, HOLDERS, HOLDERS), where), where)

    def _read_json(self, name: str):
        """A JSON file of the capture (a regular file inside it), or None when there is none."""
        if not os.path.lexists(self.dir / name):
            return None
        return parse_json(read_inside(self.dir, name, name), str(self.dir / name))

    def holder_misses(self) -> dict[str, str]:
        """Finding id -> why no holder was named."""
        data = self._read_json(HOLDER_MISSES)
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise UsageError(f"{self.dir / HOLDER_MISSES}: not a map of finding id to a reason (text)")
        return data

    def cycles(self) -> dict:
        """The garbage described before the final collection: objects, types, cycle shapes, and which finding
        each shape holds."""
        data = self._read_json(CYCLES)
        if data is None:
            return {}
        return check_cycles(data, str(self.dir / CYCLES))

    def snapshot_files(self, role: str = MAIN_ROLE) -> dict[str, Path]:
        """Snapshot file of a process by mark: "baseline", "round:<index>", "drained". Each is a regular file inside
        the capture (checked here: no absolute path, `..` or symlink out, no device or FIFO)."""
        out = {}
        for e in self.of_type("snapshot"):
            if e.get("stream", MAIN_ROLE) == role:
                key = e["mark"] if e.get("index") is None else f"{e['mark']}:{e['index']}"  # "round:3"
                os.close(open_inside(self.dir, e["file"], "a GPU snapshot named in events.jsonl"))
                out[key] = self.dir / e["file"]
        return out

    def round_snapshot_files(self, role: str = MAIN_ROLE) -> list[Path]:
        """A process's snapshots taken at round ends, in round order."""
        files = self.snapshot_files(role)
        return [files[k] for k in sorted((k for k in files if k.startswith("round:")), key=lambda k: int(k[6:]))]


_RUN_DICTS = ("versions", "tracing", "engine_args", "env", "substitute_drain_steps")
_RUN_TEXT = ("model", "model_path", "images", "device", "command", "image_size")
_RUN_INTS = ("warmup", "rounds", "batch", "max_tokens", "seed", "words", "rounds_added", "max_rounds")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    return (_is_int(v) and abs(v) < MAX_COUNT) or (isinstance(v, float) and math.isfinite(v))


def _is_count(v) -> bool:
    return _is_int(v) and 0 <= v < MAX_COUNT


def _is_address(v) -> bool:
    """A 64-bit virtual address: the kernel's own mappings ([vsyscall] at 0xffffffffff600000) lie above 2**63."""
    return _is_int(v) and 0 <= v < 2**64


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
    processes = run.get("processes")
    if processes is not None and not (isinstance(processes, list) and all(isinstance(p, str) for p in processes)):
        raise UsageError(f"{where}: run.processes is not a list of process roles (text)")
    if run.get("preload") is not None and not isinstance(run["preload"], list):
        raise UsageError(f"{where}: run.preload is not a list")
    if run.get("engine_load_seconds") is not None and not _is_finite(run["engine_load_seconds"]):
        raise UsageError(f"{where}: run.engine_load_seconds is not a finite number")
    return manifest


def check_event(row: object, where: str) -> dict:
    """The event, checked where this reader uses it; a UsageError for a malformed one."""
    if not isinstance(row, dict):
        raise UsageError(f"{where}: an event is not a JSON object")
    kind = row.get("type")
    if not isinstance(kind, str):
        raise UsageError(f"{where}: an event without a type")
    if kind in _CHECKS:
        return _CHECKS[kind](row, where)
    if kind not in ("round", "mark", "gpu_snapshot", "snapshot", "screen", "screen_mark", "drain", "drain_step"):
        return row  # a kind this reader does not use (from a newer tracer): kept, never read here
    if not _is_finite(row.get("time_ms")):
        raise UsageError(f"{where}: {kind} event without a finite time_ms")
    if kind in ("round", "mark", "screen_mark", "drain_step"):
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
    elif kind in ("gpu_snapshot", "snapshot"):
        if not isinstance(row.get("mark"), str) or not isinstance(row.get("file"), str):
            raise UsageError(f"{where}: {kind} event without a mark and a file")
        if not isinstance(row.get("stream", MAIN_ROLE), str):
            raise UsageError(f"{where}: {kind} event whose stream is not text")
        if not (row.get("index") is None or (_is_int(row["index"]) and abs(row["index"]) < MAX_COUNT)):
            raise UsageError(f"{where}: {kind} event with an index that is not an integer")
    elif kind == "drain_step":
        if not isinstance(row.get("step"), str) or not isinstance(row.get("when"), str):
            raise UsageError(f"{where}: drain_step event without a step and a when (text)")
        found = row.get("found")
        if found is not None and (not isinstance(found, dict) or not all(_is_count(v) for v in found.values())):
            raise UsageError(f"{where}: drain_step event whose found is not an object of byte and entry counts")
    elif kind == "screen":
        reasons = row.get("reasons")
        if not isinstance(row.get("suspect"), bool) or not isinstance(reasons, list) or not all(
                isinstance(r, str) for r in reasons):
            raise UsageError(f"{where}: screen event without suspect (true/false) and reasons (a list of text)")
        if not isinstance(row.get("python_allocators", False), bool):
            raise UsageError(f"{where}: screen event whose python_allocators is not true/false")
        processes = row.get("processes", {})
        if not isinstance(processes, dict) or not all(
                isinstance(r, dict) and isinstance(r.get("suspect"), bool)
                and isinstance(r.get("reasons"), list) and all(isinstance(t, str) for t in r["reasons"])
                and isinstance(r.get("python_allocators", False), bool) for r in processes.values()):
            raise UsageError(f"{where}: screen event whose processes are not role -> {{suspect, reasons}}")
    return row


def _check_smaps(row: dict, where: str) -> dict:
    rows, gone = row.get("rows", []), row.get("gone", [])
    if not isinstance(row.get("mark"), str) or not (row.get("index") is None or _is_int(row["index"])):
        raise UsageError(f"{where}: smaps event without a mark, or with an index that is not an integer")
    if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 5 and _is_address(r[0]) and _is_address(r[1]) and isinstance(r[2], str)
            and isinstance(r[3], str) and _is_count(r[4]) for r in rows):
        raise UsageError(f"{where}: smaps rows must be [start, end, kind, path, rss] with byte counts")
    if not isinstance(gone, list) or not all(_is_address(g) for g in gone) or not _is_finite(row.get("seconds", 0)):
        raise UsageError(f"{where}: smaps event with a bad gone list or seconds")
    return row


def _is_malloc_state(malloc: object) -> bool:
    """None, or the allocator's byte counts (a count it could not read is None) named by `allocator` (text)."""
    return malloc is None or isinstance(malloc, dict) and all(
        isinstance(v, str) if k == "allocator" else v is None or _is_count(v) for k, v in malloc.items())


def _check_allocator_trim(row: dict, where: str) -> dict:
    for side in ("before", "after"):
        value = row.get(side)
        malloc = value.get("malloc") if isinstance(value, dict) else None
        if not isinstance(value, dict) or not _is_count(value.get("rss_bytes")) or not _is_malloc_state(malloc):
            raise UsageError(f"{where}: allocator_trim event without {side}.rss_bytes and byte counts")
    if row.get("gpu") is not None and not (isinstance(row["gpu"], dict) and all(
            isinstance(side, dict) and all(_is_count(v) for v in side.values()) for side in row["gpu"].values())):
        raise UsageError(f"{where}: allocator_trim event with a bad gpu part")
    return row


_OWNER_FIELDS = {"path": str, "kind": str, "address": int, "nbytes": int, "before_baseline": bool}


def _check_rss_owners(row: dict, where: str) -> dict:
    owners = row.get("owners")
    if not isinstance(owners, list) or not all(
            isinstance(o, dict) and set(o) == set(_OWNER_FIELDS)
            and all(type(o[k]) is t and (t is not int or _is_address(o[k])) for k, t in _OWNER_FIELDS.items())
            for o in owners):
        raise UsageError(f"{where}: rss_owners event without a list of owners (path, kind, address, nbytes, "
                         "before_baseline)")
    return row


def _counts_by_name(value: object) -> bool:
    return isinstance(value, dict) and all(_is_count(v) for v in value.values())


def check_cycles(data: object, where: str) -> dict:
    shapes = data.get("cycles", []) if isinstance(data, dict) else None
    if not isinstance(shapes, list) or not _counts_by_name(data.get("types", {})) or not all(
            isinstance(c, dict) and isinstance(c.get("path"), str) and _counts_by_name(c.get("types", {}))
            and all(_is_count(c.get(k, 0)) for k in ("cycles", "objects", "bytes"))
            and isinstance(c.get("addresses", []), list) and all(_is_address(a) for a in c.get("addresses", []))
            for c in shapes):
        raise UsageError(f"{where}: not a description of reference cycles (cycles with path, counts, types)")
    owners = data.get("findings", {})
    if not isinstance(owners, dict) or not all(_is_int(v) and 0 <= v < len(shapes) for v in owners.values()):
        raise UsageError(f"{where}: findings must map finding ids to indexes of its cycles")
    return data


# Checks of the event kinds the RSS and cycle analyses read.
def _check_gc_during_rounds(row: dict, where: str) -> dict:
    for key in ("collections", "collected"):
        value = row.get(key)
        if not isinstance(value, list) or len(value) != 3 or not all(_is_count(v) for v in value):
            raise UsageError(f"{where}: gc_during_rounds event without {key} (three counts)")
    return row


def _check_rounds_added(row: dict, where: str) -> dict:
    checks = row.get("checks")
    counts = all(_is_count(row.get(k)) for k in ("planned", "added", "max_rounds"))
    if not counts or not isinstance(checks, list) or not all(
            isinstance(c, dict) and _is_count(c.get("after")) and _is_count(c.get("added"))
            and isinstance(c.get("undecided"), list) and all(_is_undecided_group(g) for g in c["undecided"])
            for c in checks):
        raise UsageError(f"{where}: rounds_added event without planned, added, max_rounds (counts) and checks "
                         "(after, added, undecided groups)")
    return row


def _is_undecided_group(g: object) -> bool:
    return (isinstance(g, dict) and isinstance(g.get("id"), str) and isinstance(g.get("component"), str)
            and (g.get("owner") is None or isinstance(g["owner"], str)) and _is_count(g.get("bytes"))
            and _is_finite(g.get("slope_bytes_per_round")) and _is_finite(g.get("p_rising")))


_CHECKS = {"smaps": _check_smaps, "allocator_trim": _check_allocator_trim, "rss_owners": _check_rss_owners,
           "gc_during_rounds": _check_gc_during_rounds, "rounds_added": _check_rounds_added}


def check_streams(streams: object, where: str) -> list[Stream]:
    if not isinstance(streams, list):
        raise UsageError(f"{where}: streams is not a list")
    out = []
    for s in streams:
        if not isinstance(s, dict) or not all(isinstance(s.get(k), str) for k in ("role", "backend", "domain")):
            raise UsageError(f"{where}: a stream without role, backend and domain (text)")
        if not (s.get("file") is None or isinstance(s["file"], str)) or not isinstance(s.get("settings") or {}, dict):
            raise UsageError(f"{where}: a stream whose file is not text or whose settings are not an object")
        if not (s.get("pid") is None or _is_count(s["pid"])):
            raise UsageError(f"{where}: a stream whose pid is not a number")
        out.append(Stream(s["role"], s.get("pid"), s["backend"], s["domain"], s.get("file"), s.get("settings") or {}))
    return out


def check_holders(holders: object, where: str) -> dict[str, list[str]]:
    if not isinstance(holders, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in holders.values()):
        raise UsageError(f"{where}: not a map of finding id to a list of reference paths")
    return holders


def _legacy_streams(directory: Path, manifest: dict, events: list[dict]) -> list[Stream]:
    """The one process of a tracer.capture/1 capture, as streams; its `gpu_snapshot` events become `snapshot`."""
    tracing = manifest.get("run", {}).get("tracing", {})
    streams = []
    if tracing.get("host") or (directory / "host.memray").exists():
        streams.append(Stream(MAIN_ROLE, None, "memray", "host", "host.memray",
                              {"native_traces": bool(tracing.get("native_traces")), "memory_interval_ms": 10}))
    for e in events:
        if e.get("type") == "gpu_snapshot":
            e["type"] = "snapshot"
    if any(e.get("type") == "snapshot" for e in events):
        streams.append(Stream(MAIN_ROLE, None, "torch", "gpu"))
    return streams


def read_capture(directory: Path) -> Capture:
    directory = Path(directory)
    if (directory / "capture" / MANIFEST).exists():  # a report directory was given
        directory = directory / "capture"
    manifest_path = directory / MANIFEST
    if not os.path.lexists(manifest_path):
        raise CaptureError(f"{directory}: not a tracer capture (no {MANIFEST})")
    try:
        manifest = check_manifest(parse_json(read_inside(directory, MANIFEST, MANIFEST), str(manifest_path)),
                                  str(manifest_path))
    except UsageError as exc:
        raise CaptureError(str(exc)) from None
    if manifest.get("schema") not in READABLE_SCHEMAS:
        shown = repr(manifest.get("schema"))[:40]
        raise CaptureError(f"{manifest_path}: schema {shown}, expected one of {', '.join(READABLE_SCHEMAS)}")
    capture = Capture(directory, manifest)
    if os.path.lexists(directory / EVENTS):
        text = read_inside(directory, EVENTS, EVENTS).decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line, parse_constant=_no_constant)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            except (ValueError, RecursionError):
                raise CaptureError(f"{directory / EVENTS}:{number}: a value JSON does not allow, an integer too "
                                   "long, or nesting too deep") from None
            capture.events.append(check_event(row, f"{directory / EVENTS}:{number}"))
    if manifest["schema"] == SCHEMA:
        capture.streams = check_streams(manifest.get("streams", []), str(manifest_path))
    else:
        capture.streams = _legacy_streams(directory, manifest, capture.events)
    if capture.status == "running":  # the traced process died without saying so
        capture.manifest["status"] = "partial"
        capture.manifest.setdefault("error", "the traced process ended without finishing the capture")
    return capture


def _no_constant(name: str):
    raise ValueError(name)
