"""CLIP-T / CLIP-I: agreement with torchmetrics' CLIPScore on the same weights, input ranges,
ids, caching of reference embeddings, missing weights (docs/protocols.md sections 2 and 6)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.metrics.base import ScoreItem
from bench.metrics.clip import ClipMetric, to_rgb_image
from bench.metrics.tiny import save_tiny_hf_clip

TEXTS = ["a dog in the jungle", "a red backpack on the beach", "a cat", "a vase with a city in the background"]


def random_images(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = [(224, 224), (256, 300), (320, 240), (200, 260)]
    return [torch.randint(0, 256, (3, *sizes[i % len(sizes)]), generator=g, dtype=torch.uint8) for i in range(n)]


def smooth_image(seed: int, size=(96, 96)) -> Image.Image:
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BILINEAR)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    # torchmetrics accepts a folder name only if it contains "openai".
    return save_tiny_hf_clip(tmp_path_factory.mktemp("weights") / "openai-tiny-clip")


@pytest.fixture(scope="module")
def hf_metric(hf_dir):
    return ClipMetric(backbone=f"hf:{hf_dir}")


@pytest.fixture(scope="module")
def tiny_metric():
    return ClipMetric(preset="tiny")


def torchmetrics_loader(folder):
    """torchmetrics 1.9 calls get_*_features and normalises the result as a tensor; transformers 5
    returns an output object, so hand CLIPScore the same weights through its documented callable
    hook with a shim that returns ``pooler_output`` (the projected embedding) and nothing else."""
    from transformers import CLIPModel, CLIPProcessor

    class PooledClip(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.config = model.config

        def get_image_features(self, *args, **kwargs):
            out = self.model.get_image_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_text_features(self, *args, **kwargs):
            out = self.model.get_text_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    return lambda: (PooledClip(CLIPModel.from_pretrained(folder).eval()), CLIPProcessor.from_pretrained(folder))


def torchmetrics_per_image(folder, images, texts) -> list[float]:
    """CLIPScore once per (image, text): max(100 * cosine, 0)."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    metric = CLIPScore(model_name_or_path=torchmetrics_loader(folder))
    values = []
    for image, text in zip(images, texts):
        metric.reset()
        metric.update(image, text)
        values.append(float(metric.compute()))
    return values


def torchmetrics_unclamped(folder, images, texts) -> list[float]:
    """torchmetrics' own per-sample 100 * cosine before the clamp at 0 (its update function)."""
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    model, processor = torchmetrics_loader(folder)()
    with torch.no_grad():
        scores, _ = _clip_score_update(list(images), list(texts), model, processor)
    return scores.tolist()


def test_clip_t_matches_torchmetrics_for_uint8_tensors(hf_dir, hf_metric):
    images = random_images(4)
    ours = [100 * v for v in hf_metric.clip_t(images, TEXTS)]
    theirs = torchmetrics_unclamped(hf_dir, images, TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    clamped = torchmetrics_per_image(hf_dir, images, TEXTS)
    np.testing.assert_allclose([max(v, 0.0) for v in ours], clamped, atol=1e-3)
    assert len(set(np.round(ours, 4))) == len(ours)       # the images really differ


def test_clip_t_matches_torchmetrics_for_pil_input(hf_dir, hf_metric):
    pils = [smooth_image(s, size) for s, size in zip(range(4), [(96, 96), (300, 200), (180, 260), (512, 512)])]
    ours = [100 * v for v in hf_metric.clip_t(pils, TEXTS)]
    as_tensors = [torch.from_numpy(np.array(p)).permute(2, 0, 1).contiguous() for p in pils]
    np.testing.assert_allclose(ours, torchmetrics_unclamped(hf_dir, as_tensors, TEXTS), atol=1e-3)


def test_float_input_in_unit_range_is_converted_exactly(hf_metric):
    images = random_images(2, seed=3)
    floats = [im.float() / 255 for im in images]
    np.testing.assert_allclose(hf_metric.clip_t(floats, TEXTS[:2]), hf_metric.clip_t(images, TEXTS[:2]), atol=1e-6)
    as_arrays = [im.permute(1, 2, 0).numpy() for im in images]           # HWC numpy, uint8
    np.testing.assert_allclose(hf_metric.clip_t(as_arrays, TEXTS[:2]), hf_metric.clip_t(images, TEXTS[:2]), atol=1e-6)


def test_float_input_in_uint8_range_is_refused_not_rescaled(hf_metric):
    image = random_images(1, seed=4)[0]
    with pytest.raises(BenchError, match=r"only \[0, 1\] floats"):
        hf_metric.clip_t([image.float()], TEXTS[:1])
    with pytest.raises(BenchError, match=r"only \[0, 1\] floats"):
        to_rgb_image(image.float() / 127.5 - 1)                           # [-1, 1]
    with pytest.raises(BenchError, match="dtype"):
        to_rgb_image(image.to(torch.int16))


def test_torchmetrics_silently_misreads_unit_floats(hf_dir, hf_metric):
    """The pitfall docs/protocols.md section 6 warns about: torchmetrics rescales by 1/255 whatever the
    dtype, so [0, 1] floats score a near-black image; ours converts them and scores the real one."""
    image = random_images(1, seed=5)[0]
    ours = 100 * hf_metric.clip_t([image.float() / 255], TEXTS[:1])[0]
    theirs_uint8 = torchmetrics_unclamped(hf_dir, [image], TEXTS[:1])[0]
    theirs_float = torchmetrics_unclamped(hf_dir, [image.float() / 255], TEXTS[:1])[0]
    assert ours == pytest.approx(theirs_uint8, abs=1e-3)
    assert abs(theirs_float - theirs_uint8) > 1e-2


def test_ids_name_the_backbone_and_construction_loads_nothing():
    default = ClipMetric()
    assert default.ids == ("clip_t/vit-b-32-openai", "clip_i/vit-b-32-openai")
    assert default._backend is None
    assert ClipMetric(mode="paired").ids == ("clip_t/vit-b-32-openai", "clip_i_paired/vit-b-32-openai")
    assert ClipMetric(backbone="open_clip:ViT-L-14/openai", image_metric=False).ids == ("clip_t/vit-l-14-openai",)
    assert ClipMetric(backbone="hf:openai/clip-vit-base-patch32").ids[0] == "clip_t/hf-clip-vit-base-patch32"
    assert ClipMetric(preset="tiny").ids == ("clip_t/tiny-random", "clip_i/tiny-random")
    with pytest.raises(BenchError, match="bad CLIP backbone"):
        ClipMetric(backbone="ViT-B-32")
    with pytest.raises(BenchError, match="mode"):
        ClipMetric(mode="pairs")


def test_registry_entry_for_l14_gives_text_only_metric():
    from bench.registry import METRICS

    entry = METRICS.get("clip-t-l14")
    metric = entry.load()(device="cpu", preset=None, **entry.params)
    assert metric.ids == ("clip_t/vit-l-14-openai",)


def test_missing_weights_is_one_clear_error(tmp_path):
    with pytest.raises(BenchError, match="cannot load CLIP ViT-B-32 \\(openai\\).*network access"):
        ClipMetric().clip_t([smooth_image(0)], ["a dog"])
    with pytest.raises(BenchError, match="cannot load transformers CLIP"):
        ClipMetric(backbone=f"hf:{tmp_path / 'nothing-here'}").clip_t([smooth_image(0)], ["a dog"])


def make_items(tmp_path, n_refs=3):
    refs = []
    for i in range(n_refs):
        path = tmp_path / f"ref{i}.jpg"
        smooth_image(100 + i, (120, 160)).save(path, quality=95)
        refs.append(path)
    items = []
    for k in range(4):
        path = tmp_path / f"gen{k}.png"
        smooth_image(k).save(path)
        items.append(ScoreItem(key=f"dreambench/dog/00{k}/s0/i0", image=path, seed=0, subject="dog", class_noun="dog",
                               eval_text=TEXTS[k], reference_images=tuple(refs), subject_images=(refs[0],)))
    return items, refs


def test_score_all_pairs_and_paired_and_reference_cache(tmp_path, tiny_metric):
    items, refs = make_items(tmp_path)
    calls = []
    encode = tiny_metric.backend.encode_images
    tiny_metric.backend.encode_images = lambda images: calls.append(len(images)) or encode(images)
    try:
        rows = tiny_metric.score(items)
        again = tiny_metric.score(items)
    finally:
        del tiny_metric.backend.encode_images
    assert rows == again
    # the 3 references once, then the 4 generated images twice
    assert sorted(calls) == [3, 4, 4]
    gen = tiny_metric.embed_images([it.image for it in items])
    ref = tiny_metric.embed_images(refs)
    for row, g, text in zip(rows, gen, TEXTS):
        assert row["clip_i/tiny-random"] == pytest.approx(float((ref @ g).mean()), abs=1e-6)
        assert row["clip_t/tiny-random"] == pytest.approx(float(g @ tiny_metric.embed_texts([text])[0]), abs=1e-6)
    paired = ClipMetric(preset="tiny", mode="paired").score(items)
    for row, g in zip(paired, gen):
        assert row["clip_i_paired/tiny-random"] == pytest.approx(float(ref[0] @ g), abs=1e-6)
    assert any(abs(a["clip_i/tiny-random"] - b["clip_i_paired/tiny-random"]) > 1e-4 for a, b in zip(rows, paired))


def test_tiny_preset_is_deterministic(tmp_path, tiny_metric):
    items, _ = make_items(tmp_path)
    assert ClipMetric(preset="tiny").score(items) == tiny_metric.score(items)


def test_metric_command_prints_one_cosine_per_line(hf_dir, hf_metric, tmp_path, capsys):
    from bench.cli import main

    items, refs = make_items(tmp_path)
    paths = [str(it.image) for it in items[:2]]
    assert main(["metric", "clip-t", "--backbone", f"hf:{hf_dir}", "--images", *paths, "--texts", *TEXTS[:2]]) == 0
    printed = [float(v) for v in capsys.readouterr().out.split()]
    np.testing.assert_allclose(printed, hf_metric.clip_t(paths, TEXTS[:2]), atol=1e-6)
    assert main(["metric", "clip-i", "--preset", "tiny", "--images", *paths, "--refs", *map(str, refs)]) == 0
    printed = [float(v) for v in capsys.readouterr().out.split()]
    np.testing.assert_allclose(printed, ClipMetric(preset="tiny").clip_i(paths, [refs, refs]), atol=1e-6)
    assert main(["metric", "clip-t", "--images", *paths, "--texts", "a", "b", "c"]) == 2
    assert "2 images but 3 texts" in capsys.readouterr().err
