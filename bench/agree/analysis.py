"""Every figure of one `bench agree` call, as one JSON-ready dict (field names: docs/agreement.md)."""

from __future__ import annotations

import sys

import numpy as np

from bench import BenchError
from bench.agree.correlation import item_level, paired_difference, system_level
from bench.agree.ratings import Ratings
from bench.agree.reliability import METRIC_GRID, MAX_DISTINCT, human_means, inter_rater, metric_alpha, to_grid
from bench.agree.resample import Boot, codes


def _progress(total: int, what: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="table", disable=not enabled, file=sys.stderr, leave=False)


def human_table(ratings: Ratings, boot: Boot, progress: bool = False) -> list[dict]:
    df, unit, raters = ratings.frame, ratings.unit, ratings.raters
    unit_col = "subject" if unit == "subject" else "item"
    rows = []
    with _progress(len(ratings.methods) * len(ratings.aspects), "inter-rater", progress) as bar:
        for method in ratings.methods:
            for aspect in ratings.aspects:
                sub = df[(df["method"] == method) & (df["aspect"] == aspect)]
                unit_of_item = dict(zip(sub["item"], sub[unit_col]))
                row = {"method": method, "aspect": aspect, "level": ratings.level}
                row |= human_means(sub, unit_col, boot, unit)
                row |= inter_rater(sub, raters, unit_of_item, ratings.level, boot, unit)
                rows.append(row)
                bar.update()
    return rows


def rescaled(values: np.ndarray, scale: tuple[float, float], how: str) -> np.ndarray:
    if how == "minmax" and np.ptp(values) > 0:
        return scale[0] + (values - values.min()) / np.ptp(values) * (scale[1] - scale[0])
    return values


def metric_aspects(scores, ratings: Ratings) -> list[tuple[str, str]]:
    pairs = []
    for metric, aspect in scores[["metric", "aspect"]].drop_duplicates().itertuples(index=False):
        pairs += [(metric, a) for a in (ratings.aspects if not aspect else [aspect]) if a in ratings.aspects]
    return list(dict.fromkeys(pairs))


def joined(scores, ratings: Ratings, metric: str, aspect: str):
    """Items of one (metric, aspect): method, item, unit, metric value, human mean, and the
    raters x items matrix."""
    df = ratings.frame[ratings.frame["aspect"] == aspect]
    wide = df.pivot_table(index=["method", "item"], columns="rater", values="value", aggfunc="first",
                          dropna=False).reindex(columns=ratings.raters)
    human = wide.mean(axis=1, skipna=True)
    mine = scores[scores["metric"] == metric].set_index(["method", "item"])["value"]
    keys = mine.index[mine.index.isin(human.index)]
    keys = keys[human.reindex(keys).notna().to_numpy()]
    if ratings.unit == "subject":
        units = df.drop_duplicates(["method", "item"]).set_index(["method", "item"])["subject"].reindex(keys)
    else:
        units = keys.get_level_values(1)
    return {"method": keys.get_level_values(0).to_numpy(dtype=object), "item": list(keys.get_level_values(1)),
            "unit": np.asarray(units, dtype=object),
            # rounded to 12 decimals: a mean computed in another summation order ties where it should
            "metric": np.round(mine.reindex(keys).to_numpy(dtype=np.float64), 12),
            "human": np.round(human.reindex(keys).to_numpy(dtype=np.float64), 12),
            "raters": wide.reindex(keys).to_numpy(dtype=np.float64).T.reshape(len(ratings.raters), len(keys))}


def metric_tables(scores, ratings: Ratings, boot: Boot, rescale: str = "none", progress: bool = False):
    unit = ratings.unit
    rows, system = [], []
    pairs = metric_aspects(scores, ratings)
    with _progress(len(pairs) * (len(ratings.methods) + 2), "metric-human", progress) as bar:
        for metric, aspect in pairs:
            j = joined(scores, ratings, metric, aspect)
            on_scale = (to_grid(rescaled(j["metric"], ratings.scale, rescale), ratings.scale)
                        if len(j["metric"]) else j["metric"])
            for method in ["all"] + ratings.methods:
                keep = np.ones(len(j["metric"]), bool) if method == "all" else j["method"] == method
                if keep.sum() == 0:
                    bar.update()
                    continue
                unit_codes, n_units = codes(j["unit"][keep])
                row = {"metric": metric, "aspect": aspect, "method": method}
                row |= item_level(j["metric"][keep], j["human"][keep], unit_codes, n_units, boot, unit)
                row |= metric_alpha(j["raters"][:, keep], on_scale[keep], unit_codes, n_units, boot, unit)
                row["raters"] = ratings.raters
                rows.append(row)
                bar.update()
            if len(j["metric"]):
                present = [m for m in ratings.methods if (j["method"] == m).any()]
                method_codes = np.array([present.index(m) for m in j["method"]])
                unit_codes, n_units = codes(j["unit"])
                system.append({"metric": metric, "aspect": aspect} | system_level(
                    j["metric"], j["human"], method_codes, present, unit_codes, n_units, boot, unit))
            bar.update()
    return rows, system


def comparisons(scores, ratings: Ratings, metric_rows: list[dict], boot: Boot, compare=None) -> list[dict]:
    """Paired differences of agreement: the pairs asked for, else on each aspect the metric with
    the highest Spearman rho (all methods) against every other."""
    out = []
    by_aspect: dict[str, list[str]] = {}
    for metric, aspect in metric_aspects(scores, ratings):
        by_aspect.setdefault(aspect, []).append(metric)
    for aspect, metrics in by_aspect.items():
        if compare:
            pairs = [(a, b) for a, b in compare if a in metrics and b in metrics]
        else:
            rho = {r["metric"]: r.get("spearman") for r in metric_rows
                   if r["aspect"] == aspect and r["method"] == "all" and r.get("spearman") is not None}
            ranked = sorted(rho, key=lambda m: -rho[m])
            pairs = [(ranked[0], other) for other in ranked[1:]] if ranked else []
        for a, b in pairs:
            ja, jb = joined(scores, ratings, a, aspect), joined(scores, ratings, b, aspect)
            kb = {(m, i): v for m, i, v in zip(jb["method"], jb["item"], jb["metric"])}
            keep = [n for n, key in enumerate(zip(ja["method"], ja["item"])) if key in kb]
            if not keep:
                continue
            xb = np.array([kb[(ja["method"][n], ja["item"][n])] for n in keep])
            unit_codes, n_units = codes(ja["unit"][keep])
            out.append({"aspect": aspect, "metric_a": a, "metric_b": b} | paired_difference(
                ja["metric"][keep], xb, ja["human"][keep], unit_codes, n_units, boot, ratings.unit))
    return out


def check_compare(compare, scores) -> None:
    known = set(scores["metric"]) if len(scores) else set()
    for pair in compare or ():
        for name in pair:
            if name not in known:
                raise BenchError(f"--compare {','.join(pair)}: no metric {name} in the scores "
                                 f"({', '.join(sorted(known)[:6]) or 'none given'})")


def check_size(ratings: Ratings, scores) -> None:
    """Refuse, before any statistic, an alpha whose coincidence tensor (items x values x values)
    exceeds bench.limits.MAX_ALPHA_CELLS: it would take minutes and gigabytes."""
    from bench.limits import MAX_ALPHA_CELLS

    present = ratings.frame[ratings.frame["value"].notna()]
    for aspect, sub in present.groupby("aspect", sort=False):
        human_values = sub["value"].nunique()
        tasks = [(f"method {m}", g["item"].nunique(), human_values) for m, g in sub.groupby("method", sort=False)]
        for metric, values in scores[scores["aspect"].isin(["", aspect])].groupby("metric")["value"]:
            distinct = values.nunique()
            distinct = distinct if distinct <= MAX_DISTINCT else METRIC_GRID + 1        # rounded: to_grid
            tasks.append((f"metric {metric}", len(values), human_values + distinct))
        for what, items, values in tasks:
            if items * values ** 2 > MAX_ALPHA_CELLS:
                raise BenchError(f"{ratings.source}: aspect {aspect}, {what}: {items} items x {values} distinct values "
                                 f"is too large for Krippendorff's alpha (items x values^2 = {items * values ** 2:.2g} "
                                 f"> {MAX_ALPHA_CELLS:.0e}, bench.limits.MAX_ALPHA_CELLS); round the ratings to "
                                 "fewer values or split the study")


def analyse(ratings: Ratings, scores, boot: Boot, rescale: str = "none", compare=None,
            notes=(), progress: bool = False) -> dict:
    check_compare(compare, scores)
    check_size(ratings, scores)
    humans = human_table(ratings, boot, progress)
    metric_rows, system = metric_tables(scores, ratings, boot, rescale, progress) if len(scores) else ([], [])
    paired = comparisons(scores, ratings, metric_rows, boot, compare) if len(scores) else []
    return {
        "ratings": {"source": ratings.source, "format": ratings.format, "level": ratings.level,
                    "scale": list(ratings.scale), "unit": ratings.unit, "raters": ratings.raters,
                    "methods": ratings.methods, "aspects": list(ratings.aspects),
                    "items": int(ratings.frame[["method", "item"]].drop_duplicates().shape[0]),
                    "ratings": int(ratings.frame["value"].notna().sum()),
                    "missing": int(ratings.frame["value"].isna().sum())},
        "settings": {"resamples": boot.resamples, "seed": boot.seed, "alpha": boot.alpha, "rescale": rescale,
                     "interval": "expanded percentile, cluster bootstrap over the unit"},
        "humans": humans, "metrics": metric_rows, "system": system, "comparisons": paired,
        "notes": list(ratings.notes) + list(notes),
    }


def pairs_from(texts) -> list[tuple[str, str]]:
    out = []
    for text in texts or ():
        a, sep, b = str(text).partition(",")
        if not sep or not a.strip() or not b.strip():
            raise BenchError(f"--compare {text}: give two metrics as A,B")
        out.append((a.strip(), b.strip()))
    return out
