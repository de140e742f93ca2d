"""`bench stats TABLE` and `bench power`: the JSON contract, CSV and parquet alike, the paired
comparison, and one-line errors (exit 2) for every bad table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.stats.simulate import table

SHAPE = (12, 4, 3, 2)          # small: subjects, prompts, seeds, images


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    df = table(np.random.default_rng(0), {"ref": 0.0, "same": 0.0, "better": 0.15}, metrics=("clip_i", "dino"),
               shape=SHAPE)
    csv, parquet = root / "scores.csv", root / "scores.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    return df, csv, parquet


def run_json(capsys, *args):
    assert main(["stats", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def error_line(capsys, *args) -> str:
    assert main(["stats", *map(str, args)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and captured.out == "", err
    return err


def test_json_array_on_stdout_with_the_documented_fields(scores, capsys):
    df, csv, _ = scores
    rows = run_json(capsys, csv, "--versus", "ref", "--json", "--resamples", "500")
    assert isinstance(rows, list) and len(rows) == 3 * 2
    assert [(r["run"], r["metric"]) for r in rows] == [(run, m) for run in ("ref", "same", "better")
                                                       for m in ("clip_i", "dino")]
    for r in rows:
        group = df[(df["run"] == r["run"]) & (df["metric"] == r["metric"])]
        assert r["n"] == len(group) and r["units"] == 12 and r["subjects"] == 12 and r["seeds"] == 3
        assert r["mean"] == pytest.approx(group.groupby("seed")["value"].mean().mean())
        assert r["ci_low"] < r["mean"] < r["ci_high"]
        assert r["resamples"] == 500 and r["alpha"] == 0.05 and r["unit"] == "subject"
        if r["run"] == "ref":
            assert all(r[k] is None for k in ("delta", "delta_ci_low", "delta_ci_high", "p", "p_holm"))
        else:
            assert r["delta_ci_low"] < r["delta"] < r["delta_ci_high"] and 0 < r["p"] <= r["p_holm"] <= 1
            assert r["versus"] == "ref" and r["paired"] == r["n"]
    better = [r for r in rows if r["run"] == "better"]
    assert all(r["significant"] and r["delta"] > 0.05 for r in better)


def test_json_file_and_flag_before_the_table(scores, capsys, tmp_path):
    _, csv, parquet = scores
    out = tmp_path / "out.json"
    assert main(["stats", str(parquet), "--versus", "ref", "--json", str(out), "--resamples", "500"]) == 0
    printed = capsys.readouterr().out
    assert "| run" in printed and "p (Holm)" in printed and str(out) in printed
    from_file = json.loads(out.read_text())
    from_flag_first = run_json(capsys, "--json", csv, "--versus", "ref", "--resamples", "500")
    assert from_file == from_flag_first                      # CSV and parquet give the same numbers


def test_options_change_what_they_say(scores, capsys):
    _, csv, _ = scores
    base = run_json(capsys, csv, "--json", "--resamples", "400")[0]
    for args, check in ((("--alpha", "0.2"), lambda r: r["ci_high"] - r["ci_low"] < base["ci_high"] - base["ci_low"]),
                        (("--resample", "cell"), lambda r: r["units"] == 12 * 4 and r["unit"] == "cell"),
                        (("--resample", "image"), lambda r: r["units"] == r["n"]),
                        (("--seed", "5"), lambda r: r["bootstrap_seed"] == 5 and r["ci_low"] <= r["mean"] - 1.9 * r["se"] / 2),
                        (("--aggregate", "images"), lambda r: r["mean"] == pytest.approx(base["mean"]))):
        row = run_json(capsys, csv, "--json", "--resamples", "400", *args)[0]
        assert check(row), args
    assert run_json(capsys, csv, "--json", "--resamples", "400")[0] == base        # the same seed, the same result


def test_keys_one_run_lacks_are_named(scores, capsys, tmp_path):
    df, _, _ = scores
    cut = df[~((df["run"] == "same") & (df["subject"] == "subject03") & (df["prompt"] == "1"))]
    path = tmp_path / "cut.csv"
    cut.to_csv(path, index=False)
    assert main(["stats", str(path), "--versus", "ref", "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    assert "6 key(s) of 'ref' are not in 'same'" in out and "subject03/1/s0/i0" in out
    rows = run_json(capsys, path, "--versus", "ref", "--json", "--resamples", "300")
    same = next(r for r in rows if r["run"] == "same")
    assert same["only_in_versus"] == 6 and same["paired"] == same["n"]


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.drop(columns=["seed"]), "missing column(s) seed"),
    (lambda d: d.iloc[:0], "no rows"),
    (lambda d: d.assign(value=d["value"].astype(object).where(d.index != 5, "abc")), "not a number"),
    (lambda d: d.assign(value=d["value"].where(d.index != 7, np.nan)), "NaN"),
    (lambda d: d.assign(value=d["value"].where(d.index != 7, np.inf)), "infinite"),
    (lambda d: d.assign(subject=d["subject"].where(d["run"] != "same", "subject00")), "repeat"),
    (lambda d: d[(d["run"] != "same") | (d["subject"] == "subject01")], "has 1 subject"),
    (lambda d: d.assign(run=d["run"].where(d.index != 3, "")), "column run is empty"),
    (lambda d: d.assign(value=d["value"] * 1e308), "too large"),        # finite, but their sums overflow
])
def test_bad_tables_are_one_line_errors(scores, capsys, tmp_path, edit, words):
    df, _, _ = scores
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"bad.{suffix}"
        bad = edit(df.copy())
        if suffix == "csv":
            bad.to_csv(path, index=False)
        else:
            bad.astype({"value": str} if bad["value"].dtype == object else {}).to_parquet(path, index=False)
        assert words in error_line(capsys, path, "--resamples", "200"), suffix


def test_bad_files_and_options_are_one_line_errors(scores, capsys, tmp_path):
    _, csv, _ = scores
    assert "not a run" in error_line(capsys, csv, "--versus", "nosuch")
    assert "does not exist" in error_line(capsys, tmp_path / "none.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x00" * 100)
    error_line(capsys, binary)
    assert "--alpha" in error_line(capsys, csv, "--alpha", "nan")
    assert "--resamples" in error_line(capsys, csv, "--resamples", "5")
    assert "--seed" in error_line(capsys, csv, "--seed", "-1")
    assert "TABLE" in error_line(capsys)


def test_power_table_from_a_score_table(scores, capsys):
    _, csv, _ = scores
    assert main(["power", str(csv), "--versus", "ref", "--metric", "dino", "--subjects", "10,40", "--seeds", "1,6"]) == 0
    out = capsys.readouterr().out
    blocks = [b for b in out.split("\n\n") if b.startswith("| subjects")]
    assert len(blocks) == 2                                    # same and better, against ref
    grid = [[float(x) for x in line.strip("|").split("|")[1:]] for line in blocks[0].splitlines()[2:]]
    assert grid[1][0] < grid[0][0] and grid[0][1] <= grid[0][0]          # more subjects or seeds: smaller MDE
    assert main(["power", str(csv), "--versus", "nosuch"]) == 2


def test_power_from_scored_run_directories(tmp_path, capsys):
    from test_check import synthetic_run

    base = synthetic_run(tmp_path / "base", rng_seed=1)
    other = synthetic_run(tmp_path / "other", rng_seed=2, method="ezigen")
    assert main(["power", str(base), str(other), "--versus", "base", "--metric", "dino/tiny-random"]) == 0
    out = capsys.readouterr().out
    assert "other · dino/tiny-random" in out and "| 100 " in out
    # the runs share their subjects: the paired differences hold no subject effect
    line = next(x for x in out.splitlines() if x.startswith("other · "))
    assert "sd subject 0.0000" in line or float(line.split("sd subject ")[1].split(",")[0]) < 0.01


def test_an_unwritable_json_file_is_one_line_and_leaves_nothing(scores, capsys, tmp_path):
    _, csv, _ = scores
    for target in (tmp_path, tmp_path / "no" / "such" / "dir" / "out.json"):
        assert "--json" in error_line(capsys, csv, "--json", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == []        # no temporary file left behind


def test_versus_is_read_like_the_table_s_run_names(scores, capsys, tmp_path):
    """Identifiers in the table are stripped of surrounding spaces, so --versus is too."""
    df, _, _ = scores
    path = tmp_path / "spaced.csv"
    df.assign(run=df["run"].replace({"ref": " ref run "})).to_csv(path, index=False)
    rows = run_json(capsys, path, "--versus", " ref run ", "--json")
    assert {r["versus"] for r in rows if r["run"] != "ref run"} == {"ref run"}
    assert all(r["delta"] is not None for r in rows if r["run"] != "ref run")


def test_std_follows_the_protocol_mean(scores, capsys):
    """± is the sd of the seeds' means with --aggregate seeds (DreamBench) and the sd over all
    values with --aggregate images (FastComposer's protocol, as its leaderboard prints it)."""
    df, csv, _ = scores
    for aggregate in ("seeds", "images"):
        row = run_json(capsys, csv, "--json", "--resamples", "200", "--aggregate", aggregate)[0]
        mine = df[(df["run"] == row["run"]) & (df["metric"] == row["metric"])]
        expected = (mine["value"].std(ddof=1) if aggregate == "images"
                    else mine.groupby("seed")["value"].mean().std(ddof=1))
        assert row["std_over"] == aggregate and row["std"] == pytest.approx(expected)
