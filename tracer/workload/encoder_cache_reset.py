"""The encoder-cache drain step for vLLM releases without `LLMEngine.reset_encoder_cache` (added in 0.16).

vLLM 0.16's reset empties two things together: the scheduler's `EncoderCacheManager` (which encoder outputs are
cached, and its free capacity in embeddings) and each worker's `model_runner.encoder_cache` (mm hash -> encoder
output tensor). Releases 0.13 to 0.15 have both, with the same fields, but no call that empties them. Their
encoder cache keeps every image's output until the manager needs the space (eviction happens only when a new
output does not fit), so it grows for as many rounds as its capacity lasts; without a reset the drain cannot tell
it from a leak. The substitute clears both, as 0.16's reset does. It needs the engine core in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, as `tracer diff` runs it) and runs between rounds, when no request is in
flight.
"""

from __future__ import annotations

from typing import Callable

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

STEP = "encoder_cache"
RELEASES = ">=0.13,<0.16"  # checked against the sources of 0.13.0, 0.15.1 and 0.16.0
REPLACES = "llm_engine.reset_encoder_cache"
MANAGER_FIELDS = ("cache_size", "cached", "freeable", "freed", "num_free_slots", "num_freeable_slots")


def applies(vllm_version: str | None) -> bool:
    """True for the releases the substitute was written for (a local build suffix, like +cpu, is ignored)."""
    try:
        return Version(vllm_version or "").public in SpecifierSet(RELEASES)
    except InvalidVersion:
        return False


def describe() -> dict:
    """What the report says about the substitute step."""
    return {"replaces": REPLACES, "releases": f"vLLM {RELEASES}",
            "how": "clears the scheduler's EncoderCacheManager and each worker's model_runner.encoder_cache, "
                   "as vLLM 0.16's reset_encoder_cache does"}


def in_process_core(llm):
    """The EngineCore of an in-process `vllm.LLM` (VLLM_ENABLE_V1_MULTIPROCESSING=0), else None."""
    return getattr(getattr(getattr(llm, "llm_engine", None), "engine_core", None), "engine_core", None)


def reset_manager(manager) -> None:
    """The scheduler's bookkeeping back to empty: nothing cached, the whole capacity free."""
    manager.cached.clear()
    manager.freeable.clear()
    manager.freed.clear()
    manager.num_free_slots = manager.cache_size
    manager.num_freeable_slots = manager.cache_size


def _clear_runner_cache(worker) -> None:
    """Run in each worker by the executor's `collective_rpc`: drop every cached encoder output tensor."""
    worker.model_runner.encoder_cache.clear()


def substitute_reset(llm, vllm_version: str | None) -> Callable[[], None] | None:
    """The reset for this engine, or None when the release is outside the range or its internals are not there
    (an engine core in another process, or fields that changed)."""
    if not applies(vllm_version):
        return None
    core = in_process_core(llm)
    manager = getattr(getattr(core, "scheduler", None), "encoder_cache_manager", None)
    executor = getattr(core, "model_executor", None)
    if manager is None or not all(hasattr(manager, f) for f in MANAGER_FIELDS) or not hasattr(
            executor, "collective_rpc"):
        return None

    def reset() -> None:
        reset_manager(manager)
        executor.collective_rpc(_clear_runner_cache)

    return reset
