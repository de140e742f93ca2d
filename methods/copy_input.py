"""The copy-the-input baseline (method ``copy-input``): every output is the first conditioning photo,
centre-cropped to a square and resized to the output size; the prompt, the seed and (when
editing) the source image are ignored.

It is the row every identity score should be read against (docs/metrics.md, "Copying"): with
the protocol's references (all of the subject's photos, its own input among them) it scores above
the real-photo ceiling, against the photos it did not see (``references=held-out``) like a real
photo, and the copy detector (metric ``copy``) flags it. It loads no model and needs no weights,
so a base-model preset only sets the output size (``--resolution``, default 512 px, SD 2.1-base's).
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from bench import BenchError
from bench.images import load_rgb
from bench.types import GenRequest, LoadSpec

DEFAULT_RESOLUTION = 512


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``size`` x ``size`` (bicubic)."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)


class CopyInputMethod:
    tasks = frozenset({"generate", "edit"})

    @classmethod
    def requirements(cls, spec: LoadSpec, **params) -> list:
        return []                       # no weights

    def __init__(self, spec: LoadSpec, name: str = "copy-input"):
        self.name, self.spec = name, spec
        self.resolution = int(spec.resolution or DEFAULT_RESOLUTION)

    def describe(self) -> dict:
        return {"params": {"resolution": self.resolution}, "adapter": None,
                "model": {"model_id": "none (copies its input)", "random_weights": False},
                "weights_status": "no weights"}

    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]:
        out = []
        for request in requests:
            if not request.subject_images:
                raise BenchError(f"{request.key}: method {self.name!r} needs a conditioning photo to copy")
            out.append(square_resize(load_rgb(request.subject_images[0]), self.resolution))
        return out
