"""Host allocation recording with memray over the measured window."""

from __future__ import annotations

import time
from pathlib import Path

# memray writes a memory snapshot record every interval; round boundaries are placed between two of them.
MEMORY_INTERVAL_MS = 10


def start_host_trace(path: Path, native_traces: bool = False, trace_python_allocators: bool = False):
    """Start a memray Tracker that records every allocation (so intervals between marks can be rebuilt)."""
    import memray

    tracker = memray.Tracker(
        str(path),
        native_traces=native_traces,
        trace_python_allocators=trace_python_allocators,
        memory_interval_ms=MEMORY_INTERVAL_MS,
        file_format=memray.FileFormat.ALL_ALLOCATIONS,
    )
    tracker.__enter__()
    return tracker


def stop_host_trace(tracker) -> None:
    tracker.__exit__(None, None, None)


def settle() -> None:
    """Let memray write at least two memory snapshots, so a mark taken just before falls between them."""
    time.sleep(4 * MEMORY_INTERVAL_MS / 1000.0)
