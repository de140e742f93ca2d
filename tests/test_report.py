"""Reports: aggregation order (per seed mean over images, then mean/std over seeds), the
markdown leaderboard with paper rows, plots, and the generic column plan."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import BenchError
from bench.report import (column_plan, intervals, leaderboard_table, load_runs, load_scores, read_paper_rows, summarize,
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
    assert (db["source"].str.startswith("EZIGen paper")).sum() == 7 + 3 + 10 + 2   # + other papers' rows
    assert db.loc["AnyDoor w/o high-freq map", ["CLIP-I", "DINO"]].tolist() == [0.775, 0.710]
    assert db.loc["Subject Diffusion w/o image CLS token", ["CLIP-I", "DINO"]].tolist() == [0.719, 0.637]
    assert db.loc["EZIGen", "base_model"] == "SD 2.1-base" and db.loc["BLIP-Diffusion", "base_model"] == "SD 1.5"
    assert "all-step" in db.loc["Reference UNet frozen t=100", "source"]
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
    assert ours.loc["sd", "Seeds"] == "2 (0,1)" and ours.loc["ezigen", "Seeds"] == "3 (0-2)"
    assert ours.loc["sd", "Images"] == 24 and ours.loc["ezigen", "Images"] == 36
    assert ours.loc["sd", "Weights"] == "random weights"
    assert ours.loc["ezigen", "Weights"] == "random weights, untrained adapter"
    summary = summarize(df).set_index(["run", "metric"])
    sd_run = runs.set_index("method").loc["sd", "run"]
    stat = summary.loc[(sd_run, "dino/tiny-random")]
    ci = intervals(df[df["run"] == sd_run]).set_index("metric").loc["dino/tiny-random"]     # bench/stats
    assert ours.loc["sd", "DINO"] == f"{stat['mean']:.3f} ± {stat['std']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"
    assert ours.loc["sd", "Base model"] == "preset:tiny" and ours.loc["sd", "Check"] == "ok"
    paper = table[table[""] == "paper"].set_index("Method")
    assert paper.loc["EZIGen", "CLIP-T"] == "0.316"
    assert paper.loc["EZIGen", "Base model"] == "SD 2.1-base" and paper.loc["ELITE", "Base model"] == "–"
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
        assert grid.size[0] >= 3 * 128                              # reference + one column per run
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
    assert cells[-4:] == ["0.300", "0.780", "–", "–"]           # CLIP-T, CLIP-I, DINO, Check


def scored_copy(make, tmp_path, name, keep=None, record=None, **info):
    """A run made by ``make_run``, with ``record`` merged into its run.json and its records cut to
    those ``keep(record)`` accepts, then scored."""
    import json

    store = make_run(tmp_path / name, **make, **info)
    if record:
        store.update_run(**record)
    if keep is not None:
        path = next(store.generations_dir.glob("rank-*.jsonl"))
        lines = [line for line in path.read_text().splitlines() if keep(json.loads(line))]
        path.write_text("\n".join(lines) + "\n")
    score_run(store.root, progress=False)
    return store.root


def test_unequal_seeds_and_incomplete_runs_are_marked_and_warned(tmp_path, capsys):
    """A 4-vs-12 image split between seeds, and a run holding a third of its plan, are flagged in
    the leaderboard row, listed under it, and warned about in the terminal; a whole run is not."""
    from bench.cli import main

    whole = scored_copy({"seeds": (0, 1)}, tmp_path, "whole",
                        plan={"seeds": [0, 1], "images_per_prompt": 1, "subjects": ["backpack", "dog", "vase"]})
    uneven = scored_copy({"seeds": (0, 1)}, tmp_path, "uneven",
                         keep=lambda r: r["seed"] == 0 or "/dog/" in r["key"])
    partial = scored_copy({"seeds": (0,), "subjects": {"dog"}}, tmp_path, "partial",
                          plan={"seeds": [0], "images_per_prompt": 1, "subjects": ["backpack", "dog", "vase"]})
    runs = load_runs([whole, uneven, partial])
    table, _, _ = leaderboard_table(load_scores([whole, uneven, partial]), runs, "dreambench")
    check = table[table[""] == "ours"].set_index("Run")["Check"]
    assert check["whole"] == "ok"
    assert check["uneven"].startswith("⚠") and "unequal seeds (seed 0: 12, seed 1: 4 images)" in check["uneven"]
    assert check["partial"].startswith("⚠") and "incomplete: 4 of 12 planned images" in check["partial"]
    capsys.readouterr()
    assert main(["report", str(whole), str(uneven), str(partial), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: uneven: unequal seeds" in err and "warning: partial: incomplete" in err
    assert "warning: whole" not in err
    md = (tmp_path / "out" / "leaderboard-dreambench.md").read_text()
    assert "**Check:**" in md and "- `partial`: incomplete: 4 of 12 planned images" in md


def test_unscored_images_are_flagged(two_runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(two_runs[0], copy)
    df = pd.read_parquet(copy / "scores.parquet")
    df[df["seed"] == 0].to_parquet(copy / "scores.parquet", index=False)
    table, _, _ = leaderboard_table(load_scores([copy]), load_runs([copy]), "dreambench")
    assert "not fully scored: 12 of 24 images" in table.iloc[0]["Check"]


def test_base_model_and_method_marks_come_from_the_run_record(tmp_path):
    method = {"model": {"model_id": "stabilityai/stable-diffusion-2-1-base", "random_weights": False},
              "params": {"protocol": "paper", "schedule": "allstep"}}
    root = scored_copy({"seeds": (0,), "subjects": {"dog"}, "method": "ezigen-ref-t100"}, tmp_path, "t100",
                       record={"method": method})
    other = scored_copy({"seeds": (0,), "subjects": {"dog"}, "method": "ip-adapter-sd15"}, tmp_path, "ipa",
                        record={"method": {"model": {"model_id": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
                                           "params": {"scale": 0.6}}})
    runs = load_runs([root, other]).set_index("run")
    assert runs.loc["t100", "label"] == "ezigen-ref-t100 [protocol=paper, all-step]"
    assert runs.loc["t100", "base_model"] == "SD 2.1-base"
    assert runs.loc["ipa", "label"] == "ip-adapter-sd15" and runs.loc["ipa", "base_model"] == "SD 1.5"
    md = write_reports([root, other], tmp_path / "out")[0].read_text()
    # a cell is padded to its column's widest entry (the paper rows' labels may be longer)
    assert re.search(r"\| ezigen-ref-t100 \[protocol=paper, all-step\] *\|", md) and "*all-step*" in md


def test_scatter_labels_do_not_overlap(tmp_path):
    """Paper rows that coincide (EZIGen and EZIGen iterative) or crowd each other get separate labels."""
    from bench.report import scatter_plot

    points = [(0.316, 0.718), (0.316, 0.718), (0.311, 0.674), (0.306, 0.672), (0.302, 0.663), (0.296, 0.647),
              (0.293, 0.711), (0.298, 0.589), (0.286, 0.762), (0.261, 0.561), (0.310, 0.670), (0.312, 0.676)]
    numeric = [{"label": f"method number {i}", "paper": i % 2 == 0, "CLIP-T": (x, math.nan), "DINO": (y, 0.01)}
               for i, (x, y) in enumerate(points)]
    boxes = scatter_plot(numeric, "CLIP-T", "DINO", tmp_path / "s.png", "t")
    assert len(boxes) == len(points)
    rects = [box for box, _, _ in boxes]
    for i, (ax0, ay0, ax1, ay1) in enumerate(rects):
        for bx0, by0, bx1, by1 in rects[i + 1:]:
            assert min(ax1, bx1) <= max(ax0, bx0) or min(ay1, by1) <= max(ay0, by0), "labels overlap"

    def distance(rect, point):
        return math.hypot(max(rect[0] - point[0], 0, point[0] - rect[2]), max(rect[1] - point[1], 0, point[1] - rect[3]))

    centres = [c for _, c, _ in boxes]
    for i, (rect, own, leader) in enumerate(boxes):  # a label without a leader line is nearest its own point
        others = [c for j, c in enumerate(centres) if j != i and c != own and not leader]
        assert all(distance(rect, own) <= distance(rect, c) for c in others), f"label {i} is nearer another point"


def test_sample_grid_rows_start_with_the_reference_and_show_each_runs_image(two_runs, tmp_path):
    from PIL import ImageOps

    from bench.images import load_rgb
    from bench.report import sample_grid

    path = tmp_path / "grid.png"
    layout = sample_grid(load_runs(two_runs), path, per_run=4)
    assert len(layout) == 4 and len({cell.split("/")[1] for cell, *_ in layout}) == 3    # every subject shown
    grid = Image.open(path).convert("RGB")

    def matches(box, source):
        want = ImageOps.contain(load_rgb(source), (box[2] - box[0], box[3] - box[1]), Image.BICUBIC)
        got = grid.crop(box)
        left, top = (got.width - want.width) // 2, (got.height - want.height) // 2
        got = np.asarray(got.crop((left, top, left + want.width, top + want.height)), dtype=float)
        return np.abs(got - np.asarray(want, dtype=float)).mean() < 2

    for cell, reference, ref_box, row in layout:
        assert reference is not None and reference.parent.name == cell.split("/")[1]
        assert matches(ref_box, reference)
        assert [r for r, _, _ in row] == ["sd-smoke", "ezigen-smoke"]
        for _, image, box in row:
            assert image is not None and matches(box, image)
            caption = np.asarray(grid.crop((box[0], box[3] + 2, box[2], box[3] + 30)).convert("L"))
            assert (caption < 128).sum() > 20                               # the prompt is written under it
