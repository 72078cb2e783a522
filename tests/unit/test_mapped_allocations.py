"""Grown mappings matched to the allocations live in them (pure logic on handmade ranges, blocks and stacks): bytes
they explain, the growth left over before and after the trim, the largest stacks with their component."""

from tracer.analysis.components import _rule
from tracer.analysis.mapped_allocations import (GrownRange, LiveBlock, _unmap, blocks_in, is_tracer_own,
                                                match_ranges)
from tracer.analysis.rss import Mapping, Owner, Table, grown_ranges, worth_matching
from tracer.analysis.verdicts import Thresholds
from tracer.analysis.stacks import Frame
from tracer.own_frames import OBSERVER_FUNCTION, WORKLOAD_FUNCTION
from tracer.record.smaps import ANON, FILE, HEAP

MiB = 2**20
HEAP_START, ANON_START = 0x10000000, 0x7F0000000000
DRIVER = Frame("round", "/src/tracer/record/driver.py", 106)
HANDOVER = Frame(WORKLOAD_FUNCTION, "/src/tracer/own_frames.py", 37)
PLANT = (Frame("chat_keeping_bytes", "/src/tests/plants/kept_bytes.py", 20), HANDOVER, DRIVER)
CACHE = (Frame("put", "/venv/site-packages/vllm/multimodal/cache.py", 300), HANDOVER, DRIVER)


def test_blocks_in_a_range_count_only_their_bytes_inside_it():
    blocks = [LiveBlock(0x900, 0x200, "a"), LiveBlock(0x1000, 0x100, "b"), LiveBlock(0x1F00, 0x200, "c"),
              LiveBlock(0x3000, 0x10, "d")]
    inside = blocks_in(blocks, [b.address for b in blocks], 0xA00, 0x2000)
    assert [(b.stack, n) for b, n in inside] == [("a", 0x100), ("b", 0x100), ("c", 0x100)]
    assert blocks_in(blocks, [b.address for b in blocks], 0x2100, 0x3000) == []


def test_heap_growth_is_split_into_live_allocations_and_the_rest_with_the_largest_stacks_first():
    heap = GrownRange(HEAP_START, HEAP_START + 64 * MiB, HEAP, "[heap]", grew=20 * MiB, after_trim=6 * MiB)
    blocks = [LiveBlock(HEAP_START + k * MiB, MiB, "plant") for k in range(4)]
    blocks += [LiveBlock(HEAP_START + 10 * MiB + k * 4096, 4096, "cache") for k in range(3)]
    rules = (_rule("my cache", r"vllm/multimodal/cache", r"^put$"),)
    (m,) = match_ranges([heap], blocks, {"plant": PLANT, "cache": CACHE}, rules)
    assert m["allocated_bytes"] == 4 * MiB + 3 * 4096 and m["allocations"] == 7
    assert m["unexplained_before_trim"] == 20 * MiB - m["allocated_bytes"]
    assert m["unexplained"] == 6 * MiB - m["allocated_bytes"]
    top, second = m["stacks"]
    assert (top["bytes"], top["count"], top["component"]) == (4 * MiB, 4, "user or plugin code")
    assert top["owner"].startswith("chat_keeping_bytes (") and second["component"] == "my cache"
    assert top["id"].startswith("h") and top["frames"][0] == top["owner"]


def test_a_raw_mapping_with_nothing_traced_in_it_stays_unexplained_and_first_touch_explains_its_buffer():
    raw = GrownRange(ANON_START, ANON_START + 8 * MiB, ANON, "", grew=8 * MiB, after_trim=8 * MiB)
    touched = GrownRange(ANON_START + 64 * MiB, ANON_START + 320 * MiB, ANON, "", grew=48 * MiB,
                         after_trim=48 * MiB, first_touch=48 * MiB)
    elsewhere = [LiveBlock(HEAP_START, MiB, "plant")]
    m_raw, m_touched = match_ranges([raw, touched], elsewhere, {"plant": PLANT})
    assert (m_raw["allocations"], m_raw["stacks"], m_raw["unexplained"]) == (0, [], 8 * MiB)
    assert m_touched["unexplained"] == 0 and m_touched["first_touch"] == 48 * MiB


def test_live_allocations_beyond_the_growth_leave_nothing_unexplained():
    small = GrownRange(HEAP_START, HEAP_START + MiB, HEAP, "[heap]", grew=64 * 1024, after_trim=0)
    (m,) = match_ranges([small], [LiveBlock(HEAP_START, 512 * 1024, "plant")], {"plant": PLANT})
    assert m["unexplained_before_trim"] == 0 and m["unexplained"] == 0 and m["allocated_bytes"] == 512 * 1024


def test_partial_munmap_keeps_the_pieces_of_a_mapped_range_with_their_mmap():
    maps = {0x1000: (0x4000, "a"), 0x10000: (0x1000, "b")}
    _unmap(maps, 0x2000, 0x1000)
    assert maps == {0x1000: (0x1000, "a"), 0x3000: (0x2000, "a"), 0x10000: (0x1000, "b")}
    _unmap(maps, 0x0, 0x4000)
    assert maps == {0x4000: (0x1000, "a"), 0x10000: (0x1000, "b")}
    _unmap(maps, 0x10000, 0x1000)
    assert maps == {0x4000: (0x1000, "a")}


def test_tracer_own_stacks_are_told_from_the_workload_s():
    smaps_read = Frame("read", "/src/tracer/record/smaps.py", 90)
    observed = (smaps_read, Frame(OBSERVER_FUNCTION, "/src/tracer/own_frames.py", 32))
    at_the_final_mark = (smaps_read, Frame("mark", "/src/tracer/record/driver.py", 118))
    native_thread = (Frame("recv", "/venv/site-packages/zmq/sugar/socket.py", 700),)
    assert is_tracer_own(observed) and is_tracer_own(at_the_final_mark)
    assert not is_tracer_own(PLANT) and not is_tracer_own(native_thread) and not is_tracer_own(())


def table(mark, *maps):
    return Table(mark, None, {m.start: m for m in maps})


def test_grown_ranges_take_the_heap_before_the_trim_and_leave_out_bounded_mappings():
    base = table("baseline", Mapping(HEAP_START, HEAP_START + 100 * MiB, HEAP, "[heap]", 50 * MiB),
                 Mapping(0x7E0000000000, 0x7E0000100000, FILE, "/lib/x.so", 0))
    before_trim = table("before_trim", Mapping(HEAP_START, HEAP_START + 100 * MiB, HEAP, "[heap]", 70 * MiB),
                        Mapping(0x7E0000000000, 0x7E0000100000, FILE, "/lib/x.so", MiB),
                        Mapping(ANON_START, ANON_START + 8 * MiB, ANON, "", 8 * MiB))
    drained = table("drained", Mapping(HEAP_START, HEAP_START + 90 * MiB, HEAP, "[heap]", 45 * MiB),
                    Mapping(0x7E0000000000, 0x7E0000100000, FILE, "/lib/x.so", MiB),
                    Mapping(ANON_START, ANON_START + 8 * MiB, ANON, "", 8 * MiB),
                    Mapping(ANON_START + 64 * MiB, ANON_START + 80 * MiB, ANON, "", 16 * MiB))
    staging = Owner("plugin.staging", "ndarray", ANON_START + 64 * MiB, 16 * MiB, before_baseline=True)
    ranges = grown_ranges(base, drained, before_trim, [staging])
    assert [(r.kind, r.grew, r.after_trim, r.first_touch) for r in ranges] == [
        (HEAP, 20 * MiB, 0, 0), (ANON, 16 * MiB, 16 * MiB, 16 * MiB), (ANON, 8 * MiB, 8 * MiB, 0)]


def test_allocations_are_matched_only_when_growth_stays_past_the_trim_beyond_first_touch():
    th = Thresholds()
    returned = GrownRange(HEAP_START, HEAP_START + 64 * MiB, HEAP, "[heap]", grew=40 * MiB, after_trim=0)
    touched = GrownRange(ANON_START, ANON_START + 64 * MiB, ANON, "", grew=32 * MiB, after_trim=32 * MiB,
                         first_touch=32 * MiB)
    kept = GrownRange(ANON_START + 64 * MiB, ANON_START + 72 * MiB, ANON, "", grew=th.min_total,
                      after_trim=th.min_total)
    assert not worth_matching([returned, touched], th)
    assert worth_matching([returned, touched, kept], th)
