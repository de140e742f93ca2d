"""`bench check`: passes against its own fresh baseline, fails when a metric moves beyond the
tolerance or disappears, refuses a missing baseline."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import main
from bench.scoring import score_run
from test_scoring import make_run


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    store = make_run(root / "run", seeds=(0, 1), subjects={"dog", "vase"})
    score_run(store.root, progress=False)
    baseline = root / "baselines" / "smoke.json"
    assert main(["check", str(store.root), "--baseline", str(baseline), "--update"]) == 0
    return store, baseline


def shifted_copy(store, tmp_path, metric: str, delta: float):
    """The same run with one metric's values shifted by ``delta`` (a regression)."""
    import shutil

    copy = tmp_path / "shifted"
    shutil.copytree(store.root, copy)
    df = pd.read_parquet(copy / "scores.parquet")
    df.loc[df["metric"] == metric, "value"] += delta
    df.to_parquet(copy / "scores.parquet", index=False)
    return copy


def test_baseline_holds_the_run_summary(scored):
    store, baseline = scored
    data = json.loads(baseline.read_text())
    assert data["suite"] == "dreambench" and data["tolerance"] == 0.005
    assert set(data["metrics"]) == {"clip_t/tiny-random", "clip_i/tiny-random", "dino/tiny-random"}
    dino = data["metrics"]["dino/tiny-random"]
    assert dino["n"] == 2 and dino["images"] == 2 * 2 * 4 and dino["std"] > 0


def test_fresh_baseline_passes(scored, capsys):
    store, baseline = scored
    assert main(["check", str(store.root), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "OK: 3 metric(s)" in out and "MOVED" not in out


def test_shift_beyond_tolerance_fails_with_a_table(scored, tmp_path, capsys):
    store, baseline = scored
    moved = shifted_copy(store, tmp_path, "dino/tiny-random", 0.02)
    assert main(["check", str(moved), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    dino_line = next(line for line in out.splitlines() if "dino/tiny-random" in line and "|" in line)
    assert "MOVED" in dino_line and "+0.0200" in dino_line
    assert "baseline std" in out and "FAIL: 1 metric(s)" in out
    # the same shift passes under a looser tolerance, and a shift inside the default passes
    assert main(["check", str(moved), "--baseline", str(baseline), "--tol", "0.05"]) == 0


def test_small_shift_passes_and_missing_metric_fails(scored, tmp_path, capsys):
    store, baseline = scored
    small = shifted_copy(store, tmp_path, "clip_t/tiny-random", 0.004)
    assert main(["check", str(small), "--baseline", str(baseline)]) == 0
    df = pd.read_parquet(small / "scores.parquet")
    df[df["metric"] != "clip_i/tiny-random"].to_parquet(small / "scores.parquet", index=False)
    capsys.readouterr()
    assert main(["check", str(small), "--baseline", str(baseline)]) == 1
    assert "MISSING" in capsys.readouterr().out


def test_missing_baseline_is_a_clear_error(scored, tmp_path, capsys):
    store, _ = scored
    assert main(["check", str(store.root), "--baseline", str(tmp_path / "none.json")]) == 2
    assert "--update" in capsys.readouterr().err
