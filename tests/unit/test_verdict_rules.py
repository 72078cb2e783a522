"""Each verdict rule at its boundary, with the reason a reader sees (handmade series, default thresholds:
64 KiB/round and 256 KiB kept)."""

from __future__ import annotations

import pytest

from tracer.analysis.components import NATIVE_KERNELS
from tracer.analysis.findings import Finding
from tracer.analysis.stacks import Frame
from tracer.analysis.verdicts import (CACHE, CYCLE, LEAK, SUSPECTED, TRANSIENT, Thresholds, apply_verdicts, classify,
                                      grows, undecided)

KiB, MiB = 1024, 1024 * 1024
TH = Thresholds()
STACK = (Frame("keep", "/src/plugin.py", 3),)


def group(series: list[int], kept: int, undrained: int | None = None, component: str = "user or plugin code",
          **details) -> Finding:
    """Live bytes at the end of each round, bytes `kept` after the final drain, `undrained` before it."""
    return Finding("host", STACK, kept, 1, series, component=component,
                   details={"undrained_bytes": series[-1] if undrained is None else undrained, **details})


def steps(n: int, step: int = MiB) -> list[int]:
    return [step * (k + 1) for k in range(n)]


def test_defaults():
    assert (TH.min_per_round, TH.min_total) == (64 * KiB, 256 * KiB)


def test_cycle_needs_more_than_two_rounds_worth_freed_by_the_collector():
    at_limit = group(steps(8), 0, released_by={"gc": 2 * MiB})  # slope 1 MiB: two rounds' worth
    assert classify(at_limit, TH, True) == (CYCLE, (
        f"grew 1024.0 KiB/round, and {2 * MiB} of its {8 * MiB} bytes outlived every cache reset: only the garbage "
        "collector freed them (at least two rounds' worth), so objects in reference cycles keep it until a full "
        "collection"))
    assert at_limit.details["trend"] == {"slope_bytes_per_round": float(MiB), "p_rising": 0.0004, "rounds": 8}
    assert classify(group(steps(8), 0, released_by={"gc": 2 * MiB - 1}), TH, True)[0] == CACHE
    small = group(steps(8, 16 * KiB), 0, released_by={"gc": 256 * KiB})  # slope small: the size floor decides
    assert classify(small, TH, True)[0] != CYCLE
    assert classify(group(steps(8), 0, released_by={"gc": 8 * MiB}), TH, False)[0] != CYCLE  # no drain, no cycle


def test_released_by_the_drain_up_to_a_tenth_left():
    assert classify(group(steps(10), MiB), TH, True) == (CACHE, f"released by the drain: {10 * MiB} bytes filled, "
                                                                 f"{MiB} left")
    assert classify(group(steps(10), MiB + 1), TH, True)[0] != CACHE or "left (about" in classify(
        group(steps(10), MiB + 1), TH, True)[1]
    assert classify(group([0, 0, 0, 0], 0), TH, True) == (TRANSIENT, "does not grow steadily across rounds")
    assert classify(group(steps(4, 64 * KiB - 1), 0), TH, True) == (TRANSIENT, "small, released by the drain")
    assert classify(group(steps(4, 64 * KiB), 0), TH, True)[0] == CACHE  # 256 KiB filled: big enough
    assert classify(group(steps(8), 8 * MiB, undrained=8 * MiB), TH, False)[0] == LEAK  # no drain: not released


def test_known_native_caches_are_bounded():
    v, reason = classify(group(steps(8), 8 * MiB, component=NATIVE_KERNELS), TH, True)
    assert v == CACHE and reason.startswith("JIT kernels cached per input shape")


def test_one_round_judges_by_size():
    assert classify(group([MiB], 256 * KiB, undrained=MiB), TH, True) == (
        LEAK, "survives (too few rounds to see growth)")
    assert classify(group([MiB], 256 * KiB - 1, undrained=MiB), TH, True) == (
        TRANSIENT, "small, too few rounds to see growth")


def test_bounded_grew_in_the_first_half_then_stopped():
    bounded = "grew, then stopped growing for the second half of the rounds (bounded)"
    assert classify(group([MiB, 2 * MiB, 2 * MiB, 2 * MiB], 2 * MiB), TH, True) == (CACHE, bounded)
    assert classify(group([MiB, 2 * MiB, 3 * MiB], 3 * MiB), TH, True)[0] == LEAK  # half of 3 is 1: too short
    # early half slope at the minimum, late half below it
    assert classify(group([0, 64 * KiB, 128 * KiB, 128 * KiB, 128 * KiB + 1, 5 * MiB], 5 * MiB), TH,
                    True)[1] != bounded
    edge = [0, 64 * KiB, 128 * KiB, 128 * KiB + 64 * KiB - 1, 128 * KiB + 64 * KiB - 1]
    assert classify(group(edge, MiB, undrained=MiB), TH, True) == (CACHE, bounded)


def test_about_the_last_rounds_worth_left():
    # 8 rounds: less than half of the last round's live bytes kept (max(2, 8 / 2) * last / 8)
    assert classify(group(steps(8), 4 * MiB - 1), TH, True) == (CACHE, (
        f"released by the drain: {8 * MiB} bytes filled, {4 * MiB - 1} left (about the last round's worth, "
        "still in use)"))
    assert classify(group(steps(8), 4 * MiB), TH, True)[0] == LEAK
    # 2 rounds: less than the whole last round
    assert classify(group(steps(2), 2 * MiB - 1, undrained=2 * MiB - 1 + 256 * KiB), TH, True)[0] == CACHE
    assert classify(group(steps(2), 2 * MiB, undrained=2 * MiB + 256 * KiB), TH, True)[0] == LEAK
    # the drain released less than the minimum: nothing filled, just the last round's pieces
    assert classify(group(steps(8), 3 * MiB, undrained=3 * MiB + 256 * KiB - 1), TH, True) == (TRANSIENT, (
        f"grows until the drain, which leaves {3 * MiB} bytes: about the last round's worth, not one piece per "
        "round"))
    assert classify(group(steps(8), 3 * MiB, undrained=3 * MiB + 256 * KiB), TH, True)[0] == CACHE


def test_leak_reasons_name_the_rate_and_the_evidence():
    v, reason = classify(group(steps(8), 8 * MiB), TH, True)
    assert (v, reason) == (LEAK, "grows 1024.0 KiB/round (Mann-Kendall p=0.000418 over 8 rounds) and survives the end")
    assert classify(group(steps(3), 3 * MiB), TH, True) == (
        LEAK, "grows 1024.0 KiB/round (every one of 3 rounds) and survives the end")
    assert classify(group(steps(4, 3 * MiB // 2), 6 * MiB), TH, True) == (
        LEAK, "grows 1536.0 KiB/round (Mann-Kendall p=0.0447 over 4 rounds) and survives the end")
    assert classify(group(steps(8), 256 * KiB - 1, undrained=256 * KiB - 1), TH, False)[0] == TRANSIENT


def test_grows_at_the_minimum_rate_with_rising_troughs():
    assert grows(steps(8, 64 * KiB), TH) and not grows(steps(8, 64 * KiB - 1), TH)
    assert grows([1, 2, 3], Thresholds(1, 1)) and not grows([1, 3, 2], Thresholds(1, 1))
    assert not grows([2, 1, 3], Thresholds(1, 1))
    # rising overall, yet the last third's trough is no higher than the first third's
    series = [5 * MiB, 1 * MiB, 6 * MiB, 7 * MiB, 8 * MiB, 1 * MiB]
    assert not grows(series, TH)
    assert grows([1, 2, 3, 4, 5, 6], Thresholds(1, 1)) and not grows([1, 1, 1, 1, 1, 1], Thresholds(1, 1))
    assert grows([1, 0, 2, 3, 4, 5, 6, 7, 8], Thresholds(1, 1))  # a third of 9 is 3: troughs 0 and 6


def test_missing_drain_step_reasons():
    note = "its drain step (encoder_cache) is missing in the installed vLLM, so the drain could not empty it"
    growing = group(steps(8), 8 * MiB, component="encoder cache")
    assert classify(growing, TH, True, ("encoder_cache",)) == (
        SUSPECTED, f"grows 1024.0 KiB/round (Mann-Kendall p=0.000418 over 8 rounds), suspected only: {note}")
    bounded = group([MiB, 2 * MiB, 2 * MiB, 2 * MiB], 2 * MiB, component="vision encoder")
    assert classify(bounded, TH, True, ("encoder_cache",)) == (CACHE, f"bounded: grew, then stopped growing ({note})")
    flat = group([MiB] * 8, MiB, component="encoder cache")
    assert classify(flat, TH, True, ("encoder_cache",)) == (
        TRANSIENT, f"does not grow steadily across rounds ({note})")
    small = group(steps(8), 256 * KiB - 1, component="encoder cache")
    assert classify(small, TH, True, ("encoder_cache",))[0] == TRANSIENT
    assert classify(group(steps(8), 8 * MiB, component="prefix cache"), TH, True,
                    ("mm_cache", "prefix_cache"))[1].endswith("its drain step (prefix_cache) is missing in the "
                                                              "installed vLLM, so the drain could not empty it")


def test_undecided_only_for_transients_that_may_grow():
    maybe = group([MiB, 2 * MiB, int(1.5 * MiB), int(2.5 * MiB), int(1.5 * MiB), 2 * MiB, int(1.5 * MiB),
                   int(2.5 * MiB)], int(2.5 * MiB))
    apply_verdicts([maybe], TH, True)
    assert maybe.verdict == TRANSIENT and maybe.details["reason"] and undecided(maybe, TH)
    two = group([0, MiB], 0, undrained=0)
    two.verdict = TRANSIENT
    assert undecided(two, TH)  # fewer than 4 rounds, rising at a leak's rate
    falling = group([MiB, 0], 0, undrained=0)
    falling.verdict = TRANSIENT
    assert not undecided(falling, TH)
    one = group([MiB], 0)
    one.verdict = TRANSIENT
    assert not undecided(one, TH)
    leak = group(steps(8), 8 * MiB)
    apply_verdicts([leak], TH, True)
    assert leak.verdict == LEAK and not undecided(leak, TH)
    slow = group(steps(8, 64 * KiB - 1), 0, undrained=0)
    slow.verdict = TRANSIENT
    assert not undecided(slow, TH)


def test_without_undrained_bytes_the_last_round_is_what_the_drain_started_from():
    filled = Finding("host", STACK, MiB, 1, steps(10), component="user or plugin code")  # no details at all
    assert classify(filled, TH, True) == (CACHE, f"released by the drain: {10 * MiB} bytes filled, {MiB} left")
    empty = Finding("gpu", STACK, MiB, 1, [], component="user or plugin code")  # no series: the bytes kept
    assert classify(empty, TH, True) == (LEAK, "survives (too few rounds to see growth)")


def test_a_drain_step_no_component_depends_on_changes_nothing():
    growing = group(steps(8), 8 * MiB)
    assert classify(growing, TH, True, ("tokenizer_cache",)) == classify(growing, TH, True)


def test_a_single_byte_released_is_released():
    assert classify(group([1], 0, undrained=1), TH, True) == (TRANSIENT, "small, released by the drain")


def test_nothing_released_by_the_collector_when_the_drain_does_not_say():
    # slope 0.5 byte/round, rising: with a 1-byte floor, one byte freed by the collector would make it a cycle
    th = Thresholds(min_per_round=0, min_total=1)
    assert classify(group([0, 0, 0, 1, 2], 2), th, True)[0] == LEAK
    assert classify(group([0, 0, 0, 1, 2], 2, released_by={"gc": 1}), th, True)[0] == CYCLE


def test_last_rounds_worth_needs_the_last_round_live():
    # the drain released 256 KiB (a fill) and what is left is under half the last round: a cache in use
    in_use = group([0, 0, 0, 4 * MiB], MiB, undrained=MiB + 256 * KiB)
    assert classify(in_use, TH, True) == (CACHE, (
        f"released by the drain: {MiB + 256 * KiB} bytes filled, {MiB} left (about the last round's worth, "
        "still in use)"))
    one_byte = group([0, 0, 0, 1], 0, undrained=0)
    assert classify(one_byte, TH, True) == (TRANSIENT, (
        "grows until the drain, which leaves 0 bytes: about the last round's worth, not one piece per round"))


def test_a_leak_keeps_at_least_the_minimum_total():
    assert classify(group(steps(8), 256 * KiB, undrained=256 * KiB), TH, False)[0] == LEAK
    suspected = group(steps(8), 256 * KiB, component="encoder cache")
    assert classify(suspected, TH, True, ("encoder_cache",))[0] == SUSPECTED


def test_grows_in_short_series_needs_every_step_to_rise():
    assert not grows([0, 200 * KiB, 200 * KiB], TH)  # a flat step
    assert not grows([0, 300 * KiB, 200 * KiB], TH)  # a fall in the last step


def test_grows_compares_the_troughs_of_the_first_and_last_thirds():
    # 7 rounds, thirds of 2: troughs 0 and 0, so the level did not rise though the trend does
    assert not grows([0, 100 * KiB, 200 * KiB, 500 * KiB, 600 * KiB, 0, 800 * KiB], TH)
    # 5 rounds, thirds of 1: 800 KiB > 300 KiB (the second round's dip is not in the last third)
    assert grows([300 * KiB, 100 * KiB, 400 * KiB, 700 * KiB, 800 * KiB], TH)


def test_bounded_needs_the_late_half_under_the_minimum_rate():
    at_rate = [0, 300 * KiB, 600 * KiB, 600 * KiB + 64 * KiB]  # late half grows exactly 64 KiB/round
    assert classify(group(at_rate, at_rate[-1]), TH, False)[0] == LEAK


@pytest.mark.parametrize("series, kept, verdict, th, expected", [
    ([0, 64 * KiB], 0, TRANSIENT, TH, True),  # exactly the minimum rate, too few rounds to test
    ([0, MiB], MiB, LEAK, TH, False),  # only transients are undecided
    (steps(8), 8 * MiB, TRANSIENT, TH, False),  # significant rise, big enough: a leak's job, not undecided
    (steps(4), 4 * MiB, TRANSIENT, TH, False),  # 4 rounds is enough for the test
    (steps(8, 64 * KiB), 256 * KiB, TRANSIENT, TH, False),  # keeps the minimum total: not waiting on size
    (steps(8, 64 * KiB), 256 * KiB - 1, TRANSIENT, TH, True),  # grows, just short of the minimum total
    ([0, 1], 1, TRANSIENT, Thresholds(1, 1), True),  # rising 1 byte/round at a 1-byte rate
    ([0, 1, 0], 1, TRANSIENT, Thresholds(0, 1), False),  # no slope at all
])
def test_undecided_boundaries(series, kept, verdict, th, expected):
    f = group(series, kept)
    f.verdict = verdict
    assert undecided(f, th) is expected


def test_apply_verdicts_passes_the_drain_and_the_missing_steps_on():
    cache, suspect = group(steps(10), MiB), group(steps(8), 8 * MiB, component="encoder cache")
    apply_verdicts([cache, suspect], TH, True, ("encoder_cache",))
    assert (cache.verdict, suspect.verdict) == (CACHE, SUSPECTED)
    assert cache.details["reason"] == f"released by the drain: {10 * MiB} bytes filled, {MiB} left"
