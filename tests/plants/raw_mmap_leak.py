"""Planted native leak that no allocation hook sees: an anonymous mapping made by a raw `mmap` system call every
round, written and never unmapped (as a native library with its own page allocator would leak).

The call goes through `syscall(SYS_mmap, ...)`, not through a libc symbol memray could intercept, so memray
records nothing and the C heap does not grow; only the process's mappings show it.
"""

import ctypes
import mmap

import vllm

SYS_MMAP = 9  # x86-64
BYTES_PER_ROUND = 8 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
mapped = []  # addresses only: nothing in Python owns the memory
_original_chat = vllm.LLM.chat


def chat_mapping_raw_pages(self, messages, *args, **kwargs):
    address = _libc.syscall(ctypes.c_long(SYS_MMAP), ctypes.c_void_p(0), ctypes.c_size_t(BYTES_PER_ROUND),
                            ctypes.c_int(mmap.PROT_READ | mmap.PROT_WRITE),
                            ctypes.c_int(mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), ctypes.c_int(-1), ctypes.c_long(0))
    if address == -1:
        raise OSError(ctypes.get_errno(), "mmap failed")
    ctypes.memset(address, 1, BYTES_PER_ROUND)  # touch every page: resident
    mapped.append(address)
    return _original_chat(self, messages, *args, **kwargs)


vllm.LLM.chat = chat_mapping_raw_pages
