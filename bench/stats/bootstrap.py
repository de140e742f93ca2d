"""The statistics engine: cluster bootstrap intervals, a paired sign-flip test, Holm's correction
and the minimum detectable effect. NumPy only (no torch, no SciPy); docs/statistics.md explains
the choices.

Everything works on one metric's values summed per *resampling unit* (a subject, a (subject,
prompt) cell or a single image) and per seed: :class:`Clusters`. The protocol's statistic is
computed from those sums alone (per seed the mean over images, then the mean over seeds; or the
mean over all images), so a bootstrap replicate is a matrix product of resampling weights with
the sums, and ``R`` value columns that share a layout (simulated reruns in the calibration
tests) are handled in the same products.

- Interval: the *expanded percentile* bootstrap (Hesterberg 2015): the percentiles are taken at
  the levels ``a/2, 1 - a/2`` with ``a = 2 * Phi(-sqrt(U / (U - 1)) * t_{U-1}(1 - alpha/2))`` so
  that the interval has the width a t interval would have with ``U`` units, while keeping the
  bootstrap's shape. The plain percentile interval is too narrow with few clusters (about 93%
  instead of 95% with 30 subjects).
- Test: a sign-flip permutation test on the units' paired differences (exact when the
  differences of a unit are symmetric about zero under the null, e.g. two runs of the same
  method): every unit's contribution to the statistic keeps or flips its sign. All ``2**U``
  patterns when ``U`` is small, else ``resamples`` random ones (p = (1 + hits) / (1 + resamples)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.stats.distributions import normal_cdf, t_quantile

AGGREGATES = ("seeds", "images")
EXACT_SIGN_FLIP_UNITS = 15          # up to 2**15 patterns are enumerated: an exact p-value
_CHUNK_CELLS = 2_000_000            # weights drawn at a time (resamples x units)


@dataclass(frozen=True)
class Clusters:
    """Values summed per resampling unit and seed: ``sums`` (U, K, R), ``counts`` (U, K).

    ``aggregate`` "seeds": per seed the mean over images, then the unweighted mean over the seeds
    that hold values (the papers' "mean over seeds"); "images": the mean over all values."""
    sums: np.ndarray
    counts: np.ndarray
    aggregate: str = "seeds"

    @property
    def n_units(self) -> int:
        return int(self.sums.shape[0])


def cluster(units, seeds, values, aggregate: str = "seeds") -> Clusters:
    """Sum ``values`` ((n,) or (n, R)) per unit and seed; ``units`` and ``seeds`` are integer
    codes 0..U-1 and 0..K-1 (every unit code present)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    units = np.asarray(units, dtype=np.int64)
    seeds = np.asarray(seeds, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n_units, n_seeds = int(units.max()) + 1, int(seeds.max()) + 1
    flat = units * n_seeds + seeds
    counts = np.bincount(flat, minlength=n_units * n_seeds).reshape(n_units, n_seeds)
    order = np.argsort(flat, kind="stable")
    sorted_flat = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_flat[1:] != sorted_flat[:-1]])
    sums = np.zeros((n_units * n_seeds, values.shape[1]))
    sums[sorted_flat[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return Clusters(sums.reshape(n_units, n_seeds, -1), counts.astype(np.float64), aggregate)


def statistic(seed_sums: np.ndarray, seed_counts: np.ndarray, aggregate: str) -> np.ndarray:
    """The protocol's mean from per-seed sums (B, K, R) and counts (B, K): shape (B, R)."""
    if aggregate == "images":
        return seed_sums.sum(axis=1) / seed_counts.sum(axis=1)[:, None]
    present = seed_counts > 0
    per_seed = seed_sums / np.where(present, seed_counts, 1.0)[:, :, None]
    return (per_seed * present[:, :, None]).sum(axis=1) / present.sum(axis=1)[:, None]


def estimate(clusters: Clusters) -> np.ndarray:
    """The statistic on the data as they are: shape (R,)."""
    return statistic(clusters.sums.sum(axis=0)[None], clusters.counts.sum(axis=0)[None], clusters.aggregate)[0]


def per_seed_means(clusters: Clusters) -> np.ndarray:
    """Per seed the mean over images (K, R); NaN for a seed without values."""
    counts = clusters.counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return clusters.sums.sum(axis=0) / counts[:, None]


def _weighted_seed_sums(weights: np.ndarray, clusters: Clusters) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate and seed the weighted sums (b, K, R) and counts (b, K). Units that hold no
    value for a seed are skipped in its product (an image unit holds one seed)."""
    b = weights.shape[0]
    n_seeds, n_cols = clusters.sums.shape[1], clusters.sums.shape[2]
    seed_sums = np.empty((b, n_seeds, n_cols))
    for k in range(n_seeds):
        rows = np.flatnonzero(clusters.counts[:, k] > 0)
        if len(rows) == clusters.n_units:
            seed_sums[:, k, :] = weights @ clusters.sums[:, k, :]
        else:
            seed_sums[:, k, :] = weights[:, rows] @ clusters.sums[rows, k, :]
    return seed_sums, weights @ clusters.counts


def resample_weights(rng: np.random.Generator, n_units: int, resamples: int):
    """Yield blocks of bootstrap weights (b, U): how often each unit is drawn in a resample of
    ``n_units`` units with replacement."""
    block = max(1, min(resamples, _CHUNK_CELLS // max(n_units, 1)))
    done = 0
    while done < resamples:
        b = min(block, resamples - done)
        draws = rng.integers(0, n_units, size=(b, n_units)) + (np.arange(b) * n_units)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        done += b


def replicates(clusters: Clusters, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """The statistic on ``resamples`` cluster-bootstrap resamples of the units: (resamples, R)."""
    out = []
    for weights in resample_weights(rng, clusters.n_units, resamples):
        seed_sums, seed_counts = _weighted_seed_sums(weights, clusters)
        out.append(statistic(seed_sums, seed_counts, clusters.aggregate))
    return np.concatenate(out, axis=0)


def expanded_alpha(alpha: float, n_units: int) -> float:
    """The percentile level that gives a bootstrap interval the width of a t interval on
    ``n_units`` clusters (the expanded percentile interval)."""
    if n_units < 2:
        raise ValueError("an interval needs at least 2 resampling units")
    t = t_quantile(1 - alpha / 2, n_units - 1)
    return 2 * normal_cdf(-math.sqrt(n_units / (n_units - 1)) * t)


def interval(reps: np.ndarray, alpha: float, n_units: int, expand: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (R,): the expanded (or, with ``expand=False``, plain) percentile interval."""
    level = expanded_alpha(alpha, n_units) if expand else alpha
    low, high = np.quantile(reps, [level / 2, 1 - level / 2], axis=0)
    return low, high


def standard_error(reps: np.ndarray, n_units: int) -> np.ndarray:
    """The bootstrap standard error, rescaled by sqrt(U / (U - 1)) to remove the bootstrap's
    small-sample shrinkage: (R,)."""
    return reps.std(axis=0, ddof=1) * math.sqrt(n_units / (n_units - 1))


def unit_contributions(clusters: Clusters) -> np.ndarray:
    """Each unit's additive share of the statistic (U, R): the statistic is their sum, and a
    sign flip of a unit's values flips its share (the denominators are counts, unchanged)."""
    counts = clusters.counts.sum(axis=0)
    if clusters.aggregate == "images":
        return clusters.sums.sum(axis=1) / counts.sum()
    present = counts > 0
    scale = np.where(present, 1.0 / np.where(present, counts, 1.0), 0.0) / present.sum()
    return np.einsum("ukr,k->ur", clusters.sums, scale)


def sign_flip_p(clusters: Clusters, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Two-sided p-values (R,) of a sign-flip test that the paired differences in ``clusters``
    are centred on zero."""
    shares = unit_contributions(clusters)
    n_units = shares.shape[0]
    observed = np.abs(shares.sum(axis=0))
    threshold = observed * (1 - 1e-9) - 1e-15          # ties (e.g. all differences 0) count as hits
    if n_units <= EXACT_SIGN_FLIP_UNITS:
        patterns = 1 - 2 * ((np.arange(2 ** n_units)[:, None] >> np.arange(n_units)) & 1)
        hits = np.zeros(shares.shape[1])
        for start in range(0, len(patterns), 4096):
            hits += (np.abs(patterns[start:start + 4096] @ shares) >= threshold).sum(axis=0)
        return hits / 2 ** n_units
    hits = np.zeros(shares.shape[1])
    block = max(1, min(resamples, _CHUNK_CELLS // n_units))
    done = 0
    while done < resamples:
        b = min(block, resamples - done)
        signs = rng.integers(0, 2, size=(b, n_units)) * 2.0 - 1.0
        hits += (np.abs(signs @ shares) >= threshold).sum(axis=0)
        done += b
    return (1 + hits) / (1 + resamples)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not in the family)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if len(valid) == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def detectable_effect(se, n_units: int, alpha: float = 0.05, power: float = 0.8):
    """The minimum detectable effect of a two-sided test at ``alpha`` with the given ``power``,
    for an estimate with standard error ``se`` on ``n_units`` clusters (t with U - 1 df)."""
    df = max(n_units - 1, 1)
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * np.asarray(se)
