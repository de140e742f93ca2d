"""Reports: aggregation order (per seed mean over images, then mean/std over seeds), the
markdown leaderboard with paper rows, plots, and the generic column plan."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import BenchError
from bench.report import (column_plan, leaderboard_table, load_runs, load_scores, read_paper_rows, summarize,
                          write_reports)
from bench.scoring import score_run
from test_scoring import make_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sd = make_run(root / "sd-smoke", method="sd", seeds=(0, 1))
    ez = make_run(root / "ezigen-smoke", method="ezigen", seeds=(0, 1, 2), weights_status="untrained adapter")
    for store in (sd, ez):
        score_run(store.root, progress=False)
    return [sd.root, ez.root]


def test_summarize_means_images_within_seed_then_seeds():
    df = pd.DataFrame({
        "run": "r", "metric": "clip_t/x", "key": [f"k{i}" for i in range(6)],
        "seed": [0, 0, 0, 1, 1, 1], "subject": ["a", "a", "b", "a", "b", "b"],
        "category": ["live", "live", "object", "live", "object", "object"],
        "value": [0.1, 0.2, 0.6, 0.5, 0.5, math.nan]})
    s = summarize(df).iloc[0]
    seed_means = [np.mean([0.1, 0.2, 0.6]), np.mean([0.5, 0.5])]          # NaN is left out
    assert s["mean"] == pytest.approx(np.mean(seed_means))
    assert s["std"] == pytest.approx(np.std(seed_means, ddof=1))
    assert (s["n"], s["images"]) == (2, 5)
    by = summarize(df, by="category").set_index("category")
    assert by.loc["live", "mean"] == pytest.approx(np.mean([0.15, 0.5]))
    assert by.loc["object", "n"] == 2 and by.loc["object", "images"] == 2     # the NaN is not counted


def test_summarize_follows_each_suites_protocol():
    """FastComposer reports mean and std over all images of one run (docs/protocols.md section 4)."""
    values = [0.2, 0.4, 0.9, 0.3]
    fc = pd.DataFrame({"run": "fc", "suite": "fastcomposer", "metric": "faceid/x", "seed": 0, "value": values})
    db = pd.DataFrame({"run": "db", "suite": "dreambench", "metric": "dino/x", "seed": [0, 0, 1, 1], "value": values})
    out = summarize(pd.concat([fc, db], ignore_index=True)).set_index("run")
    assert out.loc["fc", "mean"] == pytest.approx(np.mean(values))
    assert out.loc["fc", "std"] == pytest.approx(np.std(values, ddof=1))         # finite with one seed
    assert (out.loc["fc", "n"], out.loc["fc", "images"]) == (1, 4)
    assert out.loc["db", "std"] == pytest.approx(np.std([0.3, 0.6], ddof=1))     # over the seed means
    assert summarize(fc, over="seeds").iloc[0]["std"] != summarize(fc, over="seeds").iloc[0]["std"]  # NaN


def test_column_plan_is_generic_over_metric_ids():
    mapping = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO"}
    plan = column_plan(["clip_t/vit-b-32-openai", "dino/vit-s-16", "dino/tiny-random", "dinov2/vit-b-14"], mapping)
    assert [p[0] for p in plan] == ["CLIP-T", "CLIP-I", "DINO (tiny-random)", "DINO (vit-s-16)", "dinov2"]
    assert plan[1][2] == []                                                # not measured: a dash column
    assert [p[1] for p in plan][2:4] == ["DINO", "DINO"]


def test_paper_csvs_hold_the_protocol_numbers():
    db = read_paper_rows("dreambench").set_index("method")
    assert db.loc["EZIGen", ["CLIP-T", "CLIP-I", "DINO"]].tolist() == [0.316, 0.782, 0.718]
    assert db.loc["BootPIG", "DINO"] == 0.674
    assert db.loc["EZIGen all-step transfer", "CLIP-I"] == 0.808
    assert math.isnan(db.loc["Reference UNet frozen t=800", "CLIP-T"])    # Tab. 7 has no CLIP-T
    assert len(db) == 7 + 3 + 10
    de = read_paper_rows("dreamedit").set_index("method")
    assert de.loc["PhotoSwap", ["DINO-sub", "DINO-back", "CLIP-I-sub", "CLIP-I-back"]].tolist() == [0.494, 0.797, 0.751, 0.889]
    fc = read_paper_rows("fastcomposer").set_index("method")
    assert fc.loc["Subject Diffusion", ["ID", "Prompt"]].tolist() == [0.605, 0.228]


def test_leaderboard_rows_values_and_marks(two_runs):
    runs = load_runs(two_runs)
    df = load_scores(two_runs)
    table, plan, _ = leaderboard_table(df, runs, "dreambench")
    ours = table[table[""] == "ours"].set_index("Method")
    assert list(ours.index) == ["sd", "ezigen"]
    assert ours.loc["sd", "Seeds"] == "0,1" and ours.loc["ezigen", "Seeds"] == "0-2"
    assert ours.loc["sd", "Images"] == 24 and ours.loc["ezigen", "Images"] == 36
    assert ours.loc["sd", "Weights"] == "random weights"
    assert ours.loc["ezigen", "Weights"] == "random weights, untrained adapter"
    summary = summarize(df).set_index(["run", "metric"])
    sd_run = runs.set_index("method").loc["sd", "run"]
    stat = summary.loc[(sd_run, "dino/tiny-random")]
    assert ours.loc["sd", "DINO"] == f"{stat['mean']:.3f} ± {stat['std']:.3f}"
    paper = table[table[""] == "paper"].set_index("Method")
    assert paper.loc["EZIGen", "CLIP-T"] == "0.316"
    assert paper.loc["Reference UNet frozen t=800", "CLIP-T"] == "–"
    assert [p[0] for p in plan] == ["CLIP-T", "CLIP-I", "DINO"]


def test_report_writes_markdown_plot_and_grid(two_runs, tmp_path):
    from bench.cli import main

    out = tmp_path / "reports"
    assert main(["report", *map(str, two_runs), "--out", str(out)]) == 0
    md = (out / "leaderboard-dreambench.md").read_text()
    assert "| ours " in md and "| paper " in md
    assert md.count("| ours ") == 2 and "sd-smoke" in md and "ezigen-smoke" in md
    assert "BootPIG" in md and "±" in md
    assert "`clip_t/tiny-random`" in md and "`dino/tiny-random`" in md
    assert "random weights" in md and "**Note:**" in md
    assert "## By category" in md and "| live " in md.replace("|  live", "| live")
    assert "](leaderboard-dreambench-scatter.png)" in md and "](leaderboard-dreambench-samples.png)" in md
    with Image.open(out / "leaderboard-dreambench-scatter.png") as plot:
        assert plot.size[0] > 300
    with Image.open(out / "leaderboard-dreambench-samples.png") as grid:
        assert grid.size[1] >= 2 * 128                                     # one row per run
        assert len(np.unique(np.array(grid.convert("L")))) > 50                 # it holds pictures
    by_subject = pd.read_csv(out / "leaderboard-dreambench-by-subject.csv")
    assert set(by_subject["subject"]) == {"backpack", "dog", "vase"}


def test_missing_metric_is_a_dash_and_unscored_runs_are_refused(two_runs, tmp_path):
    runs = load_runs(two_runs)
    df = load_scores(two_runs)
    df = df[~((df["method"] == "sd") & df["metric"].str.startswith("clip_i"))]
    table, _, _ = leaderboard_table(df, runs, "dreambench")
    ours = table[table[""] == "ours"].set_index("Method")
    assert ours.loc["sd", "CLIP-I"] == "–" and ours.loc["ezigen", "CLIP-I"] != "–"
    unscored = make_run(tmp_path / "unscored", seeds=(0,), subjects={"dog"})
    with pytest.raises(BenchError, match="no scores.parquet"):
        write_reports([unscored.root], tmp_path / "out")


def test_markdown_keeps_three_decimals(two_runs, tmp_path):
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "dreambench.csv").write_text("method,source,CLIP-T,CLIP-I,DINO\nRound,test,0.300,0.780,\n")
    md = write_reports(two_runs, tmp_path / "out", paper_dir=paper)[0].read_text()
    row = next(line for line in md.splitlines() if "| Round " in line)
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert cells[-3:] == ["0.300", "0.780", "–"]
