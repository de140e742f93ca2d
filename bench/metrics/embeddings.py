"""The embedding caches of the image-similarity metrics (CLIP-I, DINO, DreamSim): per file, each
real image embedded once per metric; per reference set (the files ``reference_set`` chose for an
item), the block of their embeddings stacked once; the decoded real images shared between the
metrics of a command. Per scored image, what is left is a dictionary lookup.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from bench import BenchError
from bench.images import load_rgb


def image_key(image) -> str | None:
    """A cache key for an image given as a file path (None for in-memory images)."""
    if isinstance(image, (str, Path)):
        return str(Path(image).resolve())
    return None


class EmbeddingCache:
    """Normalised embeddings of files or texts, computed once per backbone (a metric instance).

    ``get(keys, compute)`` returns a [len(keys), dim] tensor, computing only the missing keys
    (unique ones, in chunks of ``chunk``) with ``compute(list_of_keys) -> tensor``.
    """

    def __init__(self, chunk: int = 32):
        self.chunk = chunk
        self._store: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    def get(self, keys: Sequence[str], compute: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        missing = list(dict.fromkeys(k for k in keys if k not in self._store))
        for start in range(0, len(missing), self.chunk):
            part = missing[start:start + self.chunk]
            for key, vector in zip(part, compute(part)):
                self._store[key] = vector
        return torch.stack([self._store[k] for k in keys]) if keys else torch.empty(0)


#: real images decoded for one metric, kept for the next (CLIP and DINO embed the same files one
#: after the other): the most recent ones, up to this many pixels in all
MAX_DECODED_REFERENCE_PIXELS = 16_000_000
_DECODED: "OrderedDict[tuple, Image.Image]" = OrderedDict()
_DECODED_PIXELS = [0]


def reference_image(path: str) -> Image.Image:
    """A reference file decoded (bench.images.load_rgb), shared by the metrics of a command while
    the file keeps its size and mtime; treat it as read-only."""
    try:
        st = os.stat(path)
    except OSError:
        return load_rgb(path)            # its one-line error (missing file, folder, ...)
    stamp = (path, st.st_size, st.st_mtime_ns)
    image = _DECODED.get(stamp)
    if image is not None:
        _DECODED.move_to_end(stamp)
        return image
    image = load_rgb(path)
    _DECODED[stamp] = image
    _DECODED_PIXELS[0] += image.width * image.height
    while _DECODED_PIXELS[0] > MAX_DECODED_REFERENCE_PIXELS and len(_DECODED) > 1:
        _, old = _DECODED.popitem(last=False)
        _DECODED_PIXELS[0] -= old.width * old.height
    return image


class ReferenceBlocks:
    """The embeddings of each reference set (the tuple of files ``bench.metrics.clip.reference_set`` chose for an
    item: a subject's real images, its conditioning images, or another selection), stacked once per
    command: per scored image only a dictionary lookup by that tuple, where keying the files
    (:func:`image_key` resolves each path) and gathering their cached rows used to be repeated for
    every image of a subject. Each file is still embedded once (``files``, an
    :class:`EmbeddingCache` by resolved path), whichever sets it belongs to; a block is exactly the
    tensor ``files.get`` returns for the set (then ``finish``, e.g. a normalisation, applied once),
    so scores do not change."""

    #: blocks kept at most (items come sorted by key, so a subject's images are scored together)
    MAX_BLOCKS = 4096

    def __init__(self, files: EmbeddingCache | None = None, finish: Callable | None = None):
        self.files = files if files is not None else EmbeddingCache()
        self.finish = finish
        self._blocks: dict[tuple, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def get(self, paths: Sequence, compute: Callable[[list[Image.Image]], torch.Tensor]) -> torch.Tensor:
        """[len(paths), dim]: the embeddings of the files ``paths``, in order; ``compute(images)``
        embeds the files not embedded yet, decoded (:func:`reference_image`), in chunks as
        :meth:`EmbeddingCache.get` makes them. An in-memory image is refused (its embedding has no key)."""
        key = tuple(paths)
        try:
            block = self._blocks.get(key)
        except TypeError:                 # an unhashable in-memory image among the paths
            block = None
        if block is None:
            keys = [image_key(p) or _refuse_in_memory_reference() for p in key]
            block = self.files.get(keys, lambda part: compute([reference_image(k) for k in part]))
            if self.finish is not None:
                block = self.finish(block)
            if len(self._blocks) >= self.MAX_BLOCKS:
                self._blocks.clear()
            self._blocks[key] = block
        return block


def _refuse_in_memory_reference() -> str:
    raise BenchError("reference images must be files (their embeddings are cached per file)")
