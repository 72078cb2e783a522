"""GPU allocation recording: torch.cuda memory history, and snapshots saved as compressed pickles of plain data."""

from __future__ import annotations

import gzip
import os
import pickle
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

    def __init__(self, cpp_stacks: bool = False):
        self.cpp_stacks = cpp_stacks
        self._on = False

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
        save_gpu_snapshot(path)
        writer.event("snapshot", stream=role, backend=self.name, mark=name, index=index, file=rel)

    def stop(self) -> None:
        if self._on:
            import torch

            torch.cuda.memory._record_memory_history(enabled=None)
            self._on = False


def save_gpu_snapshot(path: Path) -> int:
    """Write `torch.cuda.memory._snapshot()` gzip'ed; returns the file size."""
    import torch

    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=3) as fh:
        pickle.dump(snapshot, fh, protocol=4)
    return path.stat().st_size
