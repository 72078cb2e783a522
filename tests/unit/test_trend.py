"""The trend test's arithmetic, checked against values worked out by hand (pure logic)."""

from __future__ import annotations

import math

import pytest

from tracer.analysis.trend import Trend, mann_kendall_p_rising, theil_sen_slope, trend


def normal_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_theil_sen_is_the_median_of_every_pairwise_slope():
    # pairs: 10, 10, 100/3, 10, 45, 80 -> median of the middle two: (10 + 100/3) / 2
    assert theil_sen_slope([0, 10, 20, 100]) == pytest.approx(65 / 3)
    assert theil_sen_slope([0, 10]) == 10.0  # two rounds: one slope
    assert theil_sen_slope([7]) == 0.0 and theil_sen_slope([]) == 0.0
    assert theil_sen_slope([-(2**62), 2**62]) == 2.0**63  # no 64-bit integer overflow on big byte counts


@pytest.mark.parametrize("series, p", [
    ([1, 2, 3, 4], normal_tail(5 / math.sqrt(26 / 3))),  # S = 6, Var = 4*3*13/18, continuity: S - 1
    ([4, 3, 2, 1], normal_tail(-5 / math.sqrt(26 / 3))),  # S = -6: S + 1
    ([1, 2, 3], normal_tail(2 / math.sqrt(11 / 3))),  # the shortest series with a test
    ([1, 2, 2, 1], 0.5),  # S = 0
    ([1, 1, 2, 3, 3, 3], normal_tail(10 / math.sqrt((510 - 18 - 66) / 18))),  # ties of 2 and 3 correct Var
    ([-(2**62), 0, 2**62], normal_tail(2 / math.sqrt(11 / 3))),  # no overflow in the pairwise differences
])
def test_mann_kendall_one_sided_p_value(series, p):
    assert mann_kendall_p_rising(series) == pytest.approx(p, rel=1e-12)


def test_mann_kendall_needs_three_rounds_and_some_variance():
    assert mann_kendall_p_rising([1, 2]) == 1.0 and mann_kendall_p_rising([]) == 1.0
    assert mann_kendall_p_rising([5, 5, 5]) == 1.0  # all tied: Var = 0


def test_trend_record_and_its_rounding():
    t = trend([1, 2, 3, 4])
    assert t == Trend(1.0, mann_kendall_p_rising([1, 2, 3, 4]), 4) and t.rising and not t.undecided
    assert Trend(1234.5678, 0.012345678, 6).as_dict() == {"slope_bytes_per_round": 1234.6, "p_rising": 0.0123,
                                                          "rounds": 6}
    assert Trend(10.0, 0.1, 5).undecided and not Trend(10.0, 0.3, 5).undecided and not Trend(0.0, 0.1, 5).undecided
    assert not Trend(-1.0, 0.01, 5).rising and Trend(1.0, 0.0499, 5).rising and not Trend(1.0, 0.05, 5).rising
