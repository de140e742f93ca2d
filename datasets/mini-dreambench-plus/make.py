"""Regenerate the embedded mini DreamBench++ (deterministic): `python datasets/mini-dreambench-plus/make.py`.

Same layout as the released data (docs/protocols.md section 7): images/<category>/<index>.jpg and
captions/<category>/<index>.txt (the subject's name, then 9 prompts: 0-3 photorealistic, 4-6 style
transfer, 7-8 imaginative), one collection per category, each image procedurally drawn at 64x64.
The prompts are this project's own.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
HERE = Path(__file__).resolve().parent


def draw_kitten(d, rng):
    fur = (200, 140 + rng.randint(0, 20), 60)
    d.ellipse([14, 30, 46, 52], fill=fur)                                   # body
    d.ellipse([30, 14, 52, 36], fill=fur)                                   # head
    d.polygon([(32, 18), (34, 6), (40, 16)], fill=fur)                      # ears
    d.polygon([(44, 16), (50, 6), (51, 20)], fill=fur)
    d.ellipse([36, 22, 39, 25], fill=(20, 80, 20))                          # eyes
    d.ellipse([44, 22, 47, 25], fill=(20, 80, 20))
    d.line([14, 44, 4, 30], fill=fur, width=3)                              # tail


def draw_person(d, rng):
    shirt = (40, 60 + rng.randint(0, 30), 180)
    d.ellipse([24, 6, 40, 22], fill=(230, 190, 160))                        # head
    d.rectangle([22, 4, 42, 10], fill=(60, 40, 20))                         # hair
    d.rectangle([20, 24, 44, 48], fill=shirt)                               # torso
    d.rectangle([22, 48, 30, 62], fill=(50, 50, 60))                        # legs
    d.rectangle([34, 48, 42, 62], fill=(50, 50, 60))


def draw_teapot(d, rng):
    glaze = (30, 140, 120 + rng.randint(0, 30))
    d.ellipse([14, 24, 46, 54], fill=glaze)                                 # body
    d.rectangle([24, 18, 36, 26], fill=glaze)                               # lid
    d.ellipse([27, 12, 33, 18], fill=(220, 200, 60))                        # knob
    d.polygon([(46, 36), (58, 24), (60, 28), (48, 44)], fill=glaze)         # spout
    d.arc([4, 28, 20, 46], 90, 270, fill=glaze, width=4)                    # handle


def draw_style(d, rng):
    for y in range(0, SIZE, 8):                                             # a blocky pixel pattern
        for x in range(0, SIZE, 8):
            v = rng.randint(0, 3)
            d.rectangle([x, y, x + 7, y + 7], fill=[(250, 90, 90), (90, 200, 250), (250, 230, 90), (40, 40, 60)][v])


COLLECTIONS = {
    ("animal", "00"): ("kitten", draw_kitten, (220, 235, 220)),
    ("human", "00"): ("young man", draw_person, (235, 225, 210)),
    ("object", "00"): ("teapot", draw_teapot, (240, 240, 240)),
    ("style", "00"): ("pixel mosaic", draw_style, (0, 0, 0)),
}
SUBJECT_PROMPTS = [
    "a photo of a {} on a wooden table", "a photo of a {} in a snowy park", "a photo of a {} at the beach",
    "a photo of a {} next to a window", "a watercolor painting of a {}", "a pencil sketch of a {}",
    "a {} in the style of a stained glass window", "a {} floating among the clouds", "a tiny {} riding a paper boat",
]
STYLE_PROMPTS = [
    "a lighthouse on a cliff, {} style", "a bowl of fruit, {} style", "a city street at night, {} style",
    "a mountain lake, {} style", "a portrait of an old sailor, {} style", "a sailing ship, {} style",
    "a bicycle leaning on a wall, {} style", "a castle built on a whale, {} style", "a clock melting on a tree, {} style",
]


# Judge instruction files with the release's file names but this project's own short texts: they
# let the smoke run and the tests build the judge's conversations without the official texts.
JUDGE_PROMPTS = {
    "user_prompt_subject_full.txt": "Rate how well the subject of the second image keeps the identity of the subject "
                                    "in the first image (shape, colour, texture, face). Reply with a short reason and "
                                    "end with 'Score: N', N an integer from 0 (unrelated) to 4 (the same subject).",
    "gpt_prompt_subject_full.txt": "Understood. I will compare the two subjects and end with 'Score: N' (0-4).",
    "user_prompt_style_full.txt": "Rate how well the second image keeps the style of the first image (palette, "
                                  "strokes, rendering). Reply with a short reason and end with 'Score: N', N an "
                                  "integer from 0 (unrelated) to 4 (the same style).",
    "gpt_prompt_style_full.txt": "Understood. I will compare the two styles and end with 'Score: N' (0-4).",
    "user_prompt_text_full.txt": "Rate how well the image shows what the text describes (objects, setting, style, "
                                 "action). Reply with a short reason and end with 'Score: N', N an integer from 0 "
                                 "(unrelated) to 4 (everything shown).",
    "gpt_prompt_text_full.txt": "Understood. I will compare the image with the text and end with 'Score: N' (0-4).",
}


def main(out: Path = HERE) -> None:
    out = Path(out)
    (out / "judge-prompts").mkdir(parents=True, exist_ok=True)
    for name, text in JUDGE_PROMPTS.items():
        (out / "judge-prompts" / name).write_text(text + "\n", encoding="utf-8")
    for (category, index), (name, draw, background) in COLLECTIONS.items():
        rng = random.Random(f"{category}/{index}")
        image = Image.new("RGB", (SIZE, SIZE), background)
        draw(ImageDraw.Draw(image), rng)
        for folder in ("images", "captions"):
            (out / folder / category).mkdir(parents=True, exist_ok=True)
        image.save(out / "images" / category / f"{index}.jpg", quality=95)
        prompts = STYLE_PROMPTS if category == "style" else SUBJECT_PROMPTS
        lines = [name] + [p.format(name) for p in prompts]
        (out / "captions" / category / f"{index}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
