"""Thumbnails for the HTML gallery: made once, kept, reused by every later report.

A thumbnail is the image (read with bench.images.load_rgb: upright, alpha on white) scaled to fit
``THUMB_SIZE`` px, saved as JPEG. Its name is the image's recorded sha256, so it is valid for as long
as the folder exists and never needs checking against the image: a changed image has another
sha256 and gets a new thumbnail. They live in the report folder (``<out>/html/thumbs/``): a report
writes nothing outside ``--out``. Missing ones are made in parallel worker processes (decoding
a 512 px PNG is most of the cost); the folder is listed once, so a report whose thumbnails exist
makes no per-image file check at all.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

THUMB_SIZE = 256
JPEG_QUALITY = 85
_CHUNK = 64


def thumb_name(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256}.jpg"


def _make(jobs: list[tuple[str, str]]) -> list[str]:
    """Write the thumbnails of (image path, target path) pairs; the images that could not be read."""
    import io

    from PIL import Image

    from bench import BenchError
    from bench.files import write_atomic
    from bench.images import load_rgb

    failed = []
    for source, target in jobs:
        try:
            image = load_rgb(source)
        except BenchError:
            failed.append(source)
            continue
        image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(target), buffer.getvalue(), fsync=False)
    return failed


def existing(folder: Path) -> set[str]:
    """Names (``ab/<sha>.jpg``) of the thumbnails already in ``folder``."""
    out = set()
    if folder.is_dir():
        for sub in os.scandir(folder):
            if sub.is_dir():
                out.update(f"{sub.name}/{entry.name}" for entry in os.scandir(sub.path) if entry.name.endswith(".jpg"))
    return out


def ensure_thumbnails(images: dict[str, Path], folder: Path, workers: int | None = None) -> dict[str, str]:
    """Thumbnails for ``{sha256: image path}`` in ``folder``; returns ``{sha256: name relative to
    folder}`` for every image that has one (an unreadable image has none)."""
    folder = Path(folder)
    have = existing(folder)
    todo = [(str(path), str(folder / thumb_name(sha))) for sha, path in images.items() if thumb_name(sha) not in have]
    failed: set[str] = set()
    if todo:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        workers = max(1, min(cores, 16)) if workers is None else workers
        chunks = [todo[i:i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        if workers > 1 and len(chunks) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for result in pool.map(_make, chunks):
                    failed.update(result)
        else:
            for chunk in chunks:
                failed.update(_make(chunk))
    return {sha: thumb_name(sha) for sha, path in images.items() if str(path) not in failed}
