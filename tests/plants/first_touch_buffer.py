"""Planted first touch: a staging buffer allocated once, before the baseline, whose pages are touched a slice
per round (as a preallocated KV cache or pinned staging buffer fills up). RSS grows every round, but only up to
the buffer's size: first touch, not a leak.

`staging` is allocated at import (the --preload runs before the engine is built); each `LLM.chat` call writes
the next `SLICE` bytes of it. numpy takes a buffer this large from its own anonymous mapping (glibc's malloc
maps it on its own), untouched until written.
"""

import numpy
import vllm

BUFFER_BYTES = 256 << 20
SLICE = 24 << 20

staging = numpy.empty(BUFFER_BYTES, dtype=numpy.uint8)
touched = 0
_original_chat = vllm.LLM.chat


def chat_filling_staging_buffer(self, messages, *args, **kwargs):
    global touched
    end = min(touched + SLICE, BUFFER_BYTES)
    staging[touched:end] = 1
    touched = end
    return _original_chat(self, messages, *args, **kwargs)


vllm.LLM.chat = chat_filling_staging_buffer
