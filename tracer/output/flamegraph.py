"""Self-contained flamegraph HTML of surviving allocations, host or GPU, rendered by memray's own reporter.

memray's reporter takes any iterable of records with a stack; tracer hands it one record per finding, so the
same page shows host allocations and torch CUDA blocks alike. `no_web=True` keeps the page offline.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..analysis.findings import Finding


@dataclass
class _Record:
    """The duck-typed shape memray's FlameGraphReporter reads from an allocation record."""

    stack: list[tuple[str, str, int]]
    size: int
    n_allocations: int
    tid: int = 1
    thread_name: str = ""
    allocator: int = 1  # memray.AllocatorType.MALLOC

    def stack_trace(self, max_stacks: int | None = None):
        return self.stack

    def hybrid_stack_trace(self, max_stacks: int | None = None):
        return self.stack


def render_flamegraph(findings: list[Finding], title: str, command_line: str) -> str:
    from memray import FileFormat
    from memray._metadata import Metadata
    from memray.reporters.flamegraph import FlameGraphReporter

    records = [_Record([(fr.function, fr.file, fr.line) for fr in f.stack] or [("<unknown>", "?", 0)],
                       f.bytes, max(f.count, 1), thread_name=f.domain) for f in findings if f.bytes > 0]
    # memray's page warns that pymalloc pools hide frees of host objects; CUDA blocks are tracked one by one.
    host = any(f.domain == "host" for f in findings)
    allocator = "pymalloc" if host else "torch CUDA caching allocator"
    reporter = FlameGraphReporter.from_snapshot(records, memory_records=[], native_traces=False)
    now = datetime.now(timezone.utc)
    metadata = Metadata(start_time=now, end_time=now, total_allocations=sum(r.n_allocations for r in records),
                        total_frames=0, peak_memory=sum(r.size for r in records), command_line=f"{title}: {command_line}",
                        pid=0, main_thread_id=1, python_allocator=allocator, has_native_traces=False,
                        trace_python_allocators=not host, file_format=FileFormat.ALL_ALLOCATIONS)
    out = io.StringIO()
    reporter.render(out, metadata, show_memory_leaks=True, merge_threads=True, inverted=False, no_web=True)
    return out.getvalue()


def write_flamegraph(path: Path, findings: list[Finding], title: str, command_line: str) -> Path:
    from ..safe_files import write_text

    return write_text(path, render_flamegraph(findings, title, command_line))
