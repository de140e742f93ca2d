"""Regenerate the embedded mini DreamBench (deterministic): `python datasets/mini-dreambench/make.py`.

Same layout as the google/dreambooth repository (docs/protocols.md section 2): dataset/prompts_and_classes.txt
in the original's format and dataset/<subject>/NN.jpg, with 3 procedurally drawn subjects
(one live: dog; two objects: backpack, vase), 3 images each, 64x64, and 4 prompts per block.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
IMAGES_PER_SUBJECT = 3
SUBJECTS = {"backpack": "backpack", "dog": "dog", "vase": "vase"}
OBJECT_PROMPTS = ["a {0} {1} in the jungle", "a {0} {1} in the snow", "a {0} {1} on the beach",
                  "a red {0} {1}"]
LIVE_PROMPTS = ["a {0} {1} in the jungle", "a {0} {1} in the snow", "a {0} {1} wearing a red hat",
                "a purple {0} {1}"]


def prompts_file() -> str:
    def block(prompts):
        lines = [f"'{p}'.format(unique_token, class_token)," for p in prompts]
        lines[-1] = lines[-1].rstrip(",")        # the original's last entry has no comma
        return ["prompt_list = ["] + lines + ["]"]

    rows = ["Classes", "", "subject_name,class"] + [f"{s},{c}" for s, c in SUBJECTS.items()]
    rows += ["", "Prompts", "", "Object Prompts", ""] + block(OBJECT_PROMPTS)
    rows += ["", "Live Subject Prompts", ""] + block(LIVE_PROMPTS)
    return "\n".join(rows) + "\n"


def draw_dog(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    x, y = rng.randint(14, 22), rng.randint(24, 32)
    fur = (150 + rng.randint(-10, 10), 95, 45)
    d.ellipse([x, y, x + 30, y + 16], fill=fur)                              # body
    for leg in (x + 3, x + 10, x + 19, x + 26):
        d.rectangle([leg, y + 12, leg + 3, y + 24], fill=fur)                # legs
    d.ellipse([x + 24, y - 10, x + 38, y + 4], fill=fur)                     # head
    d.polygon([(x + 25, y - 8), (x + 28, y - 16), (x + 31, y - 8)], fill=(90, 55, 25))   # ear
    d.ellipse([x + 33, y - 6, x + 35, y - 4], fill=(0, 0, 0))                # eye
    d.line([x, y + 4, x - 7, y - 3], fill=fur, width=3)                      # tail


def draw_backpack(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    x, y = rng.randint(16, 22), rng.randint(10, 16)
    w, h = rng.randint(24, 28), rng.randint(34, 38)
    body = (200, 40 + rng.randint(0, 20), 40)
    d.arc([x + 6, y - 8, x + w - 6, y + 8], 180, 360, fill=(60, 60, 60), width=3)   # handle
    d.rounded_rectangle([x, y, x + w, y + h], radius=7, fill=body)
    d.rounded_rectangle([x + 5, y + h // 2, x + w - 5, y + h - 4], radius=4, fill=(150, 25, 25))  # pocket
    d.line([x + 5, y + h // 2 + 3, x + w - 5, y + h // 2 + 3], fill=(230, 200, 60), width=1)  # zip


def draw_vase(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    cx, top = 32 + rng.randint(-5, 5), rng.randint(8, 14)
    glaze = (40, 90 + rng.randint(0, 30), 170)
    outline = [(cx - 5, top), (cx + 5, top), (cx + 6, top + 8), (cx + 15, top + 24), (cx + 12, top + 42),
               (cx - 12, top + 42), (cx - 15, top + 24), (cx - 6, top + 8)]
    d.polygon(outline, fill=glaze)
    d.line([cx - 13, top + 24, cx + 13, top + 24], fill=(240, 240, 240), width=2)   # a white band


DRAWERS = {"backpack": draw_backpack, "dog": draw_dog, "vase": draw_vase}


def main(out: Path = Path(__file__).resolve().parent) -> None:
    dataset = out / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "prompts_and_classes.txt").write_text(prompts_file(), encoding="utf-8", newline="\n")
    for subject_index, subject in enumerate(SUBJECTS):
        folder = dataset / subject
        folder.mkdir(exist_ok=True)
        for i in range(IMAGES_PER_SUBJECT):
            rng = random.Random(1000 * subject_index + i)
            image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
            DRAWERS[subject](ImageDraw.Draw(image), rng)
            image.save(folder / f"{i:02d}.jpg", quality=90, optimize=False)


if __name__ == "__main__":
    main()
