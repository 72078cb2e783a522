"""Counters read at the end of every round: cheap, always on, and what vLLM's own check looks at."""

from __future__ import annotations

import functools
import gc
import os
import platform
import resource
import sys

import psutil

from .active_malloc import active_malloc, allocator_name, malloc_library


_MALLOC = active_malloc()  # glibc, or a preloaded jemalloc/tcmalloc: each answers with its own numbers


def malloc_in_use() -> dict:
    """Which malloc the process calls (`name`: glibc, jemalloc, tcmalloc, ...) and the library defining it."""
    library = malloc_library()
    return {"name": allocator_name(library), "library": library}


def heap_bytes() -> int | None:
    """Bytes the C heap has handed out and not taken back (glibc `mallinfo2`: in-use chunks plus mmapped
    blocks; jemalloc `stats.allocated`, tcmalloc `generic.current_allocated_bytes`). Unlike RSS it does not
    hide a leak behind reused pages, and it costs microseconds."""
    return _MALLOC.in_use()


def malloc_state() -> dict | None:
    """glibc's view of its heap (mallinfo2): `arena_bytes` taken from the system for the arenas (brk heap and
    arena heaps), of which `in_use_bytes` are handed out and `free_bytes` sit free; `mmapped_bytes` in blocks
    mapped on their own; `trimmable_bytes` free at the top of the main heap. Under another malloc, that
    allocator's own numbers, named by `allocator`."""
    return _MALLOC.state()


def malloc_trim() -> bool | None:
    """glibc's `malloc_trim(0)`: give every whole free page of every arena back to the system. None without
    glibc, else whether memory was released. Under jemalloc or tcmalloc, their call that returns free pages."""
    return _MALLOC.release()


def host_counters() -> dict:
    """Current RSS and USS, peak RSS (`ru_maxrss`, what vLLM's own leak test compares) and C heap in use."""
    proc = psutil.Process()
    info = proc.memory_full_info()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rss_bytes": int(info.rss),
        "uss_bytes": int(info.uss),
        "maxrss_bytes": int(maxrss if sys.platform == "darwin" else maxrss * 1024),
        "heap_bytes": heap_bytes(),
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


def gc_neutral(fn):
    """Run a probe with the garbage collector paused. A probe's temporary objects would otherwise count toward
    the collector's thresholds and trigger collections the workload would not have had, which frees reference
    cycles early and hides exactly the growth a `cycle` finding reports."""

    @functools.wraps(fn)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return paused


@gc_neutral
def read_counters() -> dict:
    return {**host_counters(), **gpu_counters()}


def device_name() -> str:
    """The device the engine ran on, whether or not GPU tracing was on."""
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(torch.cuda.current_device())}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
