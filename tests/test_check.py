"""`bench check` as a paired statistical test: a baseline keeps per-key values and the run's
facts; exact / test / equivalence modes; every input that would make a check unable to fail is
refused with one line and exit status 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bench.check import EXACT_TOL
from bench.cli import main
from bench.scoring import score_run
from test_scoring import make_run

METRICS = ("clip_i/tiny-random", "clip_t/tiny-random", "dino/tiny-random")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A real scored run over the mini suite and its baseline (exact mode, as for smoke CI)."""
    root = tmp_path_factory.mktemp("check")
    store = make_run(root / "run", seeds=(0, 1), subjects={"dog", "vase"})
    score_run(store.root, progress=False)
    baseline = root / "baselines" / "smoke.json"
    assert main(["check", str(store.root), "--baseline", str(baseline), "--update", "--mode", "exact"]) == 0
    return store, baseline


def synthetic_run(root, subjects=30, prompts=5, seeds=2, shift=None, method="sd", options=None, rng_seed=0,
                  noise=0.02):
    """A run directory holding only run.json and scores.parquet (no images): enough subjects for
    the statistical modes. ``shift``: {metric: added value}."""
    rng = np.random.default_rng(rng_seed)
    root.mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({
        "format": 1, "identity": {"method": method, "method_params": {}, "model": "preset:tiny"},
        "suite": {"name": "dreambench", "options": options or {}}, "random_weights": True,
        "plan": {"seeds": list(range(seeds)), "images_per_seed": subjects * prompts}}))
    rows = []
    subject_effect = np.random.default_rng(99).normal(0, 0.05, subjects)       # the same subjects every run
    for metric in METRICS:
        for s in range(subjects):
            for p in range(prompts):
                for k in range(seeds):
                    value = 0.6 + subject_effect[s] + rng.normal(0, noise) + (shift or {}).get(metric, 0.0)
                    rows.append({"key": f"dreambench/subj{s}/{p:03d}/s{k}/i0", "seed": k, "subject": f"subj{s}",
                                 "category": "object", "prompt_index": p, "metric": metric, "metric_version": "1",
                                 "value": value, "sha256": "", "context": ""})
    pd.DataFrame(rows).to_parquet(root / "scores.parquet", index=False)
    return root


def check(*args) -> int:
    return main(["check", *map(str, args)])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


# ---- the baseline and the exact mode on a real scored run ----------------------------------------
def test_baseline_keeps_per_key_values_and_the_run_facts(scored):
    store, baseline = scored
    data = json.loads(baseline.read_text())
    assert data["format"] == 2 and data["suite"] == "dreambench" and data["method"] == "sd"
    assert data["mode"] == "exact" and data["tolerance"] == 0.005
    assert set(data["metrics"]) == set(METRICS)
    assert len(data["keys"]) == 2 * 4 * 2                 # subjects x prompts x seeds, one image each
    scores = pd.read_parquet(store.scores_path)
    dino = scores[scores["metric"] == "dino/tiny-random"].set_index("key")["value"]
    by_key = dict(zip((f"dreambench/{s}/{int(p):03d}/s{k}/i{i}" for s, p, k, i in data["keys"]),
                      data["metrics"]["dino/tiny-random"]["values"]))
    assert by_key == dino.to_dict()                        # every score kept exactly


def test_fresh_baseline_passes_and_a_test_that_cannot_fail_is_refused(scored, capsys):
    store, baseline = scored
    assert check(store.root, "--baseline", baseline, "--mode", "exact") == 0
    assert "OK: 3 metric(s)" in capsys.readouterr().out
    # 2 subjects: no sign pattern reaches p < 0.05, so a statistical test could never fail
    assert check(store.root, "--baseline", baseline, "--mode", "test") == 2
    line = error_line(capsys)
    assert "could not fail" in line and "smallest Holm-adjusted p-value reachable over 3 metric(s) is 1" in line
    # ... and an equivalence check could not hold its level
    assert check(store.root, "--baseline", baseline, "--mode", "equivalence") == 2
    assert "cannot hold its level" in error_line(capsys)


def shifted_copy(store, tmp_path, metric: str, delta: float, name="shifted"):
    copy = tmp_path / name
    shutil.copytree(store.root, copy)
    df = pd.read_parquet(copy / "scores.parquet")
    df.loc[df["metric"] == metric, "value"] += delta
    df.to_parquet(copy / "scores.parquet", index=False)
    return copy


def test_exact_mode_fails_on_a_shift_and_names_it(scored, tmp_path, capsys):
    store, baseline = scored
    moved = shifted_copy(store, tmp_path, "dino/tiny-random", 0.02)
    assert check(moved, "--baseline", baseline) == 1               # the baseline's mode: exact
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("| dino/tiny-random"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # the change; every key moved by exactly 0.02, so the differences have no spread and no
    # (zero-width) interval is printed
    assert "CHANGED" in line and cells[3] == "+0.0200" and cells[4] == "–" and "[+0.0200, +0.0200]" not in line
    assert "FAIL: 1 metric(s)" in out and "MDE" in out
    fail = next(x for x in out.splitlines() if x.startswith("FAIL"))
    # the keys that moved: the first five by name, then how many more (16 keys in all)
    assert "16 key(s) moved:" in fail and fail.count("dog/") + fail.count("vase/") == 5 and "and 11 more" in fail
    tiny = shifted_copy(store, tmp_path, "dino/tiny-random", EXACT_TOL / 10, "tiny")
    assert check(tiny, "--baseline", baseline) == 0                # within 1e-6 is exact


def test_missing_metric_fails(scored, tmp_path, capsys):
    store, baseline = scored
    copy = shifted_copy(store, tmp_path, "dino/tiny-random", 0.0)
    df = pd.read_parquet(copy / "scores.parquet")
    df[df["metric"] != "clip_i/tiny-random"].to_parquet(copy / "scores.parquet", index=False)
    assert check(copy, "--baseline", baseline, "--mode", "exact") == 1
    assert "MISSING" in capsys.readouterr().out


# ---- the statistical modes on runs with 30 subjects --------------------------------------------
@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    base = synthetic_run(root / "base", rng_seed=1)
    baseline = root / "base.json"
    assert check(base, "--baseline", baseline, "--update", "--tol", "0.002") == 0
    return root, baseline


def test_test_mode_passes_a_rerun_and_fails_a_real_shift(many, capsys):
    root, baseline = many
    rerun = synthetic_run(root / "rerun", rng_seed=2)                 # same distribution, other noise
    assert check(rerun, "--baseline", baseline) == 0
    capsys.readouterr()
    shifted = synthetic_run(root / "drop", rng_seed=3, shift={"dino/tiny-random": -0.01})
    assert check(shifted, "--baseline", baseline) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("| dino/tiny-random"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = [c.strip() for c in next(x for x in out.splitlines() if x.startswith("| metric")).strip("|").split("|")]
    row = dict(zip(header, cells))
    assert row["status"] == "REGRESSED"
    change = float(row["change"])
    low, high = (float(x) for x in row["95% CI of change"].strip("[]").split(","))
    assert low < change < high < 0 and abs(change + 0.01) < 0.004
    assert 0 < float(row["MDE"]) < 0.01 and float(row["p (Holm)"]) < 0.05
    # the same shift passes when the practical margin is larger than it
    assert check(shifted, "--baseline", baseline, "--tol", "0.02") == 0


def test_equivalence_mode(many, capsys):
    root, baseline = many
    rerun = synthetic_run(root / "eq", rng_seed=4)
    assert check(rerun, "--baseline", baseline, "--mode", "equivalence", "--tol", "0.02") == 0
    assert check(rerun, "--baseline", baseline, "--mode", "equivalence", "--tol", "0.0001") == 1


def test_lacking_keys_are_named(many, capsys):
    root, baseline = many
    part = synthetic_run(root / "part", rng_seed=5)
    df = pd.read_parquet(part / "scores.parquet")
    df[~df["key"].str.startswith("dreambench/subj3/")].to_parquet(part / "scores.parquet", index=False)
    assert check(part, "--baseline", baseline) == 0
    out = capsys.readouterr().out
    assert "the run lacks 10 baseline key(s): subj3/0/s0/i0" in out


# ---- refusals: exit 2, one line ------------------------------------------------------------------
def test_nan_tol_and_bad_tolerances_are_refused(scored, capsys):
    store, baseline = scored
    for tol in ("nan", "inf", "-0.1"):
        assert check(store.root, "--baseline", baseline, "--tol", tol) == 2
        assert "--tol" in error_line(capsys)


def rewrite(baseline, tmp_path, change, name="edited.json", raw=None):
    data = json.loads(baseline.read_text())
    change(data)
    path = tmp_path / name
    path.write_text(raw if raw is not None else json.dumps(data))
    return path


def test_nan_or_inf_in_the_baseline_is_refused(scored, tmp_path, capsys):
    store, baseline = scored
    text = baseline.read_text()
    first = json.loads(text)["metrics"]["dino/tiny-random"]["values"][0]
    for bad in ("NaN", "Infinity", "1e999"):
        path = tmp_path / "bad.json"
        path.write_text(text.replace(repr(first), bad, 1))
        assert check(store.root, "--baseline", path) == 2
        assert "finite" in error_line(capsys)
    path.write_text(text.replace(repr(first), "1e308", 1))        # finite, but sums of it overflow
    assert check(store.root, "--baseline", path) == 2
    assert "too large" in error_line(capsys)
    path = rewrite(baseline, tmp_path, lambda d: d.update(tolerance=None))
    assert check(store.root, "--baseline", path) == 2
    assert "tolerance" in error_line(capsys)


def test_nan_in_the_run_is_refused(scored, tmp_path, capsys):
    store, baseline = scored
    copy = shifted_copy(store, tmp_path, "dino/tiny-random", 0.0)
    df = pd.read_parquet(copy / "scores.parquet")
    df.loc[df.index[3], "value"] = np.nan
    df.to_parquet(copy / "scores.parquet", index=False)
    assert check(copy, "--baseline", baseline) == 2
    assert "NaN" in error_line(capsys)
    assert check(copy, "--baseline", tmp_path / "b.json", "--update") == 2      # nor made into a baseline
    error_line(capsys)


def test_empty_baselines_are_refused(scored, tmp_path, capsys):
    store, baseline = scored
    for name, change in (("nometrics.json", lambda d: d.update(metrics={})),
                         ("nokeys.json", lambda d: d.update(keys=[], metrics={m: dict(v, values=[]) for m, v in
                                                                              d["metrics"].items()})),
                         ("novalues.json", lambda d: [v.update(values=[None] * len(v["values"]))
                                                      for v in d["metrics"].values()])):
        assert check(store.root, "--baseline", rewrite(baseline, tmp_path, change, name)) == 2, name
        error_line(capsys)


def test_old_baselines_without_values_are_refused(scored, tmp_path, capsys):
    store, baseline = scored
    old = {"format": 1, "suite": "dreambench", "tolerance": 0.005,
           "metrics": {m: {"mean": 0.5, "std": 0.01, "n": 2, "images": 16} for m in METRICS}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert check(store.root, "--baseline", path) == 2
    assert "--update" in error_line(capsys)


def test_no_common_keys_is_refused(scored, tmp_path, capsys):
    store, baseline = scored
    path = rewrite(baseline, tmp_path, lambda d: d.update(keys=[["cat " + k[0], *k[1:]] for k in d["keys"]]))
    assert check(store.root, "--baseline", path) == 2
    assert "share no" in error_line(capsys)


def test_other_method_or_suite_options_are_refused(scored, tmp_path, capsys):
    store, baseline = scored
    for field, value, words in (("method", "ezigen", "different method"),
                                ("suite_options", {"split": "live"}, "different suite options"),
                                ("method_params", {"guidance": 3}, "different method parameters"),
                                ("suite", "dreamedit", "different suite")):
        path = rewrite(baseline, tmp_path, lambda d: d.update({field: value}))
        assert check(store.root, "--baseline", path) == 2
        assert words in error_line(capsys)


def test_bad_baseline_files_are_one_line(scored, tmp_path, capsys, monkeypatch):
    store, baseline = scored
    cases = {"latin1.json": "{\"metrics\": \"caf\xe9\"}".encode("latin-1"),
             "nested.json": b"[" * 100_000 + b"]" * 100_000,
             "garbage.json": b"{not json",
             "list.json": b"[1, 2, 3]"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert check(store.root, "--baseline", path) == 2, name
        assert str(path) in error_line(capsys)
    import bench.check
    monkeypatch.setattr(bench.check, "MAX_BASELINE_BYTES", 1000)
    assert check(store.root, "--baseline", baseline) == 2
    assert "MiB" in error_line(capsys)
    assert check(store.root, "--baseline", tmp_path / "none.json") == 2
    assert "--update" in error_line(capsys)


def test_a_baseline_with_a_repeated_key_is_refused(scored, tmp_path, capsys):
    """A hand-edited baseline naming one key twice is one line, not an internal error."""
    store, baseline = scored

    def repeat_first_key(data):
        data["keys"][1] = list(data["keys"][0])

    assert check(store.root, "--baseline", rewrite(baseline, tmp_path, repeat_first_key)) == 2
    assert "repeat" in error_line(capsys)


# ---- issue 30/32: designs that cannot fail, what is stored, what the columns mean, hostile numbers -----
def test_holm_makes_six_subjects_and_three_metrics_unable_to_fail(tmp_path, capsys):
    """6 subjects: the smallest single p is 2/64 = 0.031 < 0.05, but Holm over 3 metrics can never
    go below 3 * 0.031 = 0.094: refused, naming that number, even with every metric shifted."""
    base = synthetic_run(tmp_path / "base", subjects=6, rng_seed=1)
    baseline = tmp_path / "b.json"
    assert check(base, "--baseline", baseline, "--update") == 0
    out = capsys.readouterr().out
    assert "mode exact" in out and "0.0938" in out                # stored the mode the run supports, and why
    assert json.loads(baseline.read_text())["mode"] == "exact"
    moved = synthetic_run(tmp_path / "moved", subjects=6, rng_seed=2, shift={m: 0.2 for m in METRICS})
    assert check(moved, "--baseline", baseline, "--mode", "test") == 2
    line = error_line(capsys)
    assert "smallest Holm-adjusted p-value reachable over 3 metric(s) is 0.0938" in line
    assert check(moved, "--baseline", baseline) == 1                # the stored mode (exact) fails it
    assert check(base, "--baseline", tmp_path / "t.json", "--update", "--mode", "test") == 2     # asked for the impossible
    assert "--mode test" in error_line(capsys)
    assert not (tmp_path / "t.json").exists()


def test_monte_carlo_floor_refuses_a_check_until_resamples_are_raised():
    """16 subjects: Monte-Carlo p-values, at least 1/(B+1); 6 metrics with B = 100 can never reach
    a Holm-adjusted 0.05 (6/101), B = 200 can (6/201)."""
    from bench.check import impossible_mode
    from bench.stats.analysis import Settings

    why = impossible_mode("test", 16, 6, Settings(resamples=100))
    assert why and "0.0594" in why and "raise --resamples to at least 120" in why
    assert impossible_mode("test", 16, 6, Settings(resamples=200)) is None
    assert impossible_mode("test", 6, 1, Settings()) is None and impossible_mode("test", 6, 2, Settings())
    assert impossible_mode("equivalence", 7, 1, Settings()) and impossible_mode("equivalence", 8, 1, Settings()) is None


def test_baseline_and_current_columns_are_the_means_behind_the_change(many, capsys):
    """With baseline keys the run lacks, 'baseline' and 'current' are means on the common keys:
    current - baseline equals the change."""
    root, baseline = many
    part = synthetic_run(root / "part2", rng_seed=6, shift={"dino/tiny-random": 0.05})
    df = pd.read_parquet(part / "scores.parquet")
    df[~df["key"].str.startswith(("dreambench/subj1/", "dreambench/subj2/"))].to_parquet(part / "scores.parquet",
                                                                                       index=False)
    for mode in ("test", "equivalence"):
        check(part, "--baseline", baseline, "--mode", mode, "--tol", "0.1")
        out = capsys.readouterr().out
        header = [c.strip() for c in next(x for x in out.splitlines() if x.startswith("| metric")).strip("|").split("|")]
        for line in (x for x in out.splitlines() if x.startswith("| ") and "tiny-random" in x):
            row = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
            assert float(row["current"]) - float(row["baseline"]) == pytest.approx(float(row["change"]), abs=2e-4)


@pytest.mark.parametrize("edit,words", [
    (lambda d: d["metrics"]["dino/tiny-random"]["values"].__setitem__(0, 10 ** 400), "too large"),
    (lambda d: d.update(tolerance=10 ** 400), "tolerance"),
    (lambda d: d.update(tolerance=-(10 ** 400)), "tolerance"),
])
def test_huge_integers_in_a_baseline_are_one_line(scored, tmp_path, capsys, edit, words):
    store, baseline = scored
    assert check(store.root, "--baseline", rewrite(baseline, tmp_path, edit)) == 2
    assert words in error_line(capsys)


def test_values_that_cancel_are_refused_not_called_equivalent(many, tmp_path, capsys):
    """A baseline of +-1e100 alternating: the paired differences cancel to 0 in float arithmetic
    although the run's mean is 0.6; refused (exit 2), never 'OK, change +0.0000'."""
    root, baseline = many
    data = json.loads(baseline.read_text())
    for entry in data["metrics"].values():
        entry["values"] = [1e100 if i % 2 else -1e100 for i in range(len(entry["values"]))]
    path = tmp_path / "cancel.json"
    path.write_text(json.dumps(data))
    rerun = synthetic_run(root / "cancel-run", rng_seed=7)
    for mode in ("equivalence", "test"):
        assert check(rerun, "--baseline", path, "--mode", mode, "--tol", "1") == 2
        assert "cancel" in error_line(capsys)


def test_size_limits_are_checked_before_the_work(scored, tmp_path, capsys, monkeypatch):
    store, baseline = scored
    import bench.check
    monkeypatch.setattr(bench.check, "MAX_BASELINE_KEYS", 10)
    assert check(store.root, "--baseline", baseline) == 2
    assert "MAX_BASELINE_KEYS" in error_line(capsys)
    assert check(store.root, "--baseline", baseline, "--resamples", "1000000000") == 2
    assert "MAX_RESAMPLES" in error_line(capsys)


def test_the_shipped_smoke_baseline_is_what_its_readme_recipe_uses():
    """reports/baselines/smoke-sd.json exists, reads as a baseline of the smoke recipe (exact
    mode: 3 subjects support no test), and the README's CI recipe checks against it."""
    from pathlib import Path

    from bench.check import read_baseline

    root = Path(__file__).resolve().parents[1] / "reports" / "baselines"
    data = read_baseline(root / "smoke-sd.json")
    assert data["method"] == "sd" and data["suite"] == "dreambench" and data["mode"] == "exact"
    assert {k[0] for k in data["keys"]} and len({k[2] for k in data["keys"]}) == 2          # seeds 0-1
    readme = (root / "README.md").read_text()
    assert "--baseline reports/baselines/smoke-sd.json" in readme and "--seeds 0-1" in readme


@pytest.mark.parametrize("mode", ["test", "equivalence"])
def test_a_tolerance_beyond_the_metrics_range_is_refused(many, capsys, mode):
    """Scores spanning about 0.4: a tolerance of 10 (or 1) can never be exceeded by a change of
    these values, so the check could not fail: refused, naming the metric and its range. Before,
    a real drop of 0.3 passed as 'OK'. The neighbour: a tolerance inside the range runs."""
    root, baseline = many
    dropped = root / f"tol-drop-{mode}"
    if not dropped.exists():
        synthetic_run(dropped, rng_seed=8, shift={m: -0.3 for m in METRICS})
    for tol in ("10", "1"):
        assert check(dropped, "--baseline", baseline, "--mode", mode, "--tol", tol) == 2
        line = error_line(capsys)
        assert f"--tol {tol} is at least the whole range of metric" in line and "could not fail" in line
    assert check(dropped, "--baseline", baseline, "--mode", mode, "--tol", "0.1") == 1


def test_equivalence_counts_subjects_whatever_unit_is_resampled(tmp_path, capsys):
    """3 subjects with --resample image hold 3 x 5 x 2 = 30 'units', but the level of an
    equivalence check rests on the 3 subjects: refused as at --resample subject (it passed)."""
    base = synthetic_run(tmp_path / "base", subjects=3, rng_seed=1)
    baseline = tmp_path / "b.json"
    assert check(base, "--baseline", baseline, "--update", "--mode", "exact") == 0
    rerun = synthetic_run(tmp_path / "rerun", subjects=3, rng_seed=2)
    for unit in ("image", "cell", "subject"):
        assert check(rerun, "--baseline", baseline, "--mode", "equivalence", "--tol", "0.05", "--resample", unit) == 2
        assert "3 subjects" in error_line(capsys)
    assert check(base, "--baseline", tmp_path / "e.json", "--update", "--mode", "equivalence",
                 "--resample", "image") == 2
    assert "equivalence" in error_line(capsys) and not (tmp_path / "e.json").exists()
