"""YouTube-VIS training pairs (docs/protocols.md section 1, "Training": the video half of the data).

On-disk layout (the public YouTube-VIS/VOS "meta.json" release)::

    DIR/meta.json                      {"videos": {VID: {"objects": {OBJ_ID: {"category": NAME,
                                                                      "frames": ["00000", ...]}}}}}
    DIR/JPEGImages/VID/FRAME.jpg
    DIR/Annotations/VID/FRAME.png      palette PNG: pixel value = object id (0 = background)

(``DIR/train/meta.json`` with ``DIR/train/JPEGImages`` etc. is accepted as well.)

The objects (video, object id) with at least two annotated frames, in meta.json's order, are
cycled through: pair i uses object i mod (number of objects) with its own random draws, so a
source of ``length`` pairs (the paper's 100k) can outnumber the objects. For a pair, with n annotated frames of the object, a subject frame and a later target frame at least
ceil(n/8) frames apart (in the object's frame list) are drawn; both masks must have an area
ratio in (0.01, 0.64), else another draw is tried (3 in all) before the pair is skipped.
Subject: white background through the mask, mask box expanded by U(1.1, 1.4), padded to a
white square, flipped horizontally with p = 0.5, resized to R. Target: a square crop centred
on the object with the box expanded by U(1.3, 3.0), resized to R. Target prompt: one of
:data:`TARGET_TEMPLATES` filled with ``a {category}``; subject prompt ``a photo of a {category}.``.
All draws come from the pair's own seeded stream (deterministic).

``recipe="release"`` (the default; docs/protocols.md section 1b) follows the reference code
instead: pair i uses video i mod (number of videos) and one of its objects drawn at random;
frame gap floor(n/8) (may be 0), subject index U{0 .. n-gap-1}, target = subject + U{gap .. n-subject-1}
(clamped); both masks must have an area ratio in [0.01, 0.64], the subject mask a connectivity
score > 0.9 (largest external contour area / all, OpenCV) and a box at least 0.1 of the frame
in height and width, the target box (x1.1) at most 0.8 of the frame; subject: white background,
cropped to its box, padded white by a factor in {1.1, 1.2, 1.3, 1.4}, squared, resized,
flipped with p = 0.5; target: the x1.1 box expanded by a factor in {1.3, 1.4, ..., 2.9}, made
square around its centre (clipped at the borders), padded black to a square, resized; 30 prompt
templates filled with the bare category as meta.json spells it (``a picture of earless_seal.``),
subject prompt ``a photo of a {category}.``. A pair that fails a check is skipped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import BenchError
from methods.training.pairs import (SUBJECT_PROMPT, PairSource, TrainingPair, expand_box,
                                    mask_bbox, sample_rng, square_crop_around, subject_crop, to_tensor)

log = logging.getLogger(__name__)

TARGET_TEMPLATES = ("a picture of {}.", "a photo of {}.", "an image of {}.", "a picture showing {}.")
AREA_RATIO = (0.01, 0.64)          # open interval, docs/protocols.md section 1
SUBJECT_EXPAND = (1.1, 1.4)
TARGET_EXPAND = (1.3, 3.0)
FRAME_DRAWS = 3

#: the reference code's 30 target-prompt templates (filled with the bare category)
RELEASE_TEMPLATES = (
    "a fine image of {}.", "a {} center at the middle of the image.", "a picture of {}.", "a clear shot of {}.",
    "an image showing a {}.", "a simple depiction of {}.", "a plain view of {}.", "a basic image of {}.",
    "a straightforward representation of {}.", "an ordinary photo of {}.", "a visual of {}.",
    "an everyday look at {}.", "a usual sight of {}.", "a typical image of {}.", "a common depiction of {}.",
    "a straightforward photo of {}.", "a classic view of {}.", "a generic image of {}.",
    "a standard depiction of {}.", "a direct view of {}.", "an uncomplicated image of {}.",
    "a true representation of {}.", "an unembellished image of {}.", "a neat picture of {}.",
    "a regular view of {}.", "a plain photo of {}.", "a bare image of {}.", "an unadorned view of {}.",
    "a straightforward portrayal of {}.", "a direct depiction of {}.")


def release_frames(n: int, rng) -> tuple[int, int]:
    """The reference code's frame draw: gap floor(n/8) (may be 0), subject U{0..n-gap-1},
    target = subject + U{gap .. n-subject-1}, at most n-1."""
    gap = n // 8
    start = rng.randint(0, n - gap - 1)
    end = start + rng.randint(gap, n - start - 1)
    return start, min(end, n - 1)


def mask_connectivity(mask: np.ndarray) -> float:
    """The reference code's mask score: largest external contour area / sum of them (0 for
    masks under 10 px)."""
    try:
        import cv2
    except ImportError:
        raise BenchError("--recipe release with YouTube-VIS needs OpenCV for the release's mask "
                         "connectivity score: pip install opencv-python-headless") from None
    mask = mask.astype(np.uint8)
    if mask.sum() < 10:
        return 0.0
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    areas = [cv2.contourArea(c) for c in contours]
    return float(max(areas) / sum(areas)) if sum(areas) > 0 else 0.0


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) inclusive ends, as the reference code's get_bbox_from_mask."""
    h, w = mask.shape
    if mask.sum() < 10:
        return 0, h, 0, w
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _expand(box, ratio: float, h: int, w: int) -> tuple[int, int, int, int]:
    y1, y2, x1, x2 = box
    xc, yc = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    bh, bw = ratio * (y2 - y1 + 1), ratio * (x2 - x1 + 1)
    return (max(0, int(yc - bh * 0.5)), min(h, int(yc + bh * 0.5)),
            max(0, int(xc - bw * 0.5)), min(w, int(xc + bw * 0.5)))


def _square_box(box, h: int, w: int) -> tuple[int, int, int, int]:
    y1, y2, x1, x2 = box
    cx, cy, bh, bw = (x1 + x2) // 2, (y1 + y2) // 2, y2 - y1, x2 - x1
    if bh >= bw:
        x1, x2 = cx - bh // 2, cx + bh // 2
    else:
        y1, y2 = cy - bw // 2, cy + bw // 2
    return max(0, y1), min(h, y2), max(0, x1), min(w, x2)


def _pad_square(arr: np.ndarray, value: int) -> np.ndarray:
    h, w = arr.shape[:2]
    pad = abs(h - w)
    first, second = pad // 2, pad - pad // 2
    widths = ((0, 0), (first, second)) if h > w else ((first, second), (0, 0))
    return np.pad(arr, widths + ((0, 0),) * (arr.ndim - 2), constant_values=value)


def release_pair_images(sub_image: np.ndarray, sub_mask: np.ndarray, tar_image: np.ndarray,
                        tar_mask: np.ndarray, size: int, rng) -> tuple[Image.Image, Image.Image] | None:
    """(subject, target) as the reference code builds them, or None when a check fails."""
    for mask in (sub_mask, tar_mask):
        if not AREA_RATIO[0] <= float(mask.mean()) <= AREA_RATIO[1]:
            return None
    if mask_connectivity(sub_mask) <= 0.9:
        return None
    h, w = sub_mask.shape
    y1, y2, x1, x2 = _box(sub_mask)
    if y2 - y1 < 0.1 * h or x2 - x1 < 0.1 * w:
        return None
    white = np.where(sub_mask[..., None], sub_image, 255).astype(np.uint8)[y1:y2, x1:x2]
    ratio = rng.randint(11, 14) / 10
    ch, cw = white.shape[:2]
    big_h, big_w = int(ch * ratio), int(cw * ratio)
    top, left = (big_h - ch) // 2, (big_w - cw) // 2
    white = np.pad(white, ((top, big_h - ch - top), (left, big_w - cw - left), (0, 0)), constant_values=255)
    subject = Image.fromarray(_pad_square(white, 255)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        subject = subject.transpose(Image.FLIP_LEFT_RIGHT)
    th, tw = tar_mask.shape
    box = _expand(_box(tar_mask), 1.1, th, tw)
    if box[1] - box[0] > 0.8 * th or box[3] - box[2] > 0.8 * tw:
        return None
    crop = _square_box(_expand(box, rng.randint(13, 29) / 10, th, tw), th, tw)
    target = tar_image[crop[0]:crop[1], crop[2]:crop[3]]
    if target.size == 0:
        return None
    target = Image.fromarray(_pad_square(target, 0).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return subject, target


@dataclass(frozen=True)
class VideoObject:
    video: str
    object_id: int
    category: str
    frames: tuple[str, ...]
    raw_category: str = ""            # as meta.json spells it (the release's prompts use it)


def find_root(root: Path) -> Path:
    for candidate in (root, root / "train"):
        if (candidate / "meta.json").exists():
            return candidate
    raise BenchError(f"YouTube-VIS: no meta.json in {root} or {root / 'train'} "
                     f"(expected meta.json, JPEGImages/, Annotations/; see methods/training/README.md)")


def read_objects(root: Path) -> list[VideoObject]:
    from bench.files import read_json

    meta = read_json(root / "meta.json", "the YouTube-VIS meta.json")    # bounded: size, depth, UTF-8
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise BenchError(f"YouTube-VIS: {root / 'meta.json'} has no 'videos' mapping")
    objects = []
    for video, info in meta["videos"].items():
        for obj_id, obj in (info.get("objects") or {}).items():
            frames = tuple(str(f) for f in obj.get("frames", []))
            if len(frames) >= 2 and obj.get("category"):
                objects.append(VideoObject(video, int(obj_id), str(obj["category"]).replace("_", " "), frames,
                                           str(obj["category"])))
    return objects


def draw_frames(n: int, rng) -> tuple[int, int]:
    """Indices (subject, target) into an object's frame list: subject first, >= ceil(n/8) apart."""
    gap = max(1, math.ceil(n / 8))
    i = rng.randint(0, n - 1 - gap)
    return i, rng.randint(i + gap, n - 1)


class YouTubeVISPairs(PairSource):
    """YouTube-VIS pairs (see the module docstring for the layout and the rules)."""

    name = "ytvis"

    def __init__(self, root: str | Path, resolution: int = 512, length: int | None = None,
                 recipe: str = "release"):
        if recipe not in ("release", "fixed"):
            raise BenchError(f"YouTube-VIS: recipe must be release or fixed, not {recipe!r}")
        self.recipe = recipe
        self.root = find_root(Path(root))
        self.resolution = resolution
        self.objects = read_objects(self.root)
        if not self.objects:
            raise BenchError(f"YouTube-VIS: {self.root / 'meta.json'} lists no object with >= 2 frames")
        self.length = len(self.objects) if length is None else int(length)
        log.info("YouTube-VIS: %d objects with >= 2 frames under %s, %d pairs",
                 len(self.objects), self.root, self.length)

    def __len__(self) -> int:
        return self.length

    def _frame(self, obj: VideoObject, frame: str) -> tuple[Image.Image, np.ndarray] | None:
        """The frame's image and the object's mask, or None when missing or outside the area
        filter."""
        try:
            with Image.open(self.root / "Annotations" / obj.video / f"{frame}.png") as m:
                if m.mode not in ("P", "L", "I", "I;16"):
                    raise OSError(f"mask mode {m.mode} is not a palette/index image")
                mask = np.asarray(m) == obj.object_id
            with Image.open(self.root / "JPEGImages" / obj.video / f"{frame}.jpg") as im:
                image = im.convert("RGB")
        except OSError as exc:
            log.warning("YouTube-VIS: skipping frame %s/%s: %s", obj.video, frame, exc)
            return None
        if mask.shape != (image.height, image.width):
            return None
        ratio = float(mask.mean())
        if not AREA_RATIO[0] < ratio < AREA_RATIO[1]:
            return None
        return image, mask

    def _load_release(self, index: int, seed: int) -> TrainingPair | None:
        videos = list(dict.fromkeys(o.video for o in self.objects))
        rng = sample_rng(seed, self.name, index)
        video = videos[index % len(videos)]
        obj = rng.choice([o for o in self.objects if o.video == video])
        template = rng.choice(RELEASE_TEMPLATES)
        i, j = release_frames(len(obj.frames), rng)
        frames = []
        for frame in (obj.frames[i], obj.frames[j]):
            try:
                with Image.open(self.root / "Annotations" / obj.video / f"{frame}.png") as m:
                    mask = np.asarray(m.convert("P") if m.mode not in ("P", "L") else m) == obj.object_id
                with Image.open(self.root / "JPEGImages" / obj.video / f"{frame}.jpg") as im:
                    image = np.asarray(im.convert("RGB"))
            except OSError as exc:
                log.warning("YouTube-VIS: skipping frame %s/%s: %s", obj.video, frame, exc)
                return None
            if mask.shape != image.shape[:2]:
                return None
            frames += [image, mask]
        built = release_pair_images(*frames, self.resolution, rng)
        if built is None:
            return None
        subject, target = built
        return TrainingPair(to_tensor(target), template.format(obj.raw_category), [to_tensor(subject)],
                            [SUBJECT_PROMPT.format(obj.raw_category)], source=f"ytvis:{obj.video}/{obj.object_id}")

    def load(self, index: int, seed: int = 0) -> TrainingPair | None:
        if self.recipe == "release":
            return self._load_release(index, seed)
        obj = self.objects[index % len(self.objects)]
        rng = sample_rng(seed, self.name, index)
        for _ in range(FRAME_DRAWS):
            i, j = draw_frames(len(obj.frames), rng)
            subject_expand = rng.uniform(*SUBJECT_EXPAND)
            flip = rng.random() < 0.5
            target_expand = rng.uniform(*TARGET_EXPAND)
            template = rng.choice(TARGET_TEMPLATES)
            subject_frame, target_frame = self._frame(obj, obj.frames[i]), self._frame(obj, obj.frames[j])
            if subject_frame is None or target_frame is None:
                continue
            subject = subject_crop(*subject_frame, self.resolution, subject_expand, flip)
            image, mask = target_frame
            target = square_crop_around(image, expand_box(mask_bbox(mask), target_expand), self.resolution)
            return TrainingPair(to_tensor(target), template.format(f"a {obj.category}"), [to_tensor(subject)],
                                [SUBJECT_PROMPT.format(obj.category)], source=f"ytvis:{obj.video}/{obj.object_id}")
        return None
