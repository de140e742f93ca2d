"""Tiny random stand-ins for the external baselines' own weights, built in code, for tests and
``--preset smoke|tiny`` (docs/architecture.md: models and weights).

- :func:`tiny_ip_adapter_folder` writes a folder laid out as the h94/IP-Adapter repository
  (``models/image_encoder/`` with a CLIPVisionModelWithProjection, ``models/<weight file>`` in
  IP-Adapter's own state-dict format: ``{"image_proj": ..., "ip_adapter": {"1.to_k_ip.weight", ...}}``),
  sized for a given UNet, so the method loads it through diffusers' ``load_ip_adapter`` exactly
  as it loads the real file.
- :func:`tiny_blip_diffusion` builds a BLIP-Diffusion component set (Q-Former with its vision
  encoder, context CLIP text encoder, the tiny UNet and VAE, PNDM scheduler, image processor).

Everything is seeded: the same call gives the same weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from bench.files import cache_root

#: IP-Adapter's weight files on the hub (h94/IP-Adapter, folder models/)
IP_ADAPTER_FILES = {"sd15": "ip-adapter_sd15.bin", "plus": "ip-adapter-plus_sd15.bin"}
#: IP-Adapter Plus: 16 query tokens, 4 resampler layers, 64-wide heads (the released sd15 file)
PLUS_QUERIES, PLUS_DEPTH, PLUS_HEAD_DIM, PLUS_FF_MULT = 16, 4, 64, 4
TINY_VISION = dict(hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
                   num_attention_heads=4, image_size=32, patch_size=8, hidden_act="quick_gelu",
                   initializer_range=0.2)   # at 0.02 the random features barely depend on the image


def _linear(gen: torch.Generator, out_dim: int, in_dim: int) -> torch.Tensor:
    return torch.randn(out_dim, in_dim, generator=gen) / math.sqrt(in_dim)


def cross_attention_sizes(unet) -> list[int]:
    """Hidden size of each cross-attention processor, in ``unet.attn_processors`` order (the
    order IP-Adapter numbers its ``to_k_ip``/``to_v_ip`` weights: 1, 3, 5, ...)."""
    cfg = unet.config
    channels = list(cfg.block_out_channels)
    sizes = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            sizes.append(channels[-1])
        elif name.startswith("up_blocks"):
            sizes.append(list(reversed(channels))[int(name[len("up_blocks.")])])
        else:
            sizes.append(channels[int(name[len("down_blocks.")])])
    return sizes


def ip_adapter_state_dict(variant: str, unet, image_embed_dim: int, image_hidden_dim: int,
                          seed: int = 0) -> dict:
    """Random IP-Adapter weights in the released file's format for ``unet``."""
    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    if variant == "sd15":
        image_proj = {"proj.weight": _linear(gen, 4 * cross, image_embed_dim), "proj.bias": torch.zeros(4 * cross),
                      "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)}
    elif variant == "plus":
        dim = PLUS_HEAD_DIM                     # one head of 64 (the loader infers heads = width // 64)
        image_proj = {"latents": torch.randn(1, PLUS_QUERIES, dim, generator=gen) / math.sqrt(dim),
                      "proj_in.weight": _linear(gen, dim, image_hidden_dim), "proj_in.bias": torch.zeros(dim),
                      "proj_out.weight": _linear(gen, cross, dim), "proj_out.bias": torch.zeros(cross),
                      "norm_out.weight": torch.ones(cross), "norm_out.bias": torch.zeros(cross)}
        for i in range(PLUS_DEPTH):
            a, f = f"layers.{i}.0", f"layers.{i}.1"
            image_proj.update({
                f"{a}.norm1.weight": torch.ones(dim), f"{a}.norm1.bias": torch.zeros(dim),
                f"{a}.norm2.weight": torch.ones(dim), f"{a}.norm2.bias": torch.zeros(dim),
                f"{a}.to_q.weight": _linear(gen, PLUS_HEAD_DIM, dim),
                f"{a}.to_kv.weight": _linear(gen, 2 * PLUS_HEAD_DIM, dim),
                f"{a}.to_out.weight": _linear(gen, dim, PLUS_HEAD_DIM),
                f"{f}.0.weight": torch.ones(dim), f"{f}.0.bias": torch.zeros(dim),
                f"{f}.1.weight": _linear(gen, dim * PLUS_FF_MULT, dim),
                f"{f}.3.weight": _linear(gen, dim, dim * PLUS_FF_MULT)})
    else:
        raise ValueError(f"unknown IP-Adapter variant {variant!r}")
    ip_adapter = {}
    for k, hidden in enumerate(cross_attention_sizes(unet)):
        key_id = 2 * k + 1
        ip_adapter[f"{key_id}.to_k_ip.weight"] = _linear(gen, hidden, cross)
        ip_adapter[f"{key_id}.to_v_ip.weight"] = _linear(gen, hidden, cross)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def tiny_image_encoder(seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_VISION)).eval()


def tiny_ip_adapter_folder(variant: str, unet, seed: int = 0) -> Path:
    """A folder laid out as h94/IP-Adapter (models/image_encoder, models/<file>) for ``unet``.

    Written once per (variant, UNet config, seed) under the cache folder.
    """
    weight_name = IP_ADAPTER_FILES[variant]
    key = json.dumps({"variant": variant, "cross_attention_dim": unet.config.cross_attention_dim,
                      "sizes": cross_attention_sizes(unet), "vision": TINY_VISION, "seed": seed})
    out = cache_root() / f"tiny-ip-adapter-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (out / "models" / weight_name).exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tiny-ip-adapter-"))
    encoder = tiny_image_encoder(seed)
    encoder.save_pretrained(tmp / "models" / "image_encoder")
    state = ip_adapter_state_dict(variant, unet, TINY_VISION["projection_dim"], TINY_VISION["hidden_size"], seed)
    torch.save(state, tmp / "models" / weight_name)
    try:
        os.replace(tmp, out)
    except OSError:            # another process finished first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---- BLIP-Diffusion ------------------------------------------------------------------------
TINY_QFORMER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    encoder_hidden_size=32, vocab_size=None, max_position_embeddings=64,
                    cross_attention_frequency=1)
TINY_BLIP_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        image_size=32, patch_size=8, initializer_range=0.2)   # default 1e-10: inert
TINY_NUM_QUERY_TOKENS = 4
#: CLIP's image normalisation (BLIP-Diffusion's reference images are normalised as CLIP's)
BLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
BLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _bert_vocab_dir() -> Path:
    """A tiny BERT WordPiece vocabulary (special tokens, letters, digits) for the Q-Former's
    tokenizer: every lower-case word splits into known pieces, nothing is downloaded."""
    out = cache_root() / "tiny-bert-vocab"
    if (out / "vocab.txt").exists():
        return out
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(",.-'")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"vocab.txt.{os.getpid()}"
    tmp.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    os.replace(tmp, out / "vocab.txt")
    return out


def tiny_blip_diffusion(device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A BlipDiffusionPipeline of tiny random components (text width 32 = the tiny UNet's
    cross-attention width)."""
    from diffusers import PNDMScheduler
    from diffusers.pipelines import BlipDiffusionPipeline
    from diffusers.pipelines.deprecated.blip_diffusion.blip_image_processing import BlipImageProcessor
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_blip2 import Blip2QFormerModel
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_ctx_clip import ContextCLIPTextModel
    from transformers import Blip2Config, CLIPTextConfig

    from bench.models import SD_SCHEDULER, TINY_TEXT, build_preset

    base = build_preset("tiny", device="cpu", dtype="fp32", seed=seed)
    qformer_cfg = dict(TINY_QFORMER, vocab_size=len((_bert_vocab_dir() / "vocab.txt").read_text().split()) + 1)
    config = Blip2Config(vision_config=TINY_BLIP_VISION, qformer_config=qformer_cfg,
                         num_query_tokens=TINY_NUM_QUERY_TOKENS, initializer_range=0.3)
    config.tokenizer = str(_bert_vocab_dir())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        qformer = Blip2QFormerModel(config)
        qformer.query_tokens.data.normal_(std=0.02)  # a parameter left at zeros by its constructor
        # proj_layer maps the Q-Former width onto the text encoder's (equal here: 32)
        text_encoder = ContextCLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    scheduler = PNDMScheduler(**{k: SD_SCHEDULER[k] for k in ("num_train_timesteps", "beta_start", "beta_end",
                                                              "beta_schedule", "steps_offset")},
                              skip_prk_steps=True, set_alpha_to_one=False)
    processor = BlipImageProcessor(size={"height": TINY_BLIP_VISION["image_size"],
                                         "width": TINY_BLIP_VISION["image_size"]},
                                   image_mean=BLIP_MEAN, image_std=BLIP_STD)
    pipe = BlipDiffusionPipeline(tokenizer=base.tokenizer, text_encoder=text_encoder, vae=base.vae,
                                 unet=base.unet, scheduler=scheduler, qformer=qformer, image_processor=processor,
                                 ctx_begin_pos=2, mean=BLIP_MEAN, std=BLIP_STD)
    pipe.to(device=device, dtype=dtype)
    for module in (qformer, text_encoder, base.unet, base.vae):
        module.eval().requires_grad_(False)
    return pipe
