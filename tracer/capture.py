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

from .capture_checks import check_event, check_holders, check_manifest
from .errors import UsageError
from .safe_files import open_inside, parse_json, read_inside, write_json
from .text_escape import one_line

SCHEMA = "tracer.capture/1"
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
HOST_FILE = "host.memray"
GPU_DIR = "gpu"
HOLDERS = "holders.json"


class CaptureError(UsageError):
    """A directory that is not a readable tracer capture."""


def write_json_atomic(path: Path, data: dict) -> None:
    write_json(path, data)


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
        """host.memray when it is a non-empty regular file inside the capture (a symlink or FIFO is refused)."""
        if not os.path.lexists(self.dir / HOST_FILE):
            return None
        fd = open_inside(self.dir, HOST_FILE, "host.memray")
        try:
            return self.dir / HOST_FILE if os.fstat(fd).st_size > 0 else None
        finally:
            os.close(fd)

    def mark(self, name: str) -> dict | None:
        return next((m for m in self.marks if m["name"] == name), None)

    def round_marks(self) -> list[dict]:
        return [m for m in self.marks if m["name"] == "round"]

    def round_snapshot_files(self) -> list[Path]:
        """GPU snapshots taken at round ends, in round order."""
        files = self.gpu_snapshot_files()
        return [files[k] for k in sorted((k for k in files if k.startswith("round:")), key=lambda k: int(k[6:]))]

    def holders(self) -> dict[str, list[str]]:
        if not os.path.lexists(self.dir / HOLDERS):
            return {}
        where = str(self.dir / HOLDERS)
        return check_holders(parse_json(read_inside(self.dir, HOLDERS, HOLDERS), where), where)

    def gpu_snapshot_files(self) -> dict[str, Path]:
        """Snapshot file by mark: "baseline", "round:<index>", "drained". Each is a regular file inside the capture
        (checked here: no absolute path, `..` or symlink out, no device or FIFO)."""
        out = {}
        for e in self.of_type("gpu_snapshot"):
            key = e["mark"] if e.get("index") is None else f"{e['mark']}:{e['index']}"  # "round:3"
            os.close(open_inside(self.dir, e["file"], "a GPU snapshot named in events.jsonl"))
            out[key] = self.dir / e["file"]
        return out


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
    if manifest.get("schema") != SCHEMA:
        raise CaptureError(f"{manifest_path}: schema {one_line(manifest.get('schema'))[:40]!r}, expected {SCHEMA!r}")
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
            row = check_event(row, f"{directory / EVENTS}:{number}")
            if row is not None:
                capture.events.append(row)
    if capture.status == "running":  # the traced process died without saying so
        capture.manifest["status"] = "partial"
        capture.manifest.setdefault("error", "the traced process ended without finishing the capture")
    return capture


def _no_constant(name: str):
    raise ValueError(name)
