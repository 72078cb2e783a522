"""Holder chains: reference paths from named roots to objects that own given addresses (pure logic)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
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


def test_a_chain_through_the_engine_starts_at_llm():
    """The engine is a root of its own: memory only the engine reaches is named from `llm` down, attribute by
    attribute, as vLLM's objects nest (LLM -> llm_engine -> engine_core -> a cache dict)."""
    tensor = torch.ones(20_000)
    cache = types.SimpleNamespace(encoder_cache={"mm-hash-1": tensor})
    llm = types.SimpleNamespace(llm_engine=types.SimpleNamespace(engine_core=types.SimpleNamespace(scheduler=cache)))
    host = AddressRanges([(tensor.untyped_storage().data_ptr(), tensor.nbytes, "henc")])
    found = find_holders(host, AddressRanges([]), named_roots({"llm": llm}))
    assert found == {"henc": ["llm.llm_engine.engine_core.scheduler.encoder_cache['mm-hash-1']"]}


def test_nothing_to_find():
    assert find_holders(AddressRanges([]), AddressRanges([]), [("x", [1, 2, 3])]) == {}


def test_container_storage_is_owned_by_its_container():
    """The item array of a list, a dict's key table, an array.array's buffer and a deque's blocks are separate
    allocations from the objects; each is named by the container holding it."""
    import array
    from collections import deque

    from tracer.record.holders import container_storage

    ints = list(range(5000))  # item array: 40,000 bytes of pointers
    table = {k: k for k in range(5000)}
    numbers = array.array("q", range(5000))
    blocks = deque(range(500))  # 8 blocks of 64 items
    owned = {name: container_storage(obj) for name, obj in
             (("list", ints), ("dict", table), ("array", numbers), ("deque", blocks))}
    assert all(owned.values()), owned
    assert owned["array"] == [numbers.buffer_info()[0]]
    assert len(owned["deque"]) == 8
    assert container_storage([]) == [] and container_storage("text") == []
    host = AddressRanges([(owned["list"][0], 5000 * 8, "hlist"), (owned["dict"][0], 4096, "hdict"),
                          (owned["deque"][-1], 520, "hdeque")])
    found = find_holders(host, AddressRanges([]), [("mod.kv", {"new_block_ids": ints, "table": table}),
                                                   ("mod.queue", blocks)])
    assert found == {"hlist": ["mod.kv['new_block_ids']"], "hdict": ["mod.kv['table']"], "hdeque": ["mod.queue"]}


def test_a_list_growing_by_realloc_is_found_at_its_current_item_array():
    grown = [0] * 10
    before = container_storage_of(grown)
    grown.extend(range(100_000))
    after = container_storage_of(grown)
    assert after != before
    found = find_holders(AddressRanges([(after, 8 * len(grown), "h")]), AddressRanges([]), [("mod.ids", grown)])
    assert found == {"h": ["mod.ids"]}


def container_storage_of(obj) -> int:
    from tracer.record.holders import container_storage

    return container_storage(obj)[0]


def test_why_no_holder_names_the_cause():
    from tracer.analysis.findings import Finding
    from tracer.analysis.stacks import Frame
    from tracer.record.holders import why_no_holder

    python = Finding("host", (Frame("keep", "/src/plugin.py", 3),), 1, 1)
    native = Finding("host", (Frame("malloc", "libc.so.6", 0), Frame("_ctypes_callproc", "_ctypes.so", 0),
                              Frame("leak", "/src/plugin.py", 9)), 1, 1)
    assert why_no_holder(python, False, {}).startswith("freed before the search")
    assert why_no_holder(native, True, {"visited": 10, "exhausted": True}).startswith("native memory")
    assert "within the 500 objects" in why_no_holder(python, True, {"visited": 500, "exhausted": False})
    assert "all 900 reachable objects" in why_no_holder(python, True, {"visited": 900, "exhausted": True})


def _keep_on_gpu(store: list, megabytes: int) -> None:
    store.append(torch.empty(megabytes * 2**20, dtype=torch.uint8, device="cuda"))


@pytest.mark.gpu
def test_live_cuda_blocks_are_named_by_the_list_that_keeps_them(tmp_path, monkeypatch):
    """The GPU half of the holder search, on live blocks: snapshot, diff, the leak's blocks, the walk."""
    from tracer.analysis.snapshots import diff_snapshots
    from tracer.record.backends.torch_cuda import save_gpu_snapshot
    from tracer.record.holders import gpu_ranges, named_roots

    plugin = types.ModuleType("gpu_plant")
    plugin._kept = []
    monkeypatch.setitem(sys.modules, "gpu_plant", plugin)
    torch.cuda.memory._record_memory_history(enabled="state", context="state", stacks="python")
    try:
        scratch = torch.empty(2**20, device="cuda")  # a block live in both snapshots: not new
        save_gpu_snapshot(tmp_path / "baseline.pickle.gz")
        for _ in range(3):
            _keep_on_gpu(plugin._kept, 4)
        save_gpu_snapshot(tmp_path / "final.pickle.gz")
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    findings = diff_snapshots(tmp_path / "baseline.pickle.gz", tmp_path / "final.pickle.gz")
    (planted,) = [f for f in findings if f.owner is not None and f.owner.function == "_keep_on_gpu"]
    assert planted.bytes == 3 * 4 * 2**20 and planted.count == 3
    gpu = gpu_ranges(tmp_path / "final.pickle.gz", {planted.id})
    assert sorted(address for address, _, _ in gpu) == sorted(t.data_ptr() for t in plugin._kept)
    found = find_holders(AddressRanges([]), AddressRanges(gpu), named_roots({"scratch": scratch}))
    assert found == {planted.id: ["gpu_plant._kept[0]", "gpu_plant._kept[1]", "gpu_plant._kept[2]"]}
