"""The DreamBench++ suite: the release's layout, collection ids, prompt kinds, bad input, `bench data`."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from bench import BenchError
from bench.suites import REPO_ROOT, load_suite
from bench.suites import dreambench_plus as dbp
from script_loader import load_script

# (category, index, subject name) laid out like the release, including names with spaces,
# capitals and hyphens, whose ids the release's own resume code special-cases
RELEASE_LIKE = [("animal", "00", "kitten"), ("animal", "01", "Cotton-top Tamarin"), ("human", "00", "girl"),
                ("object", "00", "Rolls-Royce hood ornament"), ("object", "01", "backpack"),
                ("style", "00", "ukiyo-e"), ("style", "01", "low-poly geometric")]


def write_release(root, collections=RELEASE_LIKE, prompts=None):
    for category, index, name in collections:
        (root / "images" / category).mkdir(parents=True, exist_ok=True)
        (root / "captions" / category).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (10 * int(index), 80, 120)).save(root / "images" / category / f"{index}.jpg")
        lines = prompts or [f"{name} prompt {k}" for k in range(9)]
        (root / "captions" / category / f"{index}.txt").write_text("\n".join([name, *lines]) + "\n")
    return root


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "dreambench_plus" / "data")


def test_collection_ids_order_and_cells_follow_the_release(release):
    suite = load_suite("dreambench-plus", release)
    samples = suite.samples()
    ids = list(dict.fromkeys(s.subject for s in samples))
    expected = {"live_subject_animal_00_kitten", "live_subject_animal_01_cotton-top_tamarin",
                "live_subject_human_00_girl", "object_00_rolls-royce_hood_ornament", "object_01_backpack",
                "style_00_ukiyo-e", "style_01_low-poly_geometric"}
    assert set(ids) == expected and ids == sorted(expected)          # ordered by id, as the release sorts
    assert len(samples) == 9 * len(expected)
    tamarin = [s for s in samples if s.subject == "live_subject_animal_01_cotton-top_tamarin"]
    assert [s.prompt_index for s in tamarin] == list(range(9))
    assert tamarin[4].prompt == tamarin[4].eval_text == "Cotton-top Tamarin prompt 4"
    assert tamarin[0].class_noun == "Cotton-top Tamarin" and tamarin[0].category == "animal"
    assert tamarin[0].subject_images == tamarin[0].reference_images == (release / "images" / "animal" / "01.jpg",)
    kinds = [dict(s.extra)["prompt_kind"] for s in tamarin]
    assert kinds == ["photorealistic"] * 4 + ["style_transfer"] * 3 + ["imaginative"] * 2
    instruction = {s.subject: dict(s.extra)["judge_instruction"] for s in samples}
    assert {k for k, v in instruction.items() if v == "style"} == {"style_00_ukiyo-e", "style_01_low-poly_geometric"}


def test_data_folder_or_its_parent_give_the_same_samples(release):
    a = load_suite("dreambench-plus", release).samples()
    b = load_suite("dreambench-plus", release.parent).samples()
    assert [(s.cell, s.prompt) for s in a] == [(s.cell, s.prompt) for s in b]


def test_subjects_option_and_unknown_options(release):
    suite = load_suite("dreambench-plus", release, subjects="object_01_backpack,style_00_ukiyo-e")
    assert {s.subject for s in suite.samples()} == {"object_01_backpack", "style_00_ukiyo-e"}
    with pytest.raises(BenchError, match="unknown DreamBench\\+\\+ collection"):
        load_suite("dreambench-plus", release, subjects="object_07_nothing").samples()
    with pytest.raises(BenchError, match="unknown dreambench-plus option"):
        load_suite("dreambench-plus", release, identifier="sks")


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: (r / "captions/animal/00.txt").write_text("kitten\n" + "a\n" * 8), "9 lines, expected 10"),
    (lambda r: (r / "captions/animal/00.txt").write_text("kitten\n" + "a\n" * 10), "11 lines, expected 10"),
    (lambda r: (r / "captions/animal/00.txt").write_text("kitten\n\n" + "a\n" * 9), ":2: empty line"),
    (lambda r: (r / "captions/animal/00.txt").write_text("kitten\n" + "a {0} cat\n" * 9), "braces"),
    (lambda r: (r / "captions/animal/00.txt").write_text("kitten\n" + ("x" * 1001 + "\n") * 9), "more than 1000"),
    (lambda r: (r / "captions/animal/00.txt").write_bytes(b"kitten\n" + b"\xff\xfe\n" * 9), "not UTF-8"),
    (lambda r: (r / "captions/animal/00.txt").write_text("kit\x07ten\n" + "a\n" * 9), "control character"),
    (lambda r: (r / "images/animal/00.jpg").unlink(), "has no partner"),
    (lambda r: (r / "captions/object/01.txt").unlink(), "has no partner"),
    (lambda r: (r / "images/animal/00.jpg").write_bytes(b"not a jpeg"), "00.jpg"),
    (lambda r: (r / "captions/plants").mkdir(), "unknown DreamBench\\+\\+ category 'plants'"),
])
def test_bad_copies_are_one_line_errors_naming_the_file(release, mutate, expected):
    mutate(release)
    with pytest.raises(BenchError, match=expected):
        load_suite("dreambench-plus", release).samples()


def test_huge_caption_file_is_refused_without_reading_it_all(release):
    (release / "captions/animal/00.txt").write_bytes(b"k" * (dbp.MAX_CAPTION_BYTES + 10))
    with pytest.raises(BenchError, match="larger than"):
        load_suite("dreambench-plus", release).samples()


def test_files_other_than_captions_and_jpgs_are_ignored(release):
    (release / "captions/object/00.txt.bak").write_text("old")
    (release / "images/object/notes.md").write_text("notes")
    assert len(load_suite("dreambench-plus", release).samples()) == 9 * len(RELEASE_LIKE)


def test_not_a_copy_names_both_places(tmp_path):
    with pytest.raises(BenchError, match="images/ and captions/"):
        load_suite("dreambench-plus", tmp_path)


def test_mini_copy_has_one_collection_per_category_and_protocol_defaults():
    suite = load_suite("dreambench-plus", mini=True)
    samples = suite.samples()
    assert sorted({s.category for s in samples}) == list(dbp.CATEGORIES) and len(samples) == 36
    assert suite.default_images_per_prompt == 1 and suite.default_seeds == (42,)
    assert {"cp", "pf", "dreamsim"} <= set(suite.leaderboard_columns)


def test_mini_make_script_regenerates_the_committed_files(tmp_path):
    folder = REPO_ROOT / "datasets" / "mini-dreambench-plus"
    make = load_script(folder / "make.py")
    make.main(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()
                       and p.name not in ("make.py", "README.md") and "__pycache__" not in p.parts)
    assert made == committed
    for rel in made:
        if rel.suffix == ".jpg":        # JPEG bytes may vary with the encoder build: compare pixels
            a = np.asarray(Image.open(tmp_path / rel), dtype=np.int16)
            b = np.asarray(Image.open(folder / rel), dtype=np.int16)
            assert np.abs(a - b).mean() < 1.0, rel
        else:
            assert (tmp_path / rel).read_text() == (folder / rel).read_text()


def test_bench_data_check_where_and_fetch(release, tmp_path, capsys):
    from bench.cli import main

    assert main(["data", "check", "dreambench-plus", "--data-root", str(release)]) == 0
    out = capsys.readouterr().out
    assert "subjects   7 (2 animal, 1 human, 2 object, 2 style)" in out and "prompts    63" in out
    assert main(["data", "where", "dreambench-plus"]) == 0
    out = capsys.readouterr().out
    assert "hf download yuangpeng/dreambench_plus --repo-type dataset" in out and "judge.prompts" in out
    assert main(["data", "fetch", "dreambench-plus", "--dest", str(tmp_path / "empty")]) == 2
    assert "hf download" in capsys.readouterr().err
    assert main(["data", "fetch", "dreambench-plus", "--dest", str(release)]) == 0      # a present copy is checked
    (release / "images/animal/00.jpg").unlink()
    assert main(["data", "check", "dreambench-plus", "--data-root", str(release)]) == 2
    assert "has no partner" in capsys.readouterr().err


def test_smoke_run_leaderboard_has_every_column_and_counts_the_tiny_judges_failures(tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "run"
    assert main(["run", "--method", "sd", "--suite", "dreambench-plus", "--preset", "smoke", "--limit", "2",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    board = (tmp_path / "rep" / "leaderboard-dreambench-plus.md").read_text()
    header = [c.strip() for c in next(line for line in board.splitlines() if line.startswith("|  ")).split("|")]
    row = [c.strip() for c in next(line for line in board.splitlines() if line.startswith("| ours")).split("|")]
    cells = dict(zip(header, row))
    for title in ("CLIP-T", "CLIP-I", "DINO", "DreamSim ↓"):
        assert cells[title] not in ("", "–"), title
    # the tiny random judge never answers with a score: every value is a counted failure, never a number
    assert cells["CP"] == cells["PF"] == cells["CP·PF"] == "–"
    assert "4 judge answers missing" in cells["Check"]


def test_data_check_notes_a_copy_smaller_than_the_release(release, capsys):
    from bench.cli import main

    assert main(["data", "check", "dreambench-plus", "--data-root", str(release)]) == 0
    assert "note: the released dreambench-plus data has 150 subjects, this copy 7" in capsys.readouterr().out
    assert main(["data", "check", "dreambench-plus", "--mini"]) == 0          # the mini copy is small on purpose
    assert "note:" not in capsys.readouterr().out


# ---- the release's nested layout, per-category counts, hostile files (issues 27 and 32) ----------
def nest(flat_root):
    """The same copy moved into the release's zip layout: live_subject/animal, live_subject/human."""
    for tree in ("images", "captions"):
        (flat_root / tree / "live_subject").mkdir()
        for category in ("animal", "human"):
            (flat_root / tree / category).rename(flat_root / tree / "live_subject" / category)
    return flat_root


def test_nested_and_flat_layouts_give_the_same_plan(release, tmp_path, capsys):
    from bench.cli import main

    flat = load_suite("dreambench-plus", release)
    before = [(s.subject, s.category, s.prompt_index, s.prompt) for s in flat.samples()]
    assert flat.layout() == "flat"
    nested = load_suite("dreambench-plus", nest(release))
    after = [(s.subject, s.category, s.prompt_index, s.prompt) for s in nested.samples()]
    assert nested.layout() == "nested" and after == before
    assert {s.subject_images[0].parent.parent.name for s in nested.samples() if s.category == "animal"} == {"live_subject"}
    for category in ("animal", "human"):                        # captions back to flat: still the same plan
        (release / "captions/live_subject" / category).rename(release / "captions" / category)
    mixed = load_suite("dreambench-plus", release)
    assert [(s.subject, s.category, s.prompt_index, s.prompt) for s in mixed.samples()] == before
    assert mixed.layout() == "nested images/, flat captions/"
    for category in ("animal", "human"):
        (release / "captions" / category).rename(release / "captions/live_subject" / category)
    assert main(["data", "check", "dreambench-plus", "--data-root", str(release)]) == 0
    out = capsys.readouterr().out
    assert "layout     nested" in out and "animal 2 (released: 45)" in out and "object 2 (released: 65)" in out


def test_release_sized_copy_passes_and_a_wrong_category_count_is_named(tmp_path, capsys):
    from bench.cli import main

    sizes = dict(dbp.RELEASED_COUNTS)
    collections = [(c, f"{i:02d}", f"{c} thing {i}") for c, n in sizes.items() for i in range(n)]
    root = write_release(tmp_path / "full", collections)
    nest(root)
    assert main(["data", "check", "dreambench-plus", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "subjects   150" in out and "note:" not in out and "layout     nested" in out
    # move one human collection to style: the total stays 150, two categories are named
    for tree, suffix in (("images", ".jpg"), ("captions", ".txt")):
        (root / tree / "live_subject/human" / f"19{suffix}").rename(root / tree / "style" / f"90{suffix}")
    assert main(["data", "check", "dreambench-plus", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "subjects   150" in out and "human 19 (released: 20)" in out and "style 21 (released: 20)" in out
    assert "animal" not in out.split("per-category counts")[1]


def test_mixed_layouts_and_unknown_nested_folders_are_refused(release):
    (release / "images/live_subject/plants").mkdir(parents=True)
    with pytest.raises(BenchError, match="live_subject/plants"):
        load_suite("dreambench-plus", release).samples()
    (release / "images/live_subject/plants").rmdir()
    (release / "images/live_subject/animal").mkdir()
    with pytest.raises(BenchError, match="keep one layout"):
        load_suite("dreambench-plus", release).samples()


@pytest.mark.parametrize("target, what", [("captions/animal/00.txt", "caption"), ("images/animal/00.jpg", "image")])
def test_fifo_and_symlink_loop_are_one_line_before_any_read(release, target, what):
    import os

    path = release / target
    path.unlink()
    os.mkfifo(path)                    # reading it would block forever
    with pytest.raises(BenchError, match=f"{what} .*00.* is not a regular file"):
        load_suite("dreambench-plus", release).samples()
    # the doctor calls such a copy corrupt, never "missing: download it over the copy" (reviewer r1)
    assert "corrupt" in dbp.DreamBenchPlus.requirements(release)[0].what
    path.unlink()
    path.symlink_to(path)              # a link to itself: ELOOP
    with pytest.raises(BenchError, match="symlink loop"):
        load_suite("dreambench-plus", release).samples()
    assert "corrupt" in dbp.DreamBenchPlus.requirements(release)[0].what


def test_a_stray_folder_is_a_corrupt_copy_not_missing_data(release):
    (release / "images/__MACOSX").mkdir()
    need = dbp.DreamBenchPlus.requirements(release)[0]
    assert "corrupt" in need.what and "__MACOSX" in need.check().problem


def test_a_copy_unpacked_over_another_layout_is_corrupt_not_missing_data(release):
    import shutil

    # the release's zip unpacked over a flat copy: every live-subject collection twice
    shutil.copytree(release / "captions/animal", release / "captions/live_subject/animal")
    with pytest.raises(dbp.CorruptCopy, match="keep one layout"):
        load_suite("dreambench-plus", release).samples()
    need = dbp.DreamBenchPlus.requirements(release)[0]
    assert "corrupt" in need.what and "empty folder" in need.get and "keep one layout" in need.check().problem
    shutil.rmtree(release / "captions/live_subject")
    (release / "images/object/01.jpg").unlink()          # an image lost: also corrupt, not "download it"
    assert "corrupt" in dbp.DreamBenchPlus.requirements(release)[0].what
