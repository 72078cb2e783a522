"""Which malloc the process runs on, and that allocator's own numbers for the C heap.

Under an LD_PRELOADed jemalloc or tcmalloc, glibc's `mallinfo2` and `malloc_trim` can still be called, but they
describe glibc's arenas, which then hold almost nothing: the in-use bytes would read as flat while the heap grows,
and the trim would return nothing. So the library that defines the `malloc` the process calls is found (dladdr),
and its own statistics and release call are used: jemalloc's `mallctl` (`stats.allocated` after an `epoch`
refresh; `arena.<all>.purge`), tcmalloc's `MallocExtension_*` C functions.
"""

from __future__ import annotations

import ctypes
import os

GLIBC, JEMALLOC, TCMALLOC = "glibc", "jemalloc", "tcmalloc"
MALLCTL_ARENAS_ALL = 4096  # jemalloc 5: the arena index that means every arena


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


def malloc_library() -> str | None:
    """The file of the shared object whose `malloc` this process calls (None where dladdr is missing)."""
    try:
        process = ctypes.CDLL(None)
        dladdr = process.dladdr
    except (OSError, AttributeError):
        return None
    info = _DlInfo()
    address = ctypes.cast(process.malloc, ctypes.c_void_p)
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def allocator_name(library: str | None) -> str:
    """glibc, jemalloc, tcmalloc, or the library's file name for any other."""
    if library is None:
        return "unknown"
    base = os.path.basename(library)
    for name in (JEMALLOC, TCMALLOC):
        if name in base:
            return name
    return GLIBC if base.startswith("libc.so") or base.startswith("libc-") else base


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc_function(name: str, restype):
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc (mallinfo2: glibc 2.33+)
        return None
    fn.restype = restype
    return fn


class Glibc:
    """glibc's malloc through `mallinfo2` and `malloc_trim` (None where this libc lacks them)."""

    release_call = "malloc_trim(0)"

    def __init__(self):
        self._mallinfo2 = _libc_function("mallinfo2", _MallInfo2)
        self._malloc_trim = _libc_function("malloc_trim", ctypes.c_int)

    def in_use(self) -> int | None:
        if self._mallinfo2 is None:
            return None
        info = self._mallinfo2()
        return int(info.uordblks) + int(info.hblkhd)

    def state(self) -> dict | None:
        if self._mallinfo2 is None:
            return None
        info = self._mallinfo2()
        return {"allocator": GLIBC, "arena_bytes": int(info.arena), "in_use_bytes": int(info.uordblks),
                "free_bytes": int(info.fordblks), "mmapped_bytes": int(info.hblkhd),
                "trimmable_bytes": int(info.keepcost)}

    def release(self) -> bool | None:
        return None if self._malloc_trim is None else bool(self._malloc_trim(ctypes.c_size_t(0)))


class Jemalloc:
    """jemalloc's statistics through `mallctl`."""

    release_call = "mallctl arena.<all>.purge"

    def __init__(self):
        self._mallctl = ctypes.CDLL(None).mallctl
        self._mallctl.restype = ctypes.c_int

    def _read(self, name: str) -> int | None:
        value, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
        if self._mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)):
            return None
        return int(value.value)

    def _refresh(self) -> None:
        """jemalloc's statistics are a snapshot, renewed by writing the `epoch`."""
        epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(ctypes.sizeof(ctypes.c_uint64))
        self._mallctl(b"epoch", ctypes.byref(epoch), ctypes.byref(size), ctypes.byref(epoch), size)

    def in_use(self) -> int | None:
        self._refresh()
        return self._read("stats.allocated")

    def state(self) -> dict:
        self._refresh()
        return {"allocator": JEMALLOC, "in_use_bytes": self._read("stats.allocated"),
                "active_bytes": self._read("stats.active"), "resident_bytes": self._read("stats.resident"),
                "mapped_bytes": self._read("stats.mapped")}

    def release(self) -> bool:
        return self._mallctl(f"arena.{MALLCTL_ARENAS_ALL}.purge".encode(), None, None, None, ctypes.c_size_t(0)) == 0


class Tcmalloc:
    """tcmalloc's statistics through its MallocExtension C functions."""

    release_call = "MallocExtension_ReleaseFreeMemory()"

    def __init__(self):
        process = ctypes.CDLL(None)
        self._get = process.MallocExtension_GetNumericProperty
        self._get.restype = ctypes.c_int
        self._release = process.MallocExtension_ReleaseFreeMemory
        self._release.restype = None

    def _read(self, name: str) -> int | None:
        value = ctypes.c_size_t(0)
        return int(value.value) if self._get(name.encode(), ctypes.byref(value)) else None

    def in_use(self) -> int | None:
        return self._read("generic.current_allocated_bytes")

    def state(self) -> dict:
        return {"allocator": TCMALLOC, "in_use_bytes": self.in_use(), "heap_bytes": self._read("generic.heap_size"),
                "free_bytes": self._read("tcmalloc.pageheap_free_bytes"),
                "unmapped_bytes": self._read("tcmalloc.pageheap_unmapped_bytes")}

    def release(self) -> bool:
        self._release()
        return True


class Unknown:
    """A malloc tracer has no statistics for: no in-use bytes, no state, nothing released."""

    release_call = None

    def __init__(self, name: str):
        self.name = name

    def in_use(self) -> None:
        return None

    def state(self) -> dict:
        return {"allocator": self.name}

    def release(self) -> None:
        return None


def active_malloc() -> Glibc | Jemalloc | Tcmalloc | Unknown:
    """The statistics of the malloc in use: glibc's, also where the library defining `malloc` cannot be told."""
    library = malloc_library()
    name = allocator_name(library)
    if library is None or name == GLIBC:
        return Glibc()
    try:
        return Jemalloc() if name == JEMALLOC else Tcmalloc() if name == TCMALLOC else Unknown(name)
    except AttributeError:  # a build without the statistics interface
        return Unknown(name)
