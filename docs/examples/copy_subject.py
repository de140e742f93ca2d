"""A worked example of a method (docs/architecture.md, "Adding a method").

``copy-subject`` ignores the prompt and returns the subject's first image, resized and
optionally mirrored. It is a useful reference point: it shows how high CLIP-I and DINO go when
identity is copied outright, and how low CLIP-T falls when the prompt is ignored.
"""

from __future__ import annotations

from typing import Literal, Sequence

from PIL import Image, ImageOps

from bench.images import load_rgb
from bench.types import GenRequest, LoadSpec


class CopySubject:
    tasks = frozenset({"generate"})

    def __init__(self, spec: LoadSpec, name: str = "copy-subject",
                 mirror: Literal["none", "horizontal"] = "none", size: int = 512):
        self.name = name
        self.mirror = mirror
        self.size = spec.resolution or size          # --resolution (or a preset's size) wins

    def describe(self) -> dict:
        """What run.json records about the method (parameters, base model, weights)."""
        return {"params": {"mirror": self.mirror, "size": self.size},
                "model": {"model_id": "none (copies the subject image)", "random_weights": False},
                "adapter": None, "weights_status": "no weights"}

    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]:
        images = []
        for request in requests:                     # one image per request, in order
            image = load_rgb(request.subject_images[0]).resize((self.size, self.size), Image.BICUBIC)
            if self.mirror == "horizontal":
                image = ImageOps.mirror(image)
            image.info["bench"] = {"copied_from": request.subject_images[0].name}   # goes into the record
            images.append(image)
        return images
