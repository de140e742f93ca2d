"""Hostile inputs found by the independent review of the hardening work (issue 19): each case
was accepted silently or failed badly before its fix."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.cli import main

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "datasets"


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("make_entry", ["dangling link", "looping link", "folder"])
def test_a_subject_entry_named_like_an_image_that_is_no_file_is_refused(tmp_path, capsys, make_entry):
    """Dropping it silently would change the subject's reference images (CLIP-I, DINO)."""
    root = tmp_path / "db"
    shutil.copytree(MINI / "mini-dreambench", root)
    entry = root / "dataset" / "dog" / "00.jpg"
    entry.unlink()
    if make_entry == "dangling link":
        os.symlink(tmp_path / "nowhere.jpg", entry)
    elif make_entry == "looping link":
        os.symlink(entry, entry)
    else:
        entry.mkdir()
    err = one_line_error(capsys, ["data", "check", "dreambench", "--data-root", str(root)])
    assert str(entry) in err and "not a regular image file" in err


@pytest.mark.parametrize("value, expected", [("false", False), ("no", False), ("0", False), ("true", True),
                                             ("yes", True)])
def test_dreamedit_annotate_takes_yes_and_no_words(value, expected):
    from bench.suites.dreamedit import annotate_flag

    assert annotate_flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", "nope", "2", ""])
def test_dreamedit_annotate_refuses_other_words(tmp_path, capsys, value):
    err = one_line_error(capsys, ["data", "check", "dreamedit", "--mini", "--suite-option", f"annotate={value}"])
    assert "annotate" in err


@pytest.mark.parametrize("suite, option", [("fastcomposer", "prompt_indices"), ("fastcomposer", "subjects"),
                                           ("dreambench", "subjects"), ("dreamedit", "subjects"),
                                           ("dreambench-plus", "subjects")])
def test_an_empty_list_option_is_refused_not_read_as_all(capsys, suite, option):
    err = one_line_error(capsys, ["data", "check", suite, "--mini", "--suite-option", f"{option}="])
    assert option in err and "empty" in err


def test_dreambench_plus_subjects_with_an_empty_item_are_refused(capsys):
    err = one_line_error(capsys, ["data", "check", "dreambench-plus", "--mini", "--suite-option", "subjects=kitten,,x"])
    assert "subjects" in err and "empty" in err


@pytest.fixture(scope="module")
def unscored_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("review-run") / "run"
    assert main(["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "1",
                 "--images-per-prompt", "1", "--no-score", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("damage", ["records of the wrong types", "generations is a file"])
def test_scoring_a_run_without_one_valid_record_is_refused(unscored_run, tmp_path, capsys, damage):
    """It used to write an empty scores.parquet and exit 0 ("scored 0 images")."""
    import json

    run = tmp_path / "run"
    shutil.copytree(unscored_run, run)
    generations = run / "generations"
    if damage == "generations is a file":
        shutil.rmtree(generations)
        generations.write_text("x")
    else:
        for f in generations.glob("*.jsonl"):
            f.write_text("".join(json.dumps({**json.loads(line), "seed": "zero"}) + "\n"
                                 for line in f.read_text().splitlines()))
    assert main(["score", str(run), "--metric-preset", "tiny", "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "no recorded image to score" in err[0], err
    assert not (run / "scores.parquet").exists()


@pytest.mark.parametrize("out", ["a file", "/dev/null"])
def test_report_out_that_is_a_file_is_named(unscored_run, tmp_path, capsys, out):
    target = tmp_path / "afile" if out == "a file" else Path(out)
    if out == "a file":
        target.write_text("x")
    err = one_line_error(capsys, ["report", str(unscored_run), "--out", str(target)])
    kind = "a file" if out == "a file" else "a device"
    assert f"--out {target}: is {kind}, expected a folder" in err


def _not_a_regular_file(tmp_path: Path, kind: str) -> Path:
    target = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(target)           # stands for /dev/null, which a rename would replace (as root)
    else:
        target.mkdir()
    return target


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_baseline_update_never_renames_over_a_device_or_folder(unscored_run, tmp_path, capsys, kind):
    """`bench check --update --baseline /dev/null` replaced /dev/null by a regular file."""
    run = tmp_path / "run"
    shutil.copytree(unscored_run, run)
    assert main(["score", str(run), "--metric-preset", "tiny", "--no-progress"]) == 0
    capsys.readouterr()
    target = _not_a_regular_file(tmp_path, kind)
    err = one_line_error(capsys, ["check", str(run), "--baseline", str(target), "--update"])
    assert f"--baseline {target}: is " in err
    assert (target.is_fifo() if kind == "fifo" else target.is_dir())


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_stats_json_never_renames_over_a_device_or_folder(tmp_path, capsys, kind):
    table = tmp_path / "t.csv"
    table.write_text("run,subject,prompt,seed,image,metric,value\n"
                     + "".join(f"a,s{i},0,0,0,m,{i / 10}\n" for i in range(4)))
    target = _not_a_regular_file(tmp_path, kind)
    err = one_line_error(capsys, ["stats", str(table), "--json", str(target), "--resamples", "100"])
    assert f"--json {target}: is " in err
    assert (target.is_fifo() if kind == "fifo" else target.is_dir())


@pytest.fixture(scope="module")
def scored_run_and_baseline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review-check")
    run, baseline = folder / "run", folder / "baseline.json"
    assert main(["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--subjects", "dog,vase",
                 "--limit", "2", "--images-per-prompt", "1", "--metric-preset", "tiny", "--out", str(run)]) == 0
    assert main(["check", str(run), "--baseline", str(baseline), "--update", "--mode", "exact"]) == 0
    return run, baseline


@pytest.mark.parametrize("edit, words", [
    (lambda b: b.__setitem__("keys", [b["keys"][0]] * len(b["keys"])), "repeat an earlier"),    # was IndexError
    (lambda b: b.__setitem__("metrics", {"zzz": next(iter(b["metrics"].values()))}), "share no metric"),
])
def test_hostile_baselines_are_one_line(scored_run_and_baseline, tmp_path, capsys, edit, words):
    import json

    run, baseline = scored_run_and_baseline
    data = json.loads(baseline.read_text())
    edit(data)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["check", str(run), "--baseline", str(baseline)]) == 0      # the untouched one passes
    err = one_line_error(capsys, ["check", str(run), "--baseline", str(edited)])
    assert words in err


@pytest.mark.parametrize("param, words", [("clip.mode=nan", "clip"), ("dino.precision=fp64", "dino"),
                                          ("dinov2.mode=x", "dinov2"), ("clip.backbone=zz:nope", "CLIP backbone"),
                                          ("dino.backbone=hf:x", "DINO backbone")])
def test_bad_metric_param_values_fail_before_anything_is_generated(tmp_path, capsys, param, words):
    """They used to fail only at scoring, after every image had been generated."""
    out = tmp_path / "run"
    err = one_line_error(capsys, ["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "1",
                                  "--images-per-prompt", "1", "--metric-preset", "tiny", "--out", str(out),
                                  "--metric-param", param])
    assert words in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "score --images"])
def test_a_run_is_never_spread_over_a_folder_of_other_files(tmp_path, capsys, command):
    """`bench score --images IMGS --out /` wrote run.json, generations/ and scores.parquet into /."""
    from PIL import Image

    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    if command == "run":
        argv = ["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "1",
                "--images-per-prompt", "1", "--no-score", "--out", str(target)]
    else:
        images = tmp_path / "imgs" / "dog" / "000" / "s0"
        images.mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(images / "i0.png")
        argv = ["score", "--images", str(tmp_path / "imgs"), "--suite", "dreambench", "--mini", "--metric-preset",
                "tiny", "--out", str(target)]
    err = one_line_error(capsys, argv)
    assert "not a run directory" in err and "notes.txt" in err
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("param, words", [("nope=1", "has no parameter 'nope'"),
                                          ("reference_timestep=nan", "reference_timestep"),
                                          ("reference_trained=maybe", "reference_trained")])
def test_train_params_it_would_ignore_or_cannot_use_are_refused(tmp_path, capsys, param, words):
    """`bench train --param nope=1` trained as if the option were not there."""
    out = tmp_path / "train"
    err = one_line_error(capsys, ["train", "--preset", "smoke", "--out", str(out), "--no-progress", "--param", param])
    assert words in err
    assert not out.exists()


def test_a_deeply_nested_youtube_vis_meta_file_is_one_line(tmp_path, capsys):
    """It was an internal RecursionError."""
    (tmp_path / "yt").mkdir()
    (tmp_path / "yt" / "meta.json").write_text("[" * 50_000)
    err = one_line_error(capsys, ["train", "--preset", "tiny", "--data", f"ytvis:{tmp_path / 'yt'}",
                                  "--out", str(tmp_path / "out"), "--max-steps", "1", "--no-progress"])
    assert "meta.json" in err


def test_report_paper_dir_that_is_no_folder_is_named(unscored_run, tmp_path, capsys):
    """A misspelt --paper-dir silently dropped every paper row."""
    err = one_line_error(capsys, ["report", str(unscored_run), "--out", str(tmp_path / "rep"),
                                  "--paper-dir", str(tmp_path / "no-such-folder")])
    assert "--paper-dir" in err and "not a folder" in err


@pytest.mark.parametrize("command", [["doctor"], ["run", "--dry-run"]])
def test_a_bad_suite_option_is_named_not_listed_as_missing_data(capsys, command):
    """It was a 'MISSING fastcomposer data' line telling to fetch the data again."""
    argv = [command[0], "--method", "sd", "--suite", "fastcomposer", "--preset", "smoke", *command[1:],
            "--suite-option", "prompt_indices=-1"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err == ["error: fastcomposer: prompt index -1 is outside 0-39"], err
    assert "MISSING" not in captured.out
