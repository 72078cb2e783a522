"""Planted native leak modeled on vLLM #50150 (fixed in #51185): a small native allocation per
kernel call, made for a string argument, that is never freed.

vLLM's CPU attention kernel entry `vllm._custom_ops.cpu_attention_with_kv_cache` (called once per attention layer
per engine step; it takes the string argument `kv_cache_dtype`) is wrapped. The wrapper copies that string into a
freshly malloc'd native buffer of `BYTES_PER_CALL` bytes and drops the pointer: a true native leak, with no Python
object holding it (so there is no holder chain). It is found with `--native-traces`: the stack shows the native
malloc caller chain (ctypes' call into `PyMem_RawMalloc`, which calls libc malloc) up to the wrapper.

The buffer comes from `PyMem_RawMalloc`, a thin wrapper around libc `malloc` inside the interpreter: memray sees
malloc calls made through a loaded library's symbol table, but not a call to `ctypes.CDLL(None).malloc`, whose
function pointer (from dlsym) bypasses its hooks.
"""

import ctypes

from vllm import _custom_ops

BYTES_PER_CALL = 4096

_raw_malloc = ctypes.pythonapi.PyMem_RawMalloc
_raw_malloc.restype = ctypes.c_void_p
_raw_malloc.argtypes = [ctypes.c_size_t]
_original = _custom_ops.cpu_attention_with_kv_cache
calls = 0


def cpu_attention_leaking_string_arg(*args, kv_cache_dtype="auto", **kwargs):
    global calls
    calls += 1
    buffer = _raw_malloc(BYTES_PER_CALL)  # never freed: the leak
    if buffer:
        text = str(kv_cache_dtype).encode()[: BYTES_PER_CALL - 1]
        ctypes.memmove(buffer, text + b"\0", len(text) + 1)
    return _original(*args, kv_cache_dtype=kv_cache_dtype, **kwargs)


_custom_ops.cpu_attention_with_kv_cache = cpu_attention_leaking_string_arg
