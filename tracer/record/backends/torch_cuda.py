"""GPU allocation recording: torch.cuda memory history, and snapshots saved as compressed pickles of plain data."""

from __future__ import annotations

import gzip
import os
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ...capture import CaptureWriter, Stream
from . import stream_path


def cuda_in_use() -> bool:
    import torch

    return torch.cuda.is_available()


class TorchCudaBackend:
    """Records the allocation stack of every live block ("state"), and no alloc/free history.

    The diff reads block state only. A history ring would fill within a few rounds, and the tracebacks it keeps
    are host memory that grows until it is full: memray would report them as host growth in every torch op.
    """

    name, domain = "torch", "gpu"

    MAX_PENDING = 2  # snapshots taken but not yet written: a bound on the host memory they hold

    def __init__(self, cpp_stacks: bool = False):
        self.cpp_stacks = cpp_stacks
        self._on = False
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def start(self, writer: CaptureWriter, role: str) -> None:
        import torch

        torch.cuda.memory._record_memory_history(enabled="state", context="state",
                                                 stacks="all" if self.cpp_stacks else "python")
        self._on = True
        writer.add_stream(Stream(role, os.getpid(), self.name, self.domain, None, {"cpp_stacks": self.cpp_stacks}))

    def mark(self, writer: CaptureWriter, role: str, name: str, index: int | None, snapshot: bool) -> None:
        """A snapshot of live blocks where the driver asks for one (`snapshot`)."""
        if not self._on or not snapshot:
            return
        path, rel = stream_path(writer, role, f"gpu/{name}-{'' if index is None else index}.pickle.gz")
        snapshot = take_gpu_snapshot()  # exact to the mark; pickling and compressing it can wait
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracer-snapshots")
        while len(self._pending) >= self.MAX_PENDING:
            self._pending.pop(0).result()
        self._pending.append(self._writer.submit(write_gpu_snapshot, snapshot, path))
        writer.event("snapshot", stream=role, backend=self.name, mark=name, index=index, file=rel)

    def stop(self) -> None:
        """Stop recording, and wait until every snapshot taken is on disk."""
        if self._on:
            import torch

            torch.cuda.memory._record_memory_history(enabled=None)
            self._on = False
        if self._writer is not None:
            for future in self._pending:
                future.result()
            self._pending = []
            self._writer.shutdown(wait=True)
            self._writer = None


def take_gpu_snapshot() -> dict:
    """`torch.cuda.memory._snapshot()` once the device is idle: the blocks live at this point."""
    import torch

    torch.cuda.synchronize()
    return torch.cuda.memory._snapshot()


def write_gpu_snapshot(snapshot: dict, path: Path) -> int:
    """A snapshot as a gzip'ed pickle of plain data; returns the file size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        pickle.dump(snapshot, fh, protocol=4)
    return path.stat().st_size


def save_gpu_snapshot(path: Path) -> int:
    """Take a snapshot now and write it; returns the file size."""
    return write_gpu_snapshot(take_gpu_snapshot(), path)
