"""What vLLM's encoder cache holds at the drain, checked against the scheduler's bookkeeping before the reset
empties it.

Each worker's model runner keeps every encoder output (mm hash -> tensor) until the scheduler's
`EncoderCacheManager` evicts that hash (only when a new output needs the space) and sends the runner a free
notice; the manager's capacity, in embeddings, bounds what it tracks. An entry the runner holds that the manager
neither tracks (`cached`) nor is about to free (`freed`, sent with the next step) will never be freed by vLLM.
The encoder-cache reset empties the runner's dict whatever it holds, so without this check such a leak would be
released by the drain and look like a cache. Needs the engine core in this process (`tracer diff`'s in-process
engine); the fields read here are the same from vLLM 0.13 to 0.32.
"""

from __future__ import annotations

from .encoder_cache_reset import in_process_core


def _runner_entries(worker) -> dict[str, int] | None:
    """Run in each worker by the executor's `collective_rpc`: the bytes of each cached encoder output."""
    cache = getattr(getattr(worker, "model_runner", None), "encoder_cache", None)
    if not isinstance(cache, dict):
        return None
    return {str(key): int(getattr(value, "nbytes", 0)) for key, value in cache.items()}


def audit(llm) -> dict | None:
    """{entries, bytes, untracked_entries, untracked_bytes, capacity_embeddings} summed over the workers, or None
    when the engine core is in another process or its fields are not the ones read here."""
    core = in_process_core(llm)
    manager = getattr(getattr(core, "scheduler", None), "encoder_cache_manager", None)
    executor = getattr(core, "model_executor", None)
    cached, freed = getattr(manager, "cached", None), getattr(manager, "freed", None)
    if not isinstance(cached, dict) or not isinstance(freed, list) or not hasattr(executor, "collective_rpc"):
        return None
    per_worker = executor.collective_rpc(_runner_entries)
    if not per_worker or any(entries is None for entries in per_worker):
        return None
    known = set(cached) | set(freed)
    found = {"entries": 0, "bytes": 0, "untracked_entries": 0, "untracked_bytes": 0,
             "capacity_embeddings": int(getattr(manager, "cache_size", 0))}
    for entries in per_worker:
        untracked = [size for key, size in entries.items() if key not in known]
        found["entries"] += len(entries)
        found["bytes"] += sum(entries.values())
        found["untracked_entries"] += len(untracked)
        found["untracked_bytes"] += sum(untracked)
    return found
