"""Pair datasets: COCO 2014 and YouTube-VIS read from tiny copies of their on-disk formats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from methods.training.coco import (CocoInstance, CocoPairs, choose_instances, choose_instances_release,
                                   segmentation_to_mask)
from methods.training.data import build_source, epoch_order, parse_data_spec
from methods.training.pairs import (MAX_SUBJECTS, IndexedPairs, SyntheticPairs, TrainingPair,
                                    collate_pairs, crop_to_white_square, mask_bbox, to_tensor)
from methods.training.ytvis import RELEASE_TEMPLATES, YouTubeVISPairs, draw_frames, release_frames

R = 32  # training resolution in these tests


# ---- a COCO RLE encoder written from the format description (maskApi.c's rleToString) -------

def encode_counts(counts: list[int]) -> str:
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def mask_to_counts(mask: np.ndarray) -> list[int]:
    flat = mask.T.reshape(-1).astype(np.int8)           # column-major, as COCO
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def test_rle_masks_are_column_major_and_match_both_forms():
    """pycocotools against an encoder written from the format description (both RLE forms)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((7, 11), dtype=bool)
    mask[1:3, 2:9] = True          # a wide bar: row/column order mistakes would show
    mask[5, 0] = True
    mask |= rng.random(mask.shape) > 0.8
    counts = mask_to_counts(mask)
    assert (segmentation_to_mask({"size": [7, 11], "counts": counts}, 7, 11) == mask).all()
    assert (segmentation_to_mask({"size": [7, 11], "counts": encode_counts(counts)}, 7, 11) == mask).all()
    big = np.zeros((300, 400), dtype=bool)
    big[17:250, 33:390] = True
    big[100:120, :] = False
    assert (segmentation_to_mask({"size": [300, 400], "counts": encode_counts(mask_to_counts(big))}, 300, 400)
            == big).all()
    with pytest.raises(ValueError):
        segmentation_to_mask({"size": [7, 11], "counts": counts[:-1]}, 7, 11)


def test_polygon_rasterisation_fills_the_shape():
    mask = segmentation_to_mask([[10, 5, 30, 5, 30, 25, 10, 25]], 40, 50)
    assert mask.shape == (40, 50)
    assert mask[15, 20] and not mask[2, 2] and not mask[15, 40]
    assert int(mask.sum()) == 20 * 20              # COCO's convention: the polygon's area in pixels
    assert mask_bbox(mask) == (10, 5, 30, 25)
    two = segmentation_to_mask([[0, 0, 4, 0, 4, 4, 0, 4], [20, 20, 24, 20, 24, 24, 20, 24]], 40, 50)
    assert two[2, 2] and two[22, 22] and not two[10, 10]      # an instance's polygons are merged


def test_release_instance_choice_keeps_the_top_half_before_the_area_filter():
    insts = [CocoInstance(a, f"c{a}", None) for a in (1500, 999, 5000, 2000, 3000, 1200, 4000)]
    # 7 instances > 4: the top half of all 7 areas is the top 3 (7 // 2), then >= 1000
    assert [i.area for i in choose_instances_release(insts)] == [5000, 4000, 3000]
    # 5 instances all under 1000 px: nothing; top 2 of five where only one reaches 1000 px: one subject
    five = [CocoInstance(a, "x", None) for a in (800, 900, 700, 600, 500)]
    assert choose_instances_release(five) == []
    mixed = [CocoInstance(a, "x", None) for a in (5000, 990, 980, 970, 960)]
    assert [i.area for i in choose_instances_release(mixed)] == [5000]
    assert [i.area for i in choose_instances(mixed)] == [5000]
    # 4 or fewer: no top-half rule, only the area filter
    assert [i.area for i in choose_instances_release(insts[:4])] == [5000, 2000, 1500]


def test_instance_choice_follows_the_protocol():
    insts = [CocoInstance(a, f"c{a}", None) for a in (1500, 999, 5000, 2000, 3000, 1200, 4000)]
    chosen = choose_instances(insts)   # 6 pass the area filter -> the top 3 by area
    assert [i.area for i in chosen] == [5000, 4000, 3000]
    few = choose_instances(insts[:4])  # 3 pass -> all 3, largest first
    assert [i.area for i in few] == [5000, 2000, 1500]
    many = choose_instances([CocoInstance(1000 + i, "x", None) for i in range(12)])
    assert len(many) == MAX_SUBJECTS and many[0].area == 1011


def test_white_square_crop_pads_with_white():
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    out = np.asarray(crop_to_white_square(img, (0, 0, 20, 10), 20))
    assert (out[:5] > 250).all() and (out[-5:] > 250).all()   # padded rows top and bottom
    assert (out[8:12, 2:18] < 5).all()


# ---- tiny COCO --------------------------------------------------------------------------

def _save_jpeg(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    h, w = 60, 80
    rng = np.random.default_rng(1)
    for split, names in (("train2014", ["COCO_train2014_000000000001.jpg", "COCO_train2014_000000000002.jpg",
                                        "COCO_train2014_000000000003.jpg"]),
                         ("val2014", ["COCO_val2014_000000000010.jpg"])):
        for name in names:
            arr = (rng.random((h, w, 3)) * 60 + 100).astype(np.uint8)   # grey noise background
            arr[10:50, 10:40] = (200, 20, 20)                            # a red instance
            arr[5:45, 45:75] = (20, 20, 200)                             # a blue instance
            if name.endswith("3.jpg"):
                continue                                                  # missing image file
            _save_jpeg(root / split / name, arr)
    rle_mask = np.zeros((h, w), dtype=bool)
    rle_mask[5:45, 45:75] = True
    cats = [{"id": 1, "name": "apple"}, {"id": 2, "name": "cup"}]
    train = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": h, "width": w},
                   {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "height": h, "width": w},
                   {"id": 3, "file_name": "COCO_train2014_000000000003.jpg", "height": h, "width": w},
                   {"id": 4, "file_name": "nothing_usable.jpg", "height": h, "width": w}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1200.0,
             "segmentation": [[10, 10, 40, 10, 40, 50, 10, 50]], "bbox": [10, 10, 30, 40]},
            {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 1200.0 + 1,
             "segmentation": {"size": [h, w], "counts": encode_counts(mask_to_counts(rle_mask))},
             "bbox": [45, 5, 30, 40]},
            {"id": 13, "image_id": 1, "category_id": 2, "iscrowd": 1, "area": 3000.0,
             "segmentation": {"size": [h, w], "counts": mask_to_counts(rle_mask)}, "bbox": [0, 0, 1, 1]},
            {"id": 14, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 200.0,
             "segmentation": [[0, 0, 5, 0, 5, 5]], "bbox": [0, 0, 5, 5]},
            {"id": 21, "image_id": 2, "category_id": 2, "iscrowd": 0, "area": 1200.0,
             "segmentation": {"size": [h, w], "counts": mask_to_counts(rle_mask)}, "bbox": [45, 5, 30, 40]},
            {"id": 31, "image_id": 3, "category_id": 1, "iscrowd": 0, "area": 1200.0,
             "segmentation": [[10, 10, 40, 10, 40, 50, 10, 50]], "bbox": [10, 10, 30, 40]},
            {"id": 41, "image_id": 4, "category_id": 1, "iscrowd": 0, "area": 50.0,
             "segmentation": [[0, 0, 5, 0, 5, 5]], "bbox": [0, 0, 5, 5]},
        ],
        "categories": cats,
    }
    caps = {"annotations": [{"image_id": 1, "caption": "short one"},
                            {"image_id": 1, "caption": "an apple and a cup on a table"},
                            {"image_id": 2, "caption": "a cup"}, {"image_id": 3, "caption": "gone"},
                            {"image_id": 4, "caption": "tiny"}]}
    val = {"images": [{"id": 10, "file_name": "COCO_val2014_000000000010.jpg", "height": h, "width": w}],
           "annotations": [{"id": 101, "image_id": 10, "category_id": 1, "iscrowd": 0, "area": 1200.0,
                            "segmentation": [[10, 10, 40, 10, 40, 50, 10, 50]], "bbox": [10, 10, 30, 40]}],
           "categories": cats}
    val_caps = {"annotations": [{"image_id": 10, "caption": "a val apple"}]}
    ann = root / "annotations"
    ann.mkdir()
    for name, obj in (("instances_train2014", train), ("captions_train2014", caps),
                      ("instances_val2014", val), ("captions_val2014", val_caps)):
        (ann / f"{name}.json").write_text(json.dumps(obj))
    return root


def test_coco_index_order_captions_and_subjects(coco_root):
    ds = CocoPairs(coco_root, resolution=R, recipe="fixed")
    assert [im.image_id for im in ds.images] == [1, 2, 3, 10]      # train before val; 4 has no subject
    first = ds.images[0]
    assert first.caption == "an apple and a cup on a table"          # the longest caption
    assert [i.category for i in first.instances] == ["cup", "apple"]  # crowd and small dropped, largest first
    pair = ds.load(0)
    assert isinstance(pair, TrainingPair)
    assert pair.target.shape == (3, R, R) and len(pair.subjects) == 2
    assert pair.subject_prompts == ["a photo of a cup.", "a photo of a apple."]
    # subject crops: the object fills the square's middle; the padding is white
    cup, apple = (((s + 1) * 127.5).round() for s in pair.subjects)
    assert cup[2, R // 2, R // 2] > 150 and cup[0, R // 2, R // 2] < 80   # blue object
    assert apple[0, R // 2, R // 2] > 150 and apple[2, R // 2, R // 2] < 80  # red object
    assert (apple[:, :, :3] > 245).all() and (apple[:, :, -3:] > 245).all()  # tall object: white sides
    assert float(pair.target.min()) < -0.5 and pair.target.max() <= 1.0
    assert CocoPairs(coco_root, resolution=R, splits=("val2014",)).images[0].caption == "a val apple"
    assert len(CocoPairs(coco_root, resolution=R, limit=2)) == 2


def test_coco_release_selection_crowd_pads_and_crops(coco_root):
    ds = CocoPairs(coco_root, resolution=R)                          # the release recipe (default)
    assert [im.image_id for im in ds.images] == [1, 2, 3, 4, 10]     # 4 kept: it gets pads
    first = ds.images[0]
    # 4 instances (crowd included) -> no top-half rule; the crowd one (3000 px) is a subject
    assert [(i.category, i.area) for i in first.instances] == [("cup", 3000.0), ("cup", 1201.0), ("apple", 1200.0)]
    pair = ds.load(0)
    # the crowd instance's 1x1 px box is empty once scaled to 32 px: skipped like the release's empty crop
    assert pair.subject_prompts == ["a photo of a cup.", "a photo of a apple."]
    _save_jpeg(coco_root / "train2014" / "nothing_usable.jpg", np.full((60, 80, 3), 128, np.uint8))
    padded = ds.load(3)                                              # nothing usable: four black subjects
    assert len(padded.subjects) == MAX_SUBJECTS and padded.subject_prompts == ["a photo of a ."] * 4
    assert all(float(s.max()) == -1.0 for s in padded.subjects)


def test_coco_background_whitened_through_the_mask(coco_root):
    # the RLE instance's crop is exactly its mask box, so every pixel is the object: no white
    pair = CocoPairs(coco_root, resolution=40, splits=("train2014",), recipe="fixed").load(1)
    cup = ((pair.subjects[0] + 1) * 127.5)
    assert float(cup[2].mean()) > 150 and float(cup[0].mean()) < 80
    # the polygon instance, cropped with the noisy background whitened: no grey noise left
    apple = ((CocoPairs(coco_root, resolution=R, recipe="fixed").load(0).subjects[1] + 1) * 127.5)
    grey = ((apple - 130).abs() < 35).all(dim=0)
    assert grey.float().mean() < 0.02


def test_coco_bad_samples_are_skipped_not_raised(coco_root):
    ds = CocoPairs(coco_root, resolution=R, recipe="fixed")
    assert ds.load(2) is None                                        # the missing image file
    batch = collate_pairs([IndexedPairs(ds, range(len(ds)), 0)[i] for i in range(len(ds))])
    assert batch["skipped"] == 1 and batch["target"].shape[0] == 3


def test_coco_missing_annotations_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match="instances_"):
        CocoPairs(tmp_path, resolution=R)


# ---- tiny YouTube-VIS -------------------------------------------------------------------

def _palette_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12)
    im.putpalette(palette)
    im.save(path)


@pytest.fixture(scope="module")
def ytvis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvis")
    h, w, n = 48, 64, 16
    frames = [f"{5 * i:05d}" for i in range(n)]
    videos = {}
    for vid in ("vid_a", "vid_b"):
        for i, frame in enumerate(frames):
            img = np.full((h, w, 3), 90, np.uint8)
            img[:, :, 1] = i * 10                                 # the frame number in the green channel
            ann = np.zeros((h, w), np.uint8)
            x = 4 + 2 * i
            img[10:30, x:x + 16] = (250, 0, 0)
            img[10:30, x:x + 4] = (250, 250, 0)                    # a yellow left edge: shows flips
            ann[10:30, x:x + 16] = 1                              # object 1: a moving red box, ratio ~0.10
            ann[0, 0] = 2                                         # object 2: one pixel, below the area filter
            if not (vid == "vid_b" and i % 2):                    # vid_b misses every other JPEG
                _save_jpeg(root / "JPEGImages" / vid / f"{frame}.jpg", img)
            _palette_png(root / "Annotations" / vid / f"{frame}.png", ann)
        videos[vid] = {"objects": {"1": {"category": "earless_seal", "frames": frames},
                                   "2": {"category": "speck", "frames": frames},
                                   "3": {"category": "lonely", "frames": frames[:1]}}}
    videos["vid_gone"] = {"objects": {"1": {"category": "ghost", "frames": frames}}}  # no files at all
    (root / "meta.json").write_text(json.dumps({"videos": videos}))
    return root


def frame_number(image: torch.Tensor) -> int:
    """The frame index written in the green channel of a background pixel."""
    green = (image[1] + 1) * 127.5
    return int(round(float(green[0, 0]) / 10))


def test_frame_draws_are_ordered_and_far_enough_apart():
    import random
    rng = random.Random(0)
    for n in (2, 3, 8, 9, 17, 100):
        for _ in range(50):
            i, j = draw_frames(n, rng)
            assert 0 <= i < j < n and j - i >= max(1, math.ceil(n / 8))


def test_ytvis_pairs_follow_the_protocol(ytvis_root):
    ds = YouTubeVISPairs(ytvis_root, resolution=R, recipe="fixed")
    assert len(ds) == 5                                  # 2 videos x objects {1, 2} + vid_gone; object 3 has 1 frame
    assert [(o.video, o.object_id) for o in ds.objects] == [("vid_a", 1), ("vid_a", 2), ("vid_b", 1), ("vid_b", 2),
                                                            ("vid_gone", 1)]
    assert ds.load(1) is None                            # the speck fails the area filter in every frame
    flips = 0
    for seed in range(12):
        pair = ds.load(0, seed)
        assert pair.subject_prompts == ["a photo of a earless seal."]
        assert pair.prompt.endswith("a earless seal.")
        # the subject's background is white, the object red: the centre row holds both
        subject = ((pair.subjects[0] + 1) * 127.5)
        assert (subject[:, 0, :] > 245).all()
        assert (subject[:, R // 2, :] > 245).all(dim=0).any() and (subject[0, R // 2] > 200).any()
        # the target is a natural frame (not whitened) and comes later, ceil(16/8) = 2 frames on
        target_frame = frame_number(pair.target)
        assert (pair.target[2] < 0).all()                  # blue is 0 or 90 everywhere: no white
        assert target_frame >= 2
        red = ((subject[0] > 200) & (subject[1] < 60)).any(dim=0).nonzero().flatten().float()
        yellow = ((subject[0] > 200) & (subject[1] > 200) & (subject[2] < 60)).any(dim=0).nonzero().flatten().float()
        flips += int(yellow.mean() > red.mean())          # the yellow edge is on the left unless flipped
        # deterministic
        again = ds.load(0, seed)
        assert torch.equal(again.target, pair.target) and torch.equal(again.subjects[0], pair.subjects[0])
    assert 0 < flips < 12


def test_ytvis_missing_frames_skip_and_length_cycles(ytvis_root):
    ds = YouTubeVISPairs(ytvis_root, resolution=R, length=10, recipe="fixed")
    assert len(ds) == 10 and ds.load(5, 0) is not None   # index 5 -> object 0 again, other draws
    assert not torch.equal(ds.load(5, 0).target, ds.load(0, 0).target)
    assert ds.load(4, 0) is None                         # vid_gone: every file missing -> skipped
    got = [r for r in (ds.load(2, seed) for seed in range(20)) if r is not None]   # vid_b: odd JPEGs missing
    assert len(got) >= 10                                # 3 draws per pair: most pairs still succeed
    assert all(frame_number(r.target) % 2 == 0 for r in got)   # only frames whose JPEG exists


def test_release_frame_draws_transcribe_the_reference_code():
    import random
    rng = random.Random(0)
    seen_gap_zero_equal = False
    for n in (2, 3, 7, 8, 9, 17, 100):
        gap = n // 8
        for _ in range(200):
            i, j = release_frames(n, rng)
            assert 0 <= i <= n - gap - 1 and i + gap <= j <= n - 1
            seen_gap_zero_equal |= gap == 0 and i == j
    assert seen_gap_zero_equal                            # floor(n/8) = 0 lets both frames coincide


def test_ytvis_release_pairs(ytvis_root):
    pytest.importorskip("cv2")
    ds = YouTubeVISPairs(ytvis_root, resolution=R)        # the release recipe (default)
    got = [p for p in (ds.load(0, seed) for seed in range(16)) if p is not None]
    assert 0 < len(got) < 16                              # the speck, drawn half the time, fails the filters
    for pair in got:
        assert pair.subject_prompts == ["a photo of a earless_seal."]
        assert pair.prompt in [t.format("earless_seal") for t in RELEASE_TEMPLATES]
        subject = ((pair.subjects[0] + 1) * 127.5)
        assert (subject[:, 0, :] > 245).all()             # white padding around the subject
        assert (subject[0] > 200).any()                   # the red object is in it
    assert len(RELEASE_TEMPLATES) == 30


def test_ytvis_needs_meta_json(tmp_path):
    with pytest.raises(BenchError, match="meta.json"):
        YouTubeVISPairs(tmp_path)


# ---- combining, ordering, batching ------------------------------------------------------

def test_data_specs_and_even_split(coco_root, ytvis_root):
    assert parse_data_spec("coco:/x/y") == ("coco", "/x/y")
    for bad in ("coco", "imagenet:/x", "ytvis:"):
        with pytest.raises(BenchError):
            parse_data_spec(bad)
    src = build_source([f"coco:{coco_root}", f"ytvis:{ytvis_root}"], R, pairs=6, recipe="fixed")
    assert len(src) == 6                                  # 3 COCO images + 3 YouTube-VIS pairs
    assert src.load(0).source == "coco:1" and src.load(3).source.startswith("ytvis:vid_a")
    with pytest.raises(BenchError, match="no training data"):
        build_source([], R)


def test_epoch_order_is_a_seeded_partition():
    full = epoch_order(50, seed=3)
    assert sorted(full) == list(range(50)) and full == epoch_order(50, seed=3)
    assert full != epoch_order(50, seed=4)
    shards = [epoch_order(50, 3, rank=r, world=3) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(50))


def test_collate_fills_slots_and_masks():
    a = SyntheticPairs(2, R).load(0)
    b = TrainingPair(a.target, "two", [a.subjects[0]] * 3, ["p1", "p2", "p3"])
    batch = collate_pairs([a, None, b])
    assert batch["skipped"] == 1 and batch["subjects"].shape == (2, MAX_SUBJECTS, 3, R, R)
    assert batch["slot_mask"].tolist() == [[True, False, False, False], [True, True, True, False]]
    assert batch["subject_prompts"][1] == ["p1", "p2", "p3", ""]
    assert torch.equal(batch["subjects"][0, 0], a.subjects[0])
    assert collate_pairs([None])["empty"]
    with pytest.raises(ValueError):
        TrainingPair(a.target, "x", [a.subjects[0]] * 5, ["p"] * 5)


def test_synthetic_pairs_carry_the_colour_only_in_the_subject():
    ds = SyntheticPairs(16, R)
    p0, p1 = ds.load(0), ds.load(1)
    assert p0.prompt == p1.prompt and p0.subject_prompts == p1.subject_prompts
    centre = lambda t: t[:, R // 2, R // 2]
    assert not torch.allclose(centre(p0.subjects[0]), centre(p1.subjects[0]))
    assert torch.equal(to_tensor(Image.new("RGB", (2, 2), (255, 255, 255))), torch.ones(3, 2, 2))
