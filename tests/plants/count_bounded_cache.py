"""Planted host leak modeled on vLLM #9190 (fixed in #14805): a multimodal input cache bounded
by item count instead of bytes.

`BaseMultiModalProcessor.apply` (vLLM's multimodal processing of one prompt) is wrapped; the wrapper puts every
processed item (a `MultiModalKwargsItem` holding the `pixel_values` vLLM's HF processing made) into an LRU dict
keyed by the item's mm hash, evicting only beyond `MAX_ITEMS` = 10,000 items. With a few items per round it never
evicts in a run, so, unlike vLLM's own processor cache (bounded in bytes by `mm_processor_cache_gb` and emptied by
`reset_mm_cache`), it grows every round and survives the drain. Holder: `count_bounded_cache._cache['<mm hash>']`.
"""

from collections import OrderedDict

from vllm.multimodal.processing import processor

MAX_ITEMS = 10_000

_cache = OrderedDict()  # mm hash -> MultiModalKwargsItem, LRU by count (the bug: not by bytes)
_original_apply = processor.BaseMultiModalProcessor.apply


def apply_with_count_bounded_cache(self, *args, **kwargs):
    result = _original_apply(self, *args, **kwargs)
    for modality, items in result["mm_kwargs"].items():
        for mm_hash, item in zip(result["mm_hashes"].get(modality, ()), items):
            if item is None:
                continue
            _cache[mm_hash] = item
            _cache.move_to_end(mm_hash)
            while len(_cache) > MAX_ITEMS:
                _cache.popitem(last=False)
    return result


processor.BaseMultiModalProcessor.apply = apply_with_count_bounded_cache
