"""The real-photo ceiling: each identity metric computed between a subject's own photos, written by
`bench score` beside the run's scores (``<run>/real_photos.parquet``) for the report's "real photos"
row (bench.report.ceiling, docs/metrics.md).

Every real photo of a subject is scored as if it were an output, by the same metric object that
scored the run (its backbone, preprocessing, reference cache and reference choice), against the
metric's reference set without the photo itself:

- ``references=all``: the subject's other photos (DreamBooth's "Real Images" row: every pair of
  real photos of a subject);
- ``references=held-out``: the photos that did not condition the method, less the photo itself;
- ``references=conditioning`` (mode=paired): the conditioning photo(s), for the photos that are
  not one of them.

Cosines (CLIP-I, DINO, DINOv2) and DreamSim distances are averaged over those references exactly
as an output's are; the copy detector (bench.metrics.copy) gives each photo's copy flag, so the
row's ``copy`` value is the detector's false-positive rate. Rows have the long format of
scores.parquet with ``key = <suite>/<subject>/photo-<file name>/s0/i0``, seed 0 and
``prompt_index`` = the photo's position, so the report aggregates and bootstraps them over subjects
with the method rows' code. Only subjects with two or more photos have rows; rows are reused while
the subject's photo names, its conditioning names and the metric's id and version are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch

from bench.files import temporary_name

#: the columns of scores.parquet (bench.scoring.SCORE_COLUMNS)
COLUMNS = ["key", "seed", "subject", "category", "prompt_index", "metric", "metric_version", "value", "sha256",
           "context"]
REAL_PHOTOS_FILE = "real_photos.parquet"
MIN_PHOTOS = 2


def identity_scores(metric) -> list[tuple[str, str, bool]]:
    """(metric id, reference choice, is a distance) of the identity scores ``metric`` writes."""
    family = getattr(metric, "family", "")
    choice = getattr(metric, "reference_choice", None)
    if choice is None:
        return []
    if family == "clip":
        return [(metric.image_id, choice, False)] if metric.image_metric else []
    if family in ("dino", "dinov2"):
        return [(metric.metric_id, choice, False)]
    if family == "dreamsim":
        return [(metric.metric_id, choice, True)]
    return []


def writes_rows(metric) -> bool:
    return bool(identity_scores(metric)) or hasattr(metric, "real_photo_scores")


def _embed(metric, paths: Sequence[Path]) -> torch.Tensor:
    """Normalised embeddings of real photos through the metric's own reference path."""
    if hasattr(metric, "embed_references"):
        return metric.embed_references(list(paths))
    from bench.metrics.clip import image_key             # DreamSim: its per-file reference cache
    vectors = metric.references.get([image_key(p) for p in paths], metric.embed)
    return torch.nn.functional.normalize(vectors, dim=-1)


def _resolved(paths) -> list[Path]:
    return [Path(p).resolve() for p in paths]


def reference_photos(choice: str, photos: Sequence[Path], conditioning: Sequence[Path]) -> list[Path]:
    used = set(_resolved(conditioning))
    if choice == "conditioning":
        return list(conditioning)
    if choice == "held-out":
        return [p for p in photos if Path(p).resolve() not in used]
    return list(photos)


def subject_scores(metric, photos: Sequence[Path], conditioning: Sequence[Path]) -> dict[Path, dict[str, float]]:
    """{photo: {metric id: value}} of one subject's photos scored as outputs (see the module docstring)."""
    out: dict[Path, dict[str, float]] = {}
    scores = identity_scores(metric)
    if scores:
        everything = list(dict.fromkeys(list(photos) + list(conditioning)))
        index = {p: n for n, p in enumerate(_resolved(everything))}
        vectors = _embed(metric, everything)
        cosines = vectors @ vectors.T
        for photo in photos:
            row = index[Path(photo).resolve()]
            for metric_id, choice, distance in scores:
                refs = [index[r] for r in _resolved(reference_photos(choice, photos, conditioning)) if index[r] != row]
                if not refs:
                    continue
                values = cosines[row, refs]
                out.setdefault(photo, {})[metric_id] = float((1 - values).mean() if distance else values.mean())
    if hasattr(metric, "real_photo_scores"):
        for photo, value in metric.real_photo_scores(photos, conditioning).items():
            for metric_id in metric.ids:
                out.setdefault(photo, {})[metric_id] = value
    return out


def subject_context(photos, conditioning) -> str:
    fields = [[Path(p).name for p in photos], [Path(p).name for p in conditioning]]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]


def write_real_photo_scores(store, items, metrics, suite: str):
    """Score the real photos of every subject of ``items`` (ScoreItems) with every identity metric
    of ``metrics`` and write ``<run>/real_photos.parquet`` (rows kept from the file where nothing
    they depend on changed). Returns the frame, or None when no subject has two or more photos or
    no metric measures identity."""
    import pandas as pd

    metrics = [m for m in metrics if writes_rows(m)]
    subjects = {}
    for item in items:
        if item.subject not in subjects and len(item.reference_images) >= MIN_PHOTOS:
            subjects[item.subject] = item
    if not metrics or not subjects:
        return None
    path = Path(store.root) / REAL_PHOTOS_FILE
    old = _read(path)
    cached = {(k, m, str(v), c): value for k, m, v, c, value in
              zip(old["key"], old["metric"], old["metric_version"], old["context"], old["value"])}
    rows = []
    for subject, item in subjects.items():
        photos, conditioning = list(item.reference_images), list(item.subject_images)
        context = subject_context(photos, conditioning)
        keys = {p: f"{suite}/{subject}/photo-{Path(p).name}/s0/i0" for p in photos}
        for metric in metrics:
            version = str(metric.version)
            ids = [i for i, _, _ in identity_scores(metric)] or list(metric.ids)
            have = {(keys[p], i): cached[(keys[p], i, version, context)] for p in photos for i in ids
                    if (keys[p], i, version, context) in cached}
            if not have:
                computed = subject_scores(metric, photos, conditioning)
                have = {(keys[p], i): v for p, values in computed.items() for i, v in values.items()}
            for n, photo in enumerate(photos):
                for metric_id in ids:
                    value = have.get((keys[photo], metric_id))
                    if value is not None:
                        rows.append((keys[photo], 0, subject, item.category, n, metric_id, version, float(value), "",
                                     context))
    df = pd.DataFrame(rows, columns=COLUMNS)
    kept = old[~old["metric"].isin(set(df["metric"]))] if len(old) else old
    if len(kept):
        df = pd.concat([df, kept[COLUMNS]], ignore_index=True)
    df = df.astype({"seed": "int64", "prompt_index": "int64", "value": "float64", "metric_version": "string"})
    df = df.sort_values(["metric", "key"], ignore_index=True)
    tmp = temporary_name(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return df


def _read(path: Path):
    """The file's rows, or an empty frame when it is missing or unreadable (then recomputed)."""
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.exists() else None
    except Exception:  # noqa: BLE001 (a torn or foreign file: recompute)
        df = None
    if df is None or any(c not in df.columns for c in COLUMNS):
        return pd.DataFrame(columns=COLUMNS)
    return df


def read_real_photo_scores(run_dir) -> "object | None":
    """A run's real-photo rows (None when it has none)."""
    df = _read(Path(run_dir) / REAL_PHOTOS_FILE)
    return df if len(df) else None
