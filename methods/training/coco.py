"""COCO 2014 training pairs (docs/protocols.md section 1, "Training": the COCO half of the data).

On-disk layout (the public COCO 2014 release, unchanged)::

    DIR/annotations/instances_train2014.json   DIR/annotations/captions_train2014.json
    DIR/annotations/instances_val2014.json     DIR/annotations/captions_val2014.json
    DIR/train2014/COCO_train2014_*.jpg         DIR/val2014/COCO_val2014_*.jpg

A pair: target = the whole image resized to R x R, prompt = its longest caption; subjects =
up to 4 instances with area >= 1000 px, largest first; when an image has more than 4 such
instances only the top half by area is kept (then the first 4 of it); each subject has its
background whitened through the instance mask, is cropped to the mask's box, padded to a
white square and resized to R. Crowd annotations (``iscrowd=1``) are regions of many
objects, not instances, and are not used as subjects. Images are taken in the json's order,
train before val ("the first 100k images" is ``limit=100_000``).

Masks are decoded here without pycocotools: polygons are rasterised with PIL's ImageDraw and
RLE (uncompressed count lists and the compressed string form) is decoded in numpy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench import BenchError
from methods.training.pairs import (MAX_SUBJECTS, SUBJECT_PROMPT, PairSource, TrainingPair,
                                    resize_square, subject_crop, to_tensor)

log = logging.getLogger(__name__)

MIN_AREA = 1000           # docs/protocols.md section 1: subjects have area >= 1000 px
SPLITS = ("train2014", "val2014")


# ---- mask decoding --------------------------------------------------------------------------

def rle_counts_from_string(s: str) -> list[int]:
    """Decode COCO's compressed RLE string: 6-bit groups (5 data bits + a continuation bit,
    offset by ASCII 48), sign-extended, counts after the second stored as deltas of the count
    two places back."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_mask(rle: dict) -> np.ndarray:
    """A COCO RLE dict ({"size": [h, w], "counts": list or str}) -> bool mask [h, w].

    Runs alternate background/foreground starting with background, over the pixels in
    column-major order."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = rle_counts_from_string(counts.decode() if isinstance(counts, bytes) else counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts do not cover a {h}x{w} mask")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons ([x0, y0, x1, y1, ...] in pixels) -> bool mask [h, w]."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
    return np.asarray(canvas, dtype=bool)


def segmentation_to_mask(segmentation, h: int, w: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, h, w)
    if isinstance(segmentation, dict):
        return rle_to_mask(segmentation)
    raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")


# ---- the dataset ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CocoInstance:
    area: float
    category: str
    segmentation: object


@dataclass(frozen=True)
class CocoImage:
    image_id: int
    path: Path
    height: int
    width: int
    caption: str
    instances: tuple[CocoInstance, ...]     # already filtered and ordered: the subjects


def choose_instances(instances: list[CocoInstance]) -> list[CocoInstance]:
    """docs/protocols.md section 1: area >= 1000, largest first; more than 4 -> keep the top half by
    area; at most 4."""
    kept = sorted((i for i in instances if i.area >= MIN_AREA), key=lambda i: -i.area)
    if len(kept) > MAX_SUBJECTS:
        kept = kept[: len(kept) // 2]
    return kept[:MAX_SUBJECTS]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"COCO: {path} is missing (expected the COCO 2014 annotations layout, "
                         f"see methods/training/README.md)") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"COCO: {path} is not valid json ({exc})") from None


def index_split(root: Path, split: str) -> list[CocoImage]:
    """Every image of one split that has at least one usable subject, in the json's order."""
    instances = _read_json(root / "annotations" / f"instances_{split}.json")
    captions = _read_json(root / "annotations" / f"captions_{split}.json")
    categories = {c["id"]: c["name"] for c in instances.get("categories", [])}
    longest: dict[int, str] = {}
    for ann in captions.get("annotations", []):
        text = str(ann.get("caption", "")).strip()
        if len(text) > len(longest.get(ann["image_id"], "")):
            longest[ann["image_id"]] = text
    per_image: dict[int, list[CocoInstance]] = {}
    for ann in instances.get("annotations", []):
        if ann.get("iscrowd", 0) or ann.get("category_id") not in categories:
            continue
        per_image.setdefault(ann["image_id"], []).append(
            CocoInstance(float(ann.get("area", 0)), categories[ann["category_id"]], ann.get("segmentation")))
    images = []
    for img in instances.get("images", []):
        chosen = choose_instances(per_image.get(img["id"], []))
        caption = longest.get(img["id"])
        if chosen and caption:
            images.append(CocoImage(img["id"], root / split / img["file_name"], int(img["height"]),
                                    int(img["width"]), caption, tuple(chosen)))
    return images


class CocoPairs(PairSource):
    """COCO 2014 pairs (see the module docstring for the layout and the rules)."""

    name = "coco"

    def __init__(self, root: str | Path, resolution: int = 512, splits: tuple[str, ...] | None = None,
                 limit: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise BenchError(f"COCO: {self.root} is not a folder")
        if splits is None:
            splits = tuple(s for s in SPLITS if (self.root / "annotations" / f"instances_{s}.json").exists())
            if not splits:
                raise BenchError(f"COCO: no annotations/instances_{{train,val}}2014.json under {self.root}")
        self.resolution = resolution
        self.images: list[CocoImage] = []
        for split in splits:
            self.images.extend(index_split(self.root, split))
        if limit is not None:
            self.images = self.images[: int(limit)]
        log.info("COCO: %d images with subjects under %s", len(self.images), self.root)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int, seed: int = 0) -> TrainingPair | None:
        entry = self.images[index]
        try:
            with Image.open(entry.path) as im:
                image = im.convert("RGB")
        except OSError as exc:
            log.warning("COCO: skipping image %s: %s", entry.path, exc)
            return None
        if image.size != (entry.width, entry.height):
            log.warning("COCO: skipping %s: size %s differs from the annotation's %dx%d",
                        entry.path, image.size, entry.width, entry.height)
            return None
        subjects, prompts = [], []
        for inst in entry.instances:
            try:
                mask = segmentation_to_mask(inst.segmentation, entry.height, entry.width)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("COCO: bad segmentation in image %d: %s", entry.image_id, exc)
                continue
            if mask.shape != (entry.height, entry.width):
                continue
            crop = subject_crop(image, mask, self.resolution)
            if crop is None:           # empty mask
                continue
            subjects.append(to_tensor(crop))
            prompts.append(SUBJECT_PROMPT.format(inst.category))
        if not subjects:
            return None
        return TrainingPair(to_tensor(resize_square(image, self.resolution)), entry.caption, subjects,
                            prompts, source=f"coco:{entry.image_id}")
