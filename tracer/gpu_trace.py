"""GPU allocation recording: torch.cuda memory history, and snapshots saved as compressed pickles of plain data."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

MAX_ENTRIES = 200_000


def cuda_in_use() -> bool:
    import torch

    return torch.cuda.is_available()


def start_gpu_trace(cpp_stacks: bool = False, max_entries: int = MAX_ENTRIES) -> None:
    """Record every block's allocation stack. The diff reads block state, not the trace ring, which fills fast."""
    import torch

    torch.cuda.memory._record_memory_history(
        enabled="all", context="all", stacks="all" if cpp_stacks else "python", max_entries=max_entries
    )


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
