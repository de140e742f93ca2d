"""Regenerate the embedded mini FastComposer set (procedural cartoon faces, CC0).

Run from anywhere: ``python datasets/mini-fastcomposer/make.py``. Deterministic. The layout is
the real one that bench/suites/fastcomposer.py reads (``data/celeba_test_single/<id>/<id>.jpg``)
with two of the 15 protocol identities: 000001 (man) and 000612 (woman). The faces are drawn
shapes, not photographs: face detectors are not expected to find them.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 64
IDENTITIES = {"000001": 11, "000612": 22}          # id -> drawing seed


def face(seed: int) -> Image.Image:
    rng = random.Random(seed)
    im = Image.new("RGB", (SIZE, SIZE), tuple(rng.randint(150, 230) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    skin = (rng.randint(170, 240), rng.randint(130, 190), rng.randint(100, 160))
    hair = tuple(rng.randint(0, 120) for _ in range(3))
    draw.ellipse((14, 6, 50, 30), fill=hair)                           # hair
    draw.ellipse((16, 10, 48, 54), fill=skin)                          # face
    for x in (24, 36):                                                 # eyes
        draw.ellipse((x, 26, x + 5, 30), fill=(30, 30, 30))
    draw.line((31, 30, 29, 39), fill=(120, 80, 60), width=1)           # nose
    draw.arc((24, 38, 40, 48), 20, 160, fill=(150, 40, 40), width=2)   # mouth
    return im


def main() -> None:
    data = HERE / "data"
    if data.exists():
        shutil.rmtree(data)
    for identity, seed in IDENTITIES.items():
        folder = data / "celeba_test_single" / identity
        folder.mkdir(parents=True)
        face(seed).save(folder / f"{identity}.jpg", quality=90)
    (HERE / "README.md").write_text(
        "# mini FastComposer set\n\nProcedurally drawn by `make.py` (deterministic), CC0: two of the 15 protocol "
        "identities (000001 man, 000612 woman) in the real layout `data/celeba_test_single/<id>/<id>.jpg`, 64x64 "
        "cartoon faces. Used by `--preset smoke` (first prompt of each group).\n", encoding="utf-8")


if __name__ == "__main__":
    main()
