"""Quantiles of the normal and Student t distributions, without SciPy.

The t distribution's CDF has a closed form for integer degrees of freedom (a finite series in
theta = atan(t / sqrt(df)); Abramowitz and Stegun 26.7.3-4); its quantile is found by bisection.
Degrees of freedom here are always integers (number of clusters minus one).
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

_NORMAL = NormalDist()
_SERIES_LIMIT = 2000        # beyond this many degrees of freedom a Cornish-Fisher expansion is exact to 1e-9


def normal_quantile(p: float) -> float:
    return _NORMAL.inv_cdf(p)


def normal_cdf(x: float) -> float:
    return _NORMAL.cdf(x)


def t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for T ~ Student t with integer ``df`` >= 1, t >= 0."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2 * theta / math.pi
        term, total = math.cos(theta), math.cos(theta)
        for k in range(3, df - 1, 2):          # terms cos^k theta * (2*4*..*(k-1)) / (1*3*..*k)
            term *= c2 * (k - 1) / k
            total += term
        return 2 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0
    for k in range(2, df - 1, 2):              # terms cos^k theta * (1*3*..*(k-1)) / (2*4*..*k)
        term *= c2 * (k - 1) / k
        total += term
    return s * total


@functools.lru_cache(maxsize=65536)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with integer ``df`` >= 1 (0 < p < 1). Cached: `bench power`
    asks for the same few quantiles for every run and grid cell (2,000 runs took a minute)."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), not {p}")
    if df < 1:
        raise ValueError(f"df must be >= 1, not {df}")
    if p == 0.5:
        return 0.0
    upper = p > 0.5
    target = 2 * p - 1 if upper else 1 - 2 * p          # P(|T| <= t) for the upper quantile t
    if df > _SERIES_LIMIT:
        z = normal_quantile(0.5 + target / 2)
        t = (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
             + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))
    else:
        lo, hi = 0.0, 1.0
        while t_central_probability(hi, df) < target:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            if t_central_probability(mid, df) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-12 * max(1.0, hi):
                break
        t = (lo + hi) / 2
    return t if upper else -t
