"""Holder chains: reference paths from named roots to objects that own given addresses (pure logic)."""

from __future__ import annotations

import types

import numpy as np
import torch

from tracer.record.holders import AddressRanges, find_holders, named_roots


def test_paths_to_bytes_arrays_and_tensors():
    plugin = types.ModuleType("myplugin")
    blob = bytes(100_000)
    array = np.ones(50_000)
    tensor = torch.ones(10_000)

    class Cache:
        def __init__(self):
            self.entries = {"req-7": {"pixel_values": tensor}}

    plugin._stash = [b"small", blob]
    plugin.cache = Cache()
    plugin.arrays = (None, array)
    host = AddressRanges([
        (id(blob), 100_000, "hbytes"),
        (array.__array_interface__["data"][0], array.nbytes, "harray"),
        (tensor.untyped_storage().data_ptr(), tensor.nbytes, "htensor"),
    ])
    found = find_holders(host, AddressRanges([]), [("myplugin._stash", plugin._stash),
                                                   ("myplugin.cache", plugin.cache),
                                                   ("myplugin.arrays", plugin.arrays)])
    assert found["hbytes"] == ["myplugin._stash[1]"]
    assert found["harray"] == ["myplugin.arrays[1]"]
    assert found["htensor"] == ["myplugin.cache.entries['req-7']['pixel_values']"]


def test_shortest_path_wins_and_closures_are_followed():
    data = bytearray(4096)
    deep = {"a": {"b": {"c": data}}}

    def make():
        kept = data

        def hook():
            return kept
        return hook

    hook = make()
    host = AddressRanges([(id(data), 64, "h1")])
    found = find_holders(host, AddressRanges([]), [("mod.deep", deep), ("mod.hook", hook)])
    assert found["h1"] == ["mod.hook.__closure__[0]"]  # each object is named once, by its shortest path


def test_module_globals_are_named_roots():
    roots = dict(named_roots({"llm": object()}))
    assert "llm" in roots
    assert roots["tracer.record.holders.MAX_PATHS"] == 3


def test_nothing_to_find():
    assert find_holders(AddressRanges([]), AddressRanges([]), [("x", [1, 2, 3])]) == {}
