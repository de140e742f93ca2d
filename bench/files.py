"""Small file helpers shared by the harness: content hashes and the cache folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable


def cache_root() -> Path:
    """Where derived files go (tokenizer, masks, tiny test models): $BENCH_CACHE, else
    <system temp>/bench-cache."""
    return Path(os.environ.get("BENCH_CACHE", Path(tempfile.gettempdir()) / "bench-cache"))


def _update(h, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    _update(h, Path(path))
    return h.hexdigest()


def files_sha256(paths: Iterable[Path], names_relative_to: Path | None = None) -> str:
    """sha256 over several files, each preceded by its name (relative to a folder if given)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update((p.relative_to(names_relative_to).as_posix() if names_relative_to else p.name).encode())
        _update(h, p)
    return h.hexdigest()


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of every file below a folder (names and contents)."""
    path = Path(path)
    if path.is_dir():
        return files_sha256(sorted(p for p in path.rglob("*") if p.is_file()), names_relative_to=path)
    return files_sha256([path])
