"""Human means and Krippendorff's alpha, through the ``krippendorff`` package (the implementation
ImagenHub's ``humaneval.py`` and DreamBench++'s ``krippendorff_analysis.py`` call).

- Human mean per method and aspect: raters averaged per item first (a missing rating is left
  out of its item's mean), then the mean over items; interval: the harness's cluster bootstrap
  (:mod:`bench.stats.bootstrap`) over the resampling unit.
- Inter-rater alpha per method and aspect: the raters x items reliability data (NaN where a
  rating is missing) at the study's level of measurement, with a bootstrap interval over the
  resampling unit (the items of a drawn unit enter as often as it is drawn).
- Metric alpha as DreamBench++ computes the judge's: for each rater (group) the alpha of the two
  rows (that rater, the metric) over their items, then the mean over raters; level interval.
  Metric values with many distinct values are rounded to 1/40 of the human scale first (the
  package's coincidence matrices grow with the number of distinct values); a metric on the
  human grid (a judge) is unchanged.
"""

from __future__ import annotations

import numpy as np

from bench.agree.resample import Boot, codes, expand, item_weights, with_ci
from bench.stats.bootstrap import cluster, estimate, replicates

METRIC_GRID = 40            # steps of the human scale a continuous metric is rounded to for alpha
MAX_DISTINCT = 64           # distinct metric values kept as they are


def kd_alpha(data: np.ndarray, level: str, domain=None) -> float:
    """The package's alpha of raters x items data, NaN where it is undefined (one value only,
    no pairable item)."""
    import krippendorff

    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(krippendorff.alpha(reliability_data=data, value_domain=domain, level_of_measurement=level))
    except (ValueError, ZeroDivisionError):
        return float("nan")


def boot_alpha(data: np.ndarray, level: str, unit_codes: np.ndarray, n_units: int, boot: Boot) -> np.ndarray:
    """Alpha on each bootstrap resample of the columns (items) of ``data`` by unit."""
    finite = data[np.isfinite(data)]
    domain = np.unique(finite) if len(finite) else None
    weights = item_weights(unit_codes, n_units, boot)
    return np.array([kd_alpha(data[:, expand(w)], level, domain) for w in weights])


def human_means(frame, unit_col, boot: Boot, unit: str) -> dict:
    """Mean of the raters' per-item means, its interval, and each rater's own mean."""
    items = frame.groupby("item", sort=False).agg(value=("value", "mean"), unit=(unit_col, "first"))
    items = items[items["value"].notna()]
    out = {"n_items": int(len(items)), "n_units": int(items["unit"].nunique())}
    if not len(items):
        return out | {"mean": None, "mean_ci_low": None, "mean_ci_high": None}
    unit_codes, n_units = codes(items["unit"])
    clusters = cluster(unit_codes, np.zeros(len(items), dtype=np.int64), items["value"].to_numpy(), "images")
    est = float(estimate(clusters)[0])
    reps = replicates(clusters, np.random.default_rng(boot.seed), boot.resamples)[:, 0] if n_units >= 2 else np.array([])
    out |= with_ci("mean", est, reps, n_units, boot, unit)
    out["rater_means"] = {str(r): float(v) for r, v in frame.groupby("rater", sort=False)["value"].mean().items()
                          if np.isfinite(v)}
    return out


def reliability_data(frame, raters) -> tuple[np.ndarray, list]:
    """raters x items matrix (NaN where missing), the item order, and each item's unit label."""
    table = frame.pivot(index="rater", columns="item", values="value").reindex(raters)
    return table.to_numpy(dtype=np.float64), list(table.columns)


def inter_rater(frame, raters, unit_of_item: dict, level: str, boot: Boot, unit: str) -> dict:
    data, items = reliability_data(frame, raters)
    unit_codes, n_units = codes([unit_of_item[i] for i in items])
    est = kd_alpha(data, level)
    reps = boot_alpha(data, level, unit_codes, n_units, boot) if np.isfinite(est) else np.array([])
    out = with_ci("alpha", est, reps, n_units, boot, unit)
    if not np.isfinite(est):
        out["alpha_note"] = "alpha undefined (one value only, or no item rated twice)"
    return out


def to_grid(values: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Metric values rounded to 1/METRIC_GRID of the human scale when they hold many distinct values."""
    finite = values[np.isfinite(values)]
    if np.unique(finite).size <= MAX_DISTINCT:
        return values
    step = (scale[1] - scale[0]) / METRIC_GRID or 1.0
    return np.round((values - scale[0]) / step) * step + scale[0]


def metric_alpha(human: np.ndarray, metric: np.ndarray, unit_codes: np.ndarray, n_units: int, boot: Boot,
                 unit: str) -> dict:
    """``human``: raters x items (NaN where missing), ``metric``: items (on the human scale).
    The mean over raters of alpha(rater, metric), level interval, with its interval."""
    def mean_alpha(cols):
        values = [kd_alpha(np.stack([row[cols], metric[cols]]), "interval") for row in human]
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    all_cols = np.arange(human.shape[1])
    est = mean_alpha(all_cols)
    per_rater = [kd_alpha(np.stack([row, metric]), "interval") for row in human]
    reps = (np.array([mean_alpha(expand(w)) for w in item_weights(unit_codes, n_units, boot)])
            if np.isfinite(est) else np.array([]))
    out = with_ci("alpha", est, reps, n_units, boot, unit)
    out["alpha_per_rater"] = [None if not np.isfinite(v) else float(v) for v in per_rater]
    return out
