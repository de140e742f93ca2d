"""DreamEdit suite: real layout counts, subject -> class folder mapping, masks, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import BenchError
from bench.suites import REPO_ROOT, load_suite
from bench.suites.dreamedit import DreamEdit

# The 30 DreamBench subjects and their classes (google/dreambooth dataset/prompts_and_classes.txt).
DREAMBENCH = {
    "backpack": "backpack", "backpack_dog": "backpack", "bear_plushie": "stuffed animal", "berry_bowl": "bowl",
    "can": "can", "candle": "candle", "cat": "cat", "cat2": "cat", "clock": "clock", "colorful_sneaker": "sneaker",
    "dog": "dog", "dog2": "dog", "dog3": "dog", "dog5": "dog", "dog6": "dog", "dog7": "dog", "dog8": "dog",
    "duck_toy": "toy", "fancy_boot": "boot", "grey_sloth_plushie": "stuffed animal", "monster_toy": "toy",
    "pink_sunglasses": "glasses", "poop_emoji": "toy", "rc_car": "toy", "red_cartoon": "cartoon",
    "robot_toy": "toy", "shiny_sneaker": "sneaker", "teapot": "teapot", "vase": "vase", "wolf_plushie": "stuffed animal",
}
MAPPED = {"dog2", "dog3", "dog5", "dog6", "dog7", "dog8", "cat2", "backpack_dog"}
REPLACEMENT_FOLDERS = sorted(s for s in DREAMBENCH if s not in MAPPED)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_image(path: Path, size=(8, 8), colour=(120, 30, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def make_dreambench(root: Path, subjects: dict[str, str] = DREAMBENCH) -> Path:
    dataset = root / "dataset"
    lines = ["Classes", "", "subject_name,class"] + [f"{s},{c}" for s, c in subjects.items()]
    lines += ["", "Prompts", "", "Object Prompts", "", "prompt_list = [",
              "'a {0} {1} in the jungle'.format(unique_token, class_token),", "]", "",
              "Live Subject Prompts", "", "prompt_list = [",
              "'a {0} {1} in the snow'.format(unique_token, class_token),", "]", ""]
    dataset.mkdir(parents=True)
    (dataset / "prompts_and_classes.txt").write_text("\n".join(lines), encoding="utf-8")
    for subject in subjects:
        write_image(dataset / subject / "00.jpg")
        write_image(dataset / subject / "01.jpg")
    return root


def make_dreamedit(root: Path, replacement=REPLACEMENT_FOLDERS, addition=REPLACEMENT_FOLDERS, sources=10,
                   size=(16, 16)) -> Path:
    data = root / "data"
    for i, folder in enumerate(replacement):
        for k in range(sources):                                      # distinct images (distinct sha256)
            write_image(data / "replacement_source" / folder / f"found{k}.jpg", size, (10 * i, 20 * k, 90))
    for folder in addition:
        boxes = {}
        for k in range(sources):
            write_image(data / "addition_source" / folder / f"found{k}.jpg", size)
            boxes[f"found{k}.jpg"] = [0, 0, 256, 256]
        (data / "addition_source" / folder / "bbox.json").write_text(json.dumps(boxes), encoding="utf-8")
    return root


@pytest.fixture
def real_layout(tmp_path):
    return make_dreamedit(tmp_path / "dreamedit"), make_dreambench(tmp_path / "dreambench")


def test_real_layout_counts(real_layout):
    root, bench_root = real_layout
    suite = DreamEdit(root, dreambench_root=bench_root, annotate=False)
    info = suite.describe()
    assert info["subjects_mapped"] == 30
    for kind in ("replacement", "addition"):
        assert info[kind] == {"class_folders": 22, "sources_per_folder": [10], "samples": 300}
    samples = suite.samples()
    assert len(samples) == 600
    assert len({s.cell for s in samples}) == 600                     # keys are unique
    assert suite.task == "edit" and suite.default_images_per_prompt == 1
    by_kind = {k: [s for s in samples if dict(s.extra)["task_kind"] == k] for k in ("replacement", "addition")}
    assert sorted({s.prompt_index for s in by_kind["replacement"]}) == list(range(10))
    assert sorted({s.prompt_index for s in by_kind["addition"]}) == list(range(100, 110))
    dog5 = [s for s in by_kind["replacement"] if s.subject == "dog5"]
    assert {s.source_image.parent.name for s in dog5} == {"dog"}
    assert dog5[3].source_image.name == "found3.jpg" and dog5[3].cell == "dreamedit/dog5/003"
    assert dog5[0].class_noun == "dog" and dog5[0].prompt == "photo of a dog"
    assert dict(dog5[0].extra)["source_prompt"] == "photo of a dog"
    assert [p.name for p in dog5[0].reference_images] == ["00.jpg", "01.jpg"]
    assert [p.name for p in dog5[0].subject_images] == ["00.jpg"]
    assert all(s.mask is None for s in by_kind["replacement"])        # annotate=False
    assert all(s.mask is not None and s.mask.exists() for s in by_kind["addition"])


def test_addition_box_is_scaled_from_512(tmp_path):
    root = make_dreamedit(tmp_path / "de", replacement=[], addition=["dog"], sources=1, size=(64, 32))
    make_dreambench(tmp_path / "db", {"dog": "dog"})
    (root / "data" / "addition_source" / "dog" / "bbox.json").write_text(json.dumps({"found0.jpg": [128, 256, 384, 512]}))
    [sample] = DreamEdit(root, dreambench_root=tmp_path / "db", task_kind="addition").samples()
    mask = np.asarray(Image.open(sample.mask))
    assert mask.shape == (32, 64)                                     # the source's size
    expected = np.zeros((32, 64), bool)
    expected[16:32, 16:48] = True                                     # x 128..384 -> 16..48, y 256..512 -> 16..32
    assert ((mask == 255) == expected).all() and set(np.unique(mask)) == {0, 255}


def test_sneaker_folder_for_addition(tmp_path):
    addition = [f for f in REPLACEMENT_FOLDERS if "sneaker" not in f] + ["sneaker"]
    root = make_dreamedit(tmp_path / "de", addition=addition)
    make_dreambench(tmp_path / "db")
    samples = DreamEdit(root, dreambench_root=tmp_path / "db", task_kind="addition").samples()
    folders = {s.subject: s.source_image.parent.name for s in samples}
    assert folders["colorful_sneaker"] == folders["shiny_sneaker"] == "sneaker"
    assert folders["backpack_dog"] == "backpack" and folders["cat2"] == "cat"
    assert len(samples) == 300


def test_task_kind_and_subjects(real_layout):
    root, bench_root = real_layout
    suite = DreamEdit(root, dreambench_root=bench_root, task_kind="replacement", subjects="dog,vase", annotate="false")
    samples = suite.samples()
    assert len(samples) == 20 and {s.subject for s in samples} == {"dog", "vase"}
    assert all(s.prompt_index < 100 for s in samples)
    with_token = DreamEdit(root, dreambench_root=bench_root, identifier="sks", subjects=["dog"], annotate=False)
    assert with_token.samples()[0].prompt == "photo of a sks dog"
    assert with_token.samples()[0].eval_text == "photo of a dog"


def test_bad_inputs_name_the_file(tmp_path, real_layout):
    root, bench_root = real_layout
    with pytest.raises(BenchError, match="task"):
        DreamEdit(root, dreambench_root=bench_root, task_kind="swap")
    with pytest.raises(BenchError, match="unknown subject.*nope"):
        DreamEdit(root, dreambench_root=bench_root, subjects=["nope"], annotate=False).samples()
    with pytest.raises(BenchError, match="prompts_and_classes.txt"):
        DreamEdit(root, dreambench_root=tmp_path / "nowhere", annotate=False).samples()
    with pytest.raises(BenchError, match="replacement_source"):
        DreamEdit(tmp_path / "empty", dreambench_root=bench_root, annotate=False).samples()

    (root / "data" / "addition_source" / "vase" / "bbox.json").write_text("{not json")
    with pytest.raises(BenchError, match=r"addition_source/vase/bbox.json"):
        DreamEdit(root, dreambench_root=bench_root, task_kind="addition", annotate=False).samples()
    (root / "data" / "addition_source" / "vase" / "bbox.json").write_text(json.dumps({"found0.jpg": [0, 0, 10, 10]}))
    with pytest.raises(BenchError, match=r"bbox.json has no box for found1.jpg"):
        DreamEdit(root, dreambench_root=bench_root, task_kind="addition", annotate=False).samples()
    (root / "data" / "addition_source" / "vase" / "bbox.json").write_text(json.dumps({"found0.jpg": [10, 0, 5, 10]}))
    with pytest.raises(BenchError, match=r"vase/bbox.json: box of 'found0.jpg'"):
        DreamEdit(root, dreambench_root=bench_root, task_kind="addition", annotate=False).samples()
    (root / "data" / "addition_source" / "vase" / "bbox.json").unlink()
    with pytest.raises(BenchError, match=r"addition_source/vase/bbox.json is missing"):
        DreamEdit(root, dreambench_root=bench_root, task_kind="addition", annotate=False).samples()

    for p in (root / "data" / "replacement_source" / "teapot").iterdir():
        p.unlink()
    with pytest.raises(BenchError, match=r"replacement_source/teapot has no foundK.jpg"):
        DreamEdit(root, dreambench_root=bench_root, task_kind="replacement", annotate=False).samples()
    (root / "data" / "replacement_source" / "teapot").rmdir()
    with pytest.raises(BenchError, match=r"no class folder for subject 'teapot'.*replacement_source/teapot"):
        DreamEdit(root, dreambench_root=bench_root, task_kind="replacement", annotate=False).samples()


def test_replacement_masks_come_from_the_annotator_and_are_cached(tmp_path, monkeypatch):
    from bench.metrics.grounded_sam import GroundedSam

    root = make_dreamedit(tmp_path / "de", replacement=["dog", "vase"], addition=[], sources=2, size=(48, 40))
    make_dreambench(tmp_path / "db", {"dog": "dog", "dog2": "dog", "vase": "vase"})
    calls = []
    original = GroundedSam.detect

    def detect(self, images, texts):
        calls.append(list(texts))
        found = original(self, images, texts)
        return [None if t.startswith("vase") else f for f, t in zip(found, texts)]   # the vase is never found

    monkeypatch.setattr(GroundedSam, "detect", detect)
    suite = DreamEdit(root, dreambench_root=tmp_path / "db", task_kind="replacement", annotator_preset="tiny")
    samples = suite.samples()
    assert len(samples) == 6
    assert sum(len(c) for c in calls) == 4                  # 4 distinct sources; dog and dog2 share them
    for s in samples:
        status = dict(s.extra)["mask_status"]
        if s.class_noun == "vase":
            assert status == "no-detection" and s.mask is None
        else:
            assert status == "ok" and Image.open(s.mask).size == (48, 40)
    calls.clear()
    again = DreamEdit(root, dreambench_root=tmp_path / "db", task_kind="replacement", annotator_preset="tiny").samples()
    assert calls == [] and again == samples                  # the cache answered


def test_mini_suite_loads():
    suite = load_suite("dreamedit", mini=True, annotate=False)
    assert suite.dreambench_root == REPO_ROOT / "datasets" / "mini-dreambench"
    assert suite.annotator_preset == "tiny"
    samples = suite.samples()
    assert {s.subject for s in samples} == {"dog", "backpack", "vase"}
    assert len(samples) == 12 and all(s.source_image.exists() for s in samples)


def test_six_seeds_by_default_averaged_per_seed():
    """docs/protocols.md section 2/3: six runs averaged for DreamEdit as for DreamBench."""
    from bench.suites.dreamedit import DreamEdit
    assert DreamEdit.default_seeds == (0, 1, 2, 3, 4, 5) and DreamEdit.aggregate == "seeds"
