"""The measured window: tracers on, a baseline mark, a mark after every round, an optional drained mark.

Used by the traced session of `tracer diff` and by the pytest plugin, so both write the same capture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .capture import GPU_DIR, HOST_FILE, CaptureWriter
from .host_trace import settle, start_host_trace, stop_host_trace
from .probes import read_counters


@dataclass
class TracingOptions:
    """What to record. `gpu=None` means: when CUDA is available."""

    host: bool = True
    native_traces: bool = False
    python_allocators: bool = False
    gpu: bool | None = None
    cpp_stacks: bool = False
    snapshot_every: bool = True
    drain: bool = True

    def gpu_enabled(self) -> bool:
        if self.gpu is not None:
            return self.gpu
        from .gpu_trace import cuda_in_use

        return cuda_in_use()


class Recorder:
    """Writes rounds and marks to a capture; `start()` and `stop()` bracket the measured window."""

    def __init__(self, writer: CaptureWriter, options: TracingOptions, on_round: Callable[[dict], None] = None):
        self.writer, self.options, self.on_round = writer, options, on_round
        self.gpu = options.gpu_enabled()
        self._host_tracker = None
        self._gpu_tracing = False

    def round(self, index: int, phase: str, run: Callable[[], object]) -> dict:
        """Time one round and record it with the counters read after it."""
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        extra = {"tokens": result} if isinstance(result, int) else {}
        row = self.writer.event("round", index=index, phase=phase, seconds=round(seconds, 4), **extra,
                                **read_counters())
        if self.on_round:
            self.on_round(row)
        return row

    def start(self) -> None:
        if self.gpu:
            from .gpu_trace import start_gpu_trace

            start_gpu_trace(cpp_stacks=self.options.cpp_stacks)
            self._gpu_tracing = True
        if self.options.host:
            self._host_tracker = start_host_trace(self.writer.dir / HOST_FILE,
                                                  native_traces=self.options.native_traces,
                                                  trace_python_allocators=self.options.python_allocators)
            settle()
        self.mark("baseline")

    def mark(self, name: str, index: int | None = None, snapshot: bool = True) -> None:
        """A boundary: counters now, a GPU snapshot when asked, then a pause that memray's intervals can see."""
        row = self.writer.event("mark", name=name, index=index, **read_counters())
        if self._gpu_tracing and snapshot:
            from .gpu_trace import save_gpu_snapshot

            file = f"{GPU_DIR}/{name}-{'' if index is None else index}-{row['time_ms']:.0f}.pickle.gz"
            save_gpu_snapshot(self.writer.dir / file)
            self.writer.event("gpu_snapshot", mark=name, index=index, file=file)
        if self._host_tracker is not None:
            settle()

    def round_end(self, index: int, last: bool) -> None:
        self.mark("round", index, snapshot=self.options.snapshot_every or last)

    def drained(self, reset: list[str]) -> None:
        self.writer.event("drain", when="final", reset=reset)
        self.mark("drained")

    def stop(self) -> None:
        if self._host_tracker is not None:
            stop_host_trace(self._host_tracker)
            self._host_tracker = None
        if self._gpu_tracing:
            from .gpu_trace import stop_gpu_trace

            stop_gpu_trace()
            self._gpu_tracing = False
