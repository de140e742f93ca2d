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
from typing import Sequence


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

    @classmethod
    def requirements(cls, preset: str | None = None, **params) -> list:
        """What scoring needs on disk (bench/needs.py: weights, packages), for `bench doctor`;
        checked without loading anything. The default: nothing beyond the installed packages."""
        return []
