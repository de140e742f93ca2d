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
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class VideoObject:
    video: str
    object_id: int
    category: str
    frames: tuple[str, ...]


def find_root(root: Path) -> Path:
    for candidate in (root, root / "train"):
        if (candidate / "meta.json").exists():
            return candidate
    raise BenchError(f"YouTube-VIS: no meta.json in {root} or {root / 'train'} "
                     f"(expected meta.json, JPEGImages/, Annotations/; see methods/training/README.md)")


def read_objects(root: Path) -> list[VideoObject]:
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"YouTube-VIS: {root / 'meta.json'} is not valid json ({exc})") from None
    if not isinstance(meta.get("videos"), dict):
        raise BenchError(f"YouTube-VIS: {root / 'meta.json'} has no 'videos' mapping")
    objects = []
    for video, info in meta["videos"].items():
        for obj_id, obj in (info.get("objects") or {}).items():
            frames = tuple(str(f) for f in obj.get("frames", []))
            if len(frames) >= 2 and obj.get("category"):
                objects.append(VideoObject(video, int(obj_id), str(obj["category"]).replace("_", " "), frames))
    return objects


def draw_frames(n: int, rng) -> tuple[int, int]:
    """Indices (subject, target) into an object's frame list: subject first, >= ceil(n/8) apart."""
    gap = max(1, math.ceil(n / 8))
    i = rng.randint(0, n - 1 - gap)
    return i, rng.randint(i + gap, n - 1)


class YouTubeVISPairs(PairSource):
    """YouTube-VIS pairs (see the module docstring for the layout and the rules)."""

    name = "ytvis"

    def __init__(self, root: str | Path, resolution: int = 512, length: int | None = None):
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

    def load(self, index: int, seed: int = 0) -> TrainingPair | None:
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
