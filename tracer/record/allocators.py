"""Running the traced process under another C allocator (LD_PRELOAD), to confirm allocator retention.

glibc's malloc keeps freed memory in its arenas when live blocks pin the pages around it; jemalloc and tcmalloc
return it far more readily, and vLLM recommends one of them on CPU. Running the same rounds under one of them
and seeing the RSS growth go away confirms that the growth was retention, not a leak.
"""

from __future__ import annotations

import ctypes.util

from ..errors import UsageError

# --allocator name -> (library names for ctypes.util.find_library, in order of preference; Debian package)
ALLOCATORS = {
    "jemalloc": (("jemalloc",), "libjemalloc2"),
    "tcmalloc": (("tcmalloc_minimal", "tcmalloc"), "libtcmalloc-minimal4"),
}


def preload_library(name: str) -> str:
    """The installed shared library of allocator `name`, for LD_PRELOAD; a UsageError when it is not there."""
    names, package = ALLOCATORS[name]
    for lib in names:
        found = ctypes.util.find_library(lib)
        if found:
            return found
    raise UsageError(f"--allocator {name}: lib{names[0]} is not installed (Debian/Ubuntu: apt-get install {package})")
