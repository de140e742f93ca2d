"""A worked example of a metric (docs/architecture.md, "Adding a metric").

``sharpness`` writes one metric id, ``sharpness/laplacian``: the mean absolute response of a
3x3 Laplacian on the greyscale image (0..255 scale). Blurry or flat images score low. It needs
no model, so ``preset`` (``tiny`` in smoke runs) changes nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.images import load_rgb
from bench.metrics.base import Metric, ScoreItem


class Sharpness(Metric):
    family = "sharpness"
    version = "1"                                    # bump when the numbers would change

    def __init__(self, device: str = "cpu", preset: str | None = None):
        self.device = device

    @property
    def ids(self) -> tuple[str, ...]:
        return ("sharpness/laplacian",)

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        out = []
        for item in items:
            grey = np.asarray(load_rgb(item.image).convert("L"), dtype=np.float64)
            if min(grey.shape) < 3:
                out.append({"sharpness/laplacian": float("nan")})     # NaN: "could not be computed"
                continue
            lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
            out.append({"sharpness/laplacian": float(np.abs(lap).mean())})
        return out
