"""Reference cycles in garbage: components, the cycle as a path, what each shape keeps (real objects, real gc)."""

from __future__ import annotations

import functools
import gc

from tracer.record.cycles import describe, inspect_garbage, strongly_connected
from tracer.record.holders import _addresses


class Request:
    def __init__(self, payload: bytearray):
        self.payload = payload
        self.get_hash_new_full_blocks = functools.partial(hash_blocks, self)


def hash_blocks(request) -> int:
    return len(request.payload)


def test_components_of_a_small_graph():
    edges = {1: [2], 2: [1, 3], 3: [], 4: [4]}
    components = sorted(sorted(c) for c in strongly_connected(edges))
    assert components == [[1, 2], [3], [4]]


def test_garbage_cycle_through_a_partial_is_named_and_its_memory_listed():
    """Three requests dropped while the collector is off, as under vLLM's frozen GC heap."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        payloads = [bytearray(4096) for _ in range(3)]
        for payload in payloads:
            Request(payload)
        addresses = {a for p in payloads for d, a in _addresses(p) if d == "host"}
        payloads.clear()
        found = inspect_garbage()
    finally:
        if enabled:
            gc.enable()
    shapes = [s for s in found["cycles"] if s["path"].startswith("Request")]
    assert shapes, found
    shape = shapes[0]
    assert shape["path"] == "Request.get_hash_new_full_blocks -> partial.args[0] -> Request", shape["path"]
    assert shape["cycles"] == 3 and shape["types"]["bytearray"] == 3 and shape["types"]["partial"] == 3
    assert addresses <= set(shape["addresses"])
    assert gc.collect() >= 0 and not gc.garbage  # the garbage was let go: the next collection frees it


def test_objects_without_cycles_give_no_shape():
    assert describe([bytearray(10), [1, 2]])["cycles"] == []
