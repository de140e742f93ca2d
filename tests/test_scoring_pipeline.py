"""The shared scoring pipeline (bench.metrics.pipeline) gives the scores of the per-image path.

Each metric family that scores from views is compared with its own ``score`` (files read and
preprocessed one by one, the path every earlier version took) on images that exercise the loader:
an RGBA PNG (alpha on white), a greyscale PNG, an odd aspect ratio, a JPEG (FastComposer's
read-back keeps a JPEG as it is). Also: each image is decoded once per command for all metrics,
a split transform equals the whole transform bit for bit, and an unreadable file stops scoring
with its one-line message from inside a worker.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.metrics.base import ScoreItem
from bench.metrics.clip import ClipMetric
from bench.metrics.dino import DinoMetric, dino_transform
from bench.metrics.pipeline import split_transform
from bench.scoring import score_images
from bench.suites import REPO_ROOT, load_suite

MINI = REPO_ROOT / "datasets" / "mini-dreambench"


def _picture(seed: int, size=(80, 64), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (5, 5, 4), dtype=np.uint8), mode="RGBA")
    return small.resize(size, Image.BILINEAR).convert(mode)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[ScoreItem]:
    folder = tmp_path_factory.mktemp("images")
    samples = [s for s in load_suite("dreambench", MINI).samples()]
    out = []
    kinds = [("RGB", (80, 64), "png"), ("RGBA", (64, 64), "png"), ("L", (48, 96), "png"), ("RGB", (72, 72), "jpg"),
             ("RGB", (128, 40), "png")]
    for n in range(11):
        mode, size, suffix = kinds[n % len(kinds)]
        path = folder / f"{n:02d}.{suffix}"
        _picture(n, size, mode).save(path)
        s = samples[n % len(samples)]
        out.append(ScoreItem(key=f"{s.cell}/s0/i{n}", image=path, seed=0, subject=s.subject, class_noun=s.class_noun,
                             eval_text=s.eval_text, reference_images=s.reference_images,
                             subject_images=s.subject_images))
    return out


def _pipeline_scores(metric, items, workers: int, batch_size: int = 4) -> list[dict]:
    rows = [None] * len(items)

    def store(_, positions, values):
        for n, row in zip(positions, values):
            rows[n] = row
    timing = score_images([(it, None, None) for it in items], [metric], {metric: list(range(len(items)))}, store,
                          batch_size, "cpu", progress=False, workers=workers)
    assert timing is not None and timing.images == len(items)      # the shared pipeline did the work
    return rows


def _legacy_scores(metric, items, batch_size: int = 4) -> list[dict]:
    return [row for start in range(0, len(items), batch_size) for row in metric.score(items[start:start + batch_size])]


@pytest.mark.parametrize("make", [
    lambda: ClipMetric(preset="tiny"),
    lambda: ClipMetric(preset="tiny", mode="paired"),
    lambda: ClipMetric(preset="tiny", preprocessing="fastcomposer", image_metric=False),
    lambda: DinoMetric(preset="tiny"),
], ids=["clip", "clip-paired", "clip-fastcomposer", "dino"])
@pytest.mark.parametrize("workers", [0, 1])
def test_the_pipeline_gives_the_per_image_scores(items, make, workers):
    piped = _pipeline_scores(make(), items, workers)
    legacy = _legacy_scores(make(), items)
    assert [r.keys() for r in piped] == [r.keys() for r in legacy]
    for new, old in zip(piped, legacy):
        for mid in old:
            assert abs(new[mid] - old[mid]) <= 1e-6, (mid, new[mid], old[mid])


@pytest.mark.parametrize("transform", ["dino", "open_clip"])
def test_a_split_transform_equals_the_whole_transform_bit_for_bit(transform):
    from bench.metrics.tiny import build_tiny_open_clip

    whole = dino_transform() if transform == "dino" else build_tiny_open_clip()[1]
    view = split_transform(whole, transform)
    images = [_picture(k, (60 + 17 * k, 90 - 9 * k)) for k in range(4)]
    batch = view.finish(torch.stack([view.prepare(im, None) for im in images]))
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([whole(im) for im in images]))


def test_each_image_is_decoded_once_for_all_metrics(items, monkeypatch):
    import bench.metrics.pipeline as pipeline

    decoded = []
    original = pipeline.load_rgb
    monkeypatch.setattr(pipeline, "load_rgb", lambda path: decoded.append(path) or original(path))
    clip, dino = ClipMetric(preset="tiny"), DinoMetric(preset="tiny")
    score_images([(it, None, None) for it in items], [clip, dino], {clip: list(range(len(items))),
                 dino: list(range(len(items)))}, lambda *a: None, 4, "cpu", progress=False, workers=0)
    assert sorted(decoded) == sorted(it.image for it in items)


def test_a_subset_per_metric_scores_only_what_each_needs(items):
    clip, dino = ClipMetric(preset="tiny"), DinoMetric(preset="tiny")
    got = {clip: {}, dino: {}}

    def store(metric, positions, values):
        got[metric].update(zip(positions, values))
    todo = {clip: [0, 2, 3, 7], dino: [1, 2, 9]}
    score_images([(it, None, None) for it in items], [clip, dino], todo, store, 4, "cpu", progress=False, workers=0)
    assert sorted(got[clip]) == todo[clip] and sorted(got[dino]) == todo[dino]
    alone = dict(zip(todo[dino], _legacy_scores(DinoMetric(preset="tiny"), [items[n] for n in todo[dino]])))
    for n in todo[dino]:
        assert abs(got[dino][n][dino.metric_id] - alone[n][dino.metric_id]) <= 1e-6


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_stops_scoring_in_one_line(items, tmp_path, workers):
    bad = tmp_path / "cut.png"
    data = io.BytesIO()
    _picture(3).save(data, format="PNG")
    bad.write_bytes(data.getvalue()[:200])
    broken = list(items[:3]) + [ScoreItem(**{**items[0].__dict__, "image": bad, "key": items[0].key + "x"})]
    dino = DinoMetric(preset="tiny")
    with pytest.raises(BenchError, match=r"cut\.png") as info:
        score_images([(it, None, None) for it in broken], [dino], {dino: list(range(4))}, lambda *a: None, 2, "cpu",
                     progress=False, workers=workers)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cls", [ClipMetric, DinoMetric])
def test_half_precision_is_cuda_only_and_named_in_the_version(cls):
    with pytest.raises(BenchError, match="precision=fp16 needs a CUDA device"):
        cls(preset="tiny", precision="fp16")
    with pytest.raises(BenchError, match="use fp32 or fp16"):
        cls(preset="tiny", precision="fp8")
    assert "fp16" not in cls(preset="tiny").version
    if torch.cuda.is_available():
        half = cls(device="cuda", preset="tiny", precision="fp16")
        assert half.version.endswith("-fp16")
