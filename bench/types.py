"""The small value types that flow between suites, the runner, methods and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from PIL import Image


@dataclass(frozen=True)
class Sample:
    """One (subject, prompt) cell of a suite, before seeds and image indices are expanded."""

    suite: str
    subject: str
    class_noun: str
    prompt_index: int
    prompt: str                              # the text the method sees
    eval_text: str                           # the text CLIP-T scores against (no identifier)
    subject_images: tuple[Path, ...]         # what conditions the method
    reference_images: tuple[Path, ...]       # what CLIP-I / DINO compare with
    category: str = ""                       # e.g. "live" / "object" for DreamBench
    source_image: Path | None = None         # editing suites
    mask: Path | None = None                 # editing suites (white = region to edit)
    extra: tuple[tuple[str, str], ...] = ()  # suite-specific string fields (sorted pairs)

    @property
    def cell(self) -> str:
        return f"{self.suite}/{self.subject}/{self.prompt_index:03d}"


@dataclass(frozen=True)
class GenRequest:
    key: str                                 # suite/subject/prompt index/seed/image index
    prompt: str
    class_noun: str
    subject_images: tuple[Path, ...]
    seed: int                                # this image's generator seed (request_seed)
    source_image: Path | None = None
    mask: Path | None = None
    run_seed: int = 0                        # the protocol seed (0-5) this image belongs to;
                                             # randomness shared by all images of a seed and
                                             # subject (e.g. EZIGen's reference noise) uses it

    @property
    def task(self) -> str:
        return "generate" if self.source_image is None else "edit"


def request_key(sample: Sample, seed: int, image_index: int) -> str:
    return f"{sample.cell}/s{seed}/i{image_index}"


def request_seed(seed: int, image_index: int) -> int:
    """The generator seed of one image: distinct per image index, stable across runs."""
    return seed * 1_000_003 + image_index


@runtime_checkable
class Method(Protocol):
    """What every method adapter offers the runner.

    ``generate`` returns one image per request, in order. A method may attach a dict of
    per-image facts (loops run, UNet calls, flags) as ``image.info["bench"]``; the store
    copies it into that image's record.
    """

    name: str
    tasks: frozenset[str]

    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]: ...

    def describe(self) -> dict:
        """Provenance for run.json: parameters, base model, weight status."""
        ...


@dataclass(frozen=True)
class LoadSpec:
    """How a method should load its base model; filled from the CLI."""

    weights: str = "stabilityai/stable-diffusion-2-1-base"
    preset: str | None = None                # "tiny" | "sd21-random" | None (real weights)
    device: str = "cpu"
    dtype: str = "fp32"
    adapter: str | None = None               # checkpoint dir/file, or "init"
    resolution: int | None = None            # None: the model's native size
    num_inference_steps: int | None = None   # None: the method's published default
    params: tuple[tuple[str, object], ...] = field(default=())  # --param overrides

    @property
    def random_weights(self) -> bool:
        return self.preset is not None
