"""Resident memory by mapping: /proc/<pid>/smaps read at every mark, grouped by what each mapping is.

RSS counts pages, not allocations; the mapping a page lies in says whose it can be: the C heap (`[heap]`, the
main arena grown by brk) and glibc's other arenas (64 MiB-aligned anonymous heaps), thread stacks (anonymous
mappings right above a guard page), other anonymous mappings (large malloc blocks, tensors, numpy arrays,
Python's object arenas, raw mmap calls) and file-backed ones (libraries, model files).

smaps is parsed with two regular expressions over the whole file rather than with psutil's
`memory_maps(grouped=False)`, which reads the same file but builds a record of every field for every mapping and
takes about twice as long (bench/overhead.py prints both). Only the mapping header and its `Rss:` line are kept.
"""

from __future__ import annotations

import re
import time

from .probes import gc_neutral

_HEADER = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+ *(.*)$", re.M)
_RSS = re.compile(rb"^Rss:\s+(\d+) kB", re.M)

HEAP, ARENA, STACK, THREAD_STACK, ANON, FILE, SPECIAL = (
    "heap", "arena", "stack", "thread stack", "anonymous", "file", "special")
KINDS = (HEAP, ARENA, STACK, THREAD_STACK, ANON, FILE, SPECIAL)
ARENA_SIZE = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: every non-main arena heap is this big and aligned to it
MAX_GUARD = 1 << 20  # a thread stack's guard page(s) below it


def read_smaps(pid: int | str = "self") -> list[tuple[int, int, str, bytes, int]]:
    """(start, end, perms, path, rss bytes) of every mapping, in address order."""
    with open(f"/proc/{pid}/smaps", "rb") as f:
        text = f.read()
    headers = _HEADER.findall(text)
    rss = _RSS.findall(text)
    if len(headers) != len(rss):
        raise RuntimeError(f"/proc/{pid}/smaps: {len(headers)} mappings but {len(rss)} Rss lines")
    return [(int(s, 16), int(e, 16), p.decode(), path.strip(), int(r) * 1024)
            for (s, e, p, path), r in zip(headers, rss)]


def classify(rows: list[tuple[int, int, str, bytes, int]]) -> dict[int, list]:
    """start -> [end, kind, path, rss] for every mapping that is resident or private writable memory.

    Arenas: an anonymous read-write mapping starting at a 64 MiB boundary whose reserved tail (`---p`) ends
    64 MiB later. Thread stacks: an anonymous read-write mapping directly above a small `---p` guard mapping.
    """
    out: dict[int, list] = {}
    for i, (start, end, perms, path, rss) in enumerate(rows):
        if perms.startswith("---"):
            continue  # reserved, never resident
        if path == b"[heap]":
            kind = HEAP
        elif path == b"[stack]":
            kind = STACK
        elif path.startswith(b"["):
            kind = SPECIAL
        elif path:
            kind = FILE
        else:
            kind = ANON
            prev = rows[i - 1] if i else None
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if start % ARENA_SIZE == 0 and (end - start == ARENA_SIZE or (
                    nxt and nxt[0] == end and nxt[2].startswith("---") and not nxt[3]
                    and nxt[1] - start == ARENA_SIZE)):
                kind = ARENA
            elif prev and prev[1] == start and prev[2].startswith("---") and not prev[3] \
                    and prev[1] - prev[0] <= MAX_GUARD:
                kind = THREAD_STACK
        if rss or kind != FILE:
            out[start] = [end, kind, path.decode(errors="replace"), rss]
    return out


class SmapsProbe:
    """Reads the process's mappings at each mark and returns only what changed since the last read, so a
    capture keeps one full table (the first read) and small rows after it."""

    def __init__(self, pid: int | str = "self"):
        self.pid = pid
        self.first: dict[int, list] | None = None  # the table at the first read (the baseline)
        self.last: dict[int, list] | None = None

    @gc_neutral
    def read(self) -> dict:
        """Fields of an `smaps` event: `rows` [start, end, kind, path, rss] of new or changed mappings,
        `gone` the starts of mappings unmapped since the last read, `full` on the first read, `seconds`."""
        started = time.perf_counter()
        now = classify(read_smaps(self.pid))
        last = self.last
        if last is None:
            rows = [[s, *v] for s, v in now.items()]
            gone = []
        else:
            rows = [[s, *v] for s, v in now.items() if last.get(s) != v]
            gone = [s for s in last if s not in now]
        self.last = now
        if self.first is None:
            self.first = now
        return {"full": last is None, "rows": rows, "gone": gone,
                "seconds": round(time.perf_counter() - started, 5)}
