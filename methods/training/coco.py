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

Masks (polygons, RLE in both forms) are decoded with pycocotools.

``recipe="release"`` (docs/protocols.md section 1b) selects as the reference code does: the
top half by area over *all* instances (crowd ones included) is kept before the 1000-px filter
(only when there are more than 4), images without any usable instance are kept with four black
subjects (prompt ``a photo of a .``), and each crop is cut from the whitened image after it is
resized to R x R (bilinear), with the box scaled alike, then padded white to a square.
``recipe="fixed"``: the rules above (crowd excluded, filter first, images without subjects
dropped, crops at full resolution).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import BenchError
from methods.training.pairs import (MAX_SUBJECTS, SUBJECT_PROMPT, PairSource, TrainingPair,
                                    resize_square, subject_crop, to_tensor)

log = logging.getLogger(__name__)

MIN_AREA = 1000           # docs/protocols.md section 1: subjects have area >= 1000 px
SPLITS = ("train2014", "val2014")


# ---- mask decoding (pycocotools) ----------------------------------------------------------

def segmentation_to_mask(segmentation, h: int, w: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed RLE with a count list, or compressed RLE with
    a string) -> bool mask [h, w], decoded by pycocotools as the COCO API does (polygons of
    one instance merged)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        counts = segmentation["counts"]
        rle = {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    elif isinstance(segmentation, (list, dict)):
        if isinstance(segmentation, dict):
            if sum(segmentation.get("counts", [])) != int(segmentation["size"][0]) * int(segmentation["size"][1]):
                raise ValueError(f"RLE counts do not cover a {segmentation['size']} mask")
        elif not segmentation or not all(len(poly) >= 6 for poly in segmentation):
            raise ValueError("COCO polygons need at least 3 points each")
        rles = mask_utils.frPyObjects(segmentation, h, w)
        rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    else:
        raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


# ---- the dataset ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CocoInstance:
    area: float
    category: str
    segmentation: object
    bbox: tuple[float, ...] | None = None     # (x, y, w, h) in the image's pixels


def release_crop(image: Image.Image, mask: np.ndarray, bbox, size: int) -> Image.Image | None:
    """The reference code's crop: background whitened at full size, the image resized to
    size x size (bilinear), the box scaled alike and truncated, the crop padded white to a
    centred square, then resized to ``size`` (bilinear)."""
    if not mask.any() or bbox is None:
        return None
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr[~mask] = 255
    h, w = arr.shape[:2]
    small = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
    x, y, bw, bh = (int(v) for v in (bbox[0] * size / w, bbox[1] * size / h, bbox[2] * size / w, bbox[3] * size / h))
    crop = small[y:y + bh, x:x + bw]
    if crop.size == 0:
        return None
    ch, cw = crop.shape[:2]
    pad = abs(ch - cw)
    first, second = pad // 2, pad - pad // 2
    widths = ((0, 0), (first, second), (0, 0)) if ch > cw else ((first, second), (0, 0), (0, 0))
    square = np.pad(crop, widths, constant_values=255)
    return Image.fromarray(square).resize((size, size), Image.BILINEAR)


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


def choose_instances_release(instances: list[CocoInstance]) -> list[CocoInstance]:
    """The reference code's choice: largest first; with more than 4 instances, those whose area
    is not among the top half of all areas are skipped; areas under 1000 px are skipped. (Decode
    failures are skipped later and the first 4 that decode are used.)"""
    areas = [i.area for i in instances]
    top = sorted(areas)[-int(len(areas) // 2):] if areas else []
    ordered = sorted(instances, key=lambda i: -i.area)
    return [i for i in ordered if not ((len(areas) > MAX_SUBJECTS and i.area not in top) or i.area < MIN_AREA)]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"COCO: {path} is missing (expected the COCO 2014 annotations layout, "
                         f"see methods/training/README.md)") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"COCO: {path} is not valid json ({exc})") from None


def index_split(root: Path, split: str, recipe: str = "release") -> list[CocoImage]:
    """Every image of one split in the json's order: with at least one usable subject
    (``fixed``), or every image with a caption (``release``: subject-less ones are padded)."""
    release = recipe == "release"
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
        if (ann.get("iscrowd", 0) and not release) or ann.get("category_id") not in categories:
            continue
        per_image.setdefault(ann["image_id"], []).append(
            CocoInstance(float(ann.get("area", 0)), categories[ann["category_id"]], ann.get("segmentation"),
                         tuple(ann["bbox"]) if ann.get("bbox") else None))
    images = []
    for img in instances.get("images", []):
        chosen = (choose_instances_release if release else choose_instances)(per_image.get(img["id"], []))
        caption = longest.get(img["id"])
        if (chosen or release) and caption:
            images.append(CocoImage(img["id"], root / split / img["file_name"], int(img["height"]),
                                    int(img["width"]), caption, tuple(chosen)))
    return images


class CocoPairs(PairSource):
    """COCO 2014 pairs (see the module docstring for the layout and the rules)."""

    name = "coco"

    def __init__(self, root: str | Path, resolution: int = 512, splits: tuple[str, ...] | None = None,
                 limit: int | None = None, recipe: str = "release"):
        if recipe not in ("release", "fixed"):
            raise BenchError(f"COCO: recipe must be release or fixed, not {recipe!r}")
        self.recipe = recipe
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
            self.images.extend(index_split(self.root, split, recipe))
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
            if self.recipe == "release":
                crop = release_crop(image, mask, inst.bbox, self.resolution)
            else:
                crop = subject_crop(image, mask, self.resolution)
            if crop is None:           # empty mask
                continue
            subjects.append(to_tensor(crop))
            prompts.append(SUBJECT_PROMPT.format(inst.category))
            if len(subjects) == MAX_SUBJECTS:
                break
        if not subjects and self.recipe == "release":      # kept, with four black subjects
            black = to_tensor(Image.new("RGB", (self.resolution, self.resolution), (0, 0, 0)))
            subjects, prompts = [black] * MAX_SUBJECTS, [SUBJECT_PROMPT.format("")] * MAX_SUBJECTS
        if not subjects:
            return None
        return TrainingPair(to_tensor(resize_square(image, self.resolution)), entry.caption, subjects,
                            prompts, source=f"coco:{entry.image_id}")
