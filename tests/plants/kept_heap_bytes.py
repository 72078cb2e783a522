"""Planted small growth in the C heap: every `LLM.chat` call keeps `BLOCKS` bytes objects of `SIZE` bytes (32 KiB a
round, under the default leak thresholds). Objects over 512 bytes bypass pymalloc and come from malloc, on the
main thread from the `[heap]`; memray sees each allocation with this file on its stack."""

import vllm

BLOCKS = 8
SIZE = 4096
kept = []
_original_chat = vllm.LLM.chat


def chat_keeping_heap_bytes(self, messages, *args, **kwargs):
    for _ in range(BLOCKS):
        kept.append(bytes([len(kept) % 256]) * SIZE)
    return _original_chat(self, messages, *args, **kwargs)


vllm.LLM.chat = chat_keeping_heap_bytes
