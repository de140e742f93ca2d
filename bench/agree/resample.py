"""Bootstrap draws over resampling units and the intervals built from them.

The draws come from the harness's cluster bootstrap (:func:`bench.stats.bootstrap.resample_weights`:
how often each unit is drawn in a resample of all units with replacement) and every item carries
the count of its unit. The interval is the harness's expanded percentile interval
(:func:`bench.stats.bootstrap.interval`). With the same seed and the same units, two statistics
see the same resamples, which is what a paired comparison needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.stats.bootstrap import interval, resample_weights

#: fewest resampling units an interval is given for; below it the output says why there is none
MIN_UNITS = 5
#: largest share of resamples on which a statistic may be undefined (a constant resample)
MAX_UNDEFINED = 0.05
DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class Boot:
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    alpha: float = 0.05


def codes(units) -> tuple[np.ndarray, int]:
    """Integer codes 0..U-1 of unit labels, and U."""
    _, inverse = np.unique(np.asarray(units, dtype=object).astype(str), return_inverse=True)
    return inverse.astype(np.int64), int(inverse.max()) + 1 if len(inverse) else 0


def item_weights(unit_codes: np.ndarray, n_units: int, boot: Boot) -> np.ndarray:
    """(resamples, items): how often each item is drawn (its unit's count)."""
    rng = np.random.default_rng(boot.seed)
    blocks = [w[:, unit_codes] for w in resample_weights(rng, n_units, boot.resamples)]
    return np.concatenate(blocks, axis=0)


def expand(weights_row: np.ndarray) -> np.ndarray:
    """Item indices of one resample (each item repeated as often as drawn)."""
    return np.repeat(np.arange(len(weights_row)), weights_row.astype(np.int64))


def ci(reps, n_units: int, boot: Boot, unit: str = "unit",
       estimate: float | None = None) -> tuple[float | None, float | None, str | None]:
    """(low, high, None), or (None, None, why there is no interval). With ``estimate`` the interval
    is bias-corrected: shifted by twice the bootstrap bias, ``-2 * (mean(reps) - estimate)``
    (Krippendorff's alpha: its expected disagreement is underestimated when items are clustered,
    and about as much again in a resample with repeated units; benchmarks/agree_calibration.py),
    its upper end at most 1, alpha's largest value."""
    if n_units < MIN_UNITS:
        return None, None, f"too few {unit}s ({n_units}, fewer than {MIN_UNITS}) for an interval"
    reps = np.asarray(reps, dtype=np.float64)
    finite = reps[np.isfinite(reps)]
    if len(finite) < (1 - MAX_UNDEFINED) * len(reps) or len(finite) < 2:
        return None, None, (f"undefined in {len(reps) - len(finite)} of {len(reps)} resamples (too little "
                            f"variation); no interval")
    low, high = interval(finite[:, None], boot.alpha, n_units)
    if estimate is None:
        return float(low[0]), float(high[0]), None
    shift = -2.0 * (float(finite.mean()) - estimate)
    return float(low[0]) + shift, min(float(high[0]) + shift, 1.0), None


def with_ci(prefix: str, estimate, reps, n_units: int, boot: Boot, unit: str, bias_correct: bool = False) -> dict:
    """``{prefix: estimate, prefix_ci_low, prefix_ci_high}`` and a note when there is no interval."""
    low, high, why = (ci(reps, n_units, boot, unit, estimate if bias_correct else None)
                      if estimate is not None and np.isfinite(estimate) else (None, None, None))
    out = {prefix: _num(estimate), f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}
    if why:
        out[f"{prefix}_note"] = why
    return out


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)
