"""DreamBench loader, the embedded mini suite and `bench data` (docs/protocols.md section 2)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import BenchError
from bench.suites import REPO_ROOT, load_suite
from bench.suites import data as data_cli
from script_loader import load_script
from bench.suites import dreambench as db
from bench.suites.base import samples_hash

LIVE = ["cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"]
OBJECTS = {"backpack": "backpack", "backpack_dog": "backpack", "bear_plushie": "stuffed animal",
           "berry_bowl": "bowl", "can": "can", "candle": "candle", "clock": "clock",
           "colorful_sneaker": "sneaker", "duck_toy": "toy", "fancy_boot": "boot",
           "grey_sloth_plushie": "stuffed animal", "monster_toy": "toy", "pink_sunglasses": "glasses",
           "poop_emoji": "toy", "rc_car": "toy", "red_cartoon": "cartoon", "robot_toy": "toy",
           "shiny_sneaker": "sneaker", "teapot": "teapot", "vase": "vase", "wolf_plushie": "stuffed animal"}
CLASSES = {**{s: ("cat" if s.startswith("cat") else "dog") for s in LIVE}, **OBJECTS}


def object_templates(n: int) -> list[str]:
    base = ["a {0} {1} in the jungle", "a red {0} {1}", "a cube shaped {0} {1}"]
    return [base[i] if i < len(base) else f"a {{0}} {{1}} in object scene {i}" for i in range(n)]


def live_templates(n: int) -> list[str]:
    base = ["a {0} {1} in the snow", "a {0} {1} wearing a red hat", "a purple {0} {1}"]
    return [base[i] if i < len(base) else f"a {{0}} {{1}} in live scene {i}" for i in range(n)]


def prompts_text(classes: dict[str, str], objects: list[str], live: list[str], newline: str = "\n",
                 quote: str = "'", last_comma: bool = False) -> str:
    """prompts_and_classes.txt in the google/dreambooth format."""
    def block(templates):
        rows = [f"{quote}{t}{quote}.format(unique_token, class_token)," for t in templates]
        if not last_comma:
            rows[-1] = rows[-1][:-1]
        return ["prompt_list = ["] + rows + ["]"]

    rows = ["Classes", "", "subject_name,class", *(f"{s},{c}" for s, c in classes.items()),
            "", "Prompts", "", "Object Prompts", "", *block(objects), "", "Live Subject Prompts", "",
            *block(live), ""]
    return newline.join(rows)


def write_tree(root: Path, classes: dict[str, str], n_prompts: int = 25, images: int = 2,
               **format_options) -> Path:
    """A DreamBench-layout repository at root (dataset/ inside), tiny 8x8 images."""
    dataset = root / "dataset"
    dataset.mkdir(parents=True)
    text = prompts_text(classes, object_templates(n_prompts), live_templates(n_prompts), **format_options)
    (dataset / db.PROMPTS_FILE).write_bytes(text.encode())
    for k, subject in enumerate(classes):
        (dataset / subject).mkdir()
        for i in range(images):
            Image.new("RGB", (8, 8), (k * 8 % 256, i * 40, 100)).save(dataset / subject / f"{i:02d}.jpg")
    return root


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("dreambooth"), CLASSES)


@pytest.fixture()
def small_tree(tmp_path) -> Path:
    return write_tree(tmp_path / "repo", {"dog": "dog", "vase": "vase"}, n_prompts=3, images=3)


# ---- the prompts file parser -----------------------------------------------------------------
def test_parser_reads_real_format_with_crlf_blank_lines_both_quotes(tmp_path):
    text = prompts_text(CLASSES, object_templates(25), live_templates(25), newline="\r\n")
    text = text.replace("'a red {0} {1}'", '"a red {0} {1}"')        # the other quote style
    text = text.replace("Prompts\r\n", "Prompts\r\n\r\n\r\n", 1)        # extra blank lines
    path = tmp_path / db.PROMPTS_FILE
    path.write_bytes(text.encode())
    parsed = db.parse_prompts_file(path)
    assert list(parsed.classes) == list(CLASSES)
    assert parsed.classes["bear_plushie"] == "stuffed animal"
    assert parsed.object_prompts == tuple(object_templates(25))
    assert parsed.live_prompts == tuple(live_templates(25))
    assert parsed.prompts_for("cat") == parsed.live_prompts
    assert parsed.prompts_for("stuffed animal") == parsed.object_prompts


def test_parser_accepts_trailing_comma_and_bracket_on_last_line(tmp_path):
    path = tmp_path / db.PROMPTS_FILE
    text = prompts_text({"dog": "dog"}, ["a {0} {1} x"], ["a {0} {1} y", "a {0} {1} z"], last_comma=True)
    path.write_text(text.replace("'a {0} {1} z'.format(unique_token, class_token),\n]",
                                 "'a {0} {1} z'.format(unique_token, class_token)]"))
    parsed = db.parse_prompts_file(path)
    assert parsed.object_prompts == ("a {0} {1} x",)
    assert parsed.live_prompts == ("a {0} {1} y", "a {0} {1} z")


def test_render_prompt_removes_identifier_without_double_spaces():
    assert db.render_prompt("a {0} {1} in the jungle", "", "dog") == "a dog in the jungle"
    assert db.render_prompt("a red {0} {1}", "", "stuffed animal") == "a red stuffed animal"
    assert db.render_prompt("a {0} {1} in the jungle", "sks", "dog") == "a sks dog in the jungle"


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace("Live Subject Prompts", "Other Prompts"), "unexpected line"),
    (lambda t: t.split("Live Subject Prompts")[0], "missing or empty 'Live Subject Prompts'"),
    (lambda t: t.replace("'a {0} {1} in the jungle'.format", "a {0} {1} in the jungle.format"),
     f"{db.PROMPTS_FILE}:12: cannot parse prompt line"),
    (lambda t: t.replace("'a red {0} {1}'", "'a red {0} {2}'"), f"{db.PROMPTS_FILE}:13: prompt"),
    (lambda t: t.replace("vase,vase", "vase vase"), f"{db.PROMPTS_FILE}:5: expected 'subject,class'"),
    (lambda t: t.replace("vase,vase", "dog,dog"), "listed twice"),
    (lambda t: t.replace("\n]\n\nLive", "\n\nLive"), ":16: the prompt list above is not closed with ']'"),
    (lambda t: t.rstrip().rstrip("]"), "'live' is not closed"),
    (lambda t: t.replace("Classes", "Klasses"), "unexpected line"),
])
def test_malformed_prompts_file_names_file_and_line(tmp_path, mutate, expected):
    path = tmp_path / db.PROMPTS_FILE
    path.write_text(mutate(prompts_text({"dog": "dog", "vase": "vase"}, object_templates(3),
                                        live_templates(3))))
    with pytest.raises(BenchError) as info:
        db.parse_prompts_file(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


# ---- the suite on a full-size synthetic tree ---------------------------------------------------
def test_full_layout_gives_750_cells_30_subjects_9_live(full_tree):
    suite = db.DreamBench(full_tree)
    samples = suite.samples()
    assert len(samples) == 750 and len({s.cell for s in samples}) == 750
    assert len({s.subject for s in samples}) == 30
    assert {s.subject for s in samples if s.category == "live"} == set(LIVE)
    assert len(samples) * suite.default_images_per_prompt == 3000
    for s in samples:
        templates = live_templates(25) if s.category == "live" else object_templates(25)
        assert s.prompt == s.eval_text == db.render_prompt(templates[s.prompt_index], "", s.class_noun)
        assert s.class_noun == CLASSES[s.subject] and s.suite == "dreambench"
        assert [p.name for p in s.reference_images] == ["00.jpg", "01.jpg"]
        assert s.subject_images == s.reference_images[:1]
    assert [s.prompt_index for s in samples if s.subject == "dog"] == list(range(25))


def test_repo_root_and_dataset_folder_give_the_same_samples(full_tree):
    from_repo = db.DreamBench(full_tree)
    from_dataset = db.DreamBench(full_tree / "dataset")
    assert from_repo.dataset_dir == from_dataset.dataset_dir == full_tree / "dataset"
    assert samples_hash(from_repo.samples()) == samples_hash(from_dataset.samples())


def test_images_are_verified_once_per_suite(small_tree, monkeypatch):
    seen = []
    monkeypatch.setattr(db, "verify_image", seen.append)
    suite = db.DreamBench(small_tree)
    assert suite.samples() == suite.samples()
    assert len(seen) == 6


# ---- options -----------------------------------------------------------------------------------
def test_identifier_goes_to_prompt_only(small_tree):
    samples = db.DreamBench(small_tree, identifier="sks").samples()
    dog = [s for s in samples if s.subject == "dog"]
    assert [s.prompt for s in dog] == ["a sks dog in the snow", "a sks dog wearing a red hat",
                                       "a purple sks dog"]
    assert [s.eval_text for s in dog] == ["a dog in the snow", "a dog wearing a red hat", "a purple dog"]


def test_conditioning_first_or_all(small_tree):
    first = db.DreamBench(small_tree).samples()[0]
    every = db.DreamBench(small_tree, conditioning="all").samples()[0]
    assert [p.name for p in first.subject_images] == ["00.jpg"]
    assert every.subject_images == every.reference_images == first.reference_images
    assert len(every.subject_images) == 3
    with pytest.raises(BenchError, match="conditioning='best'"):
        db.DreamBench(small_tree, conditioning="best")


def test_subject_selection_and_unknown_options(small_tree):
    suite = db.DreamBench(small_tree, subjects="vase")
    assert {s.subject for s in suite.samples()} == {"vase"}
    assert suite.options == {"identifier": "", "conditioning": "first", "subjects": ["vase"]}
    assert {s.subject for s in db.DreamBench(small_tree, subjects=["dog", "vase"]).samples()} == {"dog", "vase"}
    with pytest.raises(BenchError, match=r"unknown DreamBench subject\(s\) cat; valid: dog, vase"):
        db.DreamBench(small_tree, subjects=["cat"]).samples()
    with pytest.raises(BenchError, match="unknown dreambench option.*colour"):
        db.DreamBench(small_tree, colour="red")


# ---- bad input names the file ------------------------------------------------------------------
def test_missing_prompts_file(small_tree):
    prompts = small_tree / "dataset" / db.PROMPTS_FILE
    prompts.unlink()
    for root in (small_tree, small_tree / "dataset"):
        with pytest.raises(BenchError, match="missing DreamBench prompts file") as info:
            db.DreamBench(root)
        assert str(prompts) in str(info.value)


def test_subject_without_folder(small_tree):
    shutil.rmtree(small_tree / "dataset" / "vase")
    with pytest.raises(BenchError) as info:
        db.DreamBench(small_tree).samples()
    assert str(small_tree / "dataset" / "vase") in str(info.value) and "no image folder" in str(info.value)


def test_subject_folder_without_images(small_tree):
    for p in (small_tree / "dataset" / "dog").iterdir():
        p.unlink()
    (small_tree / "dataset" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(BenchError, match="has no images") as info:
        db.DreamBench(small_tree).samples()
    assert str(small_tree / "dataset" / "dog") in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 truncated jpeg", b"plain text"])
def test_corrupt_image_is_named(small_tree, content):
    bad = small_tree / "dataset" / "vase" / "01.jpg"
    bad.write_bytes(content)
    with pytest.raises(BenchError, match="corrupt or unreadable image") as info:
        db.DreamBench(small_tree).samples()
    assert str(bad) in str(info.value)


def test_root_that_is_not_a_folder(tmp_path):
    with pytest.raises(BenchError, match="is not a folder"):
        db.DreamBench(tmp_path / "nowhere.txt")


# ---- the embedded mini suite -------------------------------------------------------------------
def test_mini_suite_loads_with_live_and_object_subjects():
    suite = load_suite("dreambench", mini=True)
    samples = suite.samples()
    categories = {s.subject: s.category for s in samples}
    assert categories == {"backpack": "object", "dog": "live", "vase": "object"}
    assert len(samples) == 12
    assert all(len(s.reference_images) == 3 and s.subject_images == s.reference_images[:1] for s in samples)
    assert all(Image.open(s.reference_images[0]).size == (64, 64) for s in samples)


def test_mini_make_script_regenerates_the_committed_files(tmp_path):
    make = load_script(REPO_ROOT / "datasets" / "mini-dreambench" / "make.py")
    make.main(tmp_path)
    committed = REPO_ROOT / "datasets" / "mini-dreambench" / "dataset"
    made = sorted(p.relative_to(tmp_path / "dataset") for p in (tmp_path / "dataset").rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert (tmp_path / "dataset" / db.PROMPTS_FILE).read_text() == (committed / db.PROMPTS_FILE).read_text()
    for rel in made:
        if rel.suffix == ".jpg":   # JPEG bytes may vary with the encoder build: compare pixels
            a = np.asarray(Image.open(tmp_path / "dataset" / rel), dtype=np.int16)
            b = np.asarray(Image.open(committed / rel), dtype=np.int16)
            assert np.abs(a - b).mean() < 1.0, rel


# ---- `bench data` ------------------------------------------------------------------------------
def data_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    data_cli.configure(parser)
    return parser.parse_args(list(argv))


def test_data_check_prints_counts(full_tree, capsys):
    assert data_cli.run(data_args("check", "dreambench", "--data-root", str(full_tree))) == 0
    out = capsys.readouterr().out
    assert "subjects   30 (9 live, 21 object)" in out
    assert "prompts    750" in out and "images     60" in out and "per seed   3000 images" in out


def test_data_check_mini_with_suite_option(capsys):
    assert data_cli.run(data_args("check", "dreambench", "--mini", "--suite-option", "subjects=dog,vase")) == 0
    out = capsys.readouterr().out
    assert "subjects   2 (1 live, 1 object)" in out and "prompts    8" in out


def test_data_check_errors_through_the_cli(small_tree, capsys):
    from bench.cli import main

    (small_tree / "dataset" / db.PROMPTS_FILE).unlink()
    assert main(["data", "check", "dreambench", "--data-root", str(small_tree)]) == 2
    assert str(small_tree / "dataset" / db.PROMPTS_FILE) in capsys.readouterr().err
    assert main(["data", "check", "dreambenh", "--mini"]) == 2
    assert "did you mean 'dreambench'" in capsys.readouterr().err
    with pytest.raises(BenchError, match="expected KEY=VALUE"):
        data_cli.run(data_args("check", "dreambench", "--mini", "--suite-option", "subjects"))


def test_data_where_prints_instructions(capsys):
    assert data_cli.run(data_args("where", "dreambench")) == 0
    out = capsys.readouterr().out
    assert str(REPO_ROOT / "datasets" / "dreambench") in out
    assert "git clone --depth 1 https://github.com/google/dreambooth" in out
    assert "--data-root accepts either the repository root or its dataset/ folder" in out


def test_fetch_failure_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(db.DreamBench, "repository_url", str(tmp_path / "no-such-repo"))
    dest = tmp_path / "datasets" / "dreambench"
    with pytest.raises(BenchError, match="could not clone") as info:
        data_cli.run(data_args("fetch", "dreambench", "--dest", str(dest)))
    message = str(info.value)
    assert f"{dest / 'dataset' / db.PROMPTS_FILE} exists" in message and "dataset/<subject>/NN.jpg" in message
    assert "\n" not in message and not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == []        # the temporary clone is gone


def test_fetch_clones_into_place(tmp_path, capsys):
    source = write_tree(tmp_path / "upstream", {"dog": "dog"}, n_prompts=2, images=1)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(source)]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "data"]):
        subprocess.run(git + command, check=True, capture_output=True)
    dest = tmp_path / "datasets" / "dreambench"

    class Local(db.DreamBench):
        repository_url = str(source)

    assert Local.fetch(dest) == dest
    assert len(db.DreamBench(dest).samples()) == 2
    assert Local.fetch(dest) == dest                           # already there: no second clone
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(BenchError, match="missing DreamBench prompts file"):
        Local.fetch(tmp_path / "other")


def test_broken_loader_module_fails_cleanly(tmp_path, monkeypatch):
    from bench.registry import SUITES, Entry

    (tmp_path / "broken_suite_mod.py").write_text("raise RuntimeError('half written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(SUITES._entries, "broken", Entry("broken", "broken_suite_mod:Broken", "test"))
    with pytest.raises(BenchError, match="cannot be imported: RuntimeError: half written"):
        data_cli.run(data_args("where", "broken"))
