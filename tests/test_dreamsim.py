"""DreamSim: distance invariants with the tiny preset, the local-cache rule, and the package's real
single-branch architecture with random weights through our loader against the package's own API."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.metrics.base import ScoreItem
from bench.metrics.dreamsim import REQUIRED_FILES, DreamSimMetric


def images(tmp_path):
    paths = []
    for i, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        image = Image.new("RGB", (80, 64), color)
        image.paste((255, 255, 255), (10 * i, 10, 10 * i + 30, 40))
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    return paths


def test_distance_is_zero_to_itself_symmetric_and_averaged_over_references(tmp_path):
    a, b, c = images(tmp_path)
    metric = DreamSimMetric(preset="tiny")
    assert metric.ids == ("dreamsim/tiny-random",) and metric.lower_is_better
    d = dict(zip(["aa", "ab", "ba", "ac"], metric.distances([a, a, b, a], [[a], [b], [a], [c]])))
    assert d["aa"] == pytest.approx(0.0, abs=1e-5)
    assert d["ab"] == pytest.approx(d["ba"], abs=1e-5) and 0 < d["ab"] <= 2
    assert metric.distances([a], [[b, c]])[0] == pytest.approx((d["ab"] + d["ac"]) / 2, abs=1e-5)


def test_paired_mode_compares_with_the_conditioning_image_only(tmp_path):
    a, b, c = images(tmp_path)
    item = ScoreItem(key="s/x/000/s0/i0", image=a, seed=0, subject="x", class_noun="x", eval_text="x",
                     reference_images=(a, b, c), subject_images=(a,))
    paired = DreamSimMetric(preset="tiny", mode="paired")
    assert paired.ids == ("dreamsim_paired/tiny-random",)
    assert paired.score([item])[0]["dreamsim_paired/tiny-random"] == pytest.approx(0.0, abs=1e-5)
    assert DreamSimMetric(preset="tiny").score([item])[0]["dreamsim/tiny-random"] > 0.001


def test_missing_weights_name_the_folder_and_the_fetch_command(tmp_path):
    metric = DreamSimMetric(cache_dir=str(tmp_path / "empty"))
    with pytest.raises(BenchError) as err:
        metric.embed(images(tmp_path)[:1])
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "empty") in message and "ensemble_lora" in message
    assert "dreamsim(pretrained=True" in message and "dreamsim_type='ensemble'" in message
    with pytest.raises(BenchError, match="dreamsim.variant"):
        DreamSimMetric(variant="vit_huge")
    assert set(REQUIRED_FILES) >= {"ensemble", "dino_vitb16", "open_clip_vitb32", "clip_vitb32", "dinov2_vitb14"}


@pytest.mark.slow
def test_real_open_clip_branch_with_random_weights_matches_the_package_api(tmp_path):
    """ViT-B/32 as the package builds it, random weights and a random LoRA laid out as its release zip
    unpacks; our metric (its loader, our preprocessing and averaging) against `dreamsim()` + model(a, b)."""
    from dreamsim import dreamsim
    from dreamsim.feature_extraction.vision_transformer import vit_base
    from dreamsim.model import PerceptualModel
    from peft import LoraConfig, get_peft_model

    cache = tmp_path / "cache"
    cache.mkdir()
    torch.manual_seed(0)
    vit = vit_base(patch_size=32)
    vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
    state = vit.state_dict()
    state["proj"] = torch.randn(vit.embed_dim, 512) * 0.03
    torch.save({"state_dict": state}, cache / "open_clip_vitb32_pretrain.pth.tar")
    base = PerceptualModel(model_type="open_clip_vitb32", feat_type="embedding", stride="32", lora=True,
                           load_dir=str(cache), device="cpu")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", target_modules=["qkv"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    lora.save_pretrained(cache / "open_clip_vitb32_single_lora")
    config = json.loads((cache / "open_clip_vitb32_single_lora" / "adapter_config.json").read_text())
    assert config["r"] == 4

    a, b, c = images(tmp_path)
    metric = DreamSimMetric(variant="open_clip_vitb32", cache_dir=str(cache))
    ours = metric.distances([a, b], [[b], [a, c]])
    model, preprocess = dreamsim(pretrained=True, device="cpu", cache_dir=str(cache), dreamsim_type="open_clip_vitb32")
    with torch.no_grad():
        def dist(x, y):
            return float(model(preprocess(Image.open(x).convert("RGB")), preprocess(Image.open(y).convert("RGB"))))
        expected = [dist(a, b), (dist(b, a) + dist(b, c)) / 2]
    assert ours == pytest.approx(expected, abs=2e-4)
    assert metric.ids == ("dreamsim/open-clip-vitb32",)


def test_bench_metric_dreamsim_prints_distances(tmp_path, capsys):
    from bench.cli import main

    a, b, _ = images(tmp_path)
    assert main(["metric", "dreamsim", "--images", str(a), str(b), "--refs", str(a), "--preset", "tiny"]) == 0
    same, other = (float(line) for line in capsys.readouterr().out.split())
    assert same == pytest.approx(0.0, abs=1e-5) and other > 0.001
    assert main(["metric", "dreamsim", "--images", str(a), "--refs", str(a), "--backbone", "nope"]) == 2
    assert "dreamsim.variant='nope'" in capsys.readouterr().err


def test_precheck_names_missing_weights_before_a_run_and_skips_the_tiny_preset(tmp_path):
    DreamSimMetric.precheck(preset="tiny", cache_dir=str(tmp_path))
    with pytest.raises(BenchError, match="open_clip_vitb32_single_lora"):
        DreamSimMetric.precheck(preset=None, variant="open_clip_vitb32", cache_dir=str(tmp_path))
