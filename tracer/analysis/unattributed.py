"""Growth that no traced allocation explains, with the best hint of where it went.

memray sees malloc-family calls and torch's snapshots see the caching allocator's blocks; pinned host memory,
pages the C allocator keeps after free, native caches and device memory outside PyTorch escape both. Each
counter's growth is set against what the findings account for; the remainder is reported, not dropped.
"""

from __future__ import annotations

from .findings import Finding

# (counter, what accounts for it, hint for the remainder)
_HINTS = {
    "heap_bytes": "host allocations memray did not attribute (allocations from before tracing was on, freed and "
                  "reallocated across the baseline; native threads)",
    "rss_bytes": "resident memory outside the C heap: pages glibc keeps after free (try MALLOC_TRIM_THRESHOLD_ / "
                 "malloc_trim), mmap'd files and native caches (oneDNN, CUDA libraries); --native-traces names "
                 "native allocators",
    "gpu_allocated_bytes": "CUDA blocks without a recorded stack (allocated before tracing started)",
    "gpu_reserved_bytes": "PyTorch's caching allocator keeps freed segments reserved; torch.cuda.empty_cache() "
                          "returns them (not a leak)",
    "gpu_used_bytes": "device memory outside PyTorch's allocator: CUDA context, cuBLAS/cuDNN workspaces, NCCL, "
                      "other libraries",
    "pinned_host_bytes": "pinned host memory from torch's CUDA host caching allocator (pin_memory, non_blocking "
                         "copies): never returned, invisible to memray and to CUDA snapshots",
}
MIN_REPORTED = 1 << 20


def unattributed_growth(growth: dict, findings: list[Finding], drained: bool) -> list[dict]:
    """One row per counter whose growth (after the drain, when there was one) exceeds what explains it."""
    key = "growth_after_drain" if drained else "growth"

    def kept(domain: str) -> int:
        return sum(f.bytes if drained else f.details.get("undrained_bytes", f.bytes)
                   for f in findings if f.domain == domain)

    explained = {"heap_bytes": kept("host"), "gpu_allocated_bytes": kept("gpu")}
    explained["rss_bytes"] = growth.get("heap_bytes", {}).get(key, 0) if "heap_bytes" in growth else kept("host")
    explained["gpu_reserved_bytes"] = growth.get("gpu_allocated_bytes", {}).get(key, 0)
    explained["gpu_used_bytes"] = growth.get("gpu_reserved_bytes", {}).get(key, 0)
    explained["pinned_host_bytes"] = 0
    rows = []
    for name, hint in _HINTS.items():
        if name not in growth or growth[name].get(key) is None:
            continue
        total = growth[name][key]
        rest = total - max(explained[name], 0)
        if rest >= MIN_REPORTED:
            rows.append({"counter": name, "growth": total, "explained": explained[name], "unattributed": rest,
                         "hint": hint})
    return rows
