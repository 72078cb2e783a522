"""Counters read at the end of every round: cheap, always on, and what vLLM's own check looks at."""

from __future__ import annotations

import resource
import sys

import psutil


def host_counters() -> dict:
    """Current RSS and USS, and peak RSS (`ru_maxrss`, the number vLLM's own leak test compares)."""
    proc = psutil.Process()
    info = proc.memory_full_info()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rss_bytes": int(info.rss),
        "uss_bytes": int(info.uss),
        "maxrss_bytes": int(maxrss if sys.platform == "darwin" else maxrss * 1024),
    }


def gpu_counters() -> dict:
    """CUDA allocator counters, device used memory and pinned host bytes; empty when CUDA is not in use."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    out = {
        "gpu_allocated_bytes": int(torch.cuda.memory_allocated()),
        "gpu_reserved_bytes": int(torch.cuda.memory_reserved()),
        "gpu_used_bytes": int(total - free),
    }
    try:
        out["pinned_host_bytes"] = int(torch.cuda.host_memory_stats().get("allocated_bytes.current", 0))
    except (AttributeError, RuntimeError):
        out["pinned_host_bytes"] = None
    return out


def read_counters() -> dict:
    return {**host_counters(), **gpu_counters()}
