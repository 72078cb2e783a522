"""Whose pages a grown anonymous mapping holds: the tensor storages and numpy arrays whose data lies in it.

Runs in the traced process after the final drain, only when an anonymous mapping grew past the leak threshold.
The walk is the holder search's (tracer.record.holders: named roots, then references breadth first); an object
whose data buffer starts inside a grown mapping is that mapping's owner, named by its reference path. Whether its
mapping already existed at the baseline tells a buffer filling up (first touch) from one allocated in the rounds.
"""

from __future__ import annotations

import bisect
import sys

from .holders import ReferenceWalk, named_roots

MAX_OWNERS = 20


def buffer_of(obj) -> tuple[str, int, int] | None:
    """(kind, address, bytes) of the host data buffer an object owns: a CPU tensor's storage, or a numpy array
    that owns its data (views are skipped: their base is found on its own)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        try:
            if obj.is_cuda or obj.is_meta:
                return None
            storage = obj.untyped_storage()
            return ("tensor", storage.data_ptr(), storage.nbytes()) if storage.nbytes() else None
        except (RuntimeError, NotImplementedError):
            return None
    if type(obj).__name__ == "ndarray" and getattr(obj, "base", 0) is None and hasattr(obj, "__array_interface__"):
        return "ndarray", obj.__array_interface__["data"][0], int(obj.nbytes)
    return None


def find_owners(grown: list[tuple[int, int, bool]], roots: list[tuple[str, object]], max_objects: int = 3_000_000,
                max_seconds: float = 30.0) -> list[dict]:
    """Buffers overlapping the grown mappings [(start, end, existed at the baseline)], one per buffer, by
    reference path. Overlap, not the buffer's first address: the kernel splits a buffer's mapping where
    transparent huge pages are asked for (numpy does so for large arrays), so its first page may lie apart."""
    grown = sorted(grown)
    starts = [g[0] for g in grown]

    def overlapping(address: int, nbytes: int):
        i = bisect.bisect_left(starts, address + nbytes) - 1
        return grown[i] if i >= 0 and grown[i][1] > address else None

    found: dict[int, dict] = {}
    walk = ReferenceWalk(roots, max_objects, max_seconds)
    for obj, path in walk:
        if len(found) >= MAX_OWNERS:
            break
        buffer = buffer_of(obj)
        if buffer is not None:
            mapping = overlapping(buffer[1], buffer[2])
            if mapping is not None and buffer[1] not in found:
                found[buffer[1]] = {"path": path, "kind": buffer[0], "address": buffer[1], "nbytes": buffer[2],
                                    "before_baseline": mapping[2]}
            walk.prune()
    return list(found.values())


def grown_anonymous(base: dict[int, list], now: dict[int, list], min_growth: int) -> list[tuple[int, int, bool]]:
    """Anonymous mappings of `now` (start -> [end, kind, path, rss], as tracer.record.smaps classifies them) that
    grew by `min_growth` or more over the mappings of `base` inside them; with whether they existed then."""
    out = []
    for start, (end, kind, _, rss) in now.items():
        if kind != "anonymous":
            continue
        inside = [v for s, v in base.items() if start <= s < end and v[1] == kind]
        if rss - sum(v[3] for v in inside) >= min_growth:
            out.append((start, end, bool(inside)))
    return out


def record_owners(writer, base: dict[int, list], now: dict[int, list], extra_roots: dict, min_growth: int) -> None:
    """Find and record (an `rss_owners` event) the buffers in the anonymous mappings that grew."""
    grown = grown_anonymous(base, now, min_growth)
    if grown:
        writer.event("rss_owners", owners=find_owners(grown, named_roots(extra_roots)))
