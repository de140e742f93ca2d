"""Human means and Krippendorff's alpha, through the ``krippendorff`` package (the implementation
ImagenHub's ``humaneval.py`` and DreamBench++'s ``krippendorff_analysis.py`` call).

- Human mean per method and aspect: raters averaged per item first (a missing rating is left
  out of its item's mean), then the mean over items; interval: the harness's cluster bootstrap
  (:mod:`bench.stats.bootstrap`) over the resampling unit.
- Inter-rater alpha per method and aspect: the raters x items reliability data (NaN where a
  rating is missing) at the study's level of measurement, with a bootstrap interval over the
  resampling unit (the items of a drawn unit enter as often as it is drawn). The point value is
  ``krippendorff.alpha``; the resamples are computed from the package's own coincidence and
  distance functions (:func:`alpha_replicates`, equal to ``krippendorff.alpha`` on each expanded
  resample, tested), which avoids rebuilding every item's coincidences per resample.
- Metric alpha as DreamBench++ computes the judge's: for each rater (group) the alpha of the two
  rows (that rater, the metric) over their items, then the mean over raters; level interval.
  Metric values with many distinct values are rounded to 1/40 of the human scale first (the
  package's coincidence matrices grow with the number of distinct values); a metric on the
  human grid (a judge) is unchanged.
- Both alphas' intervals are bias-corrected (:func:`bench.agree.resample.ci`): the plain
  percentile interval of alpha undercovers with few clustered units (about 92% at 15 subjects).
"""

from __future__ import annotations

import warnings

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


def _package_parts():
    """The package's own coincidence, random-coincidence and distance functions (None if a later
    version renames them: then every replicate calls ``krippendorff.alpha``)."""
    try:
        from krippendorff import krippendorff as kp

        return kp._coincidences, kp._random_coincidences, kp._distances, kp._distance_metric
    except (ImportError, AttributeError):
        return None


def alpha_replicates(data: np.ndarray, level: str, weights: np.ndarray, domain=None) -> np.ndarray:
    """Alpha of raters x items ``data`` on each resample (``weights``: resamples x items, how often
    each item is drawn): exactly ``krippendorff.alpha`` on the expanded resample. A resample's
    coincidence matrix is the count-weighted sum of its items' matrices, so the package's
    ``_coincidences`` runs once per distinct item pattern, then its distance and
    random-coincidence functions and alpha's last line per resample."""
    from scipy import sparse

    finite = data[np.isfinite(data)]
    domain = np.unique(finite) if domain is None else np.asarray(domain)
    parts = _package_parts()
    if parts is None or len(domain) < 2 or len(domain) > 256:
        return np.array([kd_alpha(data[:, expand(w)], level, domain) for w in weights])
    coincidences, random_coincidences, distances, distance_metric = parts
    counts = np.stack([(data == v).sum(axis=0) for v in domain], axis=1).astype(np.int64)      # items x V
    patterns, inverse = np.unique(counts, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    n_values = len(domain)
    per_pattern = sparse.csr_matrix(np.stack([coincidences(p[None]).ravel() for p in patterns]))   # K x V*V
    onehot = sparse.csr_matrix((np.ones(len(inverse)), (inverse, np.arange(len(inverse)))),
                               shape=(len(patterns), len(inverse)))                            # K x items
    drawn = onehot @ weights.T                                                                 # K x B
    o_all = np.asarray(per_pattern.T @ drawn).T.reshape(len(weights), n_values, n_values)
    metric = distance_metric(level)
    out = np.full(len(weights), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for b, o in enumerate(o_all):
            n_v = o.sum(axis=0)
            if n_v.sum() <= 1 or np.count_nonzero(n_v) < 2:
                continue
            d = distances(domain, metric, n_v)
            denominator = (random_coincidences(n_v) * d).sum()
            if denominator > 0:
                out[b] = 1 - (o * d).sum() / denominator
    return out


def boot_alpha(data: np.ndarray, level: str, unit_codes: np.ndarray, n_units: int, boot: Boot) -> np.ndarray:
    """Alpha on each bootstrap resample of the columns (items) of ``data`` by unit."""
    return alpha_replicates(data, level, item_weights(unit_codes, n_units, boot))


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
    out = with_ci("alpha", est, reps, n_units, boot, unit, bias_correct=True)
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
    per_rater = [kd_alpha(np.stack([row, metric]), "interval") for row in human]
    finite = [v for v in per_rater if np.isfinite(v)]
    est = float(np.mean(finite)) if finite else float("nan")
    reps = np.array([])
    if np.isfinite(est):
        weights = item_weights(unit_codes, n_units, boot)
        each = np.stack([alpha_replicates(np.stack([row, metric]), "interval", weights) for row in human])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reps = np.nanmean(each, axis=0)
    out = with_ci("alpha", est, reps, n_units, boot, unit, bias_correct=True)
    out["alpha_per_rater"] = [None if not np.isfinite(v) else float(v) for v in per_rater]
    return out
