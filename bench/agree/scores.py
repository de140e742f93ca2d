"""Metric scores to set beside the ratings, and the join.

A source is a scored run directory (its method is the rated method) or a long score table in
``bench stats``' format (columns run, subject, prompt, seed, image, metric, value; its ``run``
column names the rated method). Images of one item (seeds, image indices) are averaged first.

The join matches method names normalised as DreamBench++ does (lower case, spaces and hyphens
to ``_``) and, inside a method, tries in turn: the rating's (subject, prompt), prompt ids compared
as numbers where they are (``007`` is ``7``); the item key ``<subject>-<prompt>`` (DreamBench++'s
``<collection id>-<prompt index>``); the subject alone as the item key (ImagenHub's ``uid``).
Scores are paired with ratings by these keys, never by position. A score key that no rating has
is an error (``strict``), or left out and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench import BenchError
from bench.agree.ratings import SCORE_COLUMNS, Ratings, normalise_method

if TYPE_CHECKING:
    import pandas as pd


def read_score_source(path) -> "pd.DataFrame":
    """A bench-stats score table (run, subject, prompt, seed, image, metric, value) from a run
    directory or a table file."""
    path = Path(path)
    if path.is_dir():
        from bench.report.load import load_runs, load_scores
        from bench.stats.table import from_scores

        runs = load_runs([path])
        df = load_scores([path])
        return from_scores(df.assign(run=str(runs["method"].iloc[0])))
    if not path.is_file():
        raise BenchError(f"--scores {path}: neither a run directory nor a score table")
    from bench.stats.table import read_table

    return read_table(path)


def item_means(table: "pd.DataFrame") -> "pd.DataFrame":
    """One row per (run, subject, prompt, metric): the mean over its seeds and images."""
    return (table.groupby(["run", "subject", "prompt", "metric"], sort=False, as_index=False)["value"].mean())


def _prompt(text: str) -> str:
    """A prompt id compared as a number where it is one (a run's ``007`` is a table's ``7``)."""
    text = str(text).strip()
    return str(int(text)) if text.isdigit() else text


def join(table: "pd.DataFrame", ratings: Ratings, source: str, strict: bool = True) -> tuple["pd.DataFrame", int]:
    """(scores keyed like the ratings with the columns of SCORE_COLUMNS, keys left out)."""
    import pandas as pd

    frame = ratings.frame
    names = {normalise_method(m): m for m in ratings.methods}
    by_pair, by_item = {}, {}
    keys = frame[["method", "subject", "prompt", "item"]].drop_duplicates()
    for method, subject, prompt, item in keys.itertuples(index=False):
        nm = normalise_method(method)
        if subject and prompt:
            by_pair[(nm, subject, _prompt(prompt))] = (subject, prompt, item)
        by_item[(nm, item)] = (subject, prompt, item)
    rows, missing = [], []
    for run, subject, prompt, metric, value in item_means(table).itertuples(index=False):
        nm = normalise_method(run)
        hit = (by_pair.get((nm, subject, _prompt(prompt))) or by_item.get((nm, f"{subject}-{prompt}"))
               or by_item.get((nm, subject)))
        if hit is None:
            missing.append((run, subject, prompt, nm in names))
            continue
        rows.append((metric, "", names[nm], *hit, value))
    if missing and strict:
        run, subject, prompt, known = missing[0]
        if not known:
            raise BenchError(f"--scores {source}: method {run} is not among the rated methods "
                             f"({', '.join(ratings.methods[:8])}{', ...' if len(names) > 8 else ''})")
        raise BenchError(f"--scores {source}: {len(missing)} score key(s) that no rating has, first: method {run}, "
                         f"subject {subject}, prompt {prompt} (keys are matched by (subject, prompt), "
                         f"<subject>-<prompt> or the subject as the item; docs/agreement.md)")
    out = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    out["value"] = out["value"].astype(float)
    return out, len(missing)


def judge_scores(ratings: Ratings) -> "pd.DataFrame | None":
    """The release's judge ratings keyed like the human ratings (keys no human rated left out:
    they pair with nothing)."""
    if ratings.judges is None:
        return None
    j = ratings.judges
    names = {normalise_method(m): m for m in ratings.methods}
    keys = set(zip(ratings.frame["method"].map(normalise_method), ratings.frame["item"]))
    keep = [(normalise_method(m), i) in keys for m, i in zip(j["method"], j["item"])]
    out = j[keep].copy()
    out["method"] = out["method"].map(lambda m: names[normalise_method(m)])
    return out


def collect(sources, ratings: Ratings, strict: bool = True) -> tuple["pd.DataFrame", list[str]]:
    """Every metric's scores joined to the ratings (the release's judges first), and notes."""
    import pandas as pd

    frames, notes = [], []
    judges = judge_scores(ratings)
    if judges is not None and len(judges):
        frames.append(judges)
    for source in sources or ():
        table = read_score_source(source)
        joined, left = join(table, ratings, str(source), strict=strict)
        if left:
            notes.append(f"{source}: {left} item(s) of unrated methods or keys left out")
        frames.append(joined)
    if not frames:
        return pd.DataFrame(columns=list(SCORE_COLUMNS)), notes
    scores = pd.concat(frames, ignore_index=True)
    scores = scores[scores["value"].notna()].reset_index(drop=True)
    dup = scores.duplicated(["metric", "method", "item"])
    if dup.any():
        row = scores[dup].iloc[0]
        raise BenchError(f"--scores: metric {row['metric']} scores item {row['item']} of {row['method']} in two "
                         f"sources; give each metric once")
    return scores, notes
