"""Closed-form companions of the cluster bootstrap (bench.stats.bootstrap), each linear in the
number of units:

- the *linearised* standard error of the protocol's mean (each unit's influence on the
  statistic; for equal cluster sizes the textbook ``sd(cluster means) / sqrt(U)``), and the t
  interval built on it. With few clusters a bootstrap interval can be no wider than the range of
  the clusters' own values and covers far less than it says (75% at 3 subjects); the t interval
  with ``U - 1`` degrees of freedom keeps its level there (docs/statistics.md, "Few clusters").
- the normal approximation of the sign-flip test (the statistic is a sum of the units' shares;
  under random signs its variance is the sum of their squares), used when there are too many
  units to resample them (bench.limits.MAX_RESAMPLED_UNITS).
"""

from __future__ import annotations

import math

import numpy as np

from bench.stats.distributions import normal_cdf, t_central_probability, t_quantile


def influence(clusters) -> np.ndarray:
    """Each unit's linearised influence on the statistic (U, R); the columns sum to 0."""
    counts = clusters.counts.sum(axis=0)                       # (K,)
    sums = clusters.sums.sum(axis=0)                           # (K, R)
    if clusters.aggregate == "images":
        est = sums.sum(axis=0) / counts.sum()                  # (R,)
        unit_sums = clusters.sums.sum(axis=1)                  # (U, R)
        unit_counts = clusters.counts.sum(axis=1)              # (U,)
        return (unit_sums - unit_counts[:, None] * est[None, :]) / counts.sum()
    present = counts > 0
    safe = np.where(present, counts, 1.0)
    per_seed = sums / safe[:, None]                            # (K, R)
    centred = clusters.sums - clusters.counts[:, :, None] * per_seed[None]       # (U, K, R)
    scale = np.where(present, 1.0 / safe, 0.0) / present.sum()
    return np.einsum("ukr,k->ur", centred, scale)


def standard_error(clusters) -> np.ndarray:
    """The linearised (jackknife-like) standard error of the statistic, (R,): for U units
    ``sqrt(U / (U - 1) * sum(influence ** 2))``."""
    n = clusters.n_units
    if n < 2:
        raise ValueError("a standard error needs at least 2 units")
    z = influence(clusters)
    return np.sqrt(n / (n - 1) * (z ** 2).sum(axis=0))


def t_interval(estimate, se, alpha: float, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """estimate ± t_{U-1}(1 - alpha/2) · se."""
    half = t_quantile(1 - alpha / 2, n_units - 1) * np.asarray(se)
    return np.asarray(estimate) - half, np.asarray(estimate) + half


def t_p_value(estimate, se, n_units: int) -> np.ndarray:
    """Two-sided p of estimate / se against Student's t with U - 1 degrees of freedom."""
    est, se = np.atleast_1d(np.asarray(estimate, float)), np.atleast_1d(np.asarray(se, float))
    out = np.ones_like(est)
    for i, (e, s) in enumerate(zip(est, se)):
        if s > 0:
            out[i] = 1.0 - t_central_probability(abs(e) / s, max(n_units - 1, 1))
        elif e != 0:
            out[i] = 0.0
    return out


def sign_flip_p_normal(shares: np.ndarray) -> np.ndarray:
    """Two-sided p of the sign-flip test by its normal approximation: the observed sum of the
    units' shares (U, R) against a normal with variance sum(shares ** 2). Accurate when no unit
    dominates (many units)."""
    observed = np.abs(shares.sum(axis=0))
    scale = np.sqrt((shares ** 2).sum(axis=0))
    out = np.ones(shares.shape[1])
    for i, (o, s) in enumerate(zip(observed, scale)):
        if s > 0:
            out[i] = min(1.0, 2 * normal_cdf(-o / s))
    return out


def rademacher_tail_bound(n_units: int) -> float:
    """The smallest two-sided p a sign-flip test over ``n_units`` units can give: 2 / 2**U."""
    return 2.0 * math.ldexp(1.0, -min(n_units, 1074))
