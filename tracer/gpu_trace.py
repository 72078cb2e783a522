"""GPU allocation recording: torch.cuda memory history, and snapshots saved as compressed pickles of plain data."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

def cuda_in_use() -> bool:
    import torch

    return torch.cuda.is_available()


def start_gpu_trace(cpp_stacks: bool = False) -> None:
    """Record the allocation stack of every live block ("state"), and no alloc/free history.

    The diff reads block state only. A history ring would fill within a few rounds, and the tracebacks it keeps
    are host memory that grows until it is full: memray would report them as host growth in every torch op.
    """
    import torch

    torch.cuda.memory._record_memory_history(enabled="state", context="state",
                                             stacks="all" if cpp_stacks else "python")


def stop_gpu_trace() -> None:
    import torch

    torch.cuda.memory._record_memory_history(enabled=None)


def save_gpu_snapshot(path: Path) -> int:
    """Write `torch.cuda.memory._snapshot()` gzip'ed; returns the file size."""
    import torch

    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=3) as fh:
        pickle.dump(snapshot, fh, protocol=4)
    return path.stat().st_size
