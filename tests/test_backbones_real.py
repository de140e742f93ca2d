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


# ---- transformers backbones (HF cache) --------------------------------------------------------
def _hf_snapshot(hub: Path, repo_id: str, save) -> Path:
    """Write a saved model folder into the hub cache layout (``save(folder)`` writes the files)."""
    snapshot = hub / f"models--{repo_id.replace('/', '--')}" / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot.parents[1] / "refs").mkdir(exist_ok=True)
    (snapshot.parents[1] / "refs" / "main").write_text(REVISION)
    save(snapshot)
    return snapshot


@pytest.mark.slow
def test_hf_openai_clip_vit_b32_from_the_hub_cache(tmp_path, photos):
    """`bench metric clip-t --backbone hf:openai/clip-vit-base-patch32` against the transformers
    documented usage (CLIPProcessor + CLIPModel forward, its normalised image/text embeds)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from bench.metrics.tiny import seeded
    from bench.models import load_tokenizer

    config = CLIPConfig(projection_dim=512)        # transformers' defaults are ViT-B/32's layout
    assert config.vision_config.hidden_act == "quick_gelu" and config.text_config.hidden_act == "quick_gelu"
    assert (config.vision_config.patch_size, config.vision_config.hidden_size, config.text_config.hidden_size) == (
        32, 768, 512)
    with seeded(5):
        model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=load_tokenizer())

    def save(folder):
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    hub = tmp_path / "hub"
    snapshot = _hf_snapshot(hub, "openai/clip-vit-base-patch32", save)
    texts = ["a photo of an astronaut", "a cup of coffee", "a cat"]
    ours = bench_cli(["metric", "clip-t", "--backbone", "hf:openai/clip-vit-base-patch32", "--images",
                      *map(str, photos), "--texts", *texts], hub)
    reference_model = CLIPModel.from_pretrained(snapshot).eval()
    reference_processor = CLIPProcessor.from_pretrained(snapshot)
    expected = []
    for path, text in zip(photos, texts):
        inputs = reference_processor(text=[text], images=[Image.open(path).convert("RGB")], return_tensors="pt",
                                     padding=True)
        with torch.no_grad():
            out = reference_model(**inputs)
        expected.append(float((out.image_embeds * out.text_embeds).sum()))
    assert ours == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_hf_dinov2_base_from_the_hub_cache(tmp_path, photos):
    """`bench metric dinov2` (facebook/dinov2-base) against a direct Dinov2Model forward on the
    DINOv2 evaluation transform written with torchvision (Resize 256 bicubic, CenterCrop 224,
    ImageNet statistics), CLS token after the final layernorm."""
    from torchvision import transforms as T
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    from bench.metrics.tiny import IMAGENET_MEAN, IMAGENET_STD, seeded

    config = Dinov2Config()                         # defaults: the ViT-B/14 layout of dinov2-base
    assert (config.hidden_size, config.num_hidden_layers, config.patch_size) == (768, 12, 14)
    with seeded(6):
        model = Dinov2Model(config).eval()
    processor = BitImageProcessor(
        do_resize=True, size={"shortest_edge": 256}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), do_convert_rgb=True)

    def save(folder):
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    hub = tmp_path / "hub"
    _hf_snapshot(hub, "facebook/dinov2-base", save)
    ours = bench_cli(["metric", "dinov2", "--images", *map(str, photos[:2]), "--refs", str(photos[2])], hub)
    transform = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    with torch.no_grad():
        cls = [model(pixel_values=transform(Image.open(p).convert("RGB"))[None]).last_hidden_state[0, 0]
               for p in photos]
    cls = [torch.nn.functional.normalize(c, dim=0) for c in cls]
    expected = [float(cls[0] @ cls[2]), float(cls[1] @ cls[2])]
    assert ours == pytest.approx(expected, abs=2e-3)      # HF's resize path rounds differently from torchvision's


# ---- Grounded-SAM: GroundingDINO Swin-T + SAM ViT-H (transformers, HF cache) -------------------
_GSAM_SCRIPT = """
import json, sys
from pathlib import Path
from bench.metrics.grounded_sam import GroundedSam
annotator = GroundedSam(device="cpu", box_threshold=0.0, text_threshold=0.0, cache_dir=sys.argv[2])
[result] = annotator.annotate([Path(sys.argv[1])], ["dog"])
print(json.dumps({"status": result.status, "box": result.box, "mask": str(result.mask_path)}))
"""


@pytest.mark.slow
def test_grounded_sam_default_models_from_the_hub_cache(tmp_path, photos):
    """The annotator as the masked metric builds it (IDEA-Research/grounding-dino-tiny +
    facebook/sam-vit-huge, offline) against transformers' documented two-step usage: the
    processor and model of GroundingDINO, post_process_grounded_object_detection, the best box to
    SamProcessor/SamModel (one mask), post_process_masks."""
    import json

    from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SamConfig, SamImageProcessor,
                              SamModel, SamProcessor)

    from bench.metrics.grounded_sam import DEFAULT_DETECTOR, DEFAULT_SEGMENTER
    from bench.metrics.tiny import seeded

    vocab = tmp_path / "vocab.txt"          # bert-base-uncased's size; the words the test needs, then fillers
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "dog", "cat"]
    vocab.write_text("\n".join(words + [f"[unused{i}]" for i in range(30522 - len(words))]) + "\n")
    detector_config = GroundingDinoConfig()     # defaults: Swin-T backbone, BERT-base text encoder (grounding-dino-tiny)
    assert detector_config.backbone_config.embed_dim == 96 and detector_config.text_config.hidden_size == 768
    segmenter_config = SamConfig(vision_config=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                                                    global_attn_indexes=[7, 15, 23, 31]))   # ViT-H
    with seeded(7):
        detector = GroundingDinoForObjectDetection(detector_config).eval()
        segmenter = SamModel(segmenter_config).eval()
    detector_processor = GroundingDinoProcessor(GroundingDinoImageProcessor(), BertTokenizer(str(vocab)))
    segmenter_processor = SamProcessor(SamImageProcessor())
    hub = tmp_path / "hub"
    _hf_snapshot(hub, DEFAULT_DETECTOR, lambda f: (detector.save_pretrained(f), detector_processor.save_pretrained(f)))
    _hf_snapshot(hub, DEFAULT_SEGMENTER, lambda f: (segmenter.save_pretrained(f), segmenter_processor.save_pretrained(f)))

    image_path = photos[2]
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _GSAM_SCRIPT, str(image_path), str(tmp_path / "masks")], env=env,
                         capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    ours = json.loads(run.stdout.strip().splitlines()[-1])
    assert ours["status"] == "ok"

    image = Image.open(image_path).convert("RGB")
    with torch.no_grad():
        inputs = detector_processor(images=image, text="dog.", return_tensors="pt")
        outputs = detector(**inputs)
        [found] = detector_processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(image.height, image.width)])
        box = found["boxes"][int(torch.argmax(found["scores"]))].tolist()
        sam_inputs = segmenter_processor(images=image, input_boxes=[[box]], return_tensors="pt")
        sam_out = segmenter(**sam_inputs, multimask_output=False)
        mask = segmenter_processor.image_processor.post_process_masks(
            sam_out.pred_masks, sam_inputs["original_sizes"], sam_inputs["reshaped_input_sizes"])[0][0, 0].numpy()
    assert ours["box"] == pytest.approx(box, abs=1e-2)
    ours_mask = np.asarray(Image.open(ours["mask"])) >= 128
    union = np.logical_or(ours_mask, mask).sum()
    assert union == 0 or np.logical_and(ours_mask, mask).sum() / union > 0.99
