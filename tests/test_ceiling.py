"""The reference choice (references=all|held-out|conditioning), the real-photo rows written by
`bench score` (bench/metrics/real_photos.py) and the "real photos" row of the leaderboards
(bench/report/ceiling.py), end to end with the copy-input method on a drawn DreamBench layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import BenchError
from bench.cli import main
from bench.metrics.clip import ClipMetric
from bench.metrics.references import check_references, reference_set
from bench.metrics.dino import DinoMetric, Dinov2Metric
from bench.metrics.dreamsim import DreamSimMetric
from bench.metrics.real_photos import subject_scores
from test_copy_detector import draw_photo_set, item


class Stub:
    """A metric's identity interface with embeddings chosen by file name."""

    def __init__(self, family, choice, vectors, metric_id="x/stub"):
        self.family, self.reference_choice, self.metric_id = family, choice, metric_id
        self.image_id, self.image_metric, self.ids = metric_id, True, (metric_id,)
        self.vectors = {k: torch.nn.functional.normalize(torch.tensor(v, dtype=torch.float32), dim=0)
                        for k, v in vectors.items()}

    def embed_references(self, paths):
        return torch.stack([self.vectors[Path(p).name] for p in paths])


VECTORS = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [1.0, 1.0, 0.0], "d": [0.0, 0.0, 1.0]}
PHOTOS = [Path(n) for n in VECTORS]
R = 2 ** -0.5                 # cos(a, c) = cos(b, c)


@pytest.mark.parametrize("choice, expected", [
    ("all", {"a": (0 + R + 0) / 3, "b": (0 + R + 0) / 3, "c": (R + R + 0) / 3, "d": 0.0}),
    ("held-out", {"a": (0 + R + 0) / 3, "b": (R + 0) / 2, "c": (R + 0) / 2, "d": (0 + 0) / 2}),
    ("conditioning", {"b": 0.0, "c": R, "d": 0.0}),
])
def test_each_photo_is_scored_against_the_references_without_itself(choice, expected):
    got = subject_scores(Stub("dino", choice, VECTORS), PHOTOS, PHOTOS[:1])
    assert {p.name: v["x/stub"] for p, v in got.items()} == pytest.approx(expected)
    distances = subject_scores(Stub("dreamsim", choice, VECTORS), PHOTOS, PHOTOS[:1])
    assert {p.name: v["x/stub"] for p, v in distances.items()} == pytest.approx({k: 1 - v for k, v in expected.items()})


def test_default_ids_and_versions_are_unchanged_and_choices_get_their_own():
    clip = ClipMetric(preset="tiny")
    assert (clip.image_id, clip.version) == ("clip_i/tiny-random", "2")
    assert ClipMetric(preset="tiny", references="held-out").image_id == "clip_i_heldout/tiny-random"
    assert ClipMetric(preset="tiny", references="held-out").version == "2"
    assert ClipMetric(preset="tiny", references="conditioning").image_id == ClipMetric(preset="tiny", mode="paired").image_id
    assert (DinoMetric(preset="tiny").metric_id, DinoMetric(preset="tiny").version) == ("dino/tiny-random", "2")
    assert DinoMetric(preset="tiny", references="held-out").metric_id == "dino_heldout/tiny-random"
    assert Dinov2Metric(preset="tiny", references="held-out").metric_id == "dinov2_heldout/tiny-random"
    assert DreamSimMetric(preset="tiny", references="held-out").metric_id == "dreamsim_heldout/tiny-random"
    assert DreamSimMetric(preset="tiny").metric_id == "dreamsim/tiny-random"
    with pytest.raises(BenchError, match="clip.references='some'"):
        ClipMetric(preset="tiny", references="some")
    with pytest.raises(BenchError, match="mode=paired"):
        DinoMetric(preset="tiny", mode="paired", references="held-out")


def test_reference_sets():
    one = item("out.png", ["a.jpg", "b.jpg", "c.jpg"], ["a.jpg"])
    assert reference_set(one, "all") == reference_set(one, "all-pairs") == one.reference_images
    assert reference_set(one, "conditioning") == (Path("a.jpg"),)
    assert reference_set(one, "held-out") == (Path("b.jpg"), Path("c.jpg"))
    everything = item("out.png", ["a.jpg", "b.jpg"], ["a.jpg", "b.jpg"])
    with pytest.raises(BenchError, match="held-out"):
        check_references([one, everything], "dino", references="held-out")
    check_references([everything], "dino", references="all")          # nothing to refuse


def test_held_out_with_nothing_held_out_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--method", "copy-input", "--suite", "dreambench", "--preset", "smoke",
                 "--suite-option", "conditioning=all", "--metrics", "clip", "--metric-param",
                 "clip.references=held-out", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "clip.references=held-out" in err and "conditioned the method" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """copy-input on 3 drawn subjects x 5 photos, scored with all and held-out references, reported."""
    base = tmp_path_factory.mktemp("ceiling")
    data = draw_photo_set(base / "db")
    run = base / "copy-input"
    common = ["--suite", "dreambench", "--data-root", str(data.parent), "--preset", "tiny", "--metric-preset", "tiny",
              "--seeds", "0", "--images-per-prompt", "1", "--resolution", "64"]
    assert main(["run", "--method", "copy-input", *common, "--metrics", "clip,dino,copy", "--out", str(run)]) == 0
    first = pd.read_parquet(run / "scores.parquet")
    assert main(["score", str(run), "--metrics", "clip,dino", "--metric-param", "clip.references=held-out",
                 "--metric-param", "dino.references=held-out", "--no-progress"]) == 0
    assert main(["score", str(run), "--metrics", "clip,dino,copy", "--no-progress"]) == 0
    report = base / "report"
    assert main(["report", str(run), "--out", str(report), "--html"]) == 0
    return run, report, first


def test_default_scores_are_untouched_by_a_held_out_pass(reported):
    run, _, first = reported
    again = pd.read_parquet(run / "scores.parquet")
    cols = ["key", "metric", "metric_version", "value"]
    merged = first[cols].merge(again[cols], on=["key", "metric"], suffixes=("", "_again"))
    assert len(merged) == len(first)
    assert (merged["value"] == merged["value_again"]).all()
    assert (merged["metric_version"] == merged["metric_version_again"]).all()


def test_real_photo_row_in_markdown_html_and_csv(reported):
    run, report, _ = reported
    rows = pd.read_parquet(run / "real_photos.parquet")
    assert set(rows["metric"]) == {"clip_i/tiny-random", "dino/tiny-random", "clip_i_heldout/tiny-random",
                                   "dino_heldout/tiny-random", "copy/clip-tiny-random"}
    assert rows.groupby("metric")["subject"].nunique().eq(3).all()
    summary = pd.read_csv(report / "leaderboard-dreambench-summary.csv")
    ceiling = summary[summary["run"] == "real photos"].set_index("metric")
    assert set(ceiling.index) == set(rows["metric"])
    identity = ceiling.drop(index="copy/clip-tiny-random")
    assert identity[["ci_low", "ci_high"]].notna().all().all()
    assert (identity["ci_low"] <= identity["mean"]).all() and (identity["mean"] <= identity["ci_high"]).all()
    # the copy rate on real photos: every subject 0 here, so no "95%" interval of zero width (docs/statistics.md)
    copy_by_subject = rows[rows["metric"] == "copy/clip-tiny-random"].groupby("subject")["value"].mean()
    assert ceiling.loc["copy/clip-tiny-random", ["ci_low", "ci_high"]].notna().all() or copy_by_subject.nunique() == 1
    markdown = (report / "leaderboard-dreambench.md").read_text()
    line = next(li for li in markdown.splitlines() if li.startswith("| reference | real photos"))
    assert line.count("[") >= 4
    assert "Beyond the real photos" in markdown and "`clip_i/tiny-random` = " in markdown     # copy-input
    assert "real photos" in (report / "html" / "index.html").read_text()

    ours = summary[summary["run"] != "real photos"].set_index("metric")["mean"]
    assert ours["copy/clip-tiny-random"] >= 0.9
    for family in ("clip_i", "dino"):
        held = ours[f"{family}_heldout/tiny-random"]
        assert held < ours[f"{family}/tiny-random"]
        assert ceiling.loc[f"{family}_heldout/tiny-random", "ci_low"] <= held
        assert held <= ceiling.loc[f"{family}_heldout/tiny-random", "ci_high"]


def test_bench_score_refuses_held_out_on_a_run_conditioned_on_every_photo(tmp_path, capsys):
    run = tmp_path / "all"
    assert main(["run", "--method", "copy-input", "--suite", "dreambench", "--preset", "smoke", "--suite-option",
                 "conditioning=all", "--metrics", "dino", "--out", str(run)]) == 0
    before = (run / "scores.parquet").read_bytes()
    capsys.readouterr()
    assert main(["score", str(run), "--metrics", "dino", "--metric-param", "dino.references=held-out",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dino.references=held-out" in err
    assert (run / "scores.parquet").read_bytes() == before


def test_bench_score_images_refuses_held_out_before_the_run_folder_is_made(tmp_path, capsys):
    """`bench score --images` with references=held-out on conditioning=all: one line, exit 2, and no
    half-made run folder left behind (the refusal used to come after the import wrote run.json)."""
    from PIL import Image

    images = tmp_path / "made-elsewhere"
    (images / "dog" / "000" / "s0").mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 40, 40)).save(images / "dog" / "000" / "s0" / "i0.png")
    out = tmp_path / "external"
    code = main(["score", "--images", str(images), "--suite", "dreambench", "--mini", "--suite-option",
                 "conditioning=all", "--metric-preset", "tiny", "--metrics", "clip", "--metric-param",
                 "clip.references=held-out", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "clip.references=held-out" in err and "conditioned the method" in err
    assert not out.exists()
