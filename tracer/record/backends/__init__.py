"""Tracing backends: what records allocations in a process over the measured window.

A backend is started once the baseline is near, told about every mark (the baseline, each round's end, each
drain step, the drained end) and stopped at the end; it writes into its process's stream folder of the capture
and registers a `Stream` there. To add one: a module here with a class that has the methods of
`TracingBackend`, and a line in `backends_for`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ...capture import CaptureWriter


class TracingBackend(Protocol):
    name: str  # the stream's backend: "memray", "torch"
    domain: str  # "host" or "gpu"

    def start(self, writer: CaptureWriter, role: str) -> None:
        """Start recording; register the stream with the writer."""

    def mark(self, writer: CaptureWriter, role: str, name: str, index: int | None, snapshot: bool) -> None:
        """A boundary: record what this backend needs to place it (a pause memray's clock sees; a snapshot,
        when `snapshot` asks for the costly kind)."""

    def stop(self) -> None:
        """Stop recording and close the files; safe to call twice."""


def backends_for(options) -> list[TracingBackend]:
    """The backends a run's `TracingOptions` ask for, GPU first (its snapshot goes before memray's pause)."""
    out: list[TracingBackend] = []
    if options.gpu_enabled():
        from .torch_cuda import TorchCudaBackend

        out.append(TorchCudaBackend(cpp_stacks=options.cpp_stacks))
    if options.host:
        from .memray import MemrayBackend

        out.append(MemrayBackend(native_traces=options.native_traces,
                                 trace_python_allocators=options.python_allocators))
    return out


def stream_path(writer: CaptureWriter, role: str, name: str) -> tuple[Path, str]:
    """(absolute path, path relative to the capture) of a stream file."""
    path = writer.stream_dir(role) / name
    return path, str(path.relative_to(writer.dir))
