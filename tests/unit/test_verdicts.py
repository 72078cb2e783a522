"""Leak, cache or transient from a group's per-round series and what the drain left (handmade series)."""

from __future__ import annotations

import pytest

from tracer.analysis.components import NATIVE_KERNELS
from tracer.analysis.findings import Finding
from tracer.analysis.stacks import Frame
from tracer.analysis.trend import trend
from tracer.analysis.verdicts import CACHE, CYCLE, LEAK, SUSPECTED, TRANSIENT, Thresholds, apply_verdicts, classify, undecided

KiB, MiB = 1024, 1024 * 1024
STACK = (Frame("keep", "/src/plugin.py", 3),)


def group(series_mib: list[float], after_drain_mib: float | None = None, component: str = "user or plugin code"):
    """A finding whose live bytes at the end of each round are `series_mib`; `after_drain_mib` what the final
    drain left (None: the run had no drain)."""
    series = [int(x * MiB) for x in series_mib]
    end = series[-1] if after_drain_mib is None else int(after_drain_mib * MiB)
    return Finding("host", STACK, end, 1, series, component=component, details={"undrained_bytes": series[-1]})


def verdict(f: Finding, drained: bool = True, th: Thresholds = Thresholds()) -> str:
    return classify(f, th, drained)[0]


def test_steady_growth_that_survives_the_drain_is_a_leak():
    assert verdict(group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=8)) == LEAK


def test_growth_the_drain_releases_is_a_cache():
    v, reason = classify(group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=0), Thresholds(), True)
    assert v == CACHE and "released by the drain" in reason


def test_growth_that_levels_off_is_a_bounded_cache():
    v, reason = classify(group([2, 4, 6, 8, 8, 8, 8, 8], after_drain_mib=8), Thresholds(), True)
    assert v == CACHE and "bounded" in reason


def test_only_the_last_rounds_worth_left_after_the_drain_is_not_a_leak():
    """vLLM keeps the last request's inputs until the next one: one round's worth survives, not one per round."""
    assert verdict(group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=1)) in (CACHE, TRANSIENT)


def test_one_jump_is_not_a_per_round_rate():
    """A buffer grown once, then flat: the median step is zero."""
    assert verdict(group([0, 0, 0, 8, 8, 8, 8, 8], after_drain_mib=8)) != LEAK


def test_one_noisy_round_does_not_hide_a_leak():
    assert verdict(group([1, 2, 3, 2.5, 5, 6, 7, 8], after_drain_mib=8)) == LEAK


def test_sawtooth_that_still_grows_is_a_leak():
    """Freed in part every third round, growing again: the level keeps rising."""
    series = [1, 2, 3, 2.5, 3.5, 4.5, 4, 5, 6, 5.5, 6.5, 7.5]
    assert verdict(group(series, after_drain_mib=7.5)) == LEAK


def test_small_growth_below_the_thresholds_is_transient():
    assert verdict(group([0.01 * k for k in range(1, 9)], after_drain_mib=0.08)) == TRANSIENT


def test_thresholds_decide_what_is_big_enough():
    f = group([0.1 * k for k in range(1, 9)], after_drain_mib=0.8)  # ~100 KiB per round, 0.8 MiB kept
    assert verdict(f) == LEAK
    assert verdict(f, th=Thresholds(min_per_round=256 * KiB)) != LEAK
    assert verdict(f, th=Thresholds(min_total=1 * MiB)) != LEAK


def test_known_bounded_native_caches_are_caches_even_when_growing():
    assert verdict(group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=8, component=NATIVE_KERNELS)) == CACHE


@pytest.mark.parametrize("series, expected", [([8], LEAK), ([0.1], TRANSIENT)])
def test_one_round_judges_by_size_alone(series, expected):
    assert verdict(group(series, after_drain_mib=series[0])) == expected


def test_without_a_drain_the_series_decides():
    assert verdict(group([1, 2, 3, 4, 5, 6, 7, 8]), drained=False) == LEAK
    assert verdict(group([2, 4, 6, 8, 8, 8, 8, 8]), drained=False) == CACHE


def test_flat_sawtooth_without_net_growth_is_not_a_leak():
    """Freed back to the same level every third round: pairs rise inside each tooth, but the level does not."""
    assert verdict(group([1, 2, 3] * 4, after_drain_mib=3)) != LEAK


def test_no_fixed_noise_floor_small_growth_with_small_thresholds_is_a_leak():
    """4 KiB a round, with a few hundred bytes of jitter, is a leak once the thresholds allow that size."""
    jitter = [0, 300, -200, 100, 0, -300, 200, 0, 100, -100, 0, 300]
    series = [(k + 1) * 4 * KiB + j for k, j in enumerate(jitter)]
    f = Finding("host", STACK, series[-1], 1, series, details={"undrained_bytes": series[-1]})
    assert classify(f, Thresholds(min_per_round=2 * KiB, min_total=16 * KiB), True)[0] == LEAK
    assert classify(f, Thresholds(), True)[0] != LEAK  # below the default minimum sizes


def test_noise_alone_is_not_a_leak_at_any_threshold():
    series = [100 * KiB + j for j in [0, 3000, -2000, 1000, 2500, -3000, 2000, 0, -1000, 1500, 0, -500]]
    f = Finding("host", STACK, series[-1], 1, series, details={"undrained_bytes": series[-1]})
    assert classify(f, Thresholds(min_per_round=1, min_total=1), True)[0] != LEAK


def test_growth_only_the_collector_releases_is_a_cycle():
    f = group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=0)
    f.details["released_by"] = {"mm_cache": 0, "encoder_cache": 0, "gc": 8 * MiB}
    v, reason = classify(f, Thresholds(), True)
    assert v == CYCLE and "garbage collector" in reason
    # a cache (vLLM's processor cache) also holds it: its reset drops one reference, the collector frees the
    # rest; the last round's worth is still in use after the drain
    shared = group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=1)
    shared.details["released_by"] = {"mm_cache": 4 * MiB, "gc": 3 * MiB}
    assert verdict(shared) == CYCLE
    # the collector freed about one round's worth: garbage of the last round, not a pile-up
    last = group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=0)
    last.details["released_by"] = {"mm_cache": 7 * MiB, "gc": 1 * MiB}
    assert verdict(last) == CACHE


def test_a_cache_the_collector_frees_once_filled_is_a_cache_not_a_cycle():
    """A bounded fill that only the collector releases did not grow over the rounds."""
    f = group([8, 8, 8, 8, 8, 8, 8, 8], after_drain_mib=0)
    f.details["released_by"] = {"gc": 8 * MiB}
    assert verdict(f) == CACHE


def test_growth_a_cache_reset_releases_is_a_cache_not_a_cycle():
    f = group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=0)
    f.details["released_by"] = {"encoder_cache": 8 * MiB, "gc": 0}
    assert verdict(f) == CACHE


def test_missing_drain_step_bounded_is_a_cache_growing_is_suspected():
    bounded = group([2, 4, 6, 8, 8, 8, 8, 8], after_drain_mib=8, component="encoder cache")
    v, reason = classify(bounded, Thresholds(), True, missing_steps=("encoder_cache",))
    assert v == CACHE and "encoder_cache" in reason
    growing = group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=8, component="encoder cache")
    v, reason = classify(growing, Thresholds(), True, missing_steps=("encoder_cache",))
    assert v == SUSPECTED and "encoder_cache" in reason and "missing" in reason
    # the missing step is not this group's: judged as usual
    other = group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=8)
    assert verdict(other) == LEAK
    assert classify(other, Thresholds(), True, missing_steps=("encoder_cache",))[0] == LEAK


def test_undecided_trend_asks_for_more_rounds():
    f = group([1, 2, 1.5, 2.5, 1.5, 2, 1.5, 2.5], after_drain_mib=2.5)  # p about 0.15: may rise, may not
    apply_verdicts([f], Thresholds(), True)
    assert f.verdict != LEAK and undecided(f, Thresholds())
    steady = group([1, 2, 3, 4, 5, 6, 7, 8], after_drain_mib=8)
    flat = group([1, 1, 1, 1, 1, 1, 1, 1], after_drain_mib=1)
    apply_verdicts([steady, flat], Thresholds(), True)
    assert not undecided(steady, Thresholds()) and not undecided(flat, Thresholds())


def test_trend_slope_and_test_resist_one_outlier():
    t = trend([1, 2, 3, 40, 5, 6, 7, 8])
    assert t.slope == pytest.approx(1.0) and t.rising
    assert not trend([5, 5, 5, 5, 5, 5]).rising and trend([5, 5, 5, 5, 5, 5]).p_rising == 1.0


def test_leak_rate_still_under_the_total_minimum_asks_for_more_rounds():
    """A list growing 4 KiB a round keeps 32 KiB after 8 rounds: under a 64 KiB --min-leak, yet rising at a leak's
    rate, so more rounds would tell; once it keeps enough it is a leak, and then no longer undecided."""
    th = Thresholds(min_per_round=2 * KiB, min_total=64 * KiB)
    young = group([4 * k / 1024 for k in range(1, 9)], after_drain_mib=32 / 1024)
    apply_verdicts([young], th, False)
    assert young.verdict == TRANSIENT and undecided(young, th)
    grown = group([4 * k / 1024 for k in range(1, 33)], after_drain_mib=128 / 1024)
    apply_verdicts([grown], th, False)
    assert grown.verdict == LEAK and not undecided(grown, th)
    slow = group([1 * k / 1024 for k in range(1, 9)])  # rising, but under the per-round minimum
    apply_verdicts([slow], th, False)
    assert slow.verdict == TRANSIENT and not undecided(slow, th)
