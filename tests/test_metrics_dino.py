"""DINO: agreement with a direct timm forward on the same weights and preprocessed tensors,
the protocol's preprocessing, ids, modes, input ranges, missing weights; DINOv2 extra."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.metrics.base import ScoreItem
from bench.metrics.dino import DinoMetric, Dinov2Metric

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def smooth_image(seed: int, size=(300, 240)) -> Image.Image:
    small = np.random.default_rng(seed).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def reference_preprocess(image: Image.Image) -> torch.Tensor:
    """Resize the shorter side to 256 (bicubic), centre-crop 224, ImageNet normalisation,
    written out with PIL and tensor arithmetic, independently of the metric's transform."""
    w, h = image.size
    scale = 256 / min(w, h)
    new_w, new_h = (256, int(h * scale)) if w <= h else (int(w * scale), 256)
    resized = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = int(round((new_w - 224) / 2.0)), int(round((new_h - 224) / 2.0))
    crop = resized.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 255
    return (x - IMAGENET_MEAN) / IMAGENET_STD


@pytest.fixture(scope="module")
def metric():
    return DinoMetric(preset="tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dino")
    refs, gens = [], []
    for i in range(3):
        refs.append(root / f"ref{i}.jpg")
        smooth_image(50 + i, (400, 300)).save(refs[-1], quality=95)
    for k in range(4):
        gens.append(root / f"gen{k}.png")
        smooth_image(k, (256, 256)).save(gens[-1])
    return gens, refs


def test_preprocessing_is_the_protocol_one(metric):
    images = [smooth_image(1, (300, 240)), smooth_image(2, (240, 500)), smooth_image(3, (512, 512))]
    ours = metric.preprocess(images)
    expected = torch.stack([reference_preprocess(im) for im in images])
    assert ours.shape == (3, 3, 224, 224)
    # torchvision and this PIL re-implementation may differ by a rounding step at the crop edge
    assert (ours - expected).abs().max() < 1e-4


def test_dino_matches_direct_timm_forward(metric, files):
    gens, refs = files
    model = metric.model
    with torch.no_grad():
        def cls(paths):
            pixels = torch.stack([reference_preprocess(Image.open(p).convert("RGB")) for p in paths])
            tokens = model.forward_head(model.forward_features(pixels), pre_logits=True)  # CLS after final norm
            return torch.nn.functional.normalize(tokens, dim=-1)
        g, r = cls(gens), cls(refs)
    expected = (g @ r.T).mean(1)
    ours = metric.similarity(gens, [refs] * len(gens))
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5)
    assert len(set(np.round(ours, 5))) == len(ours)


def test_cls_token_is_taken_after_the_final_norm(metric, files):
    gens, _ = files
    model = metric.model
    pixels = metric.preprocess(gens)
    with torch.no_grad():
        tokens = model.patch_embed(pixels)
        tokens = model._pos_embed(tokens)
        tokens = model.blocks(model.norm_pre(tokens))
        before_norm = torch.nn.functional.normalize(tokens[:, 0], dim=-1)
        after_norm = torch.nn.functional.normalize(model.norm(tokens)[:, 0], dim=-1)
    ours = metric.embed_pixels(pixels)
    assert torch.allclose(ours, after_norm, atol=1e-6)
    assert not torch.allclose(ours, before_norm, atol=1e-3)


def test_score_modes_and_reference_cache(files):
    gens, refs = files
    metric = DinoMetric(preset="tiny")
    items = [ScoreItem(key=f"dreambench/dog/000/s0/i{k}", image=p, seed=0, subject="dog", class_noun="dog",
                       eval_text="a dog", reference_images=tuple(refs), subject_images=(refs[1],))
             for k, p in enumerate(gens)]
    rows = metric.score(items)
    assert len(metric.references) == 3
    calls = []
    original = metric.embed_pixels
    metric.embed_pixels = lambda pixels: calls.append(len(pixels)) or original(pixels)
    assert metric.score(items) == rows
    assert calls == [4]                                   # the references come from the cache
    paired = DinoMetric(preset="tiny", mode="paired")
    assert paired.ids == ("dino_paired/tiny-random",)
    single = paired.score(items)
    expected = metric.similarity(gens, [[refs[1]]] * 4)
    np.testing.assert_allclose([r["dino_paired/tiny-random"] for r in single], expected, atol=1e-6)


def test_input_ranges(metric):
    image = torch.from_numpy(np.array(smooth_image(7))).permute(2, 0, 1).contiguous()
    a = metric.embed_images([image])
    b = metric.embed_images([image.float() / 255])
    c = metric.embed_images([Image.fromarray(image.permute(1, 2, 0).numpy())])
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)
    with pytest.raises(BenchError, match=r"only \[0, 1\] floats"):
        metric.embed_images([image.float()])


def test_ids_and_errors(tmp_path, files):
    gens, refs = files
    assert DinoMetric().ids == ("dino/vit-s-16",)
    assert DinoMetric(preset="tiny").ids == ("dino/tiny-random",)
    assert Dinov2Metric().ids == ("dinov2/vit-b-14",)
    with pytest.raises(BenchError, match="bad DINO backbone"):
        DinoMetric(backbone="vit_small_patch16_224.dino")
    with pytest.raises(BenchError, match="cannot load DINO vit_small_patch16_224.dino with timm.*network access"):
        DinoMetric().score([ScoreItem("k/a/000/s0/i0", gens[0], 0, "a", "dog", "a dog", tuple(refs), refs[:1])])


def test_dinov2_tiny_uses_cls_after_layernorm(files):
    gens, refs = files
    metric = Dinov2Metric(preset="tiny")
    assert metric.ids == ("dinov2/tiny-random",)
    values = metric.similarity(gens, [refs] * len(gens))
    model, processor = metric._model, metric._processor
    with torch.no_grad():
        out = model(pixel_values=processor(images=[Image.open(p).convert("RGB") for p in gens + refs],
                                           return_tensors="pt")["pixel_values"])
    emb = torch.nn.functional.normalize(out.pooler_output, dim=-1)
    expected = (emb[:4] @ emb[4:].T).mean(1)
    np.testing.assert_allclose(values, expected.numpy(), atol=1e-5)


def test_metric_command_pairwise_and_all_pairs(metric, files, capsys):
    from bench.cli import main

    gens, refs = files
    g, r = [str(p) for p in gens[:3]], [str(p) for p in refs]
    assert main(["metric", "dino", "--preset", "tiny", "--images", *g, "--refs", *r, "--pairwise"]) == 0
    printed = [float(v) for v in capsys.readouterr().out.split()]
    np.testing.assert_allclose(printed, metric.similarity(g, [[x] for x in r]), atol=1e-6)
    assert main(["metric", "dino", "--preset", "tiny", "--images", *g, "--refs", *r]) == 0
    printed = [float(v) for v in capsys.readouterr().out.split()]
    np.testing.assert_allclose(printed, metric.similarity(g, [r] * 3), atol=1e-6)
    assert main(["metric", "dino", "--images", *g]) == 2
    assert "needs --refs" in capsys.readouterr().err
