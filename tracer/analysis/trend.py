"""Does a per-round series rise? A Theil-Sen slope and a Mann-Kendall test, both robust to one noisy round.

The Theil-Sen slope is the median of the slopes between every pair of rounds, so one outlier or a buffer freed
every few rounds (a sawtooth) moves it little. The Mann-Kendall statistic counts rising pairs minus falling
pairs; under "no trend" it is close to normal with a known variance (ties corrected), which gives a one-sided
p-value for "rises". No size floor: equal values tie, any difference counts, sizes are judged by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIGNIFICANT = 0.05  # p below this: the series rises
UNDECIDED = 0.25  # p from SIGNIFICANT to this: it may rise, more rounds would tell


@dataclass(frozen=True)
class Trend:
    slope: float  # Theil-Sen, bytes per round
    p_rising: float  # one-sided Mann-Kendall p-value for "the series rises"
    rounds: int

    @property
    def rising(self) -> bool:
        return self.p_rising < SIGNIFICANT and self.slope > 0

    @property
    def undecided(self) -> bool:
        return not self.rising and self.slope > 0 and self.p_rising < UNDECIDED

    def as_dict(self) -> dict:
        return {"slope_bytes_per_round": round(self.slope, 1), "p_rising": round(self.p_rising, 4),
                "rounds": self.rounds}


def _pairs(series):
    """The series as floats, and the indexes (i, j), i < j, of every pair of rounds."""
    y = np.asarray(series, dtype=float)
    i, j = np.triu_indices(len(y), k=1)
    return y, i, j


def theil_sen_slope(series) -> float:
    y, i, j = _pairs(series)
    if len(y) < 2:
        return 0.0
    return float(np.median((y[j] - y[i]) / (j - i)))


def mann_kendall_p_rising(series) -> float:
    """One-sided p-value of the Mann-Kendall test (normal approximation, continuity and tie corrected)."""
    y, i, j = _pairs(series)
    n = len(y)
    if n < 3:
        return 1.0
    s = float(np.sign(y[j] - y[i]).sum())
    _, ties = np.unique(y, return_counts=True)
    var = (n * (n - 1) * (2 * n + 5) - float((ties * (ties - 1) * (2 * ties + 5)).sum())) / 18.0
    if var <= 0:
        return 1.0
    z = (s - 1) / math.sqrt(var) if s > 0 else (s + 1) / math.sqrt(var) if s < 0 else 0.0
    return 0.5 * math.erfc(z / math.sqrt(2))


def trend(series) -> Trend:
    return Trend(theil_sen_slope(series), mann_kendall_p_rising(series), len(series))
