"""`bench report`: pandas aggregation of scored runs, markdown leaderboards, plots, HTML.

Aggregation (docs/protocols.md section 2, "six runs averaged"): per run and seed, the mean over all
images; then the mean and the sample standard deviation (ddof=1) over seeds, with n = the number
of seeds. A NaN score ("could not be computed") is left out of the means and a metric with no
value is shown as a dash, never as 0 (docs/architecture.md, "Reports").

DataFrame API, for notebooks::

    from bench.report import load_scores, load_runs, summarize
    df = load_scores(["runs/ezigen", "runs/sd"])       # long format + run, suite, method
    summarize(df)                                       # run, metric -> mean, std, n, images
    summarize(df, by="category")                        # live / object breakdown
    summarize(df, by="subject")

The leaderboard ``<out>/leaderboard-<suite>.md`` has one row per run and the paper's numbers
(reports/paper/<suite>.csv, docs/protocols.md section 5) as separately marked rows. Its columns come
from the suite's ``leaderboard_columns`` (metric-id prefix -> title) so every suite reuses it.
The Base model column comes from the method's ``describe()["model"]``; the Method column marks
``protocol=paper|release`` and the all-step schedule; the Check column flags runs that are
incomplete against their plan, not fully scored, or have seeds with unequal image counts (also
warned about on stderr). ``--html`` adds ``<out>/html/index.html`` (bench/html_report.py).
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


# Short names of the base models the harness knows; other ids are shown as they are.
MODEL_NAMES = {
    "stabilityai/stable-diffusion-2-1-base": "SD 2.1-base",
    "stabilityai/stable-diffusion-2-1": "SD 2.1",
    "runwayml/stable-diffusion-v1-5": "SD 1.5",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "SD 1.5",
    "Salesforce/blipdiffusion": "BLIP-Diffusion (SD 1.5)",
}


def _method_info(run: dict) -> dict:
    return run.get("method") if isinstance(run.get("method"), dict) else {}


def base_model(run: dict) -> str:
    """The base model as the method describes it (``describe()["model"]``), else the run's
    identity (``--weights`` or the preset). Known Hugging Face ids get their short name."""
    model = _method_info(run).get("model")
    model = model if isinstance(model, dict) else {}
    name = model.get("base_model") or model.get("model_id") or run.get("identity", {}).get("model") \
        or run.get("base_model")
    if not name:
        return DASH
    name = str(name)
    return MODEL_NAMES.get(name, name)


def method_name(run: dict) -> str:
    identity = run.get("identity", {})
    return str(identity.get("method") or _method_info(run).get("name") or DASH)


def method_params(run: dict) -> dict:
    """The method's effective parameters: what it described, over the run's --param overrides."""
    params = dict(run.get("identity", {}).get("method_params") or {})
    described = _method_info(run).get("params")
    if isinstance(described, dict):
        params.update(described)
    return params


def method_label(run: dict) -> str:
    """The method name, with the parameters a reader must see to compare it with a paper row:
    ``protocol`` (release or paper, docs/protocols.md section 1b) and the all-step schedule
    (how the paper's Tab. 7 variants were measured)."""
    params = method_params(run)
    marks = []
    if params.get("protocol"):
        marks.append(f"protocol={params['protocol']}")
    if params.get("schedule") == "allstep":
        marks.append("all-step")
    return method_name(run) + (f" [{', '.join(marks)}]" if marks else "")


def expected_per_seed(run: dict, run_dir: Path) -> int | None:
    """How many images one seed of the run's plan holds (None when it cannot be told).

    From ``plan.images_per_seed`` when the runner wrote it; else from the suite's cells
    (the plan's subjects and --limit, less the edit samples skipped for lack of a mask) times
    ``plan.images_per_prompt``; else ``plan.total`` over the number of seeds."""
    plan = run.get("plan") if isinstance(run.get("plan"), dict) else {}
    if plan.get("images_per_seed"):
        return int(plan["images_per_seed"])
    per_prompt = plan.get("images_per_prompt")
    cells = run_cells(run, run_dir)
    if cells and per_prompt and plan.get("subjects"):
        subjects = set(plan["subjects"])
        chosen = [c for c, s in cells.items() if s.subject in subjects]
        if plan.get("limit"):
            chosen = chosen[:int(plan["limit"])]
        chosen = [c for c in chosen if c not in set(plan.get("skipped_without_mask") or [])]
        return len(chosen) * int(per_prompt)
    seeds = plan.get("seeds") or []
    if plan.get("total") and seeds and not run.get("resumed_at"):
        return int(plan["total"]) // len(seeds)
    return None


_CELLS: dict[str, dict] = {}


def run_cells(run: dict, run_dir: Path) -> dict:
    """The run's suite cells ({cell: Sample}, in suite order), or {} when the suite's data
    cannot be loaded here (a run made on another machine): reports then show less, not fail."""
    import inspect

    from bench.registry import SUITES
    from bench.suites import load_suite

    cache_key = str(Path(run_dir).resolve())
    if cache_key not in _CELLS:
        try:
            info = run.get("suite") if isinstance(run.get("suite"), dict) else {}
            options = dict(info.get("options") or {})
            if "annotate" in inspect.signature(SUITES.get(info.get("name", "")).load().__init__).parameters:
                options["annotate"] = False        # a report needs prompts and images, not edit masks
            suite = load_suite(info["name"], info.get("root"), **options)
            cells = {s.cell: s for s in suite.samples()}
        except Exception as exc:          # noqa: BLE001 (any failure of a suite loader: report without it)
            print(f"warning: {run_dir}: the suite's samples cannot be loaded here ({exc}); "
                  "the report shows no prompts or reference images for it", file=sys.stderr)
            cells = {}
        _CELLS[cache_key] = cells
    return _CELLS[cache_key]


def load_runs(run_dirs) -> "pd.DataFrame":
    """One row per run: run (label), run_dir, suite, method, label (method with its protocol and
    schedule marks), base_model, weights, random_weights, seeds (planned), recorded (images
    with a record), expected (the plan's images, or None)."""
    import pandas as pd

    paths = [Path(p) for p in run_dirs]
    rows = []
    for label, path in zip(_labels(paths), paths):
        store = RunStore.open_existing(path)
        run = store.read_run()
        plan = run.get("plan") if isinstance(run.get("plan"), dict) else {}
        records = store.records()
        per_seed = expected_per_seed(run, path)
        seeds = [int(s) for s in plan.get("seeds") or []]
        rows.append({"run": label, "run_dir": str(path), "suite": (run.get("suite") or {}).get("name", DASH),
                     "method": method_name(run), "label": method_label(run), "base_model": base_model(run),
                     "weights": weights_status(run), "random_weights": bool(run.get("random_weights")),
                     "seeds": seeds, "recorded": len(records),
                     "expected": per_seed * len(seeds) if per_seed is not None and seeds else None,
                     "expected_per_seed": per_seed})
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


# ---- plots ----------------------------------------------------------------------------------
# Label positions tried around a point, in points: near ones first, then farther out.
_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4.5, 6.5)
            for dx, dy in ((5, 4), (5, -9), (-5, 4), (-5, -9), (0, 9), (0, -14), (9, -2), (-9, -2))]


def place_labels(ax, points: list[tuple[float, float, str, dict]]) -> list[tuple[tuple, tuple]]:
    """Annotate each (x, y, text, style) so that no two labels overlap and no label covers a
    marker: each label takes the first offset (near ones first) whose box is free, else the
    least covered one, and never nearer another point than its own when it can help it; a label
    moved away from its point gets a thin leader line. Returns per label its text box
    (x0, y0, x1, y1) and its point (x, y), in pixels, and whether it has a leader line."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    markers = []
    for x, y, _, _ in points:
        px, py = ax.transData.transform((x, y))
        markers.append((px - 4, py - 4, px + 4, py + 4))
    taken: list[tuple[float, float, float, float]] = []
    leaders: list[bool] = []

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    def distance(rect, point) -> float:
        dx = max(rect[0] - point[0], 0, point[0] - rect[2])
        dy = max(rect[1] - point[1], 0, point[1] - rect[3])
        return math.hypot(dx, dy)

    centres = [((m[0] + m[2]) / 2, (m[1] + m[3]) / 2) for m in markers]
    for index, (x, y, text, style) in enumerate(points):
        best = None
        for dx, dy in _OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, **style)
            box = ann.get_window_extent(renderer)
            rect = (box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1)
            # in order of badness: outside the axes, covering a label or marker, nearer another point
            cost = 100 * (sum(overlap(rect, t) for t in taken) + sum(overlap(rect, m) for m in markers))
            own = distance(rect, centres[index])
            cost += 50 * sum(1 for j, c in enumerate(centres) if j != index and distance(rect, c) < own)
            inside = ax.get_window_extent(renderer)
            cost += 0 if (rect[0] >= inside.x0 and rect[2] <= inside.x1 and rect[1] >= inside.y0
                          and rect[3] <= inside.y1) else 1e9
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, rect, (dx, dy))
            else:
                ann.remove()
            if cost == 0:
                break
        _, ann, rect, (dx, dy) = best
        own = distance(rect, centres[index])
        ambiguous = any(j != index and distance(rect, c) < own for j, c in enumerate(centres))
        leader = abs(dx) > 5 or abs(dy) > 14 or ambiguous     # a line says which point a label names
        if leader:
            ann.remove()
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha,
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6}, **style)
        taken.append(rect)
        leaders.append(leader)
    return list(zip(taken, centres, leaders))


def scatter_plot(numeric: list[dict], x: str, y: str, path: Path, title: str, stamp: str | None = None):
    """CLIP-T vs DINO style scatter of every row that has both values; False if none has.
    Returns the labels' boxes and points in pixels (place_labels; a list, truthy) when it wrote
    the plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in numeric if x in r and y in r and not math.isnan(r[x][0]) and not math.isnan(r[y][0])]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    xs = [r[x][0] for r in points]
    ys = [r[y][0] for r in points]
    pad_x = max(0.01, (max(xs) - min(xs)) * 0.25)
    pad_y = max(0.01, (max(ys) - min(ys)) * 0.2)
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    labels = []
    for r in points:
        (xm, xs_), (ym, ys_) = r[x], r[y]
        if r["paper"]:
            ax.scatter([xm], [ym], marker="s", color="0.55", s=28, zorder=2)
        else:
            ax.errorbar([xm], [ym], xerr=None if math.isnan(xs_) else [xs_], yerr=None if math.isnan(ys_) else [ys_],
                        fmt="o", color="tab:blue", ms=6, capsize=3, zorder=3)
        labels.append((xm, ym, r["label"] + (" (paper)" if r["paper"] else ""),
                       {"fontsize": 7, "color": "0.35" if r["paper"] else "tab:blue"}))
    from matplotlib.lines import Line2D
    ax.legend(handles=[Line2D([], [], marker="o", color="tab:blue", ls="", label="ours: mean ± std over seeds"),
                       Line2D([], [], marker="s", color="0.55", ls="", label="paper (docs/protocols.md section 5)")],
              fontsize=7, loc="lower left")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title + (f"\n{stamp}" if stamp else ""), fontsize=10, color="black")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    boxes = place_labels(ax, labels)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return boxes


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                       # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int, max_lines: int = 3) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(".") + " …"
    return lines


def grid_cells(runs, per_suite: int = 6) -> list[str]:
    """Up to ``per_suite`` cells to show, spread over subjects (round robin, in suite order), taken
    among the cells that every run has an image for where possible."""
    recorded = []
    for info in runs.itertuples(index=False):
        recorded.append({k.rsplit("/", 2)[0] for k in RunStore(info.run_dir).records()})
    if not recorded or not any(recorded):
        return []
    common = set.intersection(*recorded)
    pool = sorted(common) if common else sorted(set().union(*recorded))
    by_subject: dict[str, list[str]] = {}
    for cell in pool:
        by_subject.setdefault(cell.split("/")[1], []).append(cell)
    chosen = []
    while len(chosen) < per_suite and any(by_subject.values()):
        for k, cells in enumerate(by_subject.values()):     # subjects show different prompts
            if cells and len(chosen) < per_suite:
                chosen.append(cells.pop((3 * k) % len(cells)))
    return chosen


def first_image(store: RunStore, records: dict, cell: str) -> Path | None:
    """The image of a cell to show: lowest seed, image index 0."""
    keys = sorted((k for k in records if k.rsplit("/", 2)[0] == cell),
                  key=lambda k: (int(k.rsplit("/", 2)[1][1:]), int(k.rsplit("/", 1)[1][1:])))
    for key in keys:
        path = store.root / records[key]["image"]
        if path.exists():
            return path
    return None


def sample_grid(runs, path: Path, per_run: int = 6, thumb: int = 128, stamp: str | None = None) -> list:
    """One row per chosen (subject, prompt) cell: the subject's reference image first, then each
    run's image of that cell (lowest seed, first image), with the prompt under every image and
    the runs named above their columns. Returns the layout, one (cell, reference image or None,
    reference box, [(run, image or None, box)]) per row (boxes: left, top, right, bottom);
    an empty list when no run has an image."""
    from PIL import Image, ImageDraw, ImageOps

    from bench.images import load_rgb

    cells = grid_cells(runs, per_run)
    if not cells:
        return []
    infos = list(runs.itertuples(index=False))
    stores = [RunStore(i.run_dir) for i in infos]
    records = [s.records() for s in stores]
    samples = {}
    for info in infos:
        for cell, sample in run_cells(RunStore(info.run_dir).read_run(), Path(info.run_dir)).items():
            samples.setdefault(cell, sample)
    font, small = _font(13), _font(11)
    gap, text_h = 8, 44
    col_w = thumb + gap
    width = gap + col_w * (1 + len(infos))
    stamp_lines = _wrap(ImageDraw.Draw(Image.new("RGB", (1, 1))), stamp, font, width - 2 * gap, 4) if stamp else []
    head_h = 36 + 16 * len(stamp_lines)
    height = head_h + len(cells) * (thumb + text_h + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(stamp_lines):
        draw.text((gap, 4 + 16 * n), line, fill=(180, 0, 0), font=font)
    top0 = 4 + 16 * len(stamp_lines)
    draw.text((gap, top0), "reference", fill="black", font=font)
    for j, info in enumerate(infos):
        name = info.label if info.label == info.run else f"{info.label} ({info.run})"
        for n, line in enumerate(_wrap(draw, name, small, thumb, 2)):
            draw.text((gap + col_w * (1 + j), top0 + n * 13), line, fill="black", font=small)

    def tile(image_path):
        try:
            im = load_rgb(image_path)
        except BenchError:
            return Image.new("RGB", (thumb, thumb), (230, 230, 230))
        im = ImageOps.contain(im, (thumb, thumb), Image.BICUBIC)     # small images are scaled up too
        out = Image.new("RGB", (thumb, thumb), "white")
        out.paste(im, ((thumb - im.width) // 2, (thumb - im.height) // 2))
        return out

    layout = []
    for i, cell in enumerate(cells):
        top = head_h + i * (thumb + text_h + gap)
        sample = samples.get(cell)
        subject = cell.split("/")[1]
        refs = (sample.reference_images or sample.subject_images) if sample else ()
        ref_box = (gap, top, gap + thumb, top + thumb)
        row = []
        if refs:
            canvas.paste(tile(refs[0]), (gap, top))
        else:
            draw.rectangle((gap, top, gap + thumb, top + thumb), outline=(200, 200, 200))
        for n, line in enumerate(_wrap(draw, f"{subject}" + (f" ({sample.class_noun})" if sample else ""),
                                       small, thumb, 3)):
            draw.text((gap, top + thumb + 2 + n * 13), line, fill="black", font=small)
        prompt = sample.prompt if sample else f"prompt {cell.rsplit('/', 1)[1]}"
        for j, (store, recs) in enumerate(zip(stores, records)):
            left = gap + col_w * (1 + j)
            image = first_image(store, recs, cell)
            row.append((infos[j].run, image, (left, top, left + thumb, top + thumb)))
            if image is not None:
                canvas.paste(tile(image), (left, top))
            else:
                draw.rectangle((left, top, left + thumb, top + thumb), outline=(200, 200, 200))
                draw.text((left + 6, top + thumb // 2), "no image", fill="gray", font=small)
            for n, line in enumerate(_wrap(draw, prompt, small, thumb, 3)):
                draw.text((left, top + thumb + 2 + n * 13), line, fill=(60, 60, 60), font=small)
        layout.append((cell, refs[0] if refs else None, ref_box, row))
    tmp = path.with_name(f".{path.name}.tmp.png")
    canvas.save(tmp)
    tmp.replace(path)
    return layout


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


def aggregation_text(suite: str) -> str:
    if suite_aggregate(suite) == "images":
        return "mean ± std (ddof=1) over all images (the suite's protocol)"
    return "per seed the mean over images, then mean ± std (ddof=1) over seeds"


def write_reports(run_dirs, out: Path | str = "reports", paper_dir: Path = PAPER_DIR,
                  html: bool = False) -> list[Path]:
    """A leaderboard per suite found among the runs, and with ``html`` the HTML report
    (``<out>/html/index.html``); returns the markdown paths (then the HTML page)."""
    runs = load_runs(run_dirs)
    df = load_scores(run_dirs)
    paths = [write_leaderboard(df, runs, suite, Path(out), paper_dir) for suite in sorted(runs["suite"].unique())]
    if html:
        from bench.html_report import write_html
        paths.append(write_html(df, runs, Path(out) / "html", paper_dir))
    return paths


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


# ---- CLI ------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="scored run directories")
    parser.add_argument("--out", default="reports", help="folder for leaderboard-<suite>.md, its plots and csvs "
                        "(default: reports/)")
    parser.add_argument("--paper-dir", default=str(PAPER_DIR), help="folder of the paper reference csvs "
                        "(default: reports/paper/)")
    parser.add_argument("--html", action="store_true", help="also write a static HTML report to <out>/html/ "
                        "(leaderboard, scatter plot, image gallery; opens from file:// with no network)")
    parser.add_argument("--html-images", choices=["link", "copy"], default="link",
                        help="HTML report: reference the run's images where they are (link, default) or copy "
                        "them into <out>/html/ so the folder can be moved on its own (copy)")


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
    if getattr(args, "html", False):
        from bench.html_report import write_html
        print(write_html(df, runs, Path(args.out) / "html", Path(args.paper_dir),
                         copy_images=getattr(args, "html_images", "link") == "copy"))
    print_warnings(df, runs)
    return 0
