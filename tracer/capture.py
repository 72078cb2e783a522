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
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .json_files import write_json_atomic

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
        write_json_atomic(self.dir / MANIFEST, self.manifest)

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
        return len(self.roles) > 1

    def streams_of(self, backend: str) -> list[Stream]:
        return [s for s in self.streams if s.backend == backend]

    def stream_file(self, stream: Stream) -> Path | None:
        """The stream's file, when it holds something."""
        if stream.file is None:
            return None
        path = self.dir / stream.file
        return path if path.exists() and path.stat().st_size > 0 else None

    def mark(self, name: str) -> dict | None:
        return next((m for m in self.marks if m["name"] == name), None)

    def round_marks(self) -> list[dict]:
        return [m for m in self.marks if m["name"] == "round"]

    def holders(self) -> dict[str, list[str]]:
        path = self.dir / HOLDERS
        return json.loads(path.read_text()) if path.exists() else {}

    def holder_misses(self) -> dict[str, str]:
        path = self.dir / HOLDER_MISSES
        return json.loads(path.read_text()) if path.exists() else {}

    def cycles(self) -> dict:
        path = self.dir / CYCLES
        return json.loads(path.read_text()) if path.exists() else {}

    def snapshot_files(self, role: str = MAIN_ROLE) -> dict[str, Path]:
        """Snapshot file of a process by mark: "baseline", "round:<index>", "drained"."""
        out = {}
        for e in self.of_type("snapshot"):
            if e.get("stream", MAIN_ROLE) == role:
                key = e["mark"] if e.get("index") is None else f"{e['mark']}:{e['index']}"  # "round:3"
                out[key] = self.dir / e["file"]
        return out

    def round_snapshot_files(self, role: str = MAIN_ROLE) -> list[Path]:
        """A process's snapshots taken at round ends, in round order."""
        files = self.snapshot_files(role)
        return [files[k] for k in sorted((k for k in files if k.startswith("round:")), key=lambda k: int(k[6:]))]


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
    if not manifest_path.exists():
        raise CaptureError(f"{directory}: not a tracer capture (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") not in READABLE_SCHEMAS:
        schema = manifest.get("schema") if isinstance(manifest, dict) else None
        raise CaptureError(f"{manifest_path}: schema {schema!r}, expected one of {', '.join(READABLE_SCHEMAS)}")
    capture = Capture(directory, manifest)
    events = directory / EVENTS
    if events.exists():
        for line in events.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(row, dict):
                capture.events.append(row)
    if manifest["schema"] == SCHEMA:
        capture.streams = [Stream(str(s["role"]), s.get("pid"), str(s["backend"]), str(s["domain"]), s.get("file"),
                                  s.get("settings") or {}) for s in manifest.get("streams", [])]
    else:
        capture.streams = _legacy_streams(directory, manifest, capture.events)
    if capture.status == "running":  # the traced process died without saying so
        capture.manifest["status"] = "partial"
        capture.manifest.setdefault("error", "the traced process ended without finishing the capture")
    return capture
