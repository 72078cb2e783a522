"""Planted reference cycle modeled on vLLM's request object before it stopped binding itself into its block
hasher: `Request.get_hash_new_full_blocks = partial(block_hasher, self)` made every request a cycle
(Request -> partial -> Request), and the request kept its multimodal inputs (`mm_inputs`, the processed items
holding the image's pixel values).

vLLM's engine core freezes the GC heap at start (`freeze_gc_heap()`), so full collections are rare: finished
requests and their pixel values pile up until one runs, and only the collector frees them (a cache reset does
not). `vllm.v1.request.Request.__init__` is wrapped to restore the old binding and the kept inputs.
"""

import functools

from vllm.v1 import request

_original_init = request.Request.__init__


def init_binding_block_hasher(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self.mm_inputs = [feature.data for feature in self.mm_features if feature.data is not None]
    if self._block_hasher is not None:
        self.get_hash_new_full_blocks = functools.partial(self._block_hasher, self)


request.Request.__init__ = init_binding_block_hasher
