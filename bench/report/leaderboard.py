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
import re
import sys
import time
from pathlib import Path

from bench import BenchError
from bench.report.aggregate import (aggregation_text, interval_text, intervals, run_warnings, suite_summary,
                                    summarize)
from bench.report import ceiling
from bench.report.mdtext import md_code, md_escape, md_table
from bench.report.figures import sample_grid, scatter_plot, suite_scatter_axes
from bench.report.load import BACKGROUND_MARK, DASH, PAPER_DIR, read_paper_rows

# Used when a suite class does not say (or cannot be imported).
FALLBACK_COLUMNS = {
    "dreambench": {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO"},
    "dreamedit": {"dino_sub": "DINO-sub", "dino_back": "DINO-back", "clip_i_sub": "CLIP-I-sub",
                  "clip_i_back": "CLIP-I-back"},
    "fastcomposer": {"faceid": "ID", "clip_t": "Prompt"},
}


# Titles of metrics any suite may gain (docs/judge.md) when the suite's own columns do not name them.
EXTRA_TITLES = {"dreamsim": "DreamSim ↓", "dreamsim_paired": "DreamSim paired ↓", "cp": "CP", "pf": "PF",
                "clip_i_heldout": "CLIP-I held-out", "dino_heldout": "DINO held-out", "dinov2_heldout": "DINOv2 held-out",
                "dreamsim_heldout": "DreamSim held-out ↓", "copy": "Copy rate"}
#: a judge repeat's own score (``cp/<judge>/r<k>``): it feeds the ± of its base id's column
REPEAT_ID = re.compile(r"^(?P<base>[^/]+/[^/]+)/r\d+$")
PRODUCT_TITLE = "CP·PF"                    # DreamBench++ reports CP x PF beside the two


def metric_prefix(metric_id: str) -> str:
    return metric_id.split("/", 1)[0]


def suite_prompt_kinds(suite: str) -> tuple[str, ...]:
    """A suite's kind of each prompt index (``Suite.prompt_kinds``, e.g. DreamBench++'s photorealistic /
    style_transfer / imaginative), or () when it has none."""
    try:
        from bench.registry import SUITES
        return tuple(getattr(SUITES.get(suite).load(), "prompt_kinds", ()) or ())
    except BenchError:
        return ()


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
        if not REPEAT_ID.match(mid):
            by_prefix.setdefault(metric_prefix(mid), []).append(mid)
    plan = []
    for prefix in list(mapping) + sorted(p for p in by_prefix if p not in mapping):
        title = mapping.get(prefix, EXTRA_TITLES.get(prefix, prefix))
        ids = by_prefix.get(prefix, [])
        if len(ids) <= 1:
            plan.append((title, title, ids))
        else:
            plan.extend((f"{title} ({mid.split('/', 1)[1]})", title, [mid]) for mid in ids)
    return plan


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _true(x) -> bool:
    return not _missing(x) and bool(x)


def format_value(mean: float, std: float | None = None, ci: tuple | None = None, mark: str = "") -> str:
    """``0.781 ± 0.004 [0.772, 0.790] ▲``: mean ± std over seeds, the interval, a comparison mark."""
    if _missing(mean):
        return DASH
    text = f"{mean:.3f}" if _missing(std) else f"{mean:.3f} ± {std:.3f}"
    if ci is not None and not _missing(ci[0]) and not _missing(ci[1]):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text + (f" {mark}" if mark else "")


def stat_cell(stats, run: str, metric: str) -> tuple[tuple | None, str]:
    """(interval, comparison mark) of one leaderboard cell from an ``intervals`` frame."""
    if stats is None or (run, metric) not in stats.index:
        return None, ""
    row = stats.loc[(run, metric)]
    mark = ""
    if "significant" in row and _true(row["significant"]):
        mark = "▲" if row["delta"] > 0 else "▼"
    return (row["ci_low"], row["ci_high"]), mark


def comparison_table(stats, versus: str):
    """The paired comparisons of an ``intervals`` frame as display strings (None if there are none)."""
    import pandas as pd

    if stats is None or "delta" not in stats.columns:
        return None
    rows = []
    for r in stats.to_dict("records"):
        if r["run"] == versus or _missing(r.get("delta")):
            continue
        mark = ("▲" if r["delta"] > 0 else "▼") if _true(r.get("significant")) else ""
        rows.append({"Run": r["run"], "Metric": r["metric"], f"Δ vs {versus}": f"{r['delta']:+.4f}",
                     "interval": DASH if _missing(r.get("delta_ci_low")) else
                     f"[{r['delta_ci_low']:+.4f}, {r['delta_ci_high']:+.4f}]",
                     "p": f"{r['p']:.4f}", "p (Holm)": f"{r['p_holm']:.4f}", "": mark, "MDE": DASH if _missing(r.get("mde")) else f"{r['mde']:.4f}",
                     "paired keys": str(int(r["paired"]))})
    return pd.DataFrame(rows) if rows else None


def stat_notes(stats, markdown: bool = True) -> list[str]:
    """Lines naming keys one run of a comparison lacks, and cells without an interval; names
    escaped for markdown (``markdown=False``: plain text, for a page that escapes it)."""
    code, md_text = (md_code, md_escape) if markdown else ((lambda t: f"`{t}`"), str)
    notes = []
    if stats is None:
        return notes
    for r in stats.to_dict("records"):
        for side, other in (("run", "versus"), ("versus", "run")):
            count = r.get(f"only_in_{side}")
            if isinstance(count, (int, float)) and not _missing(count) and count > 0:
                names = ", ".join(r[f"only_in_{side}_keys"]) + (", …" if count > len(r[f"only_in_{side}_keys"]) else "")
                notes.append(f"{code(r['metric'])}: {int(count)} key(s) of {code(r[side])} are not in "
                             f"{code(r[other])} and are left out of the comparison: {md_text(names)}")
        if isinstance(r.get("note"), str):
            notes.append(md_text(r["note"]))
    from bench.stats.analysis import family_note

    records = stats.to_dict("records")
    for suite in dict.fromkeys(r.get("suite") for r in records):         # each suite is its own Holm family
        family = [r for r in records if r.get("suite") == suite and not _missing(r.get("family")) and r["family"]]
        text = family_note(family, float(records[0]["alpha"]))
        if text:
            notes.append(text)
    return notes


def seeds_text(seeds) -> str:
    """The number of seeds, then which: ``6 (0-5)``, ``1 (0)``, ``3 (0,2,7)`` (a bare ``0``
    read as "no seeds")."""
    seeds = sorted(set(int(s) for s in seeds))
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{len(seeds)} ({seeds[0]}-{seeds[-1]})"
    return f"{len(seeds)} ({','.join(map(str, seeds))})"


def repeat_spread(summary, run: str, metric_id: str) -> tuple[float, float] | None:
    """A judge with repeats, as DreamBench++'s benchmarking.py reports it: each repeat's own mean over
    the images it scored, then the mean and the std (ddof=1) over the repeats (docs/judge.md)."""
    means = [float(summary.loc[(run, m)]["mean"]) for r, m in summary.index
             if r == run and (match := REPEAT_ID.match(m)) and match["base"] == metric_id]
    if len(means) < 2:
        return None
    centre = sum(means) / len(means)
    return centre, math.sqrt(sum((m - centre) ** 2 for m in means) / (len(means) - 1))


def judge_product_title(title: str, values: dict) -> str | None:
    """The CP·PF column beside a PF column whose CP column is already filled: "CP·PF" for "PF",
    "CP·PF (judge)" for "PF (judge)" when several judges share a leaderboard."""
    if title == "PF" or title.startswith("PF ("):
        return PRODUCT_TITLE + title[2:] if "CP" + title[2:] in values else None
    return None


def leaderboard_table(df, runs, suite: str, paper_dir: Path = PAPER_DIR, warnings: dict | None = None,
                      stats=None, settings=None):
    """(table, plan, numeric): the leaderboard as display strings, the column plan, and the
    numbers behind it (mean/std per row and column title) for plotting and sorting. ``stats``:
    the suite's ``intervals`` frame (computed with the default settings when not given)."""
    import pandas as pd

    mine = df[df["suite"] == suite]
    if stats is None:
        stats = intervals(mine)
    stats = stats.set_index(["run", "metric"]) if len(stats) else None
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
            over_repeats = repeat_spread(summary, info.run, ids[0]) if ids else None
            if over_repeats is not None:         # judge repeats: mean ± sd of the repeats' means, as DreamBench++
                values[title] = over_repeats
            ci, mark = stat_cell(stats, info.run, ids[0]) if stat is not None else (None, "")
            row[title] = format_value(*values[title], ci=ci, mark=mark)
            if (product_title := judge_product_title(title, values)) is not None:
                values[product_title] = (values["CP" + title[2:]][0] * values[title][0], math.nan)
                row[product_title] = format_value(*values[product_title])
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
            if (product_title := judge_product_title(title, values)) is not None:
                product = rec.get(PRODUCT_TITLE) if not math.isnan(values[title][0]) else None
                product = float(product) if product is not None and not pd.isna(product) else math.nan
                values[product_title] = (product, math.nan)
                row[product_title] = format_value(product)
        rows.append(row)
        numeric.append({"label": rec["method"], "paper": True, **values})
    ceiling.add_row(rows, numeric, runs, suite, plan, settings, format_value)     # the "real photos" reference row
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if c != "Check"] + ["Check"]]
    return table, plan, numeric



# ---- the markdown ---------------------------------------------------------------------------
def breakdown_table(df, plan, by: str, settings=None):
    """Per run and value of ``by`` (e.g. category): mean ± std over seeds and the interval over
    the subjects of that group (none where the group holds a single subject)."""
    import pandas as pd

    summary = summarize(df, by=by).set_index(["run", "metric", by])
    stats = {group: intervals(part, settings).set_index(["run", "metric"]) for group, part in df.groupby(by)}
    rows = []
    for (run, group), _ in df.groupby(["run", by], sort=True):
        row = {"Run": run, by.capitalize(): group}
        in_group = summary.xs(group, level=by)
        for title, _, ids in plan:
            key = (run, ids[0], group) if ids else None
            stat = summary.loc[key] if key in summary.index else None
            ci, _ = stat_cell(stats.get(group), run, ids[0]) if stat is not None else (None, "")
            row[title] = format_value(float(stat["mean"]), float(stat["std"]), ci) if stat is not None else DASH
            if ids and (over_repeats := repeat_spread(in_group, run, ids[0])) is not None:   # as the main table
                row[title] = format_value(*over_repeats, ci)
        rows.append(row)
    return pd.DataFrame(rows)


RANDOM_STAMP = "RANDOM WEIGHTS: smoke or performance run; these numbers say nothing about the method"
BACKGROUND_NOTE = (f"*{BACKGROUND_MARK}*: protocol=release with the paper's subject background removal "
                   "(`subject_background=remove`, the default); the released code removes no background, so "
                   "`--param subject_background=keep` is the release-exact choice (docs/protocols.md section 1b).")
ALLSTEP_NOTE = ("*all-step*: the adapter is on for every step, one pass, no loops: how the paper measured its "
                "Tab. 7 rows (docs/protocols.md section 1b).")


def write_leaderboard(df, runs, suite: str, out: Path, paper_dir: Path = PAPER_DIR, settings=None,
                      versus: str | None = None, humans=None) -> Path:
    """``settings``: bench.stats.analysis.Settings of the intervals; ``versus``: the run label the
    other runs are compared with (paired, docs/statistics.md)."""
    from bench.output_guard import guard_file

    for name in ("", "-summary.csv", "-by-subject.csv", "-scatter.png", "-samples.png"):     # no FIFO, no run file
        guard_file(out / f"leaderboard-{suite}{name or '.md'}", "--out")
    out.mkdir(parents=True, exist_ok=True)
    mine, suite_runs, warnings, versus, stats = suite_summary(df, runs, suite, settings, versus)
    table, plan, numeric = leaderboard_table(df, runs, suite, paper_dir, warnings, stats, settings)
    stem = f"leaderboard-{suite}"
    x, y = suite_scatter_axes(suite)
    scatter = out / f"{stem}-scatter.png"
    grid = out / f"{stem}-samples.png"
    stamp = RANDOM_STAMP if suite_runs["random_weights"].any() else None
    has_scatter = scatter_plot(numeric, x, y, scatter, f"{suite}: {x} vs {y}", stamp)
    has_grid = sample_grid(suite_runs, grid, stamp=stamp)
    summary = summarize(mine)
    if len(stats):
        extra = [c for c in stats.columns if c not in summary.columns and not c.endswith("_keys") and c != "suite"]
        summary = summary.merge(stats[["run", "metric"] + extra], on=["run", "metric"], how="left")
    ceiling_notes = ceiling.markdown_lines(summary, suite_runs, suite, settings)
    summary = ceiling.summary_rows(summary, suite_runs, suite, settings)
    from bench.files import write_atomic          # a rename: a symlink or hard link named like our file is
                                                  # replaced, never written through
    write_atomic(out / f"{stem}-summary.csv", summary.to_csv(index=False).encode("utf-8"), fsync=False)
    write_atomic(out / f"{stem}-by-subject.csv", summarize(mine, by="subject").to_csv(index=False).encode("utf-8"),
                 fsync=False)

    lines = [f"# Leaderboard: {suite}", "",
             f"Written by `python -m bench report` on {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{len(suite_runs)} run(s). Our rows: " + aggregation_text(suite) +
             ". Rows marked *paper* are the published numbers (docs/protocols.md section 5), not rerun here. "
             f"{DASH} means not measured.", "", interval_text(settings, versus) + ".", ""]
    if stamp:
        lines += ["**Note:** rows whose Weights column says *random weights* come from random models "
                  "(smoke or performance runs); their numbers say nothing about the method.", ""]
    lines += [md_table(table), ""]
    flagged = {run: notes for run, notes in warnings.items() if notes}
    if flagged:
        lines += ["**Check:** the rows marked ⚠ are not comparable as they stand:", ""]
        lines += [f"- {md_code(run)}: {md_escape('; '.join(notes))}" for run, notes in flagged.items()] + [""]
    lines += ceiling_notes
    if table["Method"].astype(str).str.contains("all-step").any():
        lines += [ALLSTEP_NOTE, ""]
    if table["Method"].astype(str).str.contains(BACKGROUND_MARK, regex=False).any():
        lines += [BACKGROUND_NOTE, ""]
    comparison = comparison_table(stats, versus) if versus else None
    if comparison is not None:
        lines += [f"## Paired comparison against {md_code(versus)}", "",
                  "Per metric the difference of the protocol's means on the keys both runs hold, its interval, the "
                  "sign-flip p-value, the p-value Holm-adjusted over every metric and run in this table, and the "
                  "minimum detectable effect (MDE, power 0.8) of this many subjects.", "",
                  md_table(comparison), ""]
    notes_stats = stat_notes(stats)
    if notes_stats:
        lines += ["**Statistics notes:**", ""] + [f"- {n}" for n in notes_stats] + [""]
    notes = []
    for title, _, ids in plan:
        notes.append(f"{title}: " + (", ".join(f"`{i}`" for i in ids) if ids else "not measured in these runs"))
    lines += ["Metric ids (they name the backbone): " + "; ".join(notes) + ". Paper rows use the protocol's "
              "backbones (CLIP ViT-B/32 OpenAI, DINO ViT-S/16; FastComposer prompt: CLIP ViT-L/14).", ""]
    if len(mine) and "category" in mine.columns and mine["category"].fillna("").ne("").any():
        lines += ["## By category", "", md_table(breakdown_table(mine, plan, "category", settings)), ""]
    kinds = suite_prompt_kinds(suite)
    if len(mine) and kinds:
        kind = mine["prompt_index"].map(lambda i: kinds[int(i)] if 0 <= int(i) < len(kinds) else "")
        lines += ["## By prompt kind", "", md_table(breakdown_table(mine.assign(kind=kind), plan, "kind", settings)), ""]
    if has_scatter:
        lines += [f"## {x} vs {y}", "", f"![{x} vs {y}]({scatter.name})", ""]
    if has_grid:
        lines += ["## Samples", "", "Each row: the subject's reference image, then every run's image for one "
                  "prompt (lowest seed, first image), the prompt under each.", "", f"![samples]({grid.name})", ""]
    lines += humans.markdown() if humans is not None else []        # bench.report.humans
    lines += [f"Per-subject numbers: [{stem}-by-subject.csv]({stem}-by-subject.csv); "
              f"per-run summary: [{stem}-summary.csv]({stem}-summary.csv).", ""]
    from bench.report.arena import arena_markdown, find_results
    lines += arena_markdown(find_results(out, suite_runs["run_dir"]))        # `bench arena` results, when any
    path = out / f"{stem}.md"
    write_atomic(path, "\n".join(lines).encode("utf-8"), fsync=False)
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

