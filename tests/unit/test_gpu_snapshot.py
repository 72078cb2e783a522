"""tracer.analysis.snapshots: safe loading of torch CUDA memory snapshots, live blocks, and the baseline/final diff.

Fixtures (tests/fixtures/gpu/, copied from real vLLM 0.25 runs on an H100, torch 2.11, Qwen3-VL 4B dims with dummy
weights, fresh images every round): round0 = end of warmup, round8 = after 8 measured rounds.
  qwen3vl-4b-dims_stacks-all_*  C++ + Python stacks, caches not drained: +154 MiB of encoder-cache tensors
  qwen3vl-4b-dims_drained_*     Python stacks, mm/encoder/prefix caches drained before each snapshot: no growth
  qwen3vl-tiny_*                tiny model, Python stacks, not drained
"""

from __future__ import annotations

import builtins
import copyreg
import gzip
import io
import json
import os
import pickle
import re
from pathlib import Path

import pytest

from tracer.analysis.findings import Finding
from tracer.analysis.snapshots import (
    NO_STACK,
    Block,
    SnapshotError,
    clean_stack,
    diff_series,
    diff_snapshots,
    growth_accounting,
    live_blocks,
    load_snapshot,
    per_round_series,
    summary_totals,
)
from tracer.analysis.stacks import Frame

FIX = Path(__file__).parents[1] / "fixtures" / "gpu"
MiB = 1 << 20


def fixture(name: str) -> Path:
    return FIX / f"{name}.pickle.gz"


@pytest.fixture(scope="module")
def stacks_all():
    return load_snapshot(fixture("qwen3vl-4b-dims_stacks-all_round0")), load_snapshot(
        fixture("qwen3vl-4b-dims_stacks-all_round8"))


@pytest.fixture(scope="module")
def drained():
    return load_snapshot(fixture("qwen3vl-4b-dims_drained_round0")), load_snapshot(
        fixture("qwen3vl-4b-dims_drained_round8"))


@pytest.fixture(scope="module")
def tiny():
    return load_snapshot(fixture("qwen3vl-tiny_round0")), load_snapshot(fixture("qwen3vl-tiny_round8"))


# ---------------------------------------------------------------------------------------------------------------
# Synthetic snapshots in torch's format


def fr(name: str, file: str = "/site-packages/vllm/x.py", line: int = 1) -> dict:
    return {"name": name, "filename": file, "line": line}


def seg(blocks: list[dict], *, address: int = 0, pool=(0, 0), stream: int = 0, device: int = 0) -> dict:
    total = sum(b["size"] for b in blocks)
    alloc = sum(b["size"] for b in blocks if b["state"] == "active_allocated")
    active = sum(b["size"] for b in blocks if b["state"].startswith("active"))
    return {"device": device, "address": address or (blocks[0]["address"] if blocks else 0), "total_size": total,
            "allocated_size": alloc, "active_size": active,
            "requested_size": sum(b["requested_size"] for b in blocks if b["state"].startswith("active")),
            "stream": stream, "segment_type": "large", "segment_pool_id": pool, "is_expandable": False,
            "frames": [], "blocks": blocks}


def blk(address: int, size: int, frames: list[dict], state: str = "active_allocated", requested: int | None = None):
    return {"address": address, "size": size, "requested_size": size if requested is None else requested,
            "state": state, "frames": frames}


def snap(*segments: dict) -> dict:
    return {"segments": list(segments), "device_traces": [[]], "allocator_settings": {}, "external_annotations": []}


LEAK = [fr("keep", "/site-packages/vllm/leaky.py", 10), fr("step", "/site-packages/vllm/engine.py", 5)]
OTHER = [fr("alloc_other", "/site-packages/vllm/other.py", 20), fr("step", "/site-packages/vllm/engine.py", 5)]


# ---------------------------------------------------------------------------------------------------------------
# Loading


def test_loads_torch_pickle_gzip_and_plain_by_content(tmp_path, tiny):
    raw = gzip.decompress(fixture("qwen3vl-tiny_round8").read_bytes())
    plain = tmp_path / "snap.json.gz"  # misleading extension on purpose: the content decides
    plain.write_bytes(raw)
    s = load_snapshot(plain)
    assert s["segments"] == tiny[1]["segments"]
    zipped = tmp_path / "snap.pickle"
    zipped.write_bytes(gzip.compress(raw))
    assert load_snapshot(zipped)["segments"] == tiny[1]["segments"]


def test_loads_json_plain_and_gzip(tmp_path, tiny):
    text = json.dumps({**tiny[1], "device_traces": [[]]})  # tuples (segment_pool_id) become lists
    (tmp_path / "a.pickle").write_text(text)
    (tmp_path / "b.bin").write_bytes(gzip.compress(text.encode()))
    for name in ("a.pickle", "b.bin"):
        s = load_snapshot(tmp_path / name)
        assert len(s["segments"]) == len(tiny[1]["segments"])
        blocks = live_blocks(s)
        assert blocks == live_blocks(tiny[1])
        assert blocks and all(b.pool_id == (0, 0) and not b.in_graph_pool for b in blocks)
    a = diff_snapshots(tiny[0], load_snapshot(tmp_path / "a.pickle"))
    b = diff_snapshots(tiny[0], tiny[1])
    assert [(f.id, f.bytes, f.count) for f in a] == [(f.id, f.bytes, f.count) for f in b]


def test_accepts_bare_segment_list(tmp_path, tiny):
    p = tmp_path / "segments.pickle"
    p.write_bytes(pickle.dumps(tiny[1]["segments"]))
    assert load_snapshot(p)["segments"] == tiny[1]["segments"]


def test_never_uses_pickle_load(monkeypatch, tiny):
    def boom(*a, **k):
        raise AssertionError("pickle.load/loads must not be used on snapshot files")

    for name in ("load", "loads", "_load", "_loads"):
        monkeypatch.setattr(pickle, name, boom)
    assert load_snapshot(fixture("qwen3vl-tiny_round8"))["segments"] == tiny[1]["segments"]
    source = (Path(__file__).parents[2] / "tracer" / "analysis" / "snapshots.py").read_text()
    assert not re.search(r"pickle\.loads?\(", source)


# --- malicious pickles: refused, and their side effect never happens ---


def _reducer(func, args):
    class Evil:
        def __reduce__(self):
            return func, args

    return Evil()


def _evil_payloads(marker: Path):
    touch = f"touch {marker}"
    make = f"open({str(marker)!r}, 'w').close()"
    yield "os.system", _reducer(os.system, (touch,))
    yield "eval", _reducer(eval, (f"__import__('os').system({touch!r})",))
    yield "builtins.exec", _reducer(builtins.exec, (make,))
    # hidden inside an otherwise valid snapshot
    yield "os.system", {"segments": [], "device_traces": [[{"frames": [_reducer(os.system, (touch,))]}]]}


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("compress", [False, True])
def test_malicious_pickles_are_refused_without_side_effect(tmp_path, protocol, compress):
    marker = tmp_path / "pwned-xyz"
    for i, (what, payload) in enumerate(_evil_payloads(marker)):
        data = pickle.dumps(payload, protocol=protocol)
        path = tmp_path / f"evil{i}.pickle.gz"
        path.write_bytes(gzip.compress(data) if compress else data)
        with pytest.raises(SnapshotError) as err:
            load_snapshot(path)
        msg = str(err.value)
        assert msg.startswith(f"refusing to load {path}: the pickle asks for global "), msg
        assert what.split(".")[-1] in msg and "\n" not in msg
        assert isinstance(err.value, ValueError)
        assert not marker.exists(), f"{what} payload ran"


def test_hand_written_opcodes_are_refused(tmp_path):
    marker = tmp_path / "pwned-xyz"
    cmd = f"touch {marker}".encode()
    payloads = {
        "INST": b"(S'" + cmd + b"'\nios\nsystem\n.",
        "GLOBAL+REDUCE": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        "STACK_GLOBAL": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.",
        "OBJ": b"\x80\x02(cos\nsystem\nS'" + cmd + b"'\no.",
    }
    for name, data in payloads.items():
        path = tmp_path / f"{name}.pickle"
        path.write_bytes(data)
        with pytest.raises(SnapshotError, match="refusing to load .*global os.system"):
            load_snapshot(path)
    assert not marker.exists()


def test_extension_registry_and_persistent_ids_are_refused(tmp_path):
    marker = tmp_path / "pwned-xyz"
    module = os.system.__module__  # "posix" on Linux
    copyreg.add_extension(module, "system", 0x7FF0)
    try:
        data = pickle.dumps(_reducer(os.system, (f"touch {marker}",)), protocol=2)
        assert b"\x82" in data or b"\x83" in data  # EXT1/EXT2 opcode, no module name in the pickle
        path = tmp_path / "ext.pickle"
        path.write_bytes(data)
        with pytest.raises(SnapshotError, match=f"refusing to load .*global {module}.system"):
            load_snapshot(path)
    finally:
        copyreg.remove_extension(module, "system", 0x7FF0)
    assert not marker.exists()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "secret" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"segments": ["secret"]})
    path = tmp_path / "pers.pickle"
    path.write_bytes(buf.getvalue())
    with pytest.raises(SnapshotError, match="refusing to load .*persistent id"):
        load_snapshot(path)


# --- broken and foreign files ---


def _broken_files(tmp_path: Path) -> dict[str, bytes]:
    real_gz = fixture("qwen3vl-tiny_round0").read_bytes()
    raw = gzip.decompress(real_gz)
    flipped = bytearray(real_gz)
    flipped[len(flipped) // 2] ^= 0xFF
    return {
        "truncated.gz": real_gz[: len(real_gz) // 2],
        "truncated.pickle": raw[: len(raw) // 2],
        "flipped.gz": bytes(flipped),
        "garbage.bin": os.urandom(4096),
        "text.txt": b"hello, this is not a snapshot\n",
        "empty": b"",
        "empty.gz": gzip.compress(b""),
        "list.pickle": pickle.dumps([1, 2, 3]),
        "dict.pickle": pickle.dumps({"a": 1, "b": [2]}),
        "str.pickle": pickle.dumps("segments"),
        "bad-json.json": b'{"segments": [',
        "no-segments.json": json.dumps({"device_traces": []}).encode(),
        "segments-not-list.json": json.dumps({"segments": {"a": 1}}).encode(),
        "segment-without-blocks.json": json.dumps({"segments": [{"address": 1}]}).encode(),
    }


def test_broken_and_foreign_files_raise_one_clear_line(tmp_path):
    for name, data in _broken_files(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(SnapshotError) as err:
            load_snapshot(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg and len(msg) < 400, (name, msg)
    assert "truncated" in _msg(tmp_path / "truncated.gz") or "ended" in _msg(tmp_path / "truncated.gz")
    assert "truncated" in _msg(tmp_path / "truncated.pickle")
    assert "no 'segments' list" in _msg(tmp_path / "dict.pickle")
    with pytest.raises(SnapshotError, match="cannot read .*missing"):
        load_snapshot(tmp_path / "missing.pickle")


def _msg(path: Path) -> str:
    try:
        load_snapshot(path)
    except SnapshotError as exc:
        return str(exc)
    raise AssertionError(f"{path} loaded")


def test_malformed_blocks_raise_snapshot_error():
    with pytest.raises(SnapshotError, match="malformed snapshot"):
        live_blocks({"segments": [{"blocks": [{"state": "active_allocated", "frames": []}]}]})
    with pytest.raises(SnapshotError, match="malformed snapshot"):
        live_blocks(snap(seg([blk(1, 2, ["not a dict"])])))


# ---------------------------------------------------------------------------------------------------------------
# Blocks and totals


def test_live_blocks_of_real_snapshot(stacks_all):
    final = stacks_all[1]
    blocks = live_blocks(final)
    assert len(blocks) == 832 and all(isinstance(b, Block) for b in blocks)
    totals = summary_totals(final)
    assert sum(b.size for b in blocks) == totals["allocated_bytes"] == totals["live_block_bytes"]
    assert totals["live_blocks"] == 832 and totals["segments"] == 242
    assert totals["reserved_bytes"] == 64026 * MiB and totals["active_bytes"] == totals["allocated_bytes"]
    with_frames = [b for b in blocks if b.frames]
    assert len(with_frames) == 10  # the rest were allocated before history recording started (weights, KV cache)
    for b in with_frames:
        assert all(type(f) is Frame for f in b.frames)
        assert b.frames[0].function == "torch::unwind::unwind()"  # as recorded, innermost first
        assert b.stack[0].function.startswith("at::") and not b.stack[0].function.startswith("at::_ops")
        assert b.device == 0 and b.stream == 0 and b.pool_id == (0, 0) and not b.in_graph_pool
        assert 0 < b.requested_size <= b.size
    # frames are interned: the same recorded frame is the same object everywhere
    fwd = {id(f) for b in with_frames for f in b.frames if f.function == "_wrapped_call_impl" and f.line == 1779}
    assert len(fwd) == 1


def test_graph_pool_and_states():
    s = snap(
        seg([blk(0x1000, 512, LEAK), blk(0x1200, 512, LEAK, state="inactive"),
             blk(0x1400, 1024, LEAK, state="active_pending_free")]),
        seg([blk(0x9000, 2048, OTHER, requested=2000)], pool=(1, 3), stream=7),
    )
    blocks = live_blocks(s)
    assert [(b.address, b.in_graph_pool, b.pool_id, b.stream) for b in blocks] == [
        (0x1000, False, (0, 0), 0), (0x9000, True, (1, 3), 7)]
    t = summary_totals(s)
    assert t["allocated_bytes"] == 2560 and t["active_bytes"] == 3584 and t["reserved_bytes"] == 4096
    assert t["graph_pool_reserved_bytes"] == 2048

    findings = diff_snapshots(snap(), s)
    by_owner = {f.owner.function: f for f in findings}
    assert by_owner["alloc_other"].details["in_graph_pool"] is True
    assert by_owner["alloc_other"].details["requested_bytes"] == 2000
    assert by_owner["alloc_other"].details["streams"] == [7]
    assert by_owner["keep"].details["in_graph_pool"] is False and by_owner["keep"].bytes == 512


def test_old_history_format():
    s = {"segments": [{"device": 0, "stream": 0, "total_size": 100, "allocated_size": 100, "blocks": [
        {"address": 5, "size": 100, "state": "active_allocated",
         "history": [{"addr": 5, "real_size": 90, "frames": LEAK}]}]}]}
    (b,) = live_blocks(s)
    assert b.frames[0] == Frame("keep", "/site-packages/vllm/leaky.py", 10) and b.requested_size == 100


def test_clean_stack():
    py = tuple(Frame(n, f"/x/{n}.py", 1) for n in ("a", "b"))
    assert clean_stack(py) == py
    mixed = (
        Frame("torch::unwind::unwind()", "??", 0),
        Frame("torch::CapturedTraceback::gather(bool, bool, bool)", "??", 0),
        Frame("torch::cuda::(anonymous namespace)::gather_with_cpp()", "memory_snapshot.cpp", 0),
        Frame("std::_Function_handler<...>::_M_invoke", "??", 0),
        Frame("c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator::malloc(unsigned long)", "", 0),
        Frame("at::cuda::getCUDABlasLtWorkspace()", "??", 0),
        Frame("torch::autograd::THPVariable_linear(_object*, _object*, _object*)", "python_nn_functions.cpp", 0),
        Frame("_PyObject_MakeTpCall", "??", 0),
        py[0],
        Frame("_PyEval_EvalFrameDefault", "??", 0),
        Frame("PyMethod_New", "??", 0),
        Frame("Py_RunMain", "??", 0),
        Frame("__libc_start_main", "??", 0),
        Frame("_start", "??", 0),
        py[1],
    )
    assert clean_stack(mixed) == (mixed[5], py[0], py[1])
    only_allocator = mixed[:3]
    assert clean_stack(only_allocator) == only_allocator  # never cleaned away to nothing


# ---------------------------------------------------------------------------------------------------------------
# Diffs of synthetic snapshots


def test_address_reuse_needs_identical_stack():
    base = snap(seg([blk(0x1000, 4096, LEAK), blk(0x2000, 4096, LEAK), blk(0x3000, 256, [])]))
    final = snap(seg([
        blk(0x1000, 4096, [dict(f) for f in LEAK]),  # same address, size, frames (equal content): same block
        blk(0x2000, 4096, OTHER),  # same address and size, other stack: freed and allocated anew
        blk(0x3000, 256, []),  # no frames on either side: identity is address + size
        blk(0x4000, 8192, LEAK),
    ]))
    findings = diff_snapshots(base, final)
    assert {(f.owner.function, f.bytes, f.count) for f in findings} == {("alloc_other", 4096, 1), ("keep", 8192, 1)}
    acc = growth_accounting(base, final)
    assert acc == {"new_bytes": 12288, "new_blocks": 2, "freed_bytes": 4096, "freed_blocks": 1,
                   "allocated_growth": 8192, "residual": 0}
    # a different size at the same address is a different block too
    assert diff_snapshots(base, snap(seg([blk(0x1000, 8192, LEAK)])))[0].bytes == 8192
    # the same block on another device is another block
    other_dev = snap(seg([blk(0x1000, 4096, LEAK)], device=1))
    assert [f.bytes for f in diff_snapshots(base, other_dev)] == [4096]


def test_blocks_without_frames_get_a_placeholder_stack():
    (f,) = diff_snapshots(snap(), snap(seg([blk(0x10, 64, []), blk(0x50, 64, [])])))
    assert f.stack == NO_STACK and f.count == 2 and f.details["stack_recorded"] is False


def test_groups_merge_by_fingerprint_with_details():
    moved = [fr("keep", "/site-packages/vllm/leaky.py", 99), LEAK[1]]  # the same code, another line
    final = snap(seg([blk(0x1000, 1000, LEAK, requested=900), blk(0x2000, 3000, moved, requested=2900),
                      blk(0x3000, 500, OTHER)], stream=3))
    findings = diff_snapshots(snap(), final)
    assert [(f.owner.function, f.bytes, f.count) for f in findings] == [("keep", 4000, 2), ("alloc_other", 500, 1)]
    keep = findings[0]
    assert keep.domain == "gpu" and keep.per_round_bytes == []
    assert keep.stack[0].line == 99  # merge_by_id keeps the larger group's stack
    assert keep.details == {"in_graph_pool": False, "graph_pool_bytes": 0, "requested_bytes": 3800,
                            "streams": [3], "devices": [0], "stacks": 2, "stack_recorded": True}


def test_diff_series_per_round(tmp_path):
    base = snap(seg([blk(0x100, 10, OTHER)]))
    rounds = [
        snap(seg([blk(0x100, 10, OTHER), blk(0x1000, 100, LEAK), blk(0x5000, 7, OTHER)])),
        snap(seg([blk(0x100, 10, OTHER), blk(0x1000, 100, LEAK), blk(0x2000, 100, LEAK)])),
        snap(seg([blk(0x1000, 100, LEAK), blk(0x2000, 100, LEAK), blk(0x3000, 100, LEAK)])),
    ]
    series = per_round_series(base, rounds)
    findings = diff_series(base, rounds)
    (leak,) = findings
    assert leak.per_round_bytes == [100, 200, 300] and leak.bytes == 300 and leak.count == 3
    transient = Finding("gpu", tuple(Frame.from_dict(f) for f in OTHER), 0, 0).id
    assert series == {leak.id: [100, 200, 300], transient: [7, 0, 0]}
    # paths work too, loaded one at a time
    paths = []
    for i, s in enumerate([base, *rounds]):
        p = tmp_path / f"r{i}.pickle.gz"
        p.write_bytes(gzip.compress(pickle.dumps(s, protocol=4)))
        paths.append(p)
    again = diff_series(paths[0], paths[1:])
    assert [(f.id, f.bytes, f.per_round_bytes) for f in again] == [(leak.id, 300, [100, 200, 300])]
    with pytest.raises(ValueError):
        diff_series(base, [])
    broken = tmp_path / "broken.pickle.gz"
    broken.write_bytes(paths[2].read_bytes()[:100])
    with pytest.raises(SnapshotError, match=f"cannot load {re.escape(str(broken))}"):
        diff_series(paths[0], [paths[1], broken, paths[3]])
    with pytest.raises(SnapshotError, match="refusing to load"):
        evil = tmp_path / "evil.pickle"
        evil.write_bytes(pickle.dumps(_reducer(os.system, ("true",))))
        diff_snapshots(paths[0], evil)


# ---------------------------------------------------------------------------------------------------------------
# The real fixtures (vLLM 0.25 on an H100)


def _owner_is_vision_encoder(f: Finding) -> bool:
    owner = f.owner
    names = [fr.function for fr in f.stack]
    return (owner.function == "forward" and owner.file.endswith("vllm/model_executor/models/qwen3_vl.py")
            and names.index("_process_image_input") < names.index("embed_multimodal")
            < names.index("execute_mm_encoder") < names.index("execute_model"))


def test_stacks_all_pair_growth_is_the_vision_encoder_output(stacks_all):
    base, final = stacks_all
    findings = diff_snapshots(base, final)
    growth = summary_totals(final)["allocated_bytes"] - summary_totals(base)["allocated_bytes"]
    assert growth == 161_439_744  # 153.96 MiB over 8 rounds: ~19 MiB per round
    assert sum(f.bytes for f in findings) == growth
    (top,) = findings  # one group: every new block was allocated by the same torch.cat
    assert top.count == 8 and top.bytes == growth
    assert _owner_is_vision_encoder(top) and top.owner.line == 838
    assert top.details["in_graph_pool"] is False and top.details["streams"] == [0]
    assert top.details["requested_bytes"] == 161_423_360
    # the C++ allocator and interpreter frames are gone; ATen frames stay, before the owner
    names = [fr.function for fr in top.stack]
    assert not any(re.match(r"torch::unwind|torch::CapturedTraceback|_PyEval|PyObject_|__libc|_start$", n)
                   for n in names)
    assert names.index("at::_ops::cat::call(c10::IListRef<at::Tensor> const&, long)") < names.index("forward")


def test_python_and_mixed_stacks_give_the_same_finding_id(stacks_all, tiny):
    (mixed,) = diff_snapshots(*stacks_all)
    (python,) = diff_snapshots(*tiny)
    assert python.stack[0] == mixed.owner and mixed.id == python.id
    python_frames = [f for f in mixed.stack if f.file.endswith(".py")]
    assert tuple(python_frames) == python.stack


def test_tiny_pair(tiny):
    (f,) = diff_snapshots(*tiny)
    assert f.count == 8 and f.bytes == 3_930_624 and _owner_is_vision_encoder(f)
    acc = growth_accounting(*tiny)
    assert acc["residual"] == 0 and acc["freed_bytes"] == 0 and acc["new_bytes"] == acc["allocated_growth"]


def test_drained_pair_has_nothing_new(drained):
    base, final = drained
    assert diff_snapshots(base, final) == []
    t0, t1 = summary_totals(base), summary_totals(final)
    assert t0["allocated_bytes"] == t1["allocated_bytes"]  # 63595.43 MiB both
    assert t1["reserved_bytes"] - t0["reserved_bytes"] == 166 * MiB  # the allocator keeps segments it grew
    assert growth_accounting(base, final) == {"new_bytes": 0, "new_blocks": 0, "freed_bytes": 0,
                                              "freed_blocks": 0, "allocated_growth": 0, "residual": 0}


@pytest.mark.parametrize("pair", ["stacks_all", "drained", "tiny"])
def test_findings_explain_allocated_growth(pair, request):
    """sum(findings.bytes) - bytes of baseline blocks gone at the end == allocated(final) - allocated(baseline)."""
    base, final = request.getfixturevalue(pair)
    findings = diff_snapshots(base, final)
    acc = growth_accounting(base, final)
    assert sum(f.bytes for f in findings) == acc["new_bytes"]
    assert sum(f.count for f in findings) == acc["new_blocks"]
    assert acc["new_bytes"] - acc["freed_bytes"] == acc["allocated_growth"] and acc["residual"] == 0
    for s in (base, final):
        t = summary_totals(s)
        assert t["allocated_bytes"] == t["live_block_bytes"]


def test_diff_series_on_fixture_pair(stacks_all):
    (f,) = diff_series(stacks_all[0], [stacks_all[1]])
    assert f.per_round_bytes == [f.bytes] == [161_439_744]
