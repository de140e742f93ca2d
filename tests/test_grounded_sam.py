"""Grounded-SAM annotator (cache, no-detection) and the DreamEdit masked / official scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.metrics.base import ScoreItem
from bench.metrics.dreamedit import MaskedRegionMetric, OfficialDreamEditMetric, geometric_mean
from bench.metrics.grounded_sam import GroundedSam, MaskResult, cut_background, cut_subject

SIZE = 64


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _noise(seed: int, colour_shift=(0, 0, 0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 200, (SIZE, SIZE, 3)).astype(np.int16) + np.array(colour_shift, np.int16)
    return arr.clip(0, 255).astype(np.uint8)


def _save(arr: np.ndarray, path: Path) -> Path:
    Image.fromarray(arr).save(path)
    return path


# ---- regions ---------------------------------------------------------------------------------
def test_cut_subject_whitens_crops_and_pads():
    arr = np.zeros((10, 20, 3), np.uint8)
    mask = np.zeros((10, 20), bool)
    mask[2:6, 3:11] = True                          # 4 rows x 8 columns
    mask[2, 3] = False                              # inside the box but outside the mask
    out = np.asarray(cut_subject(Image.fromarray(arr), mask))
    assert out.shape == (8, 8, 3)                   # cropped to the box, padded to a square
    assert (out[:2] == 255).all() and (out[6:] == 255).all()      # 2 white rows above and below
    assert (out[2, 0] == 255).all()                 # the unmasked pixel in the box is white
    assert (out[2, 1:] == 0).all() and (out[3:6] == 0).all()      # the region itself is untouched
    with pytest.raises(ValueError):
        cut_subject(Image.fromarray(arr), np.zeros((10, 20), bool))


def test_cut_background_whitens_the_region_only():
    arr = _noise(1)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:20, 30:40] = True
    out = np.asarray(cut_background(Image.fromarray(arr), mask))
    assert (out[mask] == 255).all() and (out[~mask] == arr[~mask]).all()


# ---- annotator -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return [_save(_noise(i), folder / f"{i}.png") for i in range(3)]


def test_annotator_cache_does_no_model_work_the_second_time(images, cache):
    first = GroundedSam(preset="tiny", cache_dir=cache / "gsam", box_threshold=0.0, text_threshold=0.0)
    texts = ["dog", "dog", "backpack"]
    results = first.annotate(images + [images[0]], texts + ["dog"])     # a repeated pair is computed once
    assert first.calls == {"detect": 1, "segment": 1}
    assert [r.status for r in results] == ["ok"] * 4 and results[3] == results[0]
    for r, path in zip(results, images):
        mask = Image.open(r.mask_path)
        assert mask.size == Image.open(path).size and set(np.unique(np.asarray(mask))) <= {0, 255}
    second = GroundedSam(preset="tiny", cache_dir=cache / "gsam", box_threshold=0.0, text_threshold=0.0)
    assert second.annotate(images, texts) == results[:3]
    assert second.calls == {"detect": 0, "segment": 0} and second._models is None   # nothing was even loaded
    other_text = second.annotate(images[:1], ["cat"])                    # the text is part of the key
    assert second.calls["detect"] == 1 and other_text[0].mask_path != results[0].mask_path


def test_no_detection_is_recorded_not_turned_into_a_mask(images, cache):
    annotator = GroundedSam(preset="tiny", cache_dir=cache / "none", box_threshold=1.01)   # nothing passes
    [result] = annotator.annotate(images[:1], ["dog"])
    assert result == MaskResult("no-detection", None, None, None) and not result.found
    [meta] = list((cache / "none").glob("*.json"))
    assert json.loads(meta.read_text())["status"] == "no-detection"
    assert not list((cache / "none").glob("*.png"))
    again = GroundedSam(preset="tiny", cache_dir=cache / "none", box_threshold=1.01)
    assert again.annotate(images[:1], ["dog"]) == [result] and again.calls["detect"] == 0


# ---- masked metric on synthetic images with known answers ----------------------------------------
class OracleAnnotator:
    """Returns the masks the test drew: image path -> mask file (or None for no detection)."""

    short_id = "oracle"

    def __init__(self):
        self.masks: dict[Path, Path | None] = {}

    def annotate(self, images, texts):
        return [MaskResult("ok", self.masks[p], (0, 0, 1, 1), 1.0) if self.masks[p] else
                MaskResult("no-detection", None, None, None) for p in images]


@pytest.fixture(scope="module")
def oracle():
    return OracleAnnotator()


@pytest.fixture(scope="module")
def masked(oracle):
    return MaskedRegionMetric(preset="tiny", annotator=oracle)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, oracle):
    """Two backgrounds, two subjects of the same silhouette, and their composites."""
    folder = tmp_path_factory.mktemp("scene")
    backgrounds = [_noise(10), _noise(11, (40, -30, 0))]
    subjects = [_noise(20, (0, 0, 50)), _noise(21, (60, 0, 0))]
    silhouette = np.zeros((SIZE, SIZE), bool)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    silhouette[(yy - 30) ** 2 + (xx - 28) ** 2 < 15 ** 2] = True
    shifted = np.roll(silhouette, (6, 9), axis=(0, 1))       # the same subject elsewhere in the frame
    files = {}
    mask_files = {"centre": _save(silhouette.astype(np.uint8) * 255, folder / "m_centre.png"),
                  "shifted": _save(shifted.astype(np.uint8) * 255, folder / "m_shifted.png")}
    for b, bg in enumerate(backgrounds):
        files[f"bg{b}"] = _save(bg, folder / f"bg{b}.png")
        for s, subject in enumerate(subjects):
            for where, region in (("centre", silhouette), ("shifted", shifted)):
                out = bg.copy()
                out[region] = subject[silhouette]          # the same pixels (np.roll keeps their order)
                files[f"bg{b}_s{s}_{where}"] = path = _save(out, folder / f"bg{b}_s{s}_{where}.png")
                oracle.masks[path] = mask_files[where]
    # Reference photos: subject 0 on backgrounds of their own, found by the annotator like outputs.
    refs = []
    for i in range(2):
        photo = _noise(30 + i)
        photo[silhouette] = subjects[0][silhouette]
        refs.append(_save(photo, folder / f"ref{i}.png"))
        oracle.masks[refs[-1]] = mask_files["centre"]
    files["refs"] = tuple(refs)
    files["subject0"] = subjects[0]
    files["silhouette"] = silhouette
    edit_mask = np.zeros((SIZE, SIZE), bool)
    edit_mask[5:15, 5:15] = True
    files["edit_mask"] = _save(edit_mask.astype(np.uint8) * 255, folder / "edit_mask.png")
    return files


def _item(files, output: str, background: str) -> ScoreItem:
    return ScoreItem(key=output, image=files[output], seed=0, subject="dog", class_noun="dog", eval_text="photo of a dog",
                     reference_images=files["refs"], subject_images=files["refs"][:1],
                     source_image=files[background], mask=files["edit_mask"])


def _by_prefix(row: dict) -> dict:
    return {k.split("/")[0]: v for k, v in row.items()}


def test_same_subject_on_two_backgrounds_gives_the_same_sub_scores(masked, scene):
    rows = masked.score([_item(scene, "bg0_s0_centre", "bg0"), _item(scene, "bg1_s0_shifted", "bg1")])
    a, b = _by_prefix(rows[0]), _by_prefix(rows[1])
    assert set(rows[0]) == set(masked.ids)
    for key in ("dino_sub", "clip_i_sub"):
        assert a[key] == pytest.approx(b[key], abs=1e-6)
    other = _by_prefix(masked.score([_item(scene, "bg0_s1_centre", "bg0")])[0])
    assert abs(other["dino_sub"] - a["dino_sub"]) > 1e-4           # a different subject scores differently
    assert a["gsam_no_detection"] == 0.0


def test_same_background_with_two_subjects_gives_the_same_back_scores(masked, scene):
    rows = masked.score([_item(scene, "bg0_s0_centre", "bg0"), _item(scene, "bg0_s1_centre", "bg0")])
    a, b = _by_prefix(rows[0]), _by_prefix(rows[1])
    for key in ("dino_back", "clip_i_back"):
        assert a[key] == pytest.approx(b[key], abs=1e-6)
        assert a[key] == pytest.approx(1.0, abs=1e-5)               # the background is the source's, untouched
    moved = _by_prefix(masked.score([_item(scene, "bg0_s0_centre", "bg1")])[0])
    assert moved["dino_back"] < a["dino_back"] - 1e-4               # another source background scores lower


def test_reference_photos_are_cut_like_the_output(masked, oracle, scene):
    """Both sides of -sub are the Grounded-SAM region, whitened and square-padded: an output
    showing exactly the reference's subject scores 1 whatever the two backgrounds; the raw photos
    (version 1) score it lower."""
    row = _by_prefix(masked.score([_item(scene, "bg1_s0_shifted", "bg1")])[0])
    assert row["dino_sub"] == pytest.approx(1.0, abs=1e-5) and row["clip_i_sub"] == pytest.approx(1.0, abs=1e-5)
    assert row["gsam_reference_uncut"] == 0.0
    cut, found = masked.reference_region(scene["refs"][0], "dog")
    arr = np.asarray(cut)
    assert found and arr.shape[0] == arr.shape[1]                       # square
    assert (arr[0, 0] == 255).all() and (arr[-1, -1] == 255).all()        # white outside the region
    raw = MaskedRegionMetric(preset="tiny", annotator=oracle, reference_regions="raw")
    assert raw.version == "2-raw-references" and masked.version == "2"
    raw_row = _by_prefix(raw.score([_item(scene, "bg1_s0_shifted", "bg1")])[0])
    assert raw_row["dino_sub"] < row["dino_sub"] - 1e-3


def test_a_reference_without_a_region_is_used_whole_and_counted(oracle, scene, tmp_path):
    lone = _save(_noise(40), tmp_path / "lone_ref.png")
    oracle.masks[lone] = None
    metric = MaskedRegionMetric(preset="tiny", annotator=oracle)
    item = ScoreItem(key="x", image=scene["bg0_s0_centre"], seed=0, subject="dog", class_noun="dog",
                     eval_text="photo of a dog", reference_images=(scene["refs"][0], lone),
                     subject_images=(lone,), source_image=scene["bg0"], mask=scene["edit_mask"])
    row = _by_prefix(metric.score([item])[0])
    assert row["gsam_reference_uncut"] == 1.0
    image, found = metric.reference_region(lone, "dog")
    assert not found and np.array_equal(np.asarray(image), np.asarray(Image.open(lone).convert("RGB")))


def test_no_detection_scores_zero_and_flags(masked, scene, oracle, tmp_path):
    blank = _save(_noise(10), tmp_path / "nothing.png")
    oracle.masks[blank] = None
    row = _by_prefix(masked.score([_item({**scene, "nothing": blank}, "nothing", "bg0")])[0])
    assert row["dino_sub"] == 0.0 and row["clip_i_sub"] == 0.0 and row["gsam_no_detection"] == 1.0
    assert row["dino_back"] == pytest.approx(1.0, abs=1e-5)         # only the source's edit region is cut
    lenient = MaskedRegionMetric(preset="tiny", annotator=oracle, no_detection="nan")
    row = _by_prefix(lenient.score([_item({**scene, "nothing": blank}, "nothing", "bg0")])[0])
    assert np.isnan(row["dino_sub"]) and row["gsam_no_detection"] == 1.0


def test_masked_metric_with_the_tiny_annotator_end_to_end(scene, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    metric = MaskedRegionMetric(preset="tiny", box_threshold=0.0, text_threshold=0.0)
    rows = metric.score([_item(scene, "bg0_s0_centre", "bg0")])
    assert set(rows[0]) == set(metric.ids) and all(np.isfinite(v) for v in rows[0].values())
    assert metric.annotator.calls["detect"] == 2          # the output, then its two reference photos together
    metric.score([_item(scene, "bg0_s0_centre", "bg0")])
    assert metric.annotator.calls["detect"] == 2          # masks cached on disk, reference cuts in memory


# ---- official protocol -----------------------------------------------------------------------
def test_geometric_mean_clamps_negatives_like_the_release():
    assert geometric_mean([0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert geometric_mean([1.0, 1.0, 1.0, -0.2]) == pytest.approx(0.001 ** 0.25)


def test_official_metric_whole_images(scene):
    metric = OfficialDreamEditMetric(preset="tiny")
    item = _item(scene, "bg0", "bg0")                              # the output is the source itself
    same, edited = (_by_prefix(r) for r in metric.score([item, _item(scene, "bg0_s0_centre", "bg0")]))
    assert same["official_dino_back"] == pytest.approx(1.0, abs=1e-5)
    assert same["official_clip_i_back"] == pytest.approx(1.0, abs=1e-5)
    row = edited
    assert row["official_dino_back"] < 1.0 - 1e-4 and row["official_clip_i_back"] != row["official_dino_back"]
    four = [row["official_dino_sub"], row["official_clip_i_sub"], row["official_dino_back"], row["official_clip_i_back"]]
    assert row["official_overall"] == pytest.approx(geometric_mean(four))
    as_released = four[:3] + [row["official_dino_back"]]
    assert row["official_overall_as_released"] == pytest.approx(geometric_mean(as_released))
    assert row["official_overall_as_released"] != pytest.approx(row["official_overall"], abs=1e-6)
    assert len(metric.ids) == 6 and len(set(metric.ids)) == 6
