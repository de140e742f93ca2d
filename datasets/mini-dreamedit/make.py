"""Regenerate the embedded mini DreamEditBench (procedural drawings, CC0).

Run from anywhere: ``python datasets/mini-dreamedit/make.py``. The output is deterministic (a
fixed seed per file) and follows the real DreamEditBench layout that bench/suites/dreamedit.py
reads:

    data/replacement_source/<class folder>/found0.jpg, found1.jpg   a scene with the class object
    data/addition_source/<class folder>/found0.jpg, found1.jpg      an empty scene
    data/addition_source/<class folder>/bbox.json                   where to add it, 512x512 coords

The class folders are those of the subjects in datasets/mini-dreambench (a subject's folder is
its own name, or dog for dog2..dog8, cat for cat2, backpack for backpack_dog).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 64
SOURCES = 2
FOLDERS = ("dog", "backpack", "vase")
OBJECT_COLOURS = {"dog": (150, 100, 60), "backpack": (200, 40, 40), "vase": (60, 90, 200)}


def scene(rng: random.Random) -> Image.Image:
    """Sky, ground and a few random blobs: a simple background."""
    sky = tuple(rng.randint(120, 200) for _ in range(3))
    ground = tuple(rng.randint(40, 120) for _ in range(3))
    im = Image.new("RGB", (SIZE, SIZE), sky)
    draw = ImageDraw.Draw(im)
    horizon = rng.randint(SIZE // 3, SIZE // 2)
    draw.rectangle((0, horizon, SIZE, SIZE), fill=ground)
    for _ in range(3):
        x, y, r = rng.randint(0, SIZE), rng.randint(0, horizon), rng.randint(3, 8)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return im


def draw_object(im: Image.Image, folder: str, rng: random.Random) -> None:
    draw = ImageDraw.Draw(im)
    colour = OBJECT_COLOURS[folder]
    x0, y0 = rng.randint(12, 24), rng.randint(24, 32)
    if folder == "dog":
        draw.ellipse((x0, y0, x0 + 26, y0 + 16), fill=colour)                 # body
        draw.ellipse((x0 + 20, y0 - 8, x0 + 32, y0 + 4), fill=colour)          # head
    elif folder == "backpack":
        draw.rounded_rectangle((x0, y0, x0 + 20, y0 + 26), radius=5, fill=colour)
    else:
        draw.polygon([(x0 + 6, y0), (x0 + 14, y0), (x0 + 20, y0 + 24), (x0, y0 + 24)], fill=colour)


def main() -> None:
    data = HERE / "data"
    if data.exists():
        shutil.rmtree(data)
    for index, folder in enumerate(FOLDERS):
        replacement = data / "replacement_source" / folder
        addition = data / "addition_source" / folder
        replacement.mkdir(parents=True)
        addition.mkdir(parents=True)
        boxes = {}
        for k in range(SOURCES):
            rng = random.Random(1000 * index + k)
            im = scene(rng)
            draw_object(im, folder, rng)
            im.save(replacement / f"found{k}.jpg", quality=90)
            scene(random.Random(5000 + 1000 * index + k)).save(addition / f"found{k}.jpg", quality=90)
            x0, y0 = 64 + 64 * k, 192
            boxes[f"found{k}.jpg"] = [x0, y0, x0 + 256, y0 + 256]     # 512x512 coordinates
        (addition / "bbox.json").write_text(json.dumps(boxes, indent=1) + "\n", encoding="utf-8")
    (HERE / "README.md").write_text(
        "# mini DreamEditBench\n\nProcedurally drawn by `make.py` (deterministic), CC0. The same layout as "
        "DreamEditBench (`data/replacement_source`, `data/addition_source` with `bbox.json`), 2 sources per class "
        "folder, 64x64. Subjects and references come from `datasets/mini-dreambench`. Used by `--preset smoke`.\n",
        encoding="utf-8")


if __name__ == "__main__":
    main()
