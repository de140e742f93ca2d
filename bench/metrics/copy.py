"""The copy detector (metric ``copy``): is an output a copy of the photo that conditioned it?

Per output, 1 (copied) or 0 (not); its mean is the copy rate. The rule, on one embedding backbone
(CLIP-I's, ViT-B/32 OpenAI by default; ``--metric-param copy.embedding=dino|dinov2`` for the DINO
metrics', and ``copy.backbone=...`` in that family's spelling), with cosine distances ``d = 1 - cos``:

    d_copy  = min over the conditioning photos c of d(output, c)
    d_real  = min over pairs of distinct real photos p, q of the subject of d(p, q)
    copied  = d_copy < ratio * d_real          (ratio = 0.5 by default, ``copy.ratio``)

In words: the output is more than twice as close to a photo it was given as the two closest real
photos of the subject are to each other. Real photos of one subject are never that close (different
shots), a resized or re-encoded copy is. The rule is scale-free (a ratio of distances on one
backbone), so it holds on backbones whose cosines all sit near 1, the tiny random ones included. A
subject with fewer than two photos, or an output without conditioning photos, gets NaN (a dash).

False positives are measured on the real photos themselves (bench.metrics.real_photos): each real
photo p is scored as if it were an output, with the subject's other photos as its real set
(``d_real`` over P - {p}) and the conditioning photos other than p as what it could have copied.
The real-photo row of the leaderboard shows that rate in the ``copy`` column (docs/metrics.md).
Id: ``copy/<family>-<backbone name>`` (e.g. ``copy/clip-vit-b-32-openai``). Measured detection and
false-positive rates: docs/metrics.md, "Copying" (benchmarks/copy_detector.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from bench import BenchError
from bench.metrics.base import Metric, ScoreItem

EMBEDDINGS = ("clip", "dino", "dinov2")
DEFAULT_RATIO = 0.5


def build_embedding(embedding: str, device: str, preset: str | None, backbone: str | None):
    """The family's own metric object (its backbone, preprocessing and reference cache)."""
    if embedding == "dino":
        from bench.metrics.dino import DEFAULT_DINO, DinoMetric
        return DinoMetric(device=device, preset=preset, backbone=backbone or DEFAULT_DINO)
    if embedding == "dinov2":
        from bench.metrics.dino import DEFAULT_DINOV2, Dinov2Metric
        return Dinov2Metric(device=device, preset=preset, backbone=backbone or DEFAULT_DINOV2)
    if embedding == "clip":
        from bench.metrics.clip import DEFAULT_BACKBONE, ClipMetric
        return ClipMetric(device=device, preset=preset, backbone=backbone or DEFAULT_BACKBONE, text_metric=False)
    raise BenchError(f"--metric-param copy.embedding={embedding!r}: use one of {', '.join(EMBEDDINGS)}")


def check_ratio(ratio) -> float:
    ratio = float(ratio)
    if not 0 < ratio <= 1:
        raise BenchError(f"--metric-param copy.ratio={ratio}: use a number in (0, 1]")
    return ratio


def min_pair_distance(embeddings: torch.Tensor) -> float:
    """The smallest cosine distance between two different rows (normalised embeddings); NaN
    with fewer than two rows."""
    if len(embeddings) < 2:
        return math.nan
    distances = 1 - embeddings @ embeddings.T
    mask = ~torch.eye(len(embeddings), dtype=torch.bool)
    return float(distances[mask].min())


def is_copy(d_copy: float, d_real: float, ratio: float) -> float:
    """1.0 when ``d_copy < ratio * d_real``, else 0.0; NaN when either distance is unknown."""
    if math.isnan(d_copy) or math.isnan(d_real):
        return math.nan
    return 1.0 if d_copy < ratio * d_real else 0.0


class CopyMetric(Metric):
    """The copy detector (see the module docstring)."""

    family = "copy"
    version = "1"

    def __init__(self, device: str = "cpu", preset: str | None = None, embedding: str = "clip",
                 backbone: str | None = None, ratio: float = DEFAULT_RATIO):
        ratio = check_ratio(ratio)
        self.embedding, self.ratio = str(embedding), ratio
        self.inner = build_embedding(self.embedding, device, preset, backbone)
        if self.ratio != DEFAULT_RATIO:
            self.version = f"{type(self).version}-ratio{self.ratio:g}"
        self.metric_id = f"copy/{self.embedding}-{self.inner.backbone_name}"
        self._spread: dict[tuple, float] = {}

    @classmethod
    def precheck(cls, embedding: str = "clip", backbone: str | None = None, ratio: float = DEFAULT_RATIO, **_) -> None:
        check_ratio(ratio)                  # before a run generates anything
        if embedding not in EMBEDDINGS:
            raise BenchError(f"--metric-param copy.embedding={embedding!r}: use one of {', '.join(EMBEDDINGS)}")

    @classmethod
    def requirements(cls, preset: str | None = None, embedding: str = "clip", backbone: str | None = None,
                     **params) -> list:
        from bench.metrics.clip import ClipMetric
        from bench.metrics.dino import DinoMetric, Dinov2Metric

        family = {"dino": DinoMetric, "dinov2": Dinov2Metric, "clip": ClipMetric}.get(embedding)
        if family is None:
            return []
        return family.requirements(preset=preset, **({"backbone": backbone} if backbone else {}))

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.metric_id,)

    # -- embeddings through the family's own code --
    def embed_outputs(self, images: Sequence) -> torch.Tensor:
        inner = self.inner
        return inner.embed_generated(images) if hasattr(inner, "embed_generated") else inner.embed_images(images)

    def embed_photos(self, paths: Sequence) -> torch.Tensor:
        return self.inner.embed_references(list(paths))

    def real_spread(self, photos: Sequence[Path]) -> float:
        """``d_real`` of a set of real photos (cached per set)."""
        key = tuple(str(Path(p).resolve()) for p in photos)
        if key not in self._spread:
            self._spread[key] = min_pair_distance(self.embed_photos(photos)) if len(photos) >= 2 else math.nan
        return self._spread[key]

    def distance_to(self, output: torch.Tensor, conditioning: Sequence[Path]) -> float:
        if not conditioning:
            return math.nan
        return float(1 - (self.embed_photos(conditioning) @ output).max())

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        if not items:
            return []
        outputs = self.embed_outputs([it.image for it in items])
        return [{self.metric_id: is_copy(self.distance_to(vector, it.subject_images),
                                         self.real_spread(it.reference_images), self.ratio)}
                for vector, it in zip(outputs, items)]

    def real_photo_scores(self, photos: Sequence[Path], conditioning: Sequence[Path]) -> dict[Path, float]:
        """Each real photo scored as if it were an output (its false positives): against the
        conditioning photos other than itself, with the spread of the other photos."""
        out = {}
        resolved = [Path(p).resolve() for p in photos]
        embeddings = self.embed_photos(photos)
        for n, photo in enumerate(photos):
            others = [p for p, r in zip(photos, resolved) if r != resolved[n]]
            given = [c for c in conditioning if Path(c).resolve() != resolved[n]]
            if not given or len(others) < 2:
                continue
            out[photo] = is_copy(self.distance_to(embeddings[n], given), self.real_spread(others), self.ratio)
        return out
