"""Intervals on every leaderboard cell and the paired comparison of `bench report --versus`, in
the markdown, the summary csv and the HTML report."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from bench.cli import main
from bench.report import intervals, load_runs, load_scores
from bench.scoring import score_run
from test_check import synthetic_run
from test_scoring import make_run

CELL = re.compile(r"^\d\.\d{3} ± \d\.\d{3} \[(\d\.\d{3}), (\d\.\d{3})\]( [▲▼])?$")


@pytest.fixture(scope="module")
def smoke_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    sd = make_run(root / "sd-smoke", method="sd", seeds=(0, 1))
    ez = make_run(root / "ezigen-smoke", method="ezigen", seeds=(0, 1, 2))
    for store in (sd, ez):
        score_run(store.root, progress=False)
    return [sd.root, ez.root]


def leaderboard_cells(md: str) -> list[str]:
    lines = [x for x in md.splitlines() if x.startswith("| ours")]
    header = next(x for x in md.splitlines() if x.startswith("|    ") or x.startswith("|  ") or x.startswith("| "))
    titles = [c.strip() for c in header.strip("|").split("|")]
    cells = []
    for line in lines:
        row = dict(zip(titles, (c.strip() for c in line.strip("|").split("|"))))
        cells += [row[t] for t in ("CLIP-T", "CLIP-I", "DINO")]
    return cells


def test_report_versus_sd_in_markdown_csv_and_html(smoke_pair, tmp_path):
    out = tmp_path / "reports"
    assert main(["report", *map(str, smoke_pair), "--out", str(out), "--html", "--versus", "sd",
                 "--resamples", "500", "--seed", "3"]) == 0
    md = (out / "leaderboard-dreambench.md").read_text()
    cells = leaderboard_cells(md)
    assert len(cells) == 6 and all(CELL.match(c) for c in cells), cells
    for c in cells:
        low, high = (float(x) for x in CELL.match(c).groups()[:2])
        assert low <= float(c.split()[0]) <= high
    assert ("cluster bootstrap over subjects (500 resamples, expanded percentile joined with the t interval, "
            "bootstrap seed 3") in md
    assert "## Paired comparison against `sd-smoke`" in md
    section = md.split("## Paired comparison against")[1].split("\n## ")[0]
    rows = [x for x in section.splitlines() if x.startswith("| ezigen-smoke")]
    assert len(rows) == 3 and all("p (Holm)" in section and "[" in r for r in rows)
    # the keys of seed 2 are only in the EZIGen run: named, not silently dropped
    assert "12 key(s) of `ezigen-smoke` are not in `sd-smoke`" in md and "dog/0/s2/i0" in md
    # 3 subjects, 3 comparisons: nothing can be significant, and the note says why (issue 30)
    assert "with 3 comparison(s) in the Holm family the smallest reachable adjusted p is 0.75" in md
    summary = pd.read_csv(out / "leaderboard-dreambench-summary.csv")
    assert {"ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "p", "p_holm", "mde"} <= set(summary.columns)
    ez = summary[summary["run"] == "ezigen-smoke"]
    assert ez["p_holm"].notna().all() and (ez["p_holm"] >= ez["p"]).all()
    html = (out / "html" / "index.html").read_text()
    assert "Paired comparison against sd-smoke" in html and "bootstrap seed 3" in html
    assert all(c.replace("▲", "").strip() in html for c in cells)


def test_the_report_and_bench_stats_agree(smoke_pair):
    df = load_scores(smoke_pair)
    stats = intervals(df, versus="sd-smoke").set_index(["run", "metric"])
    from bench.stats.analysis import Settings, analyse
    from bench.stats.table import from_scores
    direct = {(r["run"], r["metric"]): r for r in analyse(from_scores(df), Settings(), versus="sd-smoke")}
    for key, row in direct.items():
        assert stats.loc[key, "ci_low"] == row["ci_low"] and stats.loc[key, "mean"] == pytest.approx(row["mean"])
        if row["delta"] is not None:
            assert stats.loc[key, "p_holm"] == row["p_holm"]


def test_significant_cells_are_marked(tmp_path):
    base = synthetic_run(tmp_path / "base", rng_seed=1)
    up = synthetic_run(tmp_path / "better", rng_seed=2, shift={"dino/tiny-random": 0.03}, method="ezigen")
    same = synthetic_run(tmp_path / "same", rng_seed=3, method="ip-adapter")
    out = tmp_path / "out"
    assert main(["report", str(base), str(up), str(same), "--out", str(out), "--versus", str(base),
                 "--resamples", "500"]) == 0
    md = (out / "leaderboard-dreambench.md").read_text()
    better = next(x for x in md.splitlines() if x.startswith("| ours") and "| better " in x)
    assert better.count("▲") == 1 and "▼" not in better
    section = md.split("## Paired comparison against `base`")[1].split("\n## ")[0]
    dino = next(x for x in section.splitlines() if x.startswith("| better") and "dino/" in x)
    assert "▲" in dino and "+0.03" in dino
    assert not any("▲" in x or "▼" in x for x in md.splitlines() if x.startswith("| ours") and "| same " in x)


def test_unknown_versus_is_one_line(smoke_pair, tmp_path, capsys):
    assert main(["report", *map(str, smoke_pair), "--out", str(tmp_path), "--versus", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --versus 'nosuch'") and "\n" not in err
    runs = load_runs(smoke_pair)
    assert set(runs["run"]) == {"sd-smoke", "ezigen-smoke"}
