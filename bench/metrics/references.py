"""Which real photos an identity score compares an output with (``--metric-param
clip.references=...``, also ``dino.``, ``dinov2.``, ``dreamsim.``; docs/metrics.md, "Copying"):

- ``all`` (the default, the protocol's, docs/protocols.md section 2): every real photo of the subject;
- ``held-out``: the photos that did not condition the method (a copy of the input then scores like
  a real photo, not 1.0);
- ``conditioning``: only the photos that did (what ``mode=paired`` has always meant).

Each choice has its own metric-id prefix (``clip_i``, ``clip_i_heldout``, ``clip_i_paired``), so the
default's ids, versions and cached numbers are untouched. A subject with no photo held out is
refused in one line before any work (:func:`check_references`, called by `bench run` and `bench score`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from bench import BenchError

REFERENCES = ("all", "held-out", "conditioning")
#: the metric-id prefix's suffix of each reference choice ("clip_i", "clip_i_heldout", "clip_i_paired")
REFERENCE_ID_SUFFIX = {"all": "", "held-out": "_heldout", "conditioning": "_paired"}


def reference_choice(mode: str, references: str, metric: str) -> str:
    """The reference choice (one of :data:`REFERENCES`) of ``mode`` and ``references`` together:
    mode=paired is references=conditioning; a contradicting pair is refused in one line."""
    if references not in REFERENCES:
        raise BenchError(f"--metric-param {metric}.references={references!r}: use one of {', '.join(REFERENCES)}")
    if mode == "paired":
        if references == "held-out":
            raise BenchError(f"--metric-param {metric}.mode=paired means references=conditioning; "
                             f"with {metric}.references=held-out drop {metric}.mode")
        return "conditioning"
    return references


def held_out_images(item) -> tuple[Path, ...]:
    """The subject's real images that did not condition the method (``item``: a ScoreItem or a
    Sample), compared as resolved files."""
    return _held_out(tuple(item.reference_images), tuple(item.subject_images))


@functools.lru_cache(maxsize=4096)
def _held_out(references: tuple, conditioning: tuple) -> tuple[Path, ...]:
    used = {Path(p).resolve() for p in conditioning}
    return tuple(p for p in references if Path(p).resolve() not in used)


def reference_set(item, mode: str) -> tuple[Path, ...]:
    """The real images an output is compared with (docs/protocols.md section 2, docs/metrics.md):
    every real image of the subject ("all-pairs" or "all"), only the conditioning image(s)
    ("paired" or "conditioning"), or those that did not condition the method ("held-out")."""
    if mode == "held-out":
        refs = held_out_images(item)
        if not refs:
            raise BenchError(held_out_refusal(item.subject, "the metric"))
        return refs
    refs = item.reference_images if mode in ("all-pairs", "all") else item.subject_images
    if not refs:
        raise BenchError(f"{item.key}: no {'reference' if mode in ('all-pairs', 'all') else 'conditioning'} "
                         "images to compare with")
    return refs


def held_out_refusal(subject: str, metric: str) -> str:
    return (f"--metric-param {metric}.references=held-out: every photo of subject {subject!r} conditioned the "
            "method (e.g. the suite option conditioning=all), so none is left to score against; use "
            "references=all or references=conditioning, or conditioning=first")


def check_references(samples, metric: str, mode: str = "all-pairs", references: str = "all", **_) -> None:
    """Refuse references=held-out, before any work, when a subject of ``samples`` (Samples or
    ScoreItems) has no photo that did not condition the method (one line)."""
    if reference_choice(mode, references, metric) != "held-out":
        return
    for sample in samples:
        if not held_out_images(sample):
            raise BenchError(held_out_refusal(sample.subject, metric))
