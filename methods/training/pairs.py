"""The training pair type, subject-crop helpers, the synthetic smoke set, and the collate.

A *pair* is one training example of the adapter (docs/protocols.md section 1, "Training"): a
target image with its prompt, and 1 to 4 subject images (white background, square) with the
reference-pass prompt of each (``a photo of a {noun}.``). Pair sources (COCO, YouTube-VIS,
synthetic) share the :class:`PairSource` contract: ``len()``, ``load(i, seed)`` returning a
:class:`TrainingPair` or ``None`` for a bad sample (missing file, empty mask, filtered mask),
never raising for bad data. Every random choice of ``load`` comes from ``random.Random`` seeded
by (seed, source name, index), so a pair is the same whatever the worker, the process or the
resume point.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

MAX_SUBJECTS = 4                     # docs/protocols.md section 1: up to 4 subject slots per sample
SUBJECT_PROMPT = "a photo of a {}."  # docs/protocols.md section 1: the reference-pass text
WHITE = (255, 255, 255)


@dataclass
class TrainingPair:
    """One training example; images are [3, R, R] float tensors in [-1, 1]."""

    target: torch.Tensor
    prompt: str
    subjects: list[torch.Tensor]
    subject_prompts: list[str]
    source: str = ""                 # "coco:123", "ytvis:abc/2", ... for logs

    def __post_init__(self):
        if not 1 <= len(self.subjects) <= MAX_SUBJECTS:
            raise ValueError(f"a pair needs 1..{MAX_SUBJECTS} subjects, got {len(self.subjects)}")
        if len(self.subject_prompts) != len(self.subjects):
            raise ValueError("one subject prompt per subject image is needed")


class PairSource:
    """Base of the pair datasets: a name, a length, and a deterministic ``load``."""

    name = "pairs"

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int, seed: int = 0) -> TrainingPair | None:
        raise NotImplementedError


def sample_rng(seed: int, source: str, index: int) -> random.Random:
    """The random stream of one sample: a function of (seed, source, index) only."""
    digest = hashlib.sha256(f"{seed}/{source}/{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


# ---- image helpers ------------------------------------------------------------------------

def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float tensor in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    return image.convert("RGB").resize((size, size), Image.BICUBIC)


def whiten_background(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The image with every pixel outside ``mask`` (bool [H, W]) set to white."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr[~mask] = 255
    return Image.fromarray(arr)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1), exclusive ends, of a bool mask; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def expand_box(box: Sequence[float], factor: float) -> tuple[float, float, float, float]:
    """The box scaled by ``factor`` about its centre."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def crop_to_white_square(image: Image.Image, box: Sequence[float], size: int) -> Image.Image:
    """Crop ``box`` (may reach outside the image: filled white), pad it to a square with white,
    centred, and resize to ``size`` (the subject crop of docs/protocols.md section 1)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    w, h = max(1, x1 - x0), max(1, y1 - y0)
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), WHITE)
    # the visible part of the box, pasted at its place inside the centred square
    vx0, vy0 = max(0, x0), max(0, y0)
    vx1, vy1 = min(image.width, x0 + w), min(image.height, y0 + h)
    if vx1 > vx0 and vy1 > vy0:
        piece = image.crop((vx0, vy0, vx1, vy1))
        canvas.paste(piece, ((side - w) // 2 + vx0 - x0, (side - h) // 2 + vy0 - y0))
    return canvas.resize((size, size), Image.BICUBIC)


def square_crop_around(image: Image.Image, box: Sequence[float], size: int) -> Image.Image:
    """A square crop centred on ``box`` with side max(w, h), shifted to stay inside the image
    and capped at the image's shorter side, resized to ``size`` (the YouTube-VIS target)."""
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0), image.width, image.height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0), image.width - side)
    top = min(max(cy - side / 2, 0), image.height - side)
    crop = image.crop((int(round(left)), int(round(top)), int(round(left + side)), int(round(top + side))))
    return crop.convert("RGB").resize((size, size), Image.BICUBIC)


def subject_crop(image: Image.Image, mask: np.ndarray, size: int, expand: float = 1.0,
                 hflip: bool = False) -> Image.Image | None:
    """White background through ``mask``, bbox (expanded) crop padded to a white square,
    resized; None when the mask is empty."""
    box = mask_bbox(mask)
    if box is None:
        return None
    crop = crop_to_white_square(whiten_background(image, mask), expand_box(box, expand), size)
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if hflip else crop


# ---- the synthetic smoke set ---------------------------------------------------------------

SYNTHETIC_COLOURS = ((220, 30, 30), (30, 180, 40), (40, 60, 220), (230, 200, 20),
                     (200, 40, 200), (20, 200, 210), (240, 130, 20), (90, 40, 10))


class SyntheticPairs(PairSource):
    """A pair set built in code for ``--preset smoke`` and the tests.

    Each pair shows one coloured disc or square: the subject on white, centred; the target on
    a grey background at a random place and size. The prompts never name the colour, so only
    the subject image tells the model which colour to draw. It checks the training pipeline;
    that the adapter learns to use the subject is shown by tests/test_training_learns.py,
    which first makes the frozen tiny UNet a denoiser (a random one is not).
    """

    name = "synthetic"

    def __init__(self, n: int, resolution: int, offset: int = 0):
        self.n, self.resolution, self.offset = n, resolution, offset

    def __len__(self) -> int:
        return self.n

    def colour_index(self, index: int) -> int:
        return (index + self.offset) % len(SYNTHETIC_COLOURS)

    def load(self, index: int, seed: int = 0) -> TrainingPair:
        from PIL import ImageDraw

        r = self.resolution
        rng = sample_rng(seed, self.name, index + self.offset)
        colour = SYNTHETIC_COLOURS[self.colour_index(index)]
        disc = rng.random() < 0.5

        def draw(img: Image.Image, box):
            d = ImageDraw.Draw(img)
            (d.ellipse if disc else d.rectangle)(box, fill=colour)
            return img

        subject = draw(Image.new("RGB", (r, r), WHITE), (r * 0.2, r * 0.2, r * 0.8, r * 0.8))
        grey = rng.randint(90, 160)
        side = r * rng.uniform(0.35, 0.7)
        x0, y0 = rng.uniform(0, r - side), rng.uniform(0, r - side)
        target = draw(Image.new("RGB", (r, r), (grey, grey, grey)), (x0, y0, x0 + side, y0 + side))
        return TrainingPair(to_tensor(target), "a picture of an object.", [to_tensor(subject)],
                            [SUBJECT_PROMPT.format("object")], source=f"synthetic:{index + self.offset}")


# ---- combining sources and batching --------------------------------------------------------

class ConcatPairs(PairSource):
    """Several sources one after the other (index i of the whole -> (source, local index))."""

    name = "concat"

    def __init__(self, sources: Sequence[PairSource]):
        self.sources = list(sources)
        self.starts = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[PairSource, int]:
        k = int(np.searchsorted(self.starts, index, side="right") - 1)
        return self.sources[k], index - int(self.starts[k])

    def load(self, index: int, seed: int = 0) -> TrainingPair | None:
        source, local = self.locate(index)
        return source.load(local, seed)


def collate_pairs(pairs: Sequence[TrainingPair | None]) -> dict | None:
    """Stack pairs into a batch with ``MAX_SUBJECTS`` subject slots.

    Returns ``target`` [B, 3, R, R], ``prompts`` [B], ``subjects`` [B, 4, 3, R, R] (empty slots
    white), ``slot_mask`` [B, 4] bool (True = a real subject; empty slots are masked out of the
    adapter attention, docs/protocols.md section 1), ``subject_prompts`` [B][4] ("" when empty),
    ``skipped`` (bad samples dropped from this batch), ``sources`` and ``empty`` (True when
    every pair of the batch was bad: then only ``skipped`` is set).
    """
    good = [p for p in pairs if p is not None]
    skipped = len(pairs) - len(good)
    if not good:
        return {"skipped": skipped, "empty": True}
    r = good[0].target.shape[-1]
    subjects = torch.ones(len(good), MAX_SUBJECTS, 3, r, r)
    slot_mask = torch.zeros(len(good), MAX_SUBJECTS, dtype=torch.bool)
    subject_prompts = [[""] * MAX_SUBJECTS for _ in good]
    for b, pair in enumerate(good):
        for k, (img, text) in enumerate(zip(pair.subjects, pair.subject_prompts)):
            subjects[b, k] = img
            slot_mask[b, k] = True
            subject_prompts[b][k] = text
    return {"target": torch.stack([p.target for p in good]), "prompts": [p.prompt for p in good],
            "subjects": subjects, "slot_mask": slot_mask, "subject_prompts": subject_prompts,
            "sources": [p.source for p in good], "skipped": skipped, "empty": False}


class IndexedPairs(torch.utils.data.Dataset):
    """A torch Dataset over chosen indices of a source; bad samples come back as None."""

    def __init__(self, source: PairSource, indices: Sequence[int], seed: int):
        self.source, self.indices, self.seed = source, list(indices), seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> TrainingPair | None:
        index = self.indices[i]
        try:
            return self.source.load(index, self.seed)
        except (OSError, ValueError, KeyError, IndexError) as exc:  # unreadable file, bad json field
            log.warning("skipping pair %d of %s: %s", index, self.source.name, exc)
            return None
