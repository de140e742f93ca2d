"""Regenerate the embedded mini OmniContext (deterministic): `python datasets/mini-omnicontext/make.py`.

The schema of the released Hugging Face dataset OmniGen2/OmniContext (docs/suites.md, "OmniContext"):
one parquet shard, one row per item with ``key``, ``task_type``, ``instruction``,
``instruction_language`` and ``input_images`` (a list of image structs ``{bytes, path}`` as the
``datasets`` library encodes its Image feature). One item per task type, 1-3 input images each,
procedurally drawn (some not square); the instructions are this project's own. Writes
``data/test-00000-of-00001.parquet``.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent

#: (task type, instruction, [(picture kind, width, height)])
ITEMS = [
    ("single_character", "The person from image 1 waves from a small red boat on a lake.", [("person", 64, 96)]),
    ("single_object", "The teapot from image 1 stands on a wooden shelf next to green plants.", [("teapot", 96, 64)]),
    ("multi_character", "The person from image 1 and the person from image 2 shake hands in a park.",
     [("person", 64, 96), ("person2", 64, 64)]),
    ("multi_object", "The teapot from image 1 and the cup from image 2 sit together on a picnic blanket.",
     [("teapot", 96, 64), ("cup", 64, 64)]),
    ("multi_character_object", "The person from image 1 holds the cup from image 2 in a kitchen.",
     [("person", 64, 96), ("cup", 64, 64)]),
    ("scene_character", "The person from image 1 stands in the room shown in image 2.",
     [("person2", 64, 64), ("room", 128, 80)]),
    ("scene_object", "The teapot from image 1 is placed on the floor of the room in image 2.",
     [("teapot", 96, 64), ("room", 128, 80)]),
    ("scene_character_object", "The person from image 1 carries the cup from image 2 through the room in image 3.",
     [("person", 64, 96), ("cup", 64, 64), ("room", 128, 80)]),
]


def draw(kind: str, width: int, height: int, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (width, height), (235, 235, 225))
    d = ImageDraw.Draw(image)
    cx, cy = width // 2, height // 2
    if kind in ("person", "person2"):
        shirt = (40, 60 + rng.randint(0, 30), 180) if kind == "person" else (190, 50, 40 + rng.randint(0, 30))
        d.ellipse([cx - 8, 4, cx + 8, 20], fill=(230, 190, 160))
        d.rectangle([cx - 10, 2, cx + 10, 8], fill=(60, 40, 20) if kind == "person" else (200, 170, 60))
        d.rectangle([cx - 12, 22, cx + 12, height - 18], fill=shirt)
        d.rectangle([cx - 10, height - 18, cx - 2, height - 2], fill=(50, 50, 60))
        d.rectangle([cx + 2, height - 18, cx + 10, height - 2], fill=(50, 50, 60))
    elif kind == "teapot":
        d.ellipse([cx - 16, cy - 10, cx + 16, cy + 14], fill=(40, 120 + rng.randint(0, 30), 140))
        d.polygon([(cx + 14, cy), (cx + 28, cy - 10), (cx + 16, cy + 6)], fill=(40, 120, 140))
        d.arc([cx - 28, cy - 8, cx - 10, cy + 8], 90, 270, fill=(40, 120, 140), width=3)
        d.rectangle([cx - 4, cy - 16, cx + 4, cy - 10], fill=(30, 90, 100))
    elif kind == "cup":
        d.rectangle([cx - 12, cy - 12, cx + 12, cy + 16], fill=(240, 200 + rng.randint(0, 30), 40))
        d.arc([cx + 6, cy - 6, cx + 22, cy + 10], 270, 90, fill=(200, 160, 30), width=3)
    else:                                              # a room: floor, wall, window
        d.rectangle([0, height * 2 // 3, width, height], fill=(150, 100, 60))
        d.rectangle([0, 0, width, height * 2 // 3], fill=(200, 210, 230 - rng.randint(0, 20)))
        d.rectangle([width // 6, 6, width // 2, height // 2], fill=(120, 180, 240))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(31)
    rows = {"task_type": [], "instruction": [], "input_images": [], "instruction_language": [], "key": []}
    for index, (task_type, instruction, pictures) in enumerate(ITEMS):
        rows["task_type"].append(task_type)
        rows["instruction"].append(instruction)
        rows["instruction_language"].append("en")
        rows["key"].append(f"{index:04d}")
        rows["input_images"].append([{"bytes": png_bytes(draw(kind, w, h, rng)), "path": f"{kind}_{index}_{k}.png"}
                                     for k, (kind, w, h) in enumerate(pictures)])
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("task_type", pa.string()), ("instruction", pa.string()),
                        ("input_images", pa.list_(image)), ("instruction_language", pa.string()),
                        ("key", pa.string())])
    out = HERE / "data" / "test-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=schema), out)
    print(f"wrote {out} ({len(ITEMS)} items)")


if __name__ == "__main__":
    main()
