"""Subject background removal before encoding (docs/protocols.md section 1, "Reference UNet").

The paper (section 3.1) encodes subjects with their background removed. DreamBench's subject
photos have real backgrounds, so with ``subject_background="remove"`` (the default) each subject
image is segmented with the project's Grounded-SAM annotator (GroundingDINO box for the class
noun, then SAM), the pixels outside the mask are set to white, and that composite is what the
reference UNet (or a projector's image encoder) sees. ``"keep"`` passes images as they are.

Composites are cached on disk by (image sha256, class noun, annotator model ids); the annotator
caches its masks the same way. A subject where nothing is detected is used as it is, and its
record says so ("no-detection, used as is").
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from bench.files import cache_root, file_sha256
from bench.images import load_rgb
from bench.types import GenRequest

SubjectBackground = Literal["remove", "keep"]
WHITE = 255


class BackgroundRemover:
    """Maps requests to requests whose subject images have a white background."""

    def __init__(self, mode: str = "remove", device: str = "cpu", tiny: bool = False, annotator=None,
                 cache_dir: Path | None = None):
        if mode not in ("remove", "keep"):
            raise ValueError(f"subject_background must be 'remove' or 'keep', not {mode!r}")
        self.mode = mode
        self._annotator = annotator
        self._device, self._tiny = str(device), tiny
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "subject-white"
        self._done: dict[tuple[str, str], tuple[Path, str]] = {}

    @property
    def annotator(self):
        if self._annotator is None:
            from bench.metrics.grounded_sam import GroundedSam
            self._annotator = GroundedSam(device=self._device, preset="tiny" if self._tiny else None)
        return self._annotator

    @property
    def model_ids(self) -> str | None:
        return None if self.mode == "keep" else self.annotator.model_ids

    def _composite(self, path: Path, noun: str, mask_path: Path) -> Path:
        from bench.metrics.grounded_sam import read_mask
        ident = f"{file_sha256(path)}|{noun.strip().lower()}|{self.annotator.model_ids}"
        out = self.cache_dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.png"
        if not out.exists():
            image = load_rgb(path)
            mask = read_mask(mask_path, image.size)
            arr = np.asarray(image).copy()
            arr[~mask] = WHITE
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            Image.fromarray(arr).save(tmp, format="PNG")
            os.replace(tmp, out)
        return out

    def _prepare(self, pairs: list[tuple[Path, str]]) -> None:
        todo = [p for p in dict.fromkeys(pairs) if (str(p[0]), p[1]) not in self._done]
        if not todo:
            return
        results = self.annotator.annotate([p for p, _ in todo], [n for _, n in todo])
        for (path, noun), result in zip(todo, results):
            if result.found:
                self._done[(str(path), noun)] = (self._composite(Path(path), noun, result.mask_path), "removed")
            else:
                self._done[(str(path), noun)] = (Path(path), "no-detection, used as is")

    def apply(self, requests: Sequence[GenRequest]) -> tuple[list[GenRequest], list[list[dict]]]:
        """Requests with whitened subject images, and per request one record per subject image."""
        if self.mode == "keep":
            return list(requests), [[{"image": Path(p).name, "background": "kept"} for p in r.subject_images]
                                    for r in requests]
        self._prepare([(Path(p), r.class_noun) for r in requests for p in r.subject_images])
        out, facts = [], []
        for r in requests:
            done = [self._done[(str(Path(p)), r.class_noun)] for p in r.subject_images]
            out.append(dataclasses.replace(r, subject_images=tuple(p for p, _ in done)))
            facts.append([{"image": Path(p).name, "background": status}
                          for p, (_, status) in zip(r.subject_images, done)])
        return out, facts
