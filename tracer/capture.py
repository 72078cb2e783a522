"""The capture directory: the boundary between the traced process and everything that runs offline.

Layout (all paths relative to the capture directory):
  manifest.json   run description, status ("running", "complete", "partial") and error, if any
  events.jsonl    one JSON object a line, appended as they happen: rounds and marks (baseline, round ends,
                  the drained end), so an interrupted or crashed run keeps what it did
  host.memray     memray capture of the measured window (absent with host tracing off)
  gpu/*.pickle.gz torch CUDA memory snapshots named in the marks (absent without CUDA)
  holders.json    finding id -> reference paths that keep its leaked objects alive (absent without leaks)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

SCHEMA = "tracer.capture/1"
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
HOST_FILE = "host.memray"
GPU_DIR = "gpu"
HOLDERS = "holders.json"


class CaptureError(UsageError):
    """A directory that is not a readable tracer capture."""


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class CaptureWriter:
    """Used by the traced process: every write lands on disk at once."""

    def __init__(self, directory: Path, manifest: dict):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = {"schema": SCHEMA, "status": "running", **manifest}
        self._events = open(self.dir / EVENTS, "a", buffering=1)
        self.save_manifest()

    def save_manifest(self) -> None:
        write_json_atomic(self.dir / MANIFEST, self.manifest)

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

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

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
    def host_file(self) -> Path | None:
        path = self.dir / HOST_FILE
        return path if path.exists() and path.stat().st_size > 0 else None

    def mark(self, name: str) -> dict | None:
        return next((m for m in self.marks if m["name"] == name), None)

    def round_marks(self) -> list[dict]:
        return [m for m in self.marks if m["name"] == "round"]

    def round_snapshot_files(self) -> list[Path]:
        """GPU snapshots taken at round ends, in round order."""
        files = self.gpu_snapshot_files()
        return [files[k] for k in sorted((k for k in files if k.startswith("round:")), key=lambda k: int(k[6:]))]

    def holders(self) -> dict[str, list[str]]:
        path = self.dir / HOLDERS
        return json.loads(path.read_text()) if path.exists() else {}

    def gpu_snapshot_files(self) -> dict[str, Path]:
        """Snapshot file by mark: "baseline", "round:<index>", "drained"."""
        out = {}
        for e in self.of_type("gpu_snapshot"):
            key = e["mark"] if e.get("index") is None else f"{e['mark']}:{e['index']}"  # "round:3"
            out[key] = self.dir / e["file"]
        return out


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
    if manifest.get("schema") != SCHEMA:
        raise CaptureError(f"{manifest_path}: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    capture = Capture(directory, manifest)
    events = directory / EVENTS
    if events.exists():
        for line in events.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            capture.events.append(row)
    if capture.status == "running":  # the traced process died without saying so
        capture.manifest["status"] = "partial"
        capture.manifest.setdefault("error", "the traced process ended without finishing the capture")
    return capture
