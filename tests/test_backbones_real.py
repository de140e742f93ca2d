"""Real metric architectures with random weights, placed where their real loaders look.

Tiny presets prove the plumbing; they cannot see a wrong activation, a wrong crop or a wrong
loader. Here each backbone is the real architecture with random (seeded) weights, written where
the library that loads it looks (a temporary Hugging Face cache laid out as the hub lays it:
``models--org--name/snapshots/<rev>/`` + ``refs/main``), run through the harness's public entry
(``python -m bench metric ...``) with the hub offline, and compared with an independent
computation written from the library's documented API. Big backbones run only with BENCH_SLOW=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"


def plant_hf_file(hub: Path, repo_id: str, filename: str, write) -> Path:
    """Create ``hub/models--org--name/snapshots/<rev>/<filename>`` and ``refs/main`` as
    huggingface_hub lays out its cache; ``write(path)`` writes the file."""
    folder = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    path = snapshot / filename
    write(path)
    return path


def bench_cli(args: list[str], hub: Path, **env) -> list[float]:
    """``python -m bench ...`` in a fresh process whose Hugging Face cache is ``hub``, offline."""
    environment = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env}
    result = subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [float(line) for line in result.stdout.split()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real photographs (scikit-image ships them) in the file types a run meets."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    out = []
    for name, array, suffix in (("astronaut", data.astronaut(), ".png"), ("coffee", data.coffee(), ".jpg"),
                                ("chelsea", data.chelsea(), ".png")):
        path = folder / f"{name}{suffix}"
        Image.fromarray(array).save(path)
        out.append(path)
    return out


# ---- open_clip, OpenAI weights ----------------------------------------------------------------
def _save_open_clip(arch: str, path: Path, seed: int, half: bool = False) -> None:
    import open_clip
    from safetensors.torch import save_file

    from bench.metrics.tiny import seeded

    with seeded(seed):
        model = open_clip.create_model(arch, pretrained=None)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def _reference_clip_t(arch: str, weights: Path, images: list[Path], texts: list[str]) -> list[float]:
    """CLIP-T written from open_clip's documented API: the model named by ``arch`` with the file
    as its weights, its own eval transform (OpenAI preprocessing), its tokenizer."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(weights))
    tokenizer = open_clip.get_tokenizer(arch)
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    return (image * text).sum(-1).tolist()


@pytest.fixture(scope="module")
def openai_b32_cache(tmp_path_factory) -> tuple[Path, Path]:
    """Random ViT-B/32 weights where open_clip looks for pretrained='openai': its pretrained table
    points at the hub repo timm/vit_base_patch32_clip_224.openai, file open_clip_model.safetensors
    (tried before open_clip_pytorch_model.bin)."""
    from open_clip.pretrained import get_pretrained_cfg

    repo_id = get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].strip("/")
    assert repo_id == "timm/vit_base_patch32_clip_224.openai"
    hub = tmp_path_factory.mktemp("hub")
    weights = plant_hf_file(hub, repo_id, "open_clip_model.safetensors",
                            lambda p: _save_open_clip("ViT-B-32-quickgelu", p, seed=1))
    return hub, weights


def test_openai_vit_b32_from_the_hub_cache_gives_the_quickgelu_clip_t(openai_b32_cache, photos):
    """`bench metric clip-t` with the default backbone (open_clip ViT-B-32, pretrained='openai')
    equals open_clip's QuickGELU model on the same weights within 1e-4, and differs measurably
    from the plain-GELU network open_clip builds for 'ViT-B-32' (what version 1 ran)."""
    hub, weights = openai_b32_cache
    texts = ["a photo of an astronaut", "a cup of coffee", "a cat"]
    ours = bench_cli(["metric", "clip-t", "--images", *map(str, photos), "--texts", *texts], hub)
    quick = _reference_clip_t("ViT-B-32-quickgelu", weights, photos, texts)
    gelu = _reference_clip_t("ViT-B-32", weights, photos, texts)
    assert ours == pytest.approx(quick, abs=1e-5)
    # Random weights keep activations small, where GELU and QuickGELU differ least; the plain-GELU
    # network is still measurably off (about 4e-4 here), beyond the held-out tolerance of 1e-4.
    assert max(abs(a - b) for a, b in zip(ours, gelu)) > 1e-4


def test_the_stop_rule_builds_the_same_quickgelu_tower(openai_b32_cache, monkeypatch, photos):
    """EZIGen's stop rule loads its ViT-B/32 through the same builder (QuickGELU, checked)."""
    import huggingface_hub.constants as hub_constants
    from open_clip.transformer import QuickGELU

    from methods.ezigen.similarity import ImageSimilarity

    hub, _ = openai_b32_cache
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    tower = ImageSimilarity("cpu", tiny=False).model
    assert any(isinstance(m, QuickGELU) for m in tower.modules())
    assert not any(isinstance(m, torch.nn.GELU) for m in tower.modules())


def test_openai_tags_need_quickgelu_and_a_mismatch_is_refused():
    """The activation each tag was trained with comes from open_clip's own table, and a model
    built with the other one is refused at construction (not warned about)."""
    from bench import BenchError
    from bench.metrics.clip import check_activation, pretrained_uses_quick_gelu
    from bench.metrics.tiny import build_tiny_open_clip

    assert pretrained_uses_quick_gelu("ViT-B-32", "openai") and pretrained_uses_quick_gelu("ViT-L-14", "openai")
    assert pretrained_uses_quick_gelu("ViT-B-32-quickgelu", "/some/file.safetensors")
    assert not pretrained_uses_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    quick_model, _, _ = build_tiny_open_clip()             # the tiny config says quick_gelu
    check_activation(quick_model, True, "tiny")
    with pytest.raises(BenchError, match="QuickGELU"):
        check_activation(quick_model, False, "tiny")
    import open_clip
    gelu_model = open_clip.create_model("ViT-B-32", pretrained=None)   # what open_clip builds for 'ViT-B-32'
    with pytest.raises(BenchError, match="need QuickGELU"):
        check_activation(gelu_model, True, "ViT-B-32 (openai)")


@pytest.mark.slow
def test_openai_vit_l14_prompt_score_as_fastcomposer_computes_it(tmp_path, photos):
    """FastComposer's prompt score (CLIP ViT-L/14, OpenAI weights) through the metric the
    registry builds for the suite ('clip-t-l14', preprocessing=fastcomposer), against
    FastComposer's CLIPEvaluator transform written from torchvision's API."""
    from open_clip.pretrained import get_pretrained_cfg
    from torchvision import transforms as T

    repo_id = get_pretrained_cfg("ViT-L-14", "openai")["hf_hub"].strip("/")
    hub = tmp_path / "hub"
    weights = plant_hf_file(hub, repo_id, "open_clip_model.safetensors",
                            lambda p: _save_open_clip("ViT-L-14-quickgelu", p, seed=2, half=True))
    texts = ["a man wearing a red hat", "a cup of coffee", "a cat"]
    ours = bench_cli(["metric", "clip-t", "--backbone", "open_clip:ViT-L-14/openai", "--preprocessing",
                      "fastcomposer", "--images", *map(str, photos), "--texts", *texts], hub)

    import open_clip
    model = open_clip.create_model("ViT-L-14-quickgelu", pretrained=str(weights)).eval()
    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    # clip_eval.py: ToTensor()*2-1, un-normalise, Resize(224, bicubic) + CenterCrop on a tensor
    # (torchvision 0.14: no antialiasing), CLIP normalisation.
    transform = T.Compose([T.Normalize([-1.0] * 3, [2.0] * 3),
                           T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=False),
                           T.CenterCrop(224),
                           T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    expected = []
    for path, text in zip(photos, texts):
        jpg = tmp_path / f"{path.stem}.jpg"
        Image.open(path).convert("RGB").save(jpg) if path.suffix != ".jpg" else jpg.write_bytes(path.read_bytes())
        pixels = T.ToTensor()(Image.open(jpg).convert("RGB"))[None] * 2.0 - 1.0
        with torch.no_grad():
            image = torch.nn.functional.normalize(model.encode_image(transform(pixels)), dim=-1)
            txt = torch.nn.functional.normalize(model.encode_text(tokenizer([text])), dim=-1)
        expected.append(float((image * txt).sum()))
    assert ours == pytest.approx(expected, abs=1e-4)


# ---- DINO ViT-S/16 through timm ----------------------------------------------------------------
def test_dino_vits16_from_the_hub_cache_matches_a_direct_timm_forward(tmp_path, photos):
    """`bench metric dino` (timm vit_small_patch16_224.dino, pretrained=True) against a direct
    timm forward: the model's own data config (Resize 256 bicubic, CenterCrop 224, ImageNet
    statistics), the CLS token after the final norm."""
    import timm
    from safetensors.torch import save_file
    from timm.data import create_transform, resolve_data_config

    from bench.metrics.tiny import seeded

    name = "vit_small_patch16_224.dino"
    with seeded(4):
        model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    repo_id = model.pretrained_cfg["hf_hub_id"]
    assert repo_id == "timm/vit_small_patch16_224.dino"
    hub = tmp_path / "hub"
    plant_hf_file(hub, repo_id, "model.safetensors",
                  lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p)))
    ours = bench_cli(["metric", "dino", "--images", *map(str, photos[:2]), "--refs", str(photos[2])], hub)

    config = resolve_data_config(model=model)
    assert (config["interpolation"], config["input_size"]) == ("bicubic", (3, 224, 224))
    # timm's own default crop for these weights is 0.9 (resize to 248); the protocol (DINO's
    # evaluation transform, docs/protocols.md section 2) resizes to 256 and crops 224: crop_pct 0.875.
    assert config["crop_pct"] == 0.9
    transform = create_transform(**{**config, "crop_pct": 224 / 256})
    with torch.no_grad():
        feats = [model.forward_head(model.forward_features(transform(Image.open(p).convert("RGB"))[None]),
                                    pre_logits=True) for p in photos]
    feats = [torch.nn.functional.normalize(f, dim=-1)[0] for f in feats]
    expected = [float(feats[0] @ feats[2]), float(feats[1] @ feats[2])]
    assert ours == pytest.approx(expected, abs=1e-4)
