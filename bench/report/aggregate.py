"""Aggregation: the protocols' seed and image aggregation, and what makes a run not comparable.

docs/protocols.md section 2, "six runs averaged": per run and seed, the mean over all images;
then the mean and the sample standard deviation (ddof=1) over seeds, with n = the number of
seeds (DreamBench, DreamEdit). FastComposer's protocol takes mean and std over all images
(``Suite.aggregate = "images"``). A NaN score ("could not be computed") is left out of the means.
``run_warnings`` names what makes a run's numbers not comparable as they stand.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench import BenchError

if TYPE_CHECKING:                      # pandas is imported inside the functions (fast --help)
    import pandas as pd


def suite_aggregate(suite: str) -> str:
    """How a suite's protocol aggregates: "seeds" (DreamBench, DreamEdit) or "images" (FastComposer)."""
    try:
        from bench.registry import SUITES
        return getattr(SUITES.get(suite).load(), "aggregate", "seeds")
    except BenchError:
        return "seeds"


def summarize(df, by: str | list[str] | None = None, over: str | None = None) -> "pd.DataFrame":
    """Per (run, metric[, by]) the mean and std (ddof=1) with n = the number of seeds and
    ``images`` = the scored images (NaN scores excluded).

    over="seeds": per seed the mean over images, then mean and std over seeds (DreamBench's six
    runs); over="images": mean and std over all images (FastComposer's protocol). None: each
    suite's own protocol (``Suite.aggregate``), read from the ``suite`` column when present.
    """
    import pandas as pd

    if over is None:
        suites = df["suite"].unique() if "suite" in df.columns else []
        if len(suites) > 1:
            return pd.concat([summarize(df[df["suite"] == s], by) for s in suites], ignore_index=True)
        over = suite_aggregate(suites[0]) if len(suites) else "seeds"
    if over not in ("seeds", "images"):
        raise BenchError(f"summarize: over must be 'seeds' or 'images', not {over!r}")
    extra = [by] if isinstance(by, str) else list(by or [])
    keys = ["run", "metric"] + extra
    valid = df[df["value"].notna()]
    if over == "images":
        return valid.groupby(keys, sort=True).agg(mean=("value", "mean"), std=("value", "std"),
                                                  n=("seed", "nunique"), images=("value", "count")).reset_index()
    per_seed = valid.groupby(keys + ["seed"], sort=True)["value"].agg(["mean", "count"]).reset_index()
    out = per_seed.groupby(keys, sort=True).agg(mean=("mean", "mean"), std=("mean", "std"), n=("mean", "count"),
                                                 images=("count", "sum")).reset_index()
    return out



def aggregation_text(suite: str) -> str:
    if suite_aggregate(suite) == "images":
        return "mean ± std (ddof=1) over all images (the suite's protocol)"
    return "per seed the mean over images, then mean ± std (ddof=1) over seeds"



def run_warnings(df, runs) -> dict[str, list[str]]:
    """Per run, what makes its numbers not comparable as they stand (docs/architecture.md,
    "Reports"): fewer images recorded than its plan holds (interrupted, a shard missing),
    recorded images not scored, or seeds with unequal numbers of scored images (the mean over
    seeds then weighs images unequally)."""
    out: dict[str, list[str]] = {}
    for info in runs.itertuples(index=False):
        notes = []
        scores = df[df["run"] == info.run]
        scored = scores.groupby("seed")["key"].nunique() if len(scores) else None
        if info.expected is not None and not _isnan(info.expected) and info.recorded < int(info.expected):
            notes.append(f"incomplete: {info.recorded} of {int(info.expected)} planned images")
        n_scored = int(scores["key"].nunique()) if len(scores) else 0
        if n_scored < info.recorded:
            notes.append(f"not fully scored: {n_scored} of {info.recorded} images")
        planned = [s for s in (info.seeds or [])]
        missing = [s for s in planned if scored is None or s not in scored.index]
        if scored is not None and len(set(scored.tolist())) > 1:
            counts = ", ".join(f"seed {s}: {n}" for s, n in scored.items())
            notes.append(f"unequal seeds ({counts} images)")
        if missing and len(planned) > 1:
            notes.append(f"seed(s) without images: {', '.join(map(str, missing))}")
        out[info.run] = notes
    return out


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)

