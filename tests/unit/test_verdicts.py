"""Leak, cache or transient from a group's per-round series and what the drain left (handmade series)."""

from __future__ import annotations

import pytest

from tracer.analysis.components import NATIVE_KERNELS
from tracer.analysis.findings import Finding
from tracer.analysis.stacks import Frame
from tracer.analysis.verdicts import CACHE, LEAK, TRANSIENT, Thresholds, classify

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
