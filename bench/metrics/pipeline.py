"""The scoring pipeline: each generated image decoded once, each distinct preprocessing applied
once, in DataLoader workers beside the metric forwards.

A metric that offers :meth:`Metric.views` names the preprocessings it needs as
:class:`ImageView` objects. :func:`split_transform` cuts a torchvision ``Compose`` at its
``ToTensor``: the PIL steps (resize, crop) run per image in a worker and hand over 8-bit tensors;
the elementwise steps (to float, ``/255``, normalise) run once per batch on the metric's device.
Those are exactly the operations ``ToTensor`` and ``Normalize`` perform per image, so the result
is bit-identical to applying the whole transform to each image (elementwise float arithmetic
does not depend on the batch). Scoring on the CPU with two workers or more, the batch-wise steps
run in the workers as well, so that the main process does only the metric forwards.

:func:`batches` yields, per batch of ``batch_size`` images in order, ``{view key: tensor}`` on the
device; views of different metrics with the same key (the same preprocessing) are computed once.
Workers: ``fork`` processes where the platform has them (the closures of the views need not be
picklable), else decoding happens in the calling process. On CUDA the batches come from pinned
memory and are copied with ``non_blocking=True``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from bench import BenchError
from bench.images import load_rgb
from bench.metrics.base import ImageView

#: most DataLoader workers used by default (a 512 px PNG decode and two resizes take about 15 ms of one core)
MAX_DEFAULT_WORKERS = 16


def default_workers() -> int:
    """Decoding workers: one per core the process may use, less one for the forwards; 0 (decode in
    the calling process) on a single core or where processes cannot be forked."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(MAX_DEFAULT_WORKERS, cores - 1))


def _to_uint8_tensor(image) -> torch.Tensor:
    """A PIL RGB image as a uint8 CHW tensor (what ``ToTensor`` builds before dividing by 255),
    stacked from its channel planes (the same bytes as transposing its HWC array, in half the time)."""
    import numpy as np

    return torch.from_numpy(np.stack([np.asarray(channel, np.uint8) for channel in image.split()]))


def split_transform(transform, key_prefix: str) -> ImageView:
    """An :class:`ImageView` equal to applying ``transform`` (a torchvision ``Compose`` ending in
    ``ToTensor`` and optional ``Normalize``) to each image: PIL steps per image, the rest per
    batch. Any other transform is applied whole per image."""
    from torchvision.transforms import Compose, Normalize, ToTensor
    from torchvision.transforms import functional as TF

    steps = list(getattr(transform, "transforms", ())) if isinstance(transform, Compose) else []
    cut = next((i for i, t in enumerate(steps) if isinstance(t, ToTensor)), None)
    tail = steps[cut + 1:] if cut is not None else []
    if cut is None or not all(isinstance(t, Normalize) for t in tail):
        return ImageView(key=f"{key_prefix}:{transform!r}", prepare=lambda image, path: transform(image),
                         finish=_identity)
    pil_steps = Compose(steps[:cut]) if cut else None

    def prepare(image, path):
        return _to_uint8_tensor(pil_steps(image) if pil_steps is not None else image)

    def finish(batch: torch.Tensor) -> torch.Tensor:
        # ToTensor on a uint8 image, then each Normalize: the same operations, in place on the new tensor
        pixels = batch.to(dtype=torch.get_default_dtype()).div_(255)
        for norm in tail:
            pixels = TF.normalize(pixels, norm.mean, norm.std, inplace=True)
        return pixels
    return ImageView(key=f"{key_prefix}:{steps!r}", prepare=prepare, finish=finish)


def _identity(batch):
    return batch


class _Decoded(torch.utils.data.Dataset):
    """Item i: ``{view key: prepared tensor}`` of the i-th file, decoded once; a file that cannot
    be read gives its one-line message instead (raised in the calling process)."""

    def __init__(self, paths: Sequence[Path], prepares: dict[str, Callable]):
        self.paths, self.prepares = list(paths), prepares

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            image = load_rgb(path)
            return {key: prepare(image, path) for key, prepare in self.prepares.items()}
        except BenchError as exc:
            return str(exc)


def _collate(rows, finishes: dict[str, Callable] | None = None):
    """The batch of a worker: the first error message, or ``{view key: stacked tensor}``, each put
    through its view's ``finish`` here when ``finishes`` says so (CPU scoring: the elementwise steps
    run in the worker, beside the decode, and leave the main process only the forwards)."""
    errors = [r for r in rows if isinstance(r, str)]
    if errors:
        return errors[0]
    batch = {key: torch.stack([r[key] for r in rows]) for key in rows[0]}
    if finishes:
        batch = {key: finishes[key](tensor) for key, tensor in batch.items()}
    return batch


class Timing:
    """Seconds spent waiting for decoded batches and seconds in the caller's work per batch."""

    def __init__(self):
        self.wait_s = 0.0
        self.images = 0


def batches(paths: Sequence[Path], views: dict[str, ImageView], batch_size: int, device: str = "cpu",
            workers: int | None = None, timing: Timing | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Per consecutive batch of ``paths``: ``{view key: batch tensor on the device}``."""
    workers = default_workers() if workers is None else workers
    if workers and "fork" not in multiprocessing.get_all_start_methods():
        workers = 0
    cuda = str(device).startswith("cuda")
    # Where the batch-wise steps run (elementwise: the same bits in any process): on an accelerator,
    # there, after copying 8-bit pixels; on the CPU with several workers, in the workers, so that the
    # main process does only the forwards; with one worker beside the main process (2 cores), in the
    # main process, which then carries 8-bit pixels (a quarter of the bytes) and keeps the two busy
    # about equally (docs/performance-scale.md)
    in_workers = workers >= 2 and str(device) == "cpu"
    finishes = {key: view.finish for key, view in views.items()} if in_workers else None
    loader = torch.utils.data.DataLoader(
        _Decoded(paths, {key: view.prepare for key, view in views.items()}), batch_size=batch_size, shuffle=False,
        num_workers=workers, collate_fn=functools.partial(_collate, finishes=finishes), pin_memory=cuda,
        prefetch_factor=4 if workers else None,
        multiprocessing_context=multiprocessing.get_context("fork") if workers else None)
    timing = timing or Timing()
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            timing.wait_s += time.perf_counter() - start
            return
        if isinstance(batch, str):
            raise BenchError(batch)
        out = batch if in_workers else {key: views[key].finish(tensor.to(device, non_blocking=cuda))
                                        for key, tensor in batch.items()}
        timing.wait_s += time.perf_counter() - start
        timing.images += len(next(iter(batch.values()))) if batch else 0
        yield out
