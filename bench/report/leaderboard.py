"""The markdown leaderboard: ``<out>/leaderboard-<suite>.md`` with its plots and csvs.

One row per run and the paper's numbers (reports/paper/<suite>.csv, docs/protocols.md section 5)
as separately marked rows. Its columns come from the suite's ``leaderboard_columns`` (metric-id
prefix -> title), so every suite reuses it. The Base model column comes from the method's
``describe()["model"]``; the Method column marks ``protocol=paper|release`` and the all-step
schedule; the Check column flags runs that are incomplete against their plan, not fully scored,
or have seeds with unequal image counts (also warned about on stderr). A metric with no value is
shown as a dash, never as 0 (docs/architecture.md, "Reports").
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from bench import BenchError
from bench.report.aggregate import aggregation_text, run_warnings, summarize
from bench.report.figures import sample_grid, scatter_plot, suite_scatter_axes
from bench.report.load import DASH, PAPER_DIR, read_paper_rows

# Used when a suite class does not say (or cannot be imported).
FALLBACK_COLUMNS = {
    "dreambench": {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO"},
    "dreamedit": {"dino_sub": "DINO-sub", "dino_back": "DINO-back", "clip_i_sub": "CLIP-I-sub",
                  "clip_i_back": "CLIP-I-back"},
    "fastcomposer": {"faceid": "ID", "clip_t": "Prompt"},
}


def metric_prefix(metric_id: str) -> str:
    return metric_id.split("/", 1)[0]


def suite_columns(suite: str) -> dict[str, str]:
    columns = {}
    try:
        from bench.registry import SUITES
        columns = dict(getattr(SUITES.get(suite).load(), "leaderboard_columns", {}) or {})
    except BenchError:
        pass
    return columns or dict(FALLBACK_COLUMNS.get(suite, {}))


def column_plan(metric_ids, mapping: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """[(column title, paper title, metric ids)] in the suite's order, then any other prefixes.
    One column per prefix; a prefix scored with several backbones gets a column per backbone."""
    by_prefix: dict[str, list[str]] = {}
    for mid in sorted(set(metric_ids)):
        by_prefix.setdefault(metric_prefix(mid), []).append(mid)
    plan = []
    for prefix in list(mapping) + sorted(p for p in by_prefix if p not in mapping):
        title = mapping.get(prefix, prefix)
        ids = by_prefix.get(prefix, [])
        if len(ids) <= 1:
            plan.append((title, title, ids))
        else:
            plan.extend((f"{title} ({mid.split('/', 1)[1]})", title, [mid]) for mid in ids)
    return plan


def format_value(mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {std:.3f}"


def seeds_text(seeds) -> str:
    seeds = sorted(set(int(s) for s in seeds))
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))



def leaderboard_table(df, runs, suite: str, paper_dir: Path = PAPER_DIR, warnings: dict | None = None):
    """(table, plan, numeric): the leaderboard as display strings, the column plan, and the
    numbers behind it (mean/std per row and column title) for plotting and sorting."""
    import pandas as pd

    mine = df[df["suite"] == suite]
    runs = runs[runs["suite"] == suite]
    warnings = run_warnings(mine, runs) if warnings is None else warnings
    plan = column_plan(mine["metric"].unique(), suite_columns(suite))
    summary = summarize(mine).set_index(["run", "metric"])
    rows, numeric = [], []
    for info in runs.itertuples(index=False):
        scores = mine[mine["run"] == info.run]
        notes = warnings.get(info.run, [])
        row = {"": "ours", "Method": info.label, "Run": info.run, "Base model": info.base_model,
               "Weights": info.weights, "Seeds": seeds_text(scores["seed"].unique()) if len(scores) else DASH,
               "Images": int(scores["key"].nunique()), "Check": ("⚠ " + "; ".join(notes)) if notes else "ok"}
        values = {}
        for title, _, ids in plan:
            stat = summary.loc[(info.run, ids[0])] if ids and (info.run, ids[0]) in summary.index else None
            values[title] = (float(stat["mean"]), float(stat["std"])) if stat is not None else (math.nan, math.nan)
            row[title] = format_value(*values[title])
        rows.append(row)
        numeric.append({"label": f"{info.label} ({info.run})", "paper": False, **values})
    paper = read_paper_rows(suite, paper_dir)
    for rec in paper.to_dict("records"):
        base = rec.get("base_model")
        row = {"": "paper", "Method": rec["method"], "Run": rec.get("source", ""),
               "Base model": base if isinstance(base, str) and base.strip() else DASH,
               "Weights": "published", "Seeds": DASH, "Images": DASH, "Check": DASH}
        values = {}
        used = set()
        for title, paper_title, _ in plan:
            value = rec.get(paper_title)
            value = float(value) if value is not None and not pd.isna(value) and paper_title not in used else math.nan
            used.add(paper_title)                  # a paper number fills only the first column of its title
            values[title] = (value, math.nan)
            row[title] = format_value(value)
        rows.append(row)
        numeric.append({"label": rec["method"], "paper": True, **values})
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if c != "Check"] + ["Check"]]
    return table, plan, numeric



# ---- the markdown ---------------------------------------------------------------------------
def breakdown_table(df, plan, by: str):
    import pandas as pd

    summary = summarize(df, by=by).set_index(["run", "metric", by])
    rows = []
    for (run, group), _ in df.groupby(["run", by], sort=True):
        row = {"Run": run, by.capitalize(): group}
        for title, _, ids in plan:
            key = (run, ids[0], group) if ids else None
            stat = summary.loc[key] if key in summary.index else None
            row[title] = format_value(float(stat["mean"]), float(stat["std"])) if stat is not None else DASH
        rows.append(row)
    return pd.DataFrame(rows)


RANDOM_STAMP = "RANDOM WEIGHTS: smoke or performance run; these numbers say nothing about the method"
ALLSTEP_NOTE = ("*all-step*: the adapter is on for every step, one pass, no loops: how the paper measured its "
                "Tab. 7 rows (docs/protocols.md section 1b).")


def write_leaderboard(df, runs, suite: str, out: Path, paper_dir: Path = PAPER_DIR) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    mine = df[df["suite"] == suite]
    suite_runs = runs[runs["suite"] == suite]
    warnings = run_warnings(mine, suite_runs)
    table, plan, numeric = leaderboard_table(df, runs, suite, paper_dir, warnings)
    stem = f"leaderboard-{suite}"
    x, y = suite_scatter_axes(suite)
    scatter = out / f"{stem}-scatter.png"
    grid = out / f"{stem}-samples.png"
    stamp = RANDOM_STAMP if suite_runs["random_weights"].any() else None
    has_scatter = scatter_plot(numeric, x, y, scatter, f"{suite}: {x} vs {y}", stamp)
    has_grid = sample_grid(suite_runs, grid, stamp=stamp)
    summarize(mine).to_csv(out / f"{stem}-summary.csv", index=False)
    summarize(mine, by="subject").to_csv(out / f"{stem}-by-subject.csv", index=False)

    lines = [f"# Leaderboard: {suite}", "",
             f"Written by `python -m bench report` on {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{len(suite_runs)} run(s). Our rows: " + aggregation_text(suite) +
             ". Rows marked *paper* are the published numbers (docs/protocols.md section 5), not rerun here. "
             f"{DASH} means not measured.", ""]
    if stamp:
        lines += ["**Note:** rows whose Weights column says *random weights* come from random models "
                  "(smoke or performance runs); their numbers say nothing about the method.", ""]
    lines += [table.to_markdown(index=False, disable_numparse=True), ""]
    flagged = {run: notes for run, notes in warnings.items() if notes}
    if flagged:
        lines += ["**Check:** the rows marked ⚠ are not comparable as they stand:", ""]
        lines += [f"- `{run}`: {'; '.join(notes)}" for run, notes in flagged.items()] + [""]
    if table["Method"].astype(str).str.contains("all-step").any():
        lines += [ALLSTEP_NOTE, ""]
    notes = []
    for title, _, ids in plan:
        notes.append(f"{title}: " + (", ".join(f"`{i}`" for i in ids) if ids else "not measured in these runs"))
    lines += ["Metric ids (they name the backbone): " + "; ".join(notes) + ". Paper rows use the protocol's "
              "backbones (CLIP ViT-B/32 OpenAI, DINO ViT-S/16; FastComposer prompt: CLIP ViT-L/14).", ""]
    if len(mine) and "category" in mine.columns and mine["category"].fillna("").ne("").any():
        lines += ["## By category", "", breakdown_table(mine, plan, "category").to_markdown(index=False, disable_numparse=True), ""]
    if has_scatter:
        lines += [f"## {x} vs {y}", "", f"![{x} vs {y}]({scatter.name})", ""]
    if has_grid:
        lines += ["## Samples", "", "Each row: the subject's reference image, then every run's image for one "
                  "prompt (lowest seed, first image), the prompt under each.", "", f"![samples]({grid.name})", ""]
    lines += [f"Per-subject numbers: [{stem}-by-subject.csv]({stem}-by-subject.csv); "
              f"per-run summary: [{stem}-summary.csv]({stem}-summary.csv).", ""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path



def print_warnings(df, runs, file=None) -> int:
    """Print one warning line per flagged run (to stderr); returns how many runs were flagged."""
    file = file or sys.stderr
    flagged = 0
    for suite in sorted(runs["suite"].unique()):
        for run, notes in run_warnings(df[df["suite"] == suite], runs[runs["suite"] == suite]).items():
            if notes:
                flagged += 1
                print(f"warning: {run}: {'; '.join(notes)} (marked ⚠ in the leaderboard)", file=file)
    return flagged

