"""`bench report`: pandas aggregation of scored runs, markdown leaderboards, plots.

Aggregation (docs/protocols.md section 2, "six runs averaged"): per run and seed, the mean over all
images; then the mean and the sample standard deviation (ddof=1) over seeds, with n = the number
of seeds. A NaN score ("could not be computed") is left out of the means and a metric with no
value is shown as a dash, never as 0 (docs/architecture.md).

DataFrame API, for notebooks::

    from bench.report import load_scores, load_runs, summarize
    df = load_scores(["runs/ezigen", "runs/sd"])       # long format + run, suite, method
    summarize(df)                                       # run, metric -> mean, std, n, images
    summarize(df, by="category")                        # live / object breakdown
    summarize(df, by="subject")

The leaderboard ``<out>/leaderboard-<suite>.md`` has one row per run and the paper's numbers
(reports/paper/<suite>.csv, docs/protocols.md section 5) as separately marked rows. Its columns come
from the suite's ``leaderboard_columns`` (metric-id prefix -> title) so every suite reuses it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import BenchError
from bench.store import RunStore

if TYPE_CHECKING:                      # pandas is imported inside the functions (fast --help)
    import pandas as pd
from bench.suites import REPO_ROOT

PAPER_DIR = REPO_ROOT / "reports" / "paper"
# Used when a suite class does not say (or cannot be imported).
FALLBACK_COLUMNS = {
    "dreambench": {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO"},
    "dreamedit": {"dino_sub": "DINO-sub", "dino_back": "DINO-back", "clip_i_sub": "CLIP-I-sub",
                  "clip_i_back": "CLIP-I-back"},
    "fastcomposer": {"faceid": "ID", "clip_t": "Prompt"},
}
# Scatter axes per suite (x, y): text alignment (or background preservation) vs identity.
FALLBACK_SCATTER = {"dreambench": ("CLIP-T", "DINO"), "dreamedit": ("DINO-back", "DINO-sub"),
                    "fastcomposer": ("Prompt", "ID")}
DASH = "–"


# ---- loading --------------------------------------------------------------------------------
def _labels(paths: list[Path]) -> list[str]:
    """Short unique names for runs: the folder name, with parents added where names clash."""
    depth = 1
    while True:
        labels = ["/".join(p.resolve().parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth > 8:
            return labels
        depth += 1


def weights_status(run: dict) -> str:
    parts = []
    if run.get("random_weights"):
        parts.append("random weights")
    status = run.get("weights_status")
    if status:
        # a method's own status may already say "random weights": keep each phrase once
        parts += [p.strip() for p in str(status).split(",") if p.strip() and p.strip() not in parts]
    return ", ".join(parts) or "pretrained"


def base_model(run: dict) -> str:
    identity = run.get("identity", {})
    method = run.get("method") if isinstance(run.get("method"), dict) else {}
    model = method.get("model") if isinstance(method.get("model"), dict) else {}
    return str(identity.get("model") or model.get("model_id") or run.get("base_model") or DASH)


def method_name(run: dict) -> str:
    identity = run.get("identity", {})
    return str(identity.get("method") or (run.get("method") or {}).get("name") or DASH)


def load_runs(run_dirs) -> "pd.DataFrame":
    """One row per run: run (label), run_dir, suite, method, base_model, weights, random_weights."""
    import pandas as pd

    paths = [Path(p) for p in run_dirs]
    rows = []
    for label, path in zip(_labels(paths), paths):
        run = RunStore.open_existing(path).read_run()
        rows.append({"run": label, "run_dir": str(path), "suite": (run.get("suite") or {}).get("name", DASH),
                     "method": method_name(run), "base_model": base_model(run), "weights": weights_status(run),
                     "random_weights": bool(run.get("random_weights"))})
    return pd.DataFrame(rows)


def load_scores(run_dirs) -> "pd.DataFrame":
    """The long-format scores of several runs, with run, suite and method columns added."""
    import pandas as pd

    runs = load_runs(run_dirs)
    frames = []
    for info in runs.itertuples(index=False):
        store = RunStore(info.run_dir)
        if not store.scores_path.exists():
            raise BenchError(f"{store.root} has no scores.parquet: run `python -m bench score {store.root}` first")
        df = pd.read_parquet(store.scores_path)
        frames.append(df.assign(run=info.run, suite=info.suite, method=info.method))
    if not frames:
        raise BenchError("no run directories given")
    return pd.concat(frames, ignore_index=True)


# ---- aggregation ----------------------------------------------------------------------------
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


def suite_scatter_axes(suite: str) -> tuple[str, str]:
    try:
        from bench.registry import SUITES
        axes = getattr(SUITES.get(suite).load(), "scatter_axes", None)
        if axes:
            return tuple(axes)
    except BenchError:
        pass
    return FALLBACK_SCATTER.get(suite, ("CLIP-T", "DINO"))


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


def read_paper_rows(suite: str, paper_dir: Path = PAPER_DIR) -> "pd.DataFrame":
    import pandas as pd

    path = Path(paper_dir) / f"{suite}.csv"
    if not path.exists():
        return pd.DataFrame(columns=["method", "source"])
    return pd.read_csv(path, dtype={"method": str, "source": str})


def leaderboard_table(df, runs, suite: str, paper_dir: Path = PAPER_DIR):
    """(table, plan, numeric): the leaderboard as display strings, the column plan, and the
    numbers behind it (mean/std per row and column title) for plotting."""
    import pandas as pd

    mine = df[df["suite"] == suite]
    runs = runs[runs["suite"] == suite]
    plan = column_plan(mine["metric"].unique(), suite_columns(suite))
    summary = summarize(mine).set_index(["run", "metric"])
    rows, numeric = [], []
    for info in runs.itertuples(index=False):
        scores = mine[mine["run"] == info.run]
        row = {"": "ours", "Method": info.method, "Run": info.run, "Base model": info.base_model,
               "Weights": info.weights, "Seeds": seeds_text(scores["seed"].unique()),
               "Images": int(scores["key"].nunique())}
        values = {}
        for title, _, ids in plan:
            stat = summary.loc[(info.run, ids[0])] if ids and (info.run, ids[0]) in summary.index else None
            values[title] = (float(stat["mean"]), float(stat["std"])) if stat is not None else (math.nan, math.nan)
            row[title] = format_value(*values[title])
        rows.append(row)
        numeric.append({"label": f"{info.method} ({info.run})", "paper": False, **values})
    paper = read_paper_rows(suite, paper_dir)
    for rec in paper.to_dict("records"):
        row = {"": "paper", "Method": rec["method"], "Run": rec.get("source", ""), "Base model": DASH,
               "Weights": "published", "Seeds": DASH, "Images": DASH}
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
    return pd.DataFrame(rows), plan, numeric


# ---- plots ----------------------------------------------------------------------------------
def scatter_plot(numeric: list[dict], x: str, y: str, path: Path, title: str) -> bool:
    """CLIP-T vs DINO style scatter of every row that has both values; False if none has."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in numeric if x in r and y in r and not math.isnan(r[x][0]) and not math.isnan(r[y][0])]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
    for r in points:
        (xm, xs), (ym, ys) = r[x], r[y]
        if r["paper"]:
            ax.scatter([xm], [ym], marker="s", color="0.55", s=28, zorder=2)
        else:
            ax.errorbar([xm], [ym], xerr=None if math.isnan(xs) else [xs], yerr=None if math.isnan(ys) else [ys],
                        fmt="o", color="tab:blue", ms=6, capsize=3, zorder=3)
        ax.annotate(r["label"] + (" (paper)" if r["paper"] else ""), (xm, ym), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, color="0.35" if r["paper"] else "tab:blue")
    from matplotlib.lines import Line2D
    ax.legend(handles=[Line2D([], [], marker="o", color="tab:blue", ls="", label="ours: mean ± std over seeds"),
                       Line2D([], [], marker="s", color="0.55", ls="", label="paper (docs/protocols.md section 5)")],
              fontsize=7, loc="best")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return True


def sample_grid(runs, path: Path, per_run: int = 6, thumb: int = 128) -> bool:
    """A few samples per run (the same keys in every run where possible), one row per run."""
    from PIL import Image, ImageDraw

    records = {}
    for info in runs.itertuples(index=False):
        store = RunStore(info.run_dir)
        records[info.run] = {k: store.root / r["image"] for k, r in store.records().items()
                             if (store.root / r["image"]).exists()}
    if not any(records.values()):
        return False
    common = set.intersection(*(set(r) for r in records.values()))
    pool = sorted(common) if len(common) >= per_run else sorted(set().union(*records.values()))
    first_seed = [k for k in pool if k.rsplit("/", 2)[1] == pool[0].rsplit("/", 2)[1]] or pool
    step = max(1, len(first_seed) // per_run)
    chosen = first_seed[::step][:per_run]
    label_w = 220
    canvas = Image.new("RGB", (label_w + per_run * (thumb + 4), len(records) * (thumb + 4) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (run, images) in enumerate(records.items()):
        top = 4 + row * (thumb + 4)
        draw.text((4, top + thumb // 2 - 6), run[-34:], fill="black")
        keys = chosen if all(k in images for k in chosen) else sorted(images)[:per_run]
        for col, key in enumerate(keys):
            with Image.open(images[key]) as im:
                tile = im.convert("RGB").resize((thumb, thumb), Image.BICUBIC)
            canvas.paste(tile, (label_w + col * (thumb + 4), top))
    tmp = path.with_name(f".{path.name}.tmp.png")
    canvas.save(tmp)
    tmp.replace(path)
    return True


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


def write_leaderboard(df, runs, suite: str, out: Path, paper_dir: Path = PAPER_DIR) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table, plan, numeric = leaderboard_table(df, runs, suite, paper_dir)
    mine = df[df["suite"] == suite]
    suite_runs = runs[runs["suite"] == suite]
    stem = f"leaderboard-{suite}"
    x, y = suite_scatter_axes(suite)
    scatter = out / f"{stem}-scatter.png"
    grid = out / f"{stem}-samples.png"
    has_scatter = scatter_plot(numeric, x, y, scatter, f"{suite}: {x} vs {y}")
    has_grid = sample_grid(suite_runs, grid)
    summarize(mine).to_csv(out / f"{stem}-summary.csv", index=False)
    summarize(mine, by="subject").to_csv(out / f"{stem}-by-subject.csv", index=False)

    lines = [f"# Leaderboard: {suite}", "",
             f"Written by `python -m bench report` on {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{len(suite_runs)} run(s). Our rows: "
             + ("mean ± std (ddof=1) over all images (the suite's protocol)" if suite_aggregate(suite) == "images"
                else "per seed the mean over images, then mean ± std (ddof=1) over seeds") +
             ". Rows marked *paper* are the published numbers (docs/protocols.md section 5), not rerun here. "
             f"{DASH} means not measured.", ""]
    if suite_runs["random_weights"].any():
        lines += ["**Note:** rows whose Weights column says *random weights* come from random models "
                  "(smoke or performance runs); their numbers say nothing about the method.", ""]
    lines += [table.to_markdown(index=False, disable_numparse=True), ""]
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
        lines += ["## Samples", "", f"![samples]({grid.name})", ""]
    lines += [f"Per-subject numbers: [{stem}-by-subject.csv]({stem}-by-subject.csv); "
              f"per-run summary: [{stem}-summary.csv]({stem}-summary.csv).", ""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_reports(run_dirs, out: Path | str = "reports", paper_dir: Path = PAPER_DIR) -> list[Path]:
    """A leaderboard per suite found among the runs; returns the markdown paths."""
    runs = load_runs(run_dirs)
    df = load_scores(run_dirs)
    return [write_leaderboard(df, runs, suite, Path(out), paper_dir) for suite in sorted(runs["suite"].unique())]


# ---- CLI ------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="scored run directories")
    parser.add_argument("--out", default="reports", help="folder for leaderboard-<suite>.md, its plots and csvs "
                        "(default: reports/)")
    parser.add_argument("--paper-dir", default=str(PAPER_DIR), help="folder of the paper reference csvs "
                        "(default: reports/paper/)")


def run(args) -> int:
    runs = load_runs(args.run_dirs)
    df = load_scores(args.run_dirs)
    for suite in sorted(runs["suite"].unique()):
        path = write_leaderboard(df, runs, suite, Path(args.out), Path(args.paper_dir))
        print(path)
        summary = summarize(df[df["suite"] == suite])
        for rec in summary.itertuples(index=False):
            print(f"  {rec.run:<28} {rec.metric:<32} {format_value(rec.mean, rec.std):<16} n={rec.n} "
                  f"images={rec.images}", file=sys.stderr)
    return 0
