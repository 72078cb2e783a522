"""tracer's own frames on a recorded stack, told apart by two marker functions, not by file names.

Everything tracer does inside the measured window runs under `observed(...)`; the workload's round (and
nothing else of the workload's) runs under `workload_call(...)`, nested inside it. On a stack, innermost
first, the first marker decides: `observed` means the allocation is tracer's own (counters, snapshots, capture
writes) and is left out of the findings; `workload_call` means the workload asked for it, and the frames from
the marker outwards are tracer's driver, left out of stack displays and fingerprints. A stack with no marker
comes from a thread tracer does not drive (vLLM's own threads) and belongs to the workload.

Captures written before the markers existed (schema tracer.capture/1) name the driver by its old frames; those
are recognised through `LEGACY_DRIVER_FRAMES`, so their reports and finding ids stay as they were.
"""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")

OBSERVER_FUNCTION = "tracer_observed"
WORKLOAD_FUNCTION = "tracer_workload_call"

# (function, file suffix) of the round drivers in captures of schema tracer.capture/1.
LEGACY_DRIVER_FRAMES = (("one_round", "tracer/session.py"), ("round", "tracer/recorder.py"),
                        ("one_round", "tracer/pytest_plugin.py"))
LEGACY_OBSERVER_FILES = ("tracer/recorder.py", "tracer/gpu_trace.py", "tracer/probes.py", "tracer/capture.py",
                         "tracer/host_trace.py")


def tracer_observed(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run tracer's own work; what it allocates is not the workload's."""
    return fn(*args, **kwargs)


def tracer_workload_call(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run the workload's round; what it allocates is the workload's."""
    return fn(*args, **kwargs)


observed, workload_call = tracer_observed, tracer_workload_call


def _file(frame) -> str:
    return frame.file.replace("\\", "/")


def is_workload_marker(frame) -> bool:
    """The frame where tracer's driver hands over to the workload (old captures: the old driver frames)."""
    return frame.function == WORKLOAD_FUNCTION or any(
        frame.function == fn and _file(frame).endswith(suffix) for fn, suffix in LEGACY_DRIVER_FRAMES)


def is_observer_stack(stack) -> bool:
    """True when tracer itself allocated this (the innermost marker is `observed`)."""
    for frame in stack:
        if frame.function == OBSERVER_FUNCTION:
            return True
        if is_workload_marker(frame):
            return False
        if _file(frame).endswith(LEGACY_OBSERVER_FILES):
            return True
    return False


def driver_start(stack) -> int:
    """Index of the first frame (innermost first) that belongs to tracer's driver: the workload marker, or the
    length of the stack when there is none."""
    return next((i for i, frame in enumerate(stack) if is_workload_marker(frame)), len(stack))


def is_marker(frame) -> bool:
    """Marker frames carry no meaning of their own: plumbing for owner-frame purposes."""
    return frame.function in (OBSERVER_FUNCTION, WORKLOAD_FUNCTION)
