"""Snapshot files a stranger may hand over, read with the exact one-line message each refusal gives, and the
allocator totals of segments that leave fields out (handmade snapshots in torch's format)."""

from __future__ import annotations

import gzip
import io
import json
import pickle

import pytest

from tracer.analysis.snapshots import (MAX_BLOCKS_ENV, MAX_FRAMES, SnapshotError, _one_line, clean_stack,
                                       diff_series, diff_snapshots, growth_accounting, live_blocks, load_snapshot,
                                       summary_totals)
from tracer.analysis.stacks import Frame


def block(address: int = 4096, size: int = 512, state: str = "active_allocated", **fields) -> dict:
    return {"address": address, "size": size, "requested_size": size, "state": state, "frames": [], **fields}


def segment(*blocks: dict, **fields) -> dict:
    total = sum(b["size"] for b in blocks if isinstance(b, dict))
    return {"device": 0, "stream": 0, "total_size": total, "blocks": list(blocks), **fields}


def refusal(tmp_path, content, name: str = "snap.json") -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    return str(err.value).replace(str(path), "FILE")


@pytest.mark.parametrize("content, expected", [
    (b"", "cannot load FILE: no data (empty file)"),
    (b" \n\t ", "cannot load FILE: no data (empty file)"),
    (gzip.compress(b"  "), "cannot load FILE: no data (empty file)"),
    (b'{"segments": [', "cannot load FILE: not valid JSON (Expecting value: line 1 column 15 (char 14))"),
    (b"  [1, ", "cannot load FILE: not valid JSON (Expecting value: line 1 column 7 (char 6))"),
    (pickle.dumps(3), "cannot load FILE: not a torch memory snapshot (top level is a int, expected a dict with a "
                      "'segments' list)"),
    ([], "cannot load FILE: not a torch memory snapshot (top level is a list, expected a dict with a 'segments' list)"),
    ([{"blocks": []}, {"address": 1}],
     "cannot load FILE: not a torch memory snapshot (top level is a list, expected a dict with a 'segments' list)"),
    ({"h": 1, "g": 2, "f": 3, "e": 4, "d": 5, "c": 6, "b": 7, "a": 8},
     "cannot load FILE: not a torch memory snapshot (no 'segments' list; keys: a, b, c, d, e, f)"),
    ({"segments": {"blocks": []}}, "cannot load FILE: not a torch memory snapshot (no 'segments' list; keys: segments)"),
    ({"segments": [segment(), ["blocks"]]}, "cannot load FILE: segment 1 is not a dict with a 'blocks' list"),
    ({"segments": [{"blocks": {}}]}, "cannot load FILE: segment 0 is not a dict with a 'blocks' list"),
])
def test_foreign_files_are_refused_in_one_line(tmp_path, content, expected):
    assert refusal(tmp_path, content) == expected


def test_non_text_keys_are_left_out_of_the_keys_shown(tmp_path):
    path = tmp_path / "snap.pickle"
    path.write_bytes(pickle.dumps({1: "x", "device_traces": []}))
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    assert str(err.value) == f"cannot load {path}: not a torch memory snapshot (no 'segments' list; keys: device_traces)"


def test_a_bare_list_of_segments_is_a_snapshot(tmp_path):
    path = tmp_path / "segments.json"
    path.write_text(json.dumps([segment(block())]))
    assert load_snapshot(path) == {"segments": [segment(block())]}


def test_pickles_that_ask_for_code_or_persistent_ids_are_named(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    assert str(err.value) == (f"refusing to load {path}: the pickle asks for global os.system; snapshot files hold only "
                              "plain data")

    class Persistent(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "secret" else None

    buf = io.BytesIO()
    Persistent(buf, protocol=2).dump({"segments": ["secret"]})
    path.write_bytes(buf.getvalue())
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    assert str(err.value) == (f"refusing to load {path}: the pickle uses a persistent id; snapshot files hold only "
                              "plain data")


def test_truncated_and_corrupt_pickles_say_which(tmp_path):
    data = pickle.dumps({"segments": [segment(block())]}, protocol=4)
    truncated = refusal(tmp_path, data[: len(data) // 2], "half.pickle")
    assert truncated.startswith("cannot load FILE: not a snapshot pickle or JSON, or truncated (")
    corrupt = refusal(tmp_path, b"\x80\x04\xff\xff\xff", "bad.pickle")
    assert corrupt.startswith("cannot load FILE: not a snapshot pickle or JSON, or corrupt (")


def test_block_limit_is_named_with_its_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_BLOCKS_ENV, "2")
    ok = {"segments": [segment(block(), block(8192))]}
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(ok))
    assert load_snapshot(path) == ok
    assert refusal(tmp_path, {"segments": [segment(block()), segment(block(), block(8192))]}) == (
        "cannot load FILE: more than 2 blocks (lists shared by reference count once per use); refused "
        f"(set {MAX_BLOCKS_ENV} to allow more)")


BAD_SEGMENT = "cannot load FILE: segment 0 has a bad {} (an integer in range is expected)"
BAD_BLOCK = ("cannot load FILE: block {} of segment 0 is not a block (state text, size, address and requested_size "
             "integers from 0 to 2**63)")


@pytest.mark.parametrize("seg, expected", [
    (segment(total_size=-1), BAD_SEGMENT.format("total_size")),
    (segment(allocated_size=2**63), BAD_SEGMENT.format("allocated_size")),
    (segment(active_size=True), BAD_SEGMENT.format("active_size")),
    (segment(requested_size=1.0), BAD_SEGMENT.format("requested_size")),
    (segment(device=2**63), BAD_SEGMENT.format("device")),
    (segment(device=-(2**63)), BAD_SEGMENT.format("device")),
    (segment(stream="0"), BAD_SEGMENT.format("stream")),
    (segment(segment_pool_id=[0] * 9), BAD_SEGMENT.format("segment_pool_id")),
    (segment(segment_pool_id=[0, "1"]), BAD_SEGMENT.format("segment_pool_id")),
    (segment(segment_pool_id="(0, 0)"), BAD_SEGMENT.format("segment_pool_id")),
    (segment(segment_pool_id=2**63), BAD_SEGMENT.format("segment_pool_id")),
    (segment(block(), ["x"]), BAD_BLOCK.format(1)),
    (segment(block(state=1)), BAD_BLOCK.format(0)),
    (segment(block(size=-1), total_size=0), BAD_BLOCK.format(0)),
    (segment(block(address=2**63)), BAD_BLOCK.format(0)),
    (segment(block(requested_size=None)), BAD_BLOCK.format(0)),
    (segment(block(frames={"name": "f"})), "cannot load FILE: block 0 of segment 0 has a bad frames list (a list of "
                                           f"at most {MAX_FRAMES} frames is expected)"),
    (segment(block(frames=[{}] * (MAX_FRAMES + 1))), "cannot load FILE: block 0 of segment 0 has a bad frames list "
                                                     f"(a list of at most {MAX_FRAMES} frames is expected)"),
])
def test_bad_segments_and_blocks_are_named(tmp_path, seg, expected):
    assert refusal(tmp_path, {"segments": [seg]}) == expected


@pytest.mark.parametrize("seg", [
    segment(block(frames=[{"name": "f", "filename": "a.py", "line": 1}] * MAX_FRAMES), device=-(2**63) + 1,
            stream=2**63 - 1, segment_pool_id=[1] * 8, allocated_size=2**63 - 1),
    segment(block(address=2**63 - 1, frames=None), segment_pool_id=(2**63) - 1, device=None, stream=None),
    segment(block(requested_size=0), segment_pool_id=None),
    {"blocks": [{"state": "active_allocated", "size": 1}]},  # address and requested_size may be left out
])
def test_fields_at_the_edge_of_their_range_load(tmp_path, seg):
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"segments": [seg]}))
    assert load_snapshot(path)["segments"] == [seg]


def test_totals_fill_in_what_a_segment_leaves_out():
    bare = {"segments": [{"blocks": [block(0, 100), block(100, 50, "active_pending_free"), block(150, 30, "inactive"),
                                     {"address": 180, "size": 20}]}]}
    assert summary_totals(bare) == {
        "allocated_bytes": 100, "reserved_bytes": 200, "active_bytes": 150, "requested_bytes": 0,
        "live_block_bytes": 100, "live_blocks": 1, "graph_pool_reserved_bytes": 0, "segments": 1}
    given = {"segments": [segment(block(0, 100), allocated_size=90, active_size=95, requested_size=80,
                                  total_size=400, segment_pool_id=[2, 1]),
                          segment(block(0, 10), segment_pool_id=7)]}
    assert summary_totals(given) == {
        "allocated_bytes": 100, "reserved_bytes": 410, "active_bytes": 105, "requested_bytes": 80,
        "live_block_bytes": 110, "live_blocks": 2, "graph_pool_reserved_bytes": 410, "segments": 2}


def test_growth_accounting_counts_new_and_freed_blocks():
    base = {"segments": [segment(block(0, 100), block(100, 40))]}
    final = {"segments": [segment(block(0, 100), block(200, 70), block(300, 5))]}
    assert growth_accounting(base, final) == {"new_bytes": 75, "new_blocks": 2, "freed_bytes": 40, "freed_blocks": 1,
                                              "allocated_growth": 35, "residual": 0}
    inconsistent = {"segments": [segment(block(0, 100), allocated_size=0)]}
    assert growth_accounting(inconsistent, final)["residual"] == 75 - 0 - 175


def test_malformed_blocks_and_frames_in_a_dict_are_named():
    cases = [
        ({"segments": [{"blocks": [{"state": "active_allocated", "frames": []}]}]},
         "malformed snapshot: a block in segment 0 is not a block (no 'size')"),
        ({"segments": [segment(), {"blocks": [{"state": "active_allocated", "size": 1, "frames": []}]}]},
         "malformed snapshot: a block in segment 1 is not a block (no 'address')"),
        ({"segments": [segment(block(frames=[3]))]}, "malformed snapshot: a frame is a int, expected a dict"),
        ({"segments": [segment(block(frames=[{"name": 1}]))]},
         "malformed snapshot: a frame's name or filename is not text"),
        ({"segments": [segment(block(frames=[{"filename": b"a.py"}]))]},
         "malformed snapshot: a frame's name or filename is not text"),
        ({"segments": [segment(block(frames="abc"))]}, "malformed snapshot: block frames are a str, expected a list"),
    ]
    for snapshot, expected in cases:
        with pytest.raises(SnapshotError) as err:
            live_blocks(snapshot)
        assert str(err.value) == expected


def test_frames_without_names_or_lines_in_range():
    snapshot = {"segments": [segment(block(frames=[{"name": None, "filename": None, "line": 2**63},
                                                   {"name": "f", "filename": "a.py", "line": -(2**63) + 1},
                                                   {"name": "g", "filename": "b.py", "line": "7"}]))]}
    (b,) = live_blocks(snapshot)
    assert [(f.function, f.file, f.line) for f in b.frames] == [("?", "?", 0), ("f", "a.py", -(2**63) + 1),
                                                                 ("g", "b.py", 0)]


def test_a_long_global_name_is_cut_at_120_characters(tmp_path):
    path = tmp_path / "evil.pickle"
    module = "m" * 150
    path.write_bytes(b"c" + module.encode() + b"\nf\n.")
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    assert str(err.value) == (f"refusing to load {path}: the pickle asks for global {module[:120]}; snapshot files "
                              "hold only plain data")


@pytest.mark.parametrize("exc, text", [
    (ValueError("line one\n  line\ttwo "), "line one line two"),
    (EOFError(), "EOFError"),
    (ValueError("x" * 200), "x" * 200),
    (ValueError("x" * 201), "x" * 197 + "..."),
])
def test_error_text_is_one_line_of_at_most_200_characters(exc, text):
    assert _one_line(exc) == text


def test_a_pickle_that_fails_another_way_names_the_exception(tmp_path):
    # EMPTY_TUPLE, then APPENDS onto it: the unpickler raises AttributeError
    assert refusal(tmp_path, b")K\x01a.", "odd.pickle") == (
        "cannot load FILE: not a snapshot pickle or JSON (AttributeError: 'tuple' object has no attribute 'append')")


def test_lines_at_the_edge_of_their_range():
    snapshot = {"segments": [segment(block(frames=[{"name": "f", "filename": "a.py", "line": -(2**63)}]))]}
    assert live_blocks(snapshot)[0].frames[0].line == 0


def test_python_frames_are_told_from_native_ones_by_file():
    stack = (Frame("torch::unwind::unwind()", "??", 0),  # the unwinder: cut
             Frame("PyObject_Call", "<frozen runpy>", 0),  # a "<...>" file without a line is native: noise, dropped
             Frame("builtin_exec", "<string>", 1),  # a "<...>" file with a line is Python: kept
             Frame("PyEval_helper", "/app/a.py", 3),  # a .py file is Python whatever its name
             Frame("_PyEval_EvalFrameDefault", "??", 0),  # interpreter noise
             Frame("main", "/app/main.py", 9),
             Frame("c10::cuda::MemPool::alloc", "??", 0))  # allocator-like, but past the first Python frame: kept
    assert clean_stack(stack) == (stack[2], stack[3], stack[5], stack[6])
    native_first = (Frame("at::empty", "??", 0), Frame("main", "/app/main.py", 9))
    assert clean_stack(native_first) == native_first  # nothing to cut


def test_a_shared_middle_of_two_stacks_does_not_make_them_one():
    m1, m2 = {"name": "forward", "filename": "/app/m.py", "line": 5}, {"name": "run", "filename": "/app/r.py", "line": 6}
    a = [{"name": "keep_a", "filename": "/app/a.py", "line": 1}, m1, m2, {"name": "main", "filename": "/app/x.py", "line": 2}]
    b = [{"name": "keep_b", "filename": "/app/b.py", "line": 1}, m1, m2, {"name": "main", "filename": "/app/x.py", "line": 3}]
    blocks = live_blocks({"segments": [segment(block(0, frames=a), block(512, frames=b))]})
    assert [blk.frames[0].function for blk in blocks] == ["keep_a", "keep_b"]


def test_missing_device_and_stream_are_zero():
    (blk,) = live_blocks({"segments": [{"blocks": [block()]}]})
    assert (blk.device, blk.stream, blk.pool_id, blk.in_graph_pool) == (0, 0, (0, 0), False)


def test_a_block_that_is_not_a_dict_is_named():
    with pytest.raises(SnapshotError) as err:
        live_blocks({"segments": [{"blocks": [["active_allocated", 512]]}]})
    assert str(err.value) == ("malformed snapshot: a block in segment 0 is not a block (TypeError: list indices must "
                              "be integers or slices, not str)")


def frames_at(line: int, noise: bool = False) -> list[dict]:
    extra = [{"name": "_PyEval_EvalFrameDefault", "filename": "??", "line": 0}] if noise else []
    return [{"name": "keep", "filename": "/site-packages/vllm/leaky.py", "line": line}, *extra,
            {"name": "step", "filename": "/site-packages/vllm/engine.py", "line": 5}]


def test_merged_groups_add_up_their_pools_streams_and_devices():
    final = {"segments": [
        segment(block(0, 100, frames=frames_at(10)), block(100, 1, frames=frames_at(10)), segment_pool_id=[1, 2],
                stream=3),
        segment(block(0, 50, frames=frames_at(11)), segment_pool_id=[1, 2], stream=4, device=1),
        segment(block(0, 7, frames=frames_at(10, noise=True)), stream=3),
    ]}
    (f,) = diff_snapshots({"segments": []}, final)
    assert f.bytes == 158 and f.count == 4
    assert f.details == {"in_graph_pool": True, "graph_pool_bytes": 151, "requested_bytes": 158, "streams": [3, 4],
                         "devices": [0, 1], "stacks": 2, "stack_recorded": True}
    (tiny,) = diff_snapshots({"segments": []}, {"segments": [segment(block(0, 1, frames=frames_at(1)),
                                                                     segment_pool_id=[1, 2])]})
    assert tiny.details["in_graph_pool"] is True and tiny.details["graph_pool_bytes"] == 1


def test_series_need_a_snapshot_after_the_baseline():
    with pytest.raises(ValueError) as err:
        diff_series({"segments": []}, [])
    assert str(err.value) == "need at least one snapshot after the baseline"


def test_dicts_and_paths_mix(tmp_path):
    rounds = []
    for k in range(1, 3):
        path = tmp_path / f"round{k}.json"
        path.write_text(json.dumps({"segments": [segment(*(block(512 * i, frames=frames_at(10)) for i in range(k)))]}))
        rounds.append(path)
    (f,) = diff_series({"segments": []}, [*rounds, {"segments": [segment(block(0, frames=frames_at(10)))]}])
    assert f.per_round_bytes == [512, 1024, 512]
    assert summary_totals(rounds[1])["live_block_bytes"] == 1024 and len(live_blocks(rounds[0])) == 1


def test_a_directory_or_a_missing_file_is_named(tmp_path):
    with pytest.raises(SnapshotError) as err:
        load_snapshot(tmp_path)
    assert str(err.value) == f"{tmp_path}: snapshot is not a regular file; refused"
    with pytest.raises(SnapshotError) as err:
        load_snapshot(tmp_path / "missing.pickle")
    assert str(err.value) == f"cannot read {tmp_path / 'missing.pickle'}: No such file or directory"


def test_a_truncated_pickle_says_how(tmp_path):
    data = pickle.dumps({"segments": []}, protocol=4)
    assert refusal(tmp_path, data[: len(data) // 2], "half.pickle") == (
        "cannot load FILE: not a snapshot pickle or JSON, or truncated (pickle data was truncated)")


def test_keys_shown_are_cut_at_40_characters(tmp_path):
    assert refusal(tmp_path, {"k" * 50: 1}) == (
        f"cannot load FILE: not a torch memory snapshot (no 'segments' list; keys: {'k' * 40})")
