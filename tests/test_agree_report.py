"""`bench report --humans RATINGS`: the agreement section in the markdown leaderboard and the HTML
report, with the report's runs as the scores (a run's method is the rated method)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.cli import main
from bench.scoring import SCORE_COLUMNS
from bench.store import RunStore
from test_scoring import make_run


def scored_run_and_ratings(tmp_path):
    store = make_run(tmp_path / "sd-run", method="sd", seeds=(0,))
    rng = np.random.default_rng(0)
    rows, ratings = [], []
    for key, record in sorted(RunStore(store.root).records().items()):
        _, subject, prompt, *_ = key.split("/")
        quality = rng.normal()
        rows.append((key, 0, subject, "", int(prompt), "dino/test", "1", quality + rng.normal(0, 0.3), "x", "c"))
        for rater in ("r1", "r2"):
            ratings.append((rater, "sd", subject, prompt, "", "cp", float(np.clip(np.round(2 + quality + rng.normal(0, 0.5)), 0, 4))))
    pd.DataFrame(rows, columns=SCORE_COLUMNS).astype({"prompt_index": "int64"}).to_parquet(store.root / "scores.parquet")
    path = tmp_path / "ratings.csv"
    pd.DataFrame(ratings, columns=["rater", "method", "subject", "prompt", "item", "aspect", "value"]).to_csv(path, index=False)
    return store.root, path


def test_report_has_the_human_section(tmp_path, capsys):
    run, ratings = scored_run_and_ratings(tmp_path)
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out), "--humans", str(ratings), "--resamples", "200", "--html"]) == 0
    md = (out / "leaderboard-dreambench.md").read_text()
    assert "## Agreement with human ratings" in md and "### Human ratings" in md
    assert "### Metric–human agreement (items of all methods)" in md and "dino/test" in md
    page = (out / "html" / "index.html").read_text()
    assert 'id="humans"' in page and "dino/test" in page and "Krippendorff" in page
    assert capsys.readouterr().err.count("error") == 0
