"""The "real photos" reference row of a leaderboard: the identity metrics between a subject's own
photos (written by `bench score` to each run's real_photos.parquet, bench.metrics.real_photos), with
the method rows' aggregation and cluster-bootstrap interval, and a note for every method cell that
lies beyond it (docs/metrics.md, "The real-photo ceiling").

The rows of all runs of a suite are pooled (one row per subject photo and metric id; a photo
scored by several runs keeps its first value), so the row covers every subject any of the runs
scored. Its ``copy`` value is the copy detector's false-positive rate on real photos.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.report.mdtext import md_code

LABEL = "real photos"
#: published values of DreamBooth's "Real Images" row (Ruiz et al., CVPR 2023, Table 1)
PUBLISHED = {"DINO": 0.774, "CLIP-I": 0.885}
SOURCE = "DreamBooth (Ruiz et al., CVPR 2023), Table 1, row \"Real Images\""


def suite_frame(runs, suite: str):
    """The pooled real-photo rows of the suite's runs (with run and suite columns), or None."""
    import pandas as pd

    from bench.metrics.real_photos import read_real_photo_scores

    frames = []
    for info in runs[runs["suite"] == suite].itertuples(index=False):
        df = read_real_photo_scores(Path(info.run_dir))
        if df is not None:
            frames.append(df)
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["key", "metric"], keep="first")
    return df.assign(run=LABEL, suite=suite).reset_index(drop=True)


def suite_stats(runs, suite: str, settings=None):
    """Per metric id of the row: mean, std, n, images (bench.report.aggregate.summarize) and the
    interval (ci_low, ci_high), as one frame with run = "real photos"; None without rows."""
    from bench.report.aggregate import intervals, summarize

    frame = suite_frame(runs, suite)
    if frame is None:
        return None
    summary = summarize(frame, over="images" if _images_protocol(suite) else "seeds")
    stats = intervals(frame, settings)
    if len(stats):
        extra = [c for c in stats.columns if c not in summary.columns and not c.endswith("_keys") and c != "suite"]
        summary = summary.merge(stats[["run", "metric"] + extra], on=["run", "metric"], how="left")
    return summary


def _images_protocol(suite: str) -> bool:
    from bench.report.aggregate import suite_aggregate
    return suite_aggregate(suite) == "images"


def table_row(stats, plan, format_value, dash: str):
    """(display row, numeric values) of the row for a leaderboard's column plan."""
    by_id = stats.set_index("metric") if stats is not None else None
    row = {"": "reference", "Method": LABEL, "Run": dash, "Base model": dash,
           "Weights": dash, "Seeds": dash, "Images": int(stats["images"].max()) if by_id is not None else dash,
           "Check": dash}
    values = {}
    for title, _, ids in plan:
        if by_id is None or not ids or ids[0] not in by_id.index:
            values[title] = (math.nan, math.nan)
            row[title] = dash
            continue
        s = by_id.loc[ids[0]]
        values[title] = (float(s["mean"]), math.nan)
        ci = (s.get("ci_low"), s.get("ci_high")) if "ci_low" in s else None
        row[title] = format_value(float(s["mean"]), None, ci)
    return row, values


def add_row(rows: list, numeric: list, runs, suite: str, plan, settings, format_value) -> None:
    """Append the row (when the suite's runs have real-photo scores) to a leaderboard's rows;
    ``format_value`` is the leaderboard's cell formatter."""
    from bench.report.load import DASH

    stats = suite_stats(runs, suite, settings)
    if stats is None:
        return
    row, values = table_row(stats, plan, format_value, DASH)
    rows.append(row)
    numeric.append({"label": LABEL, "paper": True, **values})


def summary_rows(summary, runs, suite: str, settings=None):
    """The summary CSV's frame with the row's lines added (run = "real photos")."""
    import pandas as pd

    stats = suite_stats(runs, suite, settings)
    if stats is None:
        return summary
    return pd.concat([summary, stats], ignore_index=True)


def beyond_notes(summary, runs, suite: str, settings=None) -> list[str]:
    """One line per method cell of an identity metric beyond the row: above it (below for
    DreamSim, a distance), with whether it is beyond its interval too."""
    stats = suite_stats(runs, suite, settings)
    if stats is None or summary is None or not len(summary):
        return []
    ceiling = stats.set_index("metric")
    notes = []
    for r in summary.to_dict("records"):
        metric = str(r["metric"])
        if r["run"] == LABEL or metric not in ceiling.index or metric.startswith("copy/"):
            continue
        top = ceiling.loc[metric]
        lower_better = metric.startswith("dreamsim")
        beyond = r["mean"] < top["mean"] if lower_better else r["mean"] > top["mean"]
        if not beyond or math.isnan(r["mean"]):
            continue
        edge = top.get("ci_low") if lower_better else top.get("ci_high")
        outside = edge is not None and not math.isnan(edge) and (r["mean"] < edge if lower_better else r["mean"] > edge)
        interval = (f" [{top['ci_low']:.3f}, {top['ci_high']:.3f}]"
                    if not any(math.isnan(float(top.get(c, math.nan))) for c in ("ci_low", "ci_high")) else "")
        notes.append(f"{md_code(r['run'])} {md_code(metric)} = {r['mean']:.3f} {'<' if lower_better else '>'} {top['mean']:.3f}"
                     f"{interval} ({'beyond' if outside else 'within'} the row's interval)")
    return notes


NOTE = ("*real photos*: each identity metric between the subject's own photos (every photo scored as an output "
        "against the metric's references without itself), averaged and bootstrapped like our rows; its `copy` "
        "value is the copy detector's false-positive rate. An identity score above it means closer to the photos "
        "than a real photo is, which is what copying the input gives. With the protocol's backbones it reproduces "
        f"DreamBooth's Real Images row (DINO {PUBLISHED['DINO']}, CLIP-I {PUBLISHED['CLIP-I']}; {SOURCE}); "
        "docs/metrics.md.")


def markdown_lines(summary, runs, suite: str, settings=None) -> list[str]:
    """The leaderboard's note on the row and the notes on cells beyond it ([] without the row)."""
    if suite_frame(runs, suite) is None:
        return []
    notes = beyond_notes(summary, runs, suite, settings)
    head = ("**Beyond the real photos:** these identity cells are closer to the subject's photos than the photos "
            "are to each other (DreamSim: a smaller distance), which is what copying the input gives; read them with "
            "references=held-out and the copy rate (docs/metrics.md):")
    return [NOTE, ""] + (([head, ""] + [f"- {n}" for n in notes] + [""]) if notes else [])
