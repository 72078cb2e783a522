"""Host allocation recording with memray over the measured window."""

from __future__ import annotations

import os
import time

from ...capture import CaptureWriter, Stream
from . import stream_path

# memray writes a memory snapshot record every interval; round boundaries are placed between two of them.
MEMORY_INTERVAL_MS = 10
FILE = "host.memray"


class MemrayBackend:
    """A memray Tracker that records every allocation, so the intervals between marks can be rebuilt."""

    name, domain = "memray", "host"

    def __init__(self, native_traces: bool = False, trace_python_allocators: bool = False):
        self.native_traces, self.trace_python_allocators = native_traces, trace_python_allocators
        self._tracker = None

    def start(self, writer: CaptureWriter, role: str) -> None:
        import memray

        path, rel = stream_path(writer, role, FILE)
        self._tracker = memray.Tracker(str(path), native_traces=self.native_traces,
                                       trace_python_allocators=self.trace_python_allocators,
                                       memory_interval_ms=MEMORY_INTERVAL_MS,
                                       file_format=memray.FileFormat.ALL_ALLOCATIONS)
        self._tracker.__enter__()
        writer.add_stream(Stream(role, os.getpid(), self.name, self.domain, rel,
                                 {"native_traces": self.native_traces, "memory_interval_ms": MEMORY_INTERVAL_MS,
                                  "python_allocators": self.trace_python_allocators}))
        settle()

    def mark(self, writer: CaptureWriter, role: str, name: str, index: int | None, snapshot: bool) -> None:
        settle()

    def stop(self) -> None:
        if self._tracker is not None:
            self._tracker.__exit__(None, None, None)
            self._tracker = None


def settle() -> None:
    """Let memray write at least two memory snapshots, so a mark taken just before falls between them."""
    time.sleep(4 * MEMORY_INTERVAL_MS / 1000.0)
