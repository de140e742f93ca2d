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
        failed = judge_failures(scores)
        if failed:
            notes.append(f"{failed} judge answers missing (raw answers in judge_answers.jsonl)")
        out[info.run] = notes
    return out


#: metric ids whose missing values are judge answers that did not parse (docs/judge.md): cp/<judge>, pf/<judge>
JUDGE_ID = r"^(cp|pf)/[^/]+$"


def judge_failures(scores) -> int:
    """How many judge values of these score rows are missing (each a recorded failure)."""
    if not len(scores):
        return 0
    judged = scores["metric"].astype(str).str.match(JUDGE_ID)
    return int((judged & scores["value"].isna()).sum())


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)



# ---- uncertainty (bench/stats, docs/statistics.md) -------------------------------------------
def suite_summary(df, runs, suite: str, settings=None, versus: str | None = None):
    """One suite's share of a report, as the markdown and the HTML leaderboards both need it: its
    score rows, its runs, their warnings, the comparison run (``versus`` if it is one of the
    suite's runs, else None) and the intervals (:func:`intervals`)."""
    mine = df[df["suite"] == suite]
    suite_runs = runs[runs["suite"] == suite]
    versus = versus if versus in set(suite_runs["run"]) else None
    return mine, suite_runs, run_warnings(mine, suite_runs), versus, intervals(mine, settings, versus)


def intervals(df, settings=None, versus: str | None = None) -> "pd.DataFrame":
    """Per (run, metric) of the scores: the protocol's mean with its cluster-bootstrap interval
    (se, ci_low, ci_high over ``settings.resample`` units), and with ``versus`` (a run label) the
    paired comparison of every other run of its suite against it (delta, delta_ci_low,
    delta_ci_high, p, p_holm, significant, mde, paired, only_in_run, only_in_versus; Holm over
    the suite's metrics and runs). Each suite uses its own protocol's mean. A cell that cannot
    have an interval (a single subject) gets None and a ``note``."""
    import dataclasses

    import pandas as pd

    from bench.stats.analysis import Settings, analyse
    from bench.stats.table import from_scores

    settings = settings or Settings()
    columns = [c for c in ("run", "suite", "subject", "prompt_index", "seed", "key", "metric", "value") if c in df]
    cache_key = (int(pd.util.hash_pandas_object(df[columns], index=False).sum()), len(df), settings, versus)
    if cache_key in _INTERVALS:                 # the markdown and the HTML report ask for the same numbers
        return _INTERVALS[cache_key].copy()
    rows = []
    suites = df["suite"].unique() if "suite" in df.columns else [None]
    for suite in suites:
        mine = df if suite is None else df[df["suite"] == suite]
        table = from_scores(mine)
        if not len(table):
            continue
        own = dataclasses.replace(settings, aggregate=suite_aggregate(suite) if suite else settings.aggregate)
        against = versus if versus is not None and versus in set(table["run"].unique()) else None
        rows += [{**r, "suite": suite} for r in analyse(table, own, versus=against, strict=False)]
    out = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run", "metric", "mean", "ci_low", "ci_high"])
    if len(_INTERVALS) >= 16:
        _INTERVALS.clear()
    _INTERVALS[cache_key] = out
    return out.copy()


_INTERVALS: dict = {}


def interval_text(settings=None, versus: str | None = None) -> str:
    """What the bracketed intervals (and the comparison marks) are, for a report's header."""
    from bench.stats.analysis import Settings

    s = settings or Settings()
    text = (f"[low, high]: {100 * (1 - s.alpha):g}% interval of the mean from a cluster bootstrap over "
            f"{s.resample}s ({s.resamples} resamples, expanded percentile joined with the t interval, bootstrap seed "
            f"{s.seed}; "
            "docs/statistics.md)")
    if versus:
        text += (f"; ▲/▼: significantly higher/lower than `{versus}` on the keys both hold (paired sign-flip test "
                 f"over {s.resample}s, Holm-adjusted p < {s.alpha:g})")
    return text


def resolve_versus(runs, versus: str | None) -> str | None:
    """The run label that ``--versus`` names: a run label, a run directory, or a method name or
    label held by exactly one run."""
    from pathlib import Path

    if versus is None:
        return None
    if versus in set(runs["run"]):
        return versus
    given = Path(versus).expanduser()
    for info in runs.itertuples(index=False):
        if given.exists() and Path(info.run_dir).resolve() == given.resolve():
            return info.run
    for column in ("method", "label"):
        hits = runs[runs[column] == versus]
        if len(hits) == 1:
            return str(hits["run"].iloc[0])
        if len(hits) > 1:
            raise BenchError(f"--versus {versus!r} names {len(hits)} runs ({', '.join(hits['run'])}): give one run label")
    raise BenchError(f"--versus {versus!r} is none of the runs (runs: {', '.join(runs['run'])}; methods: "
                     f"{', '.join(sorted(set(runs['method'])))})")
