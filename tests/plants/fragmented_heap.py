"""Planted allocator retention (fragmentation): every round leaves glibc's heap holding freed memory it cannot
give back, although almost nothing stays allocated.

Each `LLM.chat` call makes `BLOCKS` bytearrays of a size larger than the last call's, writes them, then shrinks
each to `KEPT` bytes, which are kept. Shrinking reallocates in place: the small head stays live, the rest of the
block goes back to malloc's free lists, walled in by the next block's head (all blocks exist before the first is
shrunk, so they lie one after the other), so the free pieces cannot merge, are too small for the next call's
larger blocks and are not at the top of the heap, where glibc trims. RSS grows a
few MiB a round; in-use bytes grow only `BLOCKS * KEPT` (under the leak thresholds). `malloc_trim(0)` gives the
free pieces' pages back.
"""

import vllm

BLOCKS = 64
KEPT = 600
kept = []
calls = 0
_original_chat = vllm.LLM.chat


def chat_fragmenting_heap(self, messages, *args, **kwargs):
    global calls
    calls += 1
    size = (64 << 10) + (4 << 10) * calls  # below glibc's mmap threshold (128 KiB): served from the heap
    blocks = [bytearray(b"\x01") * size for _ in range(BLOCKS)]
    for block in blocks:
        del block[KEPT:]
    kept.extend(blocks)
    return _original_chat(self, messages, *args, **kwargs)


vllm.LLM.chat = chat_fragmenting_heap
