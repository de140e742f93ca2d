"""Metric-human agreement by correlation, with bootstrap intervals.

- Item level: Pearson, Spearman and Kendall's tau-b (scipy.stats) between a metric and the
  raters' mean per item. The bootstrap resamples units (subjects, else items); on a resample
  Pearson and Spearman are computed from the draw counts as weights (exactly the statistic of
  the resample with its repeated items, ties given mid-ranks), Kendall's tau-b by scipy on the
  expanded resample.
- System level: Kendall's tau between the methods' metric means and human means over the items
  both hold, and the share of resamples in which the metric's top method is the humans' top.
- Paired: the difference in Pearson and Spearman correlation of two metrics on the items both
  score, on the same resamples.
"""

from __future__ import annotations

import numpy as np

from bench.agree.resample import Boot, expand, item_weights, with_ci

_BLOCK = 200            # resamples handled at once in the weighted statistics


def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of each row's weighted sample; x and y (n,) or (B, n), w (B, n)."""
    def dot(a, b):                    # row-wise sums of a * b, a matrix product where b is a vector
        return a @ b if b.ndim == 1 else np.einsum("bn,bn->b", a, b)

    x = x - x.mean(axis=-1, keepdims=True)           # centred first: the sums below stay well conditioned
    y = y - y.mean(axis=-1, keepdims=True)
    total = w.sum(axis=1)
    mx, my = dot(w, x) / total, dot(w, y) / total
    wx = w * x
    sxy = dot(wx, y) / total - mx * my
    sxx = dot(wx, x) / total - mx * mx
    syy = dot(w * y, y) / total - my * my
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    return np.clip(r, -1.0, 1.0)


def weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of each item in each row's weighted sample (an item drawn k times counts k
    times): (B, n)."""
    values, inverse = np.unique(x, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    group = np.add.reduceat(w[:, order], starts, axis=1)             # (B, distinct values)
    below = np.cumsum(group, axis=1) - group
    return (below + (group + 1) / 2)[:, inverse]


MAX_KENDALL_GROUPS = 40     # distinct values of the coarser variable up to which tau-b is vectorised


def _groups(values: np.ndarray) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(values, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    return inverse, int(inverse.max()) + 1


def _tie_pairs(codes: np.ndarray, n_groups: int, w: np.ndarray) -> np.ndarray:
    """Pairs of draws tied on a variable, per resample: sum over its values of t (t - 1) / 2."""
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    t = np.add.reduceat(w[:, order], starts, axis=1)
    return (t * (t - 1)).sum(axis=1) / 2


def weighted_kendall(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row's weighted sample (an item drawn k times counts k times, its
    copies tied with each other): (B,). Vectorised over the distinct values of the coarser
    variable; None where it has more than MAX_KENDALL_GROUPS of them."""
    xc, nx = _groups(x)
    yc, ny = _groups(y)
    if min(nx, ny) > MAX_KENDALL_GROUPS:
        return None
    if ny > nx:
        xc, nx, yc, ny = yc, ny, xc, nx
    order = np.argsort(xc, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(xc[order]) != 0])
    total = np.zeros(len(w))
    for h in range(ny):
        in_h = (yc == h)
        per_value = np.add.reduceat((w * in_h)[:, order], starts, axis=1)          # (B, distinct x)
        cum = np.cumsum(per_value, axis=1)
        below, above = cum - per_value, cum[:, -1:] - cum
        diff = (below - above)[:, xc]                                            # sum_j in h w_j sign(x_i - x_j)
        sign = np.sign(yc - h)                                                   # sign(y_i - y_h)
        total += (w * sign * diff).sum(axis=1)
    n = w.sum(axis=1)
    n0 = n * (n - 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / 2) / np.sqrt((n0 - _tie_pairs(xc, nx, w)) * (n0 - _tie_pairs(yc, ny, w)))


def _kendall_reps(x, y, weights) -> np.ndarray:
    from scipy import stats

    out = []
    for start in range(0, len(weights), _BLOCK):
        block = weights[start:start + _BLOCK]
        fast = weighted_kendall(x, y, block)
        if fast is None:
            with np.errstate(invalid="ignore", divide="ignore"):
                fast = np.array([stats.kendalltau(x[i], y[i], variant="b").statistic for i in map(expand, block)])
        out.append(fast)
    return np.concatenate(out)


def _pearson_spearman_reps(x, y, weights):
    pear, spear = [], []
    for start in range(0, len(weights), _BLOCK):
        w = weights[start:start + _BLOCK]
        pear.append(weighted_pearson(x, y, w))
        spear.append(weighted_pearson(weighted_ranks(x, w), weighted_ranks(y, w), w))
    return np.concatenate(pear), np.concatenate(spear)


def _point(x, y) -> tuple[float, float, float]:
    from scipy import stats

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan")
    return (float(stats.pearsonr(x, y).statistic), float(stats.spearmanr(x, y).statistic),
            float(stats.kendalltau(x, y, variant="b").statistic))


def item_level(metric: np.ndarray, human: np.ndarray, unit_codes: np.ndarray, n_units: int, boot: Boot,
               unit: str) -> dict:
    """n, pearson, spearman, kendall (tau-b), each with its interval."""
    pearson, spearman, kendall = _point(metric, human)
    out = {"n_items": int(len(metric)), "n_units": int(n_units)}
    if not np.isfinite(pearson):
        out |= {k: None for k in ("pearson", "spearman", "kendall")}
        out["note"] = "too few items, or a constant metric or human mean, for a correlation"
        return out
    weights = item_weights(unit_codes, n_units, boot)
    rep_p, rep_s = _pearson_spearman_reps(metric, human, weights)
    rep_k = _kendall_reps(metric, human, weights)
    out |= with_ci("pearson", pearson, rep_p, n_units, boot, unit)
    out |= with_ci("spearman", spearman, rep_s, n_units, boot, unit)
    out |= with_ci("kendall", kendall, rep_k, n_units, boot, unit)
    return out


def method_means(values: np.ndarray, method_codes: np.ndarray, n_methods: int, weights: np.ndarray) -> np.ndarray:
    """(B, methods) weighted means per method."""
    onehot = np.zeros((len(values), n_methods))
    onehot[np.arange(len(values)), method_codes] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((weights * values) @ onehot) / (weights @ onehot)


def system_level(metric, human, method_codes, methods: list[str], unit_codes, n_units: int, boot: Boot,
                 unit: str) -> dict:
    """Kendall's tau between method means, the metric's and the humans' top methods, and the
    bootstrap probability that they are the same."""
    from scipy import stats

    k = len(methods)
    ones = np.ones((1, len(metric)))
    m_means, h_means = method_means(metric, method_codes, k, ones)[0], method_means(human, method_codes, k, ones)[0]
    out = {"methods": k, "metric_means": dict(zip(methods, map(float, m_means))),
           "human_means": dict(zip(methods, map(float, h_means))),
           "top_metric": methods[int(np.argmax(m_means))], "top_human": methods[int(np.argmax(h_means))]}
    if k < 2:
        return out | {"kendall": None, "p_same_top": None, "note": "one method only: no ranking to compare"}
    tau = float(stats.kendalltau(m_means, h_means).statistic) if np.ptp(m_means) and np.ptp(h_means) else float("nan")
    weights = item_weights(unit_codes, n_units, boot)
    rm, rh = method_means(metric, method_codes, k, weights), method_means(human, method_codes, k, weights)
    valid = np.isfinite(rm).all(axis=1) & np.isfinite(rh).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.array([stats.kendalltau(a, b).statistic if ok else np.nan for a, b, ok in zip(rm, rh, valid)])
    out |= with_ci("kendall", tau, reps, n_units, boot, unit)
    same = np.argmax(rm[valid], axis=1) == np.argmax(rh[valid], axis=1)
    out["p_same_top"] = float(same.mean()) if valid.any() else None
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, human: np.ndarray, unit_codes, n_units: int, boot: Boot,
                      unit: str) -> dict:
    """corr(a, human) - corr(b, human) for Pearson and Spearman, with intervals on shared resamples."""
    pa, sa, _ = _point(a, human)
    pb, sb, _ = _point(b, human)
    out = {"n_items": int(len(a)), "n_units": int(n_units)}
    if not (np.isfinite(pa) and np.isfinite(pb)):
        return out | {"pearson_diff": None, "spearman_diff": None,
                      "note": "too few items, or a constant score, for a correlation"}
    weights = item_weights(unit_codes, n_units, boot)
    rpa, rsa = _pearson_spearman_reps(a, human, weights)
    rpb, rsb = _pearson_spearman_reps(b, human, weights)
    out |= with_ci("pearson_diff", pa - pb, rpa - rpb, n_units, boot, unit)
    out |= with_ci("spearman_diff", sa - sb, rsa - rsb, n_units, boot, unit)
    return out
