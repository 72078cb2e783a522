"""Free notices for the encoder cache that never reach the model runner: the scheduler's EncoderCacheManager evicts
old encoder outputs to make room, but the list of evicted hashes it hands to the runner comes back empty, so the
runner's `encoder_cache` dict keeps every image's output. The encoder-cache reset still empties the dict, so the
drain alone would call it a cache; the entries the scheduler no longer tracks make it a leak."""

from vllm.v1.core.encoder_cache_manager import EncoderCacheManager


def _lose_freed_hashes(self) -> list[str]:
    self.freed = []
    return []


EncoderCacheManager.get_freed_mm_hashes = _lose_freed_hashes
