"""The interface every metric family implements.

A metric is built by its registry entry as ``Factory(device=..., preset=..., **params)``
(``preset="tiny"`` builds small random models in code, for tests). It scores batches of
:class:`ScoreItem` and returns, per item, a dict ``{metric id: value}``. A metric id names
the score and its backbone, e.g. ``clip_t/vit-b-32-openai``. NaN means "could not be
computed" and is shown as a dash in reports, never as 0. A metric class may offer a classmethod
``precheck(preset=..., **params)`` that checks files it will need without loading a model;
`bench run` calls it before generating.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


@dataclass(frozen=True)
class ScoreItem:
    key: str
    image: Path                              # the generated image
    seed: int
    subject: str
    class_noun: str
    eval_text: str                           # prompt with the identifier removed
    reference_images: tuple[Path, ...]       # all real images of the subject
    subject_images: tuple[Path, ...]         # the conditioning image(s) ("paired" mode)
    source_image: Path | None = None         # editing: the source
    mask: Path | None = None                 # editing: the edit region of the source
    iteration_images: tuple[Path, ...] = ()  # every iteration's output, when the method kept them
    category: str = ""                       # the sample's category (e.g. "style" picks the judge's style instruction)


@dataclass(frozen=True)
class ImageView:
    """One preprocessing of a generated image, for the shared scoring pipeline
    (bench.metrics.pipeline): ``prepare`` runs per image where the image is decoded (a DataLoader
    worker), on the decoded 8-bit RGB image and its file; ``finish`` runs once per batch on the
    stacked tensors, already on the metric's device (float conversion and normalisation: the
    elementwise steps, bit-identical per image or per batch). Views with equal ``key`` are the same
    preprocessing and are computed once for all metrics that ask for it."""

    key: str
    prepare: Callable = None                 # (PIL RGB image, path) -> tensor
    finish: Callable = None                  # stacked tensor on the device -> model input


class Metric(ABC):
    family: str = ""
    version: str = "1"

    @property
    @abstractmethod
    def ids(self) -> tuple[str, ...]:
        """The metric ids this metric writes."""

    @abstractmethod
    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        """One dict {metric id: value} per item, in order."""

    def views(self) -> dict[str, ImageView] | None:
        """The preprocessings of the generated image this metric needs, by a name of its own
        choosing, when it can score from them (:meth:`score_views`); None (the default): the
        metric reads its files itself in :meth:`score`."""
        return None

    def score_views(self, items: Sequence[ScoreItem], pixels: dict[str, "object"]) -> list[dict[str, float]]:
        """:meth:`score` from the preprocessed generated images (``pixels``: name of
        :meth:`views` -> batch tensor on the device, in ``items`` order)."""
        raise NotImplementedError

    @classmethod
    def requirements(cls, preset: str | None = None, **params) -> list:
        """What scoring needs on disk (bench/needs.py: weights, packages), for `bench doctor`;
        checked without loading anything. The default: nothing beyond the installed packages."""
        return []
