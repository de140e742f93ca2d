"""Issue 32's statistics cases and their neighbours, table-driven, each bounded in seconds: no
internal error, no hang (every size checked against a named limit before the work, cost linear
beyond bench.limits.MAX_RESAMPLED_UNITS), no silent wrong number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.stats.simulate import table

COLUMNS = ["run", "subject", "prompt", "seed", "image", "metric", "value"]


def error_line(capsys, command, *args) -> str:
    assert main([command, *map(str, args)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def cancelling(magnitude: float) -> pd.DataFrame:
    """Run a: +-magnitude alternating within each subject (true mean 0); run b: about 0.75."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(10):
        for p in range(4):
            for k in range(2):
                rows.append(("a", f"s{s}", str(p), str(k), "0", "m", magnitude if p % 2 else -magnitude))
                rows.append(("b", f"s{s}", str(p), str(k), "0", "m", 0.75 + rng.normal(0, 0.01)))
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.mark.parametrize("name,frame,args,words", [
    ("header", lambda: pd.DataFrame([["a", "b", "s", "p", "0", "0", "m", 1.0]],
                                    columns=["run", "Run", "subject", "prompt", "seed", "image", "metric", "value"]),
     (), "column run is given 2 times"),
    ("header-spaces", lambda: pd.DataFrame([["a", "b", "s", "p", "0", "0", "m", 1.0]],
                                           columns=["value ", "subject", "run", "prompt", "seed", "image", "metric",
                                                    "Value"]), (), "column value is given 2 times"),
    ("cancel-1e17", lambda: cancelling(1e17), ("--versus", "b"), "cancel"),
    ("cancel-1e17-versus-a", lambda: cancelling(1e17)[lambda d: d["run"] == "a"], (), "cancel"),
    ("resamples-1e9", lambda: cancelling(1.0), ("--resamples", "1000000000"), "MAX_RESAMPLES"),
])
def test_stats_refuses_in_one_line(tmp_path, capsys, name, frame, args, words):
    path = tmp_path / f"{name}.csv"
    frame().to_csv(path, index=False)
    assert words in error_line(capsys, "stats", path, *args)


def test_values_that_merely_are_large_still_work(tmp_path, capsys):
    """+-1 alternating: nothing cancels beyond float precision; the change is computed."""
    path = tmp_path / "ok.csv"
    cancelling(1.0).to_csv(path, index=False)
    assert main(["stats", str(path), "--versus", "b", "--json", "--resamples", "200"]) == 0
    import json
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a"]["delta"] == pytest.approx(-0.75, abs=0.01)


def test_beyond_the_resampled_limit_the_closed_forms_agree_with_the_bootstrap(monkeypatch):
    """Above MAX_RESAMPLED_UNITS units (2M subjects in the issue's table) the interval is the t
    interval and the p-value the sign-flip test's normal approximation, linear in the units; on a
    table small enough for both they agree."""
    from bench.stats import analysis
    from bench.stats.analysis import Settings, analyse

    df = table(np.random.default_rng(4), {"a": 0.0, "b": 0.01}, shape=(400, 2, 1, 1))
    boot = {r["run"]: r for r in analyse(df, Settings(resamples=2000), versus="a")}
    monkeypatch.setattr(analysis, "MAX_RESAMPLED_UNITS", 100)
    closed = {r["run"]: r for r in analyse(df, Settings(resamples=2000), versus="a")}
    for field in ("ci_low", "ci_high", "delta_ci_low", "delta_ci_high"):
        assert closed["b"][field] == pytest.approx(boot["b"][field], abs=0.1 * boot["b"]["delta_se"])
    assert closed["b"]["p"] == pytest.approx(boot["b"]["p"], abs=0.03)


def test_power_reads_seeds_per_prompt_whatever_their_labels(tmp_path, capsys):
    df = table(np.random.default_rng(1), {"a": 0.0}, shape=(6, 3, 2, 2))
    df["seed"] = df["subject"] + "/" + df["seed"]                 # seed labels differ per subject
    path = tmp_path / "labels.csv"
    df.to_csv(path, index=False)
    assert main(["power", str(path), "--subjects", "10"]) == 0
    assert "2 seed(s) and 2 image(s) per prompt and seed" in capsys.readouterr().out


def power_grid(out: str) -> list[list[str]]:
    block = next(b for b in out.split("\n\n") if b.startswith("| subjects"))
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def test_power_with_one_seed_and_one_image_says_what_it_assumed(tmp_path, capsys):
    """DreamBench++'s design: one seed, one image per prompt. The residual cannot be estimated:
    it is assumed (and said), more seeds then shrink the MDE, and --seed-sd splits it."""
    df = table(np.random.default_rng(2), {"a": 0.0, "b": 0.0}, shape=(20, 9, 1, 1))
    path = tmp_path / "one.csv"
    df.to_csv(path, index=False)
    assert main(["power", str(path), "--versus", "a", "--subjects", "1,2,20", "--seeds", "1,3,6"]) == 0
    out = capsys.readouterr().out
    assert "assumed: all of it seed noise" in out
    grid = power_grid(out)
    assert grid[0][1:] == ["never"] * 3 and grid[1][1:] == ["never"] * 3          # 1 and 2 subjects
    assert "never: with 1, 2 subject(s)" in out
    mdes = [float(x) for x in grid[2][1:]]
    assert mdes[0] > mdes[1] > mdes[2]                          # more seeds are no longer worthless
    assert main(["power", str(path), "--versus", "a", "--seed-sd", "0.01", "--seeds", "1,6"]) == 0
    out = capsys.readouterr().out
    assert "given: seed noise (--seed-sd)" in out


@pytest.mark.parametrize("args,words", [
    (("--subjects", "1," * 500 + "1"), "MAX_POWER_GRID"),
    (("--subjects", "10000000"), "MAX_POWER_DESIGN"),
    (("--seed-sd", "nan"), "--seed-sd"),
    (("--comparisons", "0"), "--comparisons"),
])
def test_power_options_are_bounded(tmp_path, capsys, args, words):
    path = tmp_path / "t.csv"
    table(np.random.default_rng(3), {"a": 0.0}, shape=(4, 2, 1, 1)).to_csv(path, index=False)
    assert words in error_line(capsys, "power", path, *args)


def test_power_on_many_runs_is_one_pass_and_bounded(tmp_path, capsys, monkeypatch):
    """Many small runs: one grouping (not a filter per run); beyond MAX_TABLE_RUNS refused first."""
    rows = [(f"r{i}", f"s{j}", "0", "0", "0", "m", float(i % 7 + j)) for i in range(300) for j in range(2)]
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    assert main(["power", str(path), "--subjects", "10", "--seeds", "1"]) == 0
    assert capsys.readouterr().out.count("| subjects") == 300
    import bench.limits
    monkeypatch.setattr(bench.limits, "MAX_TABLE_RUNS", 100)
    assert "MAX_TABLE_RUNS" in error_line(capsys, "power", path)


def test_two_way_work_is_bounded_before_it_starts(monkeypatch):
    from bench import BenchError
    from bench.stats import analysis
    from bench.stats.analysis import Settings, analyse

    df = table(np.random.default_rng(5), {"a": 0.0}, shape=(10, 10, 1, 1))
    monkeypatch.setattr(analysis, "MAX_TWO_WAY_WORK", 100 * 500 - 1)
    with pytest.raises(BenchError, match="MAX_TWO_WAY_WORK"):
        analyse(df, Settings(resample="subject+prompt", resamples=500))
    assert analyse(df, Settings(resample="subject+prompt", resamples=400))[0]["units"] == 10


def offset_pair(offset: float, change: str = ".75") -> pd.DataFrame:
    """Run a: every value `offset`; run b: `offset` plus `change` written as text, which a float
    near 1e17 cannot hold (its spacing there is 16): the paired differences are all 0 or 16."""
    rows = []
    for s in range(12):
        for p in range(3):
            rows.append(("a", f"s{s}", str(p), "0", "0", "m", f"{offset:.0f}"))
            rows.append(("b", f"s{s}", str(p), "0", "0", "m", f"{offset:.0f}{change}"))
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.mark.parametrize("command", ["stats", "power"])
def test_differences_finer_than_the_values_hold_are_refused(tmp_path, capsys, command):
    """1e17 against 1e17 + 0.75: neither run's mean cancels, but their difference is lost to float
    spacing; before, `stats --versus` printed Δ +0.0000 and `power --versus` MDEs of 0.0000."""
    path = tmp_path / "offset.csv"
    offset_pair(1e17).to_csv(path, index=False)
    assert "float precision" in error_line(capsys, command, path, "--versus", "a")
    offset_pair(1e3).to_csv(path, index=False)           # the neighbour: 1000 vs 1000.75 is exact enough
    assert main([command, str(path), "--versus", "a"]) == 0
    out = capsys.readouterr().out
    assert ("+0.7500" in out) if command == "stats" else "rows: subjects" in out


@pytest.mark.parametrize("value", ["9" * 400, "-" + "9" * 400])
def test_a_400_digit_value_is_named_too_large_not_nan(tmp_path, capsys, value):
    path = tmp_path / "digits.csv"
    path.write_text("run,subject,prompt,seed,image,metric,value\na,s1,p,0,0,m," + value + "\na,s2,p,0,0,m,0.5\n")
    err = error_line(capsys, "stats", path)
    assert "too large" in err and "line 2" in err and "NaN" not in err
    path.write_text("run,subject,prompt,seed,image,metric,value\na,s1,p,0,0,m,inf\na,s2,p,0,0,m,0.5\n")
    assert "infinite" in error_line(capsys, "stats", path)


def test_power_computes_each_quantile_once_not_once_per_run(tmp_path, capsys):
    """2,000 runs x 5 x 4 grid cells asked for 80,000 t quantiles, 3.4M series terms, a minute at
    the MAX_TABLE_RUNS limit: the same few (p, df) pairs are now computed once."""
    from bench.stats.distributions import t_quantile

    rows = [(f"r{i}", f"s{j}", "0", "0", "0", "m", float(i % 7 + j)) for i in range(200) for j in range(2)]
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    t_quantile.cache_clear()
    assert main(["power", str(path), "--alpha", "0.0431"]) == 0
    info = t_quantile.cache_info()
    assert info.misses <= 10 < 1000 < info.hits           # 5 subject counts x (crit, power)
    assert capsys.readouterr().out.count("| subjects") == 200
