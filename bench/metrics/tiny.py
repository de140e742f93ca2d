"""Tiny random metric backbones, built in code (no download), for tests and the smoke preset.

Each builder goes through the same library entry point as the real backbone, so the tiny
preset exercises the real loading and preprocessing code; only the sizes and weights differ:

- open_clip: a small config registered with ``open_clip.add_model_config`` and created by
  ``open_clip.create_model_and_transforms`` exactly like ``ViT-B-32``;
- transformers CLIP (``hf:`` backbones): a small ``CLIPModel`` with a ``CLIPProcessor`` that uses
  the real CLIP BPE tokenizer (bench.models.load_tokenizer) and OpenAI CLIP's image statistics;
- timm DINO: ``timm.create_model("vit_small_patch16_224.dino", pretrained=False, ...)`` with
  fewer and narrower blocks (the same 16-pixel patches and 224 input as ViT-S/16);
- transformers DINOv2: a small ``Dinov2Model`` with DINOv2's image processor settings.

Every builder is seeded and leaves the global torch RNG untouched: the same seed gives the same
weights every time.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from bench.files import cache_root

TINY_SEED = 0
TINY_OPEN_CLIP_NAME = "bench-tiny-ViT"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ViT-B/32 layout (224 input, 32-pixel patches, 77-token context, CLIP BPE vocabulary), narrow.
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


@contextmanager
def seeded(seed: int):
    """Run a block with torch's CPU RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _Quiet(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def register_tiny_open_clip() -> str:
    """Make the tiny config known to open_clip (idempotent); returns its model name."""
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS  # read-only check: is it registered already?

    if TINY_OPEN_CLIP_NAME not in _MODEL_CONFIGS:
        folder = cache_root() / "open-clip-configs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{TINY_OPEN_CLIP_NAME}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG), encoding="utf-8")
        os.replace(tmp, path)
        open_clip.add_model_config(path)
    return TINY_OPEN_CLIP_NAME


def build_tiny_open_clip(seed: int = TINY_SEED, device: str = "cpu"):
    """(model, preprocess, tokenizer) for the tiny open_clip model, random weights."""
    import open_clip

    name = register_tiny_open_clip()
    quiet = _Quiet("No pretrained weights loaded")     # random weights are the point here
    logging.getLogger().addFilter(quiet)
    try:
        with seeded(seed):
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None, device=device, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
                image_interpolation="bicubic", image_resize_mode="shortest")
    finally:
        logging.getLogger().removeFilter(quiet)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def tiny_hf_clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=32),
        projection_dim=16)


def build_tiny_hf_clip(seed: int = TINY_SEED):
    """(CLIPModel, CLIPProcessor): a tiny random transformers CLIP with the real CLIP tokenizer."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    from bench.models import load_tokenizer

    with seeded(seed):
        model = CLIPModel(tiny_hf_clip_config()).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=load_tokenizer())


def save_tiny_hf_clip(folder: Path | str, seed: int = TINY_SEED) -> Path:
    """Write the tiny transformers CLIP (model + processor) to ``folder``, loadable with
    ``CLIPModel.from_pretrained(folder)``, ``hf:<folder>`` and torchmetrics' CLIPScore."""
    folder = Path(folder)
    model, processor = build_tiny_hf_clip(seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_timm_dino(seed: int = TINY_SEED, device: str = "cpu"):
    """The DINO ViT-S/16 architecture in timm, 2 blocks of width 32, random weights."""
    import timm

    with seeded(seed):
        model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0,
                                  embed_dim=32, depth=2, num_heads=2)
    return model.to(device).eval()


def build_tiny_dinov2(seed: int = TINY_SEED):
    """(Dinov2Model, image processor): a tiny random transformers DINOv2 with the official
    DINOv2 preprocessing (shortest edge 256 bicubic, centre crop 224, ImageNet statistics)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          image_size=224, patch_size=14)
    with seeded(seed):
        model = Dinov2Model(config).eval()
    processor = BitImageProcessor(
        do_resize=True, size={"shortest_edge": 256}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        do_convert_rgb=True)
    return model, processor
