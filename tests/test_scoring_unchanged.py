"""Scores unchanged to the last digit by the work taken out of the main process (issue 33).

Each metric family scores the same items twice on this machine, with the same batches: once the way
the code before the change did it, re-implemented here (reference embeddings gathered per scored
image from a per-file cache keyed by resolved path, DreamSim's references normalised per image, the
pipeline's batch-wise steps out of place and in the main process), and once as the harness does now
(per reference set a block stacked once, the batch-wise steps in place, in the workers when there
are several). Every value must be equal, not close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bench.metrics.pipeline as pipeline
from bench.metrics.base import ImageView, ScoreItem
from bench.metrics.clip import ClipMetric
from bench.metrics.embeddings import EmbeddingCache, ReferenceBlocks
from bench.metrics.dino import DinoMetric
from bench.metrics.dreamsim import DreamSimMetric
from bench.scoring import score_images
from bench.suites import REPO_ROOT, load_suite

MINI = REPO_ROOT / "datasets" / "mini-dreambench"


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[ScoreItem]:
    """13 generated images over the mini suite's subjects (several images a subject, odd sizes and
    modes), in key order as the scoring stage sorts them."""
    folder = tmp_path_factory.mktemp("generated")
    samples = load_suite("dreambench", MINI).samples()
    out = []
    for n in range(13):
        rng = np.random.default_rng(n)
        size = (64 + 8 * (n % 3), 64 - 4 * (n % 2))
        image = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
        path = folder / f"{n:02d}.{'jpg' if n % 4 == 3 else 'png'}"
        (image.convert("L") if n % 5 == 4 else image).save(path)
        s = samples[(n * 7) % len(samples)]
        out.append(ScoreItem(key=f"{s.cell}/s0/i{n}", image=path, seed=0, subject=s.subject, class_noun=s.class_noun,
                             eval_text=s.eval_text, reference_images=s.reference_images,
                             subject_images=s.subject_images))
    return sorted(out, key=lambda it: it.key)


class _PerImageReferences:
    """The reference embeddings as the code before the change gathered them: for every scored image,
    each reference path resolved and its row taken from a per-file cache."""

    def __init__(self):
        self.files = EmbeddingCache()

    def get(self, paths, compute):
        return self.files.get([str(Path(p).resolve()) for p in paths], compute)


def _old_mean_cosines(generated, groups):
    return [float((refs @ vector).mean()) for vector, refs in zip(generated, groups)]


def _old_distances(self, images, references):
    """DreamSimMetric.distances as it was: each image's references normalised for that image."""
    generated = torch.nn.functional.normalize(self.embed(list(images)), dim=-1)
    out = []
    for vector, refs in zip(generated, references):
        ref = torch.nn.functional.normalize(self.references.get(refs, self.embed), dim=-1)
        out.append(float((1 - ref @ vector).mean()))
    return out


def _old_split_transform(transform, key_prefix: str) -> ImageView:
    """pipeline.split_transform as it was: the batch-wise steps out of place."""
    from torchvision.transforms import Compose, Normalize, ToTensor
    from torchvision.transforms import functional as TF

    steps = list(transform.transforms)
    cut = next(i for i, t in enumerate(steps) if isinstance(t, ToTensor))
    tail = steps[cut + 1:]
    assert all(isinstance(t, Normalize) for t in tail)
    pil_steps = Compose(steps[:cut]) if cut else None

    def prepare(image, path):
        return pipeline._to_uint8_tensor(pil_steps(image) if pil_steps is not None else image)

    def finish(batch):
        pixels = batch.to(dtype=torch.get_default_dtype()).div(255)
        for norm in tail:
            pixels = TF.normalize(pixels, norm.mean, norm.std, norm.inplace)
        return pixels
    return ImageView(key=f"{key_prefix}:{steps!r}", prepare=prepare, finish=finish)


def _scores(metric, items, workers: int | None, batch_size: int = 4) -> list[dict]:
    rows = [None] * len(items)

    def store(_, positions, values):
        for n, row in zip(positions, values):
            rows[n] = row
    if metric.views() is None:                        # a metric that reads its files itself
        for start in range(0, len(items), batch_size):
            store(metric, range(start, start + batch_size), metric.score(items[start:start + batch_size]))
    else:
        score_images([(it, None, None) for it in items], [metric], {metric: list(range(len(items)))}, store,
                     batch_size, "cpu", progress=False, workers=workers)
    return rows


METRICS = {
    "clip": lambda: ClipMetric(preset="tiny"),
    "clip-paired": lambda: ClipMetric(preset="tiny", mode="paired"),
    "clip-fastcomposer": lambda: ClipMetric(preset="tiny", preprocessing="fastcomposer"),
    "dino": lambda: DinoMetric(preset="tiny"),
    "dino-paired": lambda: DinoMetric(preset="tiny", mode="paired"),
    "dreamsim": lambda: DreamSimMetric(preset="tiny"),
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_score_equals_the_old_computation_to_the_last_digit(items, name, monkeypatch):
    import bench.metrics.clip as clip
    import bench.metrics.dino as dino

    old_metric = METRICS[name]()
    old_metric.references = _PerImageReferences()
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "split_transform", _old_split_transform)
        patch.setattr(clip, "mean_cosines", _old_mean_cosines)
        patch.setattr(dino, "mean_cosines", _old_mean_cosines)
        patch.setattr(DreamSimMetric, "distances", _old_distances)
        old = _scores(old_metric, items, 0)
    for workers in (0, 2):             # 2: the batch-wise steps run in the workers
        new = _scores(METRICS[name](), items, workers)
        assert [sorted(r) for r in new] == [sorted(r) for r in old]
        values = [(a[mid], b[mid]) for a, b in zip(new, old) for mid in b]
        assert len(values) >= len(items) and all(np.isfinite(a) for a, _ in values)
        assert [a for a, _ in values] == [b for _, b in values], (name, workers)


def test_references_are_keyed_once_per_reference_set_not_per_image(items, monkeypatch):
    import bench.metrics.embeddings as embeddings

    keyed = []
    original = embeddings.image_key
    monkeypatch.setattr(embeddings, "image_key", lambda p: keyed.append(p) or original(p))
    metric = ClipMetric(preset="tiny", text_metric=False)
    many = items * 3                                   # each subject scored three times as often
    _scores(metric, many, 0)
    sets = {it.reference_images for it in many}
    assert len(keyed) == sum(len(s) for s in sets)     # once per file of each distinct set, whatever the images
    assert len(metric.references) == len({p for s in sets for p in s})


def test_a_reference_block_is_keyed_by_its_files_so_selections_compose(tmp_path):
    """Two selections of one subject's images (all of them, the held-out ones) are two blocks;
    each file is embedded once whichever blocks hold it."""
    files = []
    for k in range(3):
        files.append(tmp_path / f"{k}.png")
        Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(files[-1])
    computed = []

    def compute(decoded):                  # the files' images, decoded: red channel 0, 40, 80
        computed.extend(decoded)
        return torch.tensor([[float(im.getpixel((0, 0))[0]), 1.0] for im in decoded])
    blocks = ReferenceBlocks()
    everything, held_out = blocks.get(tuple(files), compute), blocks.get(tuple(files[1:]), compute)
    assert everything[:, 0].tolist() == [0.0, 40.0, 80.0] and held_out[:, 0].tolist() == [40.0, 80.0]
    assert blocks.get(tuple(files[1:]), compute) is held_out
    assert len(computed) == 3 and len(blocks) == 3
    with pytest.raises(Exception, match="reference images must be files"):
        blocks.get([Image.new("RGB", (4, 4))], compute)


def test_a_reference_file_is_decoded_once_for_all_metrics(items, monkeypatch):
    import bench.metrics.embeddings as embeddings

    decoded = []
    original = embeddings.load_rgb
    monkeypatch.setattr(embeddings, "load_rgb", lambda p: decoded.append(p) or original(p))
    embeddings._DECODED.clear()
    embeddings._DECODED_PIXELS[0] = 0
    one = [it for it in items if it.subject == items[0].subject]
    for metric in (ClipMetric(preset="tiny"), DinoMetric(preset="tiny"), DreamSimMetric(preset="tiny")):
        _scores(metric, one, 0)
    references = sorted(str(p.resolve()) for p in one[0].reference_images)
    assert sorted(str(p) for p in decoded if str(p) in references) == references
