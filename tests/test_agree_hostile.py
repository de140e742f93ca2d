"""`bench agree` on hostile input: every case is one line naming the file or option and exit 2,
before any statistics (a FIFO where a rating file is read would block forever; a value whose
square overflows would print garbage; --json must never replace an input). Plus the release's
precedence of a judge's per-item files over a stale merged file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bench.cli import main
from test_agree import dreambench_release, error_line, imagenhub_folder, kd_alpha_files, long_table, run_json


def _fifo(path):
    os.mkfifo(path)
    return path


def ih_fifo(tmp):
    folder = imagenhub_folder(tmp / "task", items=10)
    _fifo(folder / "task_rater4.tsv")
    return [folder], ["task_rater4.tsv", "is a FIFO"]


def long_fifo(tmp):
    return [_fifo(tmp / "ratings.csv")], ["ratings.csv", "is a FIFO"]


def long_fifo_as_long(tmp):
    return [_fifo(tmp / "ratings.csv"), "--format", "long"], ["ratings.csv", "is a FIFO"]


def dbpp_fifo(tmp):
    root = dreambench_release(tmp / "rel")
    _fifo(root / "data_human_rating" / "raw_data" / "group1" / "part3-emu2.json")
    return [root], ["part3-emu2.json", "not a regular file"]


def dbpp_deep(tmp):
    root = dreambench_release(tmp / "rel")
    path = root / "data_human_rating" / "raw_data" / "group1" / "part1-emu2.json"
    path.write_text('{"a-1": ' + "[" * 100_000 + "]" * 100_000 + "}")       # a RecursionError in json
    return [root], ["part1-emu2.json", "nested deeper"]


def long_huge(tmp):
    df = long_table(tmp / "r.csv")
    df.loc[5, "value"] = 1e308                      # its square overflows inside the alpha
    df.to_csv(tmp / "r.csv", index=False)
    return [tmp / "r.csv"], ["r.csv line 7", "too large"]


def _raw_edit(tmp, value):
    root = dreambench_release(tmp / "rel")
    path = root / "data_human_rating" / "raw_data" / "group2" / "part1-emu2.json"
    data = json.loads(path.read_text())
    data[next(iter(data))] = [value, 1]
    path.write_text(json.dumps(data))               # json writes inf as Infinity, which json reads back
    return [root], ["part1-emu2.json", "not a finite number"]


def dbpp_huge(tmp):
    return _raw_edit(tmp, 10 ** 400)


def dbpp_infinite(tmp):
    return _raw_edit(tmp, float("inf"))


def dbpp_judge_infinite(tmp):
    root = dreambench_release(tmp / "rel")
    path = root / "data_gpt_rating" / "concept_preservation_full" / "emu2.json"
    data = json.loads(path.read_text())
    data[next(iter(data))] = float("-inf")
    path.write_text(json.dumps(data))
    return [root], ["concept_preservation_full/emu2.json", "not a finite number"]


def json_onto_ratings(tmp):
    long_table(tmp / "r.csv")
    return [tmp / "r.csv", "--json", tmp / "r.csv"], ["--json", "is an input"]


def json_onto_rater_file(tmp):
    folder = imagenhub_folder(tmp / "task", items=10)
    return [folder, "--json", folder / "task_rater1.tsv"], ["--json", "task_rater1.tsv", "not a bench agree JSON"]


def json_inside_ratings_folder(tmp):
    root = dreambench_release(tmp / "rel")
    target = root / "data_gpt_rating" / "concept_preservation_full" / "agree.json"   # would read as a method
    return [root, "--json", target], ["--json", "inside the ratings folder"]


def json_onto_run_file(tmp):
    long_table(tmp / "r.csv")
    (tmp / "run").mkdir()
    (tmp / "run" / "run.json").write_text("{}")
    return [tmp / "r.csv", "--json", tmp / "run" / "run.json"], ["--json", "run.json of the run directory"]


def json_onto_other_file(tmp):
    long_table(tmp / "r.csv")
    (tmp / "notes.json").write_text('{"mine": 1}')
    return [tmp / "r.csv", "--json", tmp / "notes.json"], ["--json", "notes.json", "not a bench agree JSON"]


def too_many_values(tmp):
    """3,000 items rated on a 0..199 slider: 1.2e8 coincidence cells (minutes, gigabytes)."""
    rng = np.random.default_rng(0)
    n = 3000
    values = rng.integers(0, 200, size=(2, n))
    lines = ["rater,method,subject,prompt,item,aspect,value"]
    lines += [f"r{r},m,s{i % 50},{i},,q,{values[r, i]}" for r in range(2) for i in range(n)]
    (tmp / "slider.csv").write_text("\n".join(lines) + "\n")
    return [tmp / "slider.csv"], ["slider.csv", "aspect q", "3000 items x 200 distinct values", "MAX_ALPHA_CELLS"]


CASES = [too_many_values, ih_fifo, long_fifo, long_fifo_as_long, dbpp_fifo, dbpp_deep, long_huge, dbpp_huge, dbpp_infinite, dbpp_judge_infinite,
         json_onto_ratings, json_onto_rater_file, json_inside_ratings_folder, json_onto_run_file,
         json_onto_other_file]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_input_is_one_line(tmp_path, capsys, case):
    args, expected = case(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    err = error_line(capsys, *args)
    for text in expected:
        assert text in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before       # nothing written


def test_json_replaces_its_own_earlier_output(tmp_path, capsys):
    long_table(tmp_path / "r.csv")
    out = tmp_path / "agree.json"
    for _ in range(2):
        assert main(["agree", str(tmp_path / "r.csv"), "--resamples", "100", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ratings"]["format"] == "long"


def test_judge_per_item_files_win_over_a_stale_merged_file(tmp_path, capsys):
    """The release's analysis rewrites <setting>/<method>.json from <setting>/<method>/*.json
    (merge_data_gpt_rating) before it reads it: where both exist, the per-item files count."""
    root = dreambench_release(tmp_path / "rel", merged=True)
    pf = root / "data_gpt_rating" / "prompt_following_full"
    items = [json.loads(p.read_text()) for p in sorted((pf / "emu2").glob("*.json"))]
    fresh = {f"{d['collection_id']}-{d['prompt_index']}": d["score"] for d in items}
    (pf / "emu2.json").write_text(json.dumps({k: 4 - v for k, v in fresh.items()}))     # stale, reversed
    (tmp_path / "fresh.json").write_text(json.dumps(fresh))
    result = run_json(capsys, root)
    row = next(r for r in result["metrics"] if r["metric"] == "gpt/prompt_following_full" and r["method"] == "emu2")
    merged = root / "data_human_rating" / "merged_data"
    expected = np.mean([kd_alpha_files([merged / g / "emu2-pf.json", tmp_path / "fresh.json"])
                        for g in ("group1", "group2")])
    assert row["alpha"] == pytest.approx(expected, abs=1e-9) and row["alpha"] > 0
