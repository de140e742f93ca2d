"""Estimated peak GPU memory of the in-context baselines in bf16, at 512 and 1024 px
(docs/methods-in-context.md, "Memory").

Parameter counts are exact: each released component is built from its published configuration on
PyTorch's meta device (no memory, no download) and its parameters counted. Activations are an
estimate, written out below so it can be checked against a measurement:

- transformer: rows x tokens x (4 x hidden + MLP width) x 2 bytes: one block's hidden state,
  q/k/v/out projections and MLP intermediate alive at once, attention by a fused kernel (no
  tokens x tokens matrix); rows = the classifier-free-guidance rows of one call (OmniGen 3,
  Kontext 1, Qwen 1 per call); tokens = output image (px/16)^2 + conditioning image (px/16)^2
  + text (OmniGen ~80, Kontext 512 T5 tokens, Qwen ~100 + the Qwen2.5-VL image tokens);
  OmniGen adds its dense rows x tokens x tokens attention mask (2 bytes);
- VAE decode: 4 tensors of 128 channels at full resolution (the last decoder block), 2 bytes;
- peak = all weights + the largest activation (``offload=none``); with ``offload=model`` the
  largest (component weights + its activations); ``offload=sequential`` keeps about one block.

Usage: ``python benchmarks/in_context_memory.py`` prints the markdown table.
"""

from __future__ import annotations

import torch

GIB = 1024 ** 3


def count(build) -> int:
    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


def components() -> dict[str, dict[str, int]]:
    from diffusers import (AutoencoderKL, AutoencoderKLQwenImage, FluxTransformer2DModel, OmniGenTransformer2DModel,
                           QwenImageTransformer2DModel)
    from transformers import (CLIPTextConfig, CLIPTextModel, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              T5Config, T5EncoderModel)
    rope = {"short_factor": [1.0] * 48, "long_factor": [1.0] * 48}
    sd_vae = dict(latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    flux_vae = dict(sd_vae, latent_channels=16)
    qwen_vl = Qwen2_5_VLConfig(   # Qwen2.5-VL-7B-Instruct, the text encoder of Qwen-Image-Edit
        text_config={"hidden_size": 3584, "num_hidden_layers": 28, "intermediate_size": 18944,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                     "tie_word_embeddings": False},
        vision_config={"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                       "out_hidden_size": 3584}, tie_word_embeddings=False)
    return {
        "omnigen": {"transformer": count(lambda: OmniGenTransformer2DModel(rope_scaling=rope)),
                    "vae": count(lambda: AutoencoderKL(**sd_vae))},
        "flux-kontext": {"transformer": count(lambda: FluxTransformer2DModel(guidance_embeds=True)),
                         "text_encoder_2 (T5-XXL)": count(lambda: T5EncoderModel(T5Config(
                             d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, vocab_size=32128,
                             feed_forward_proj="gated-gelu", is_encoder_decoder=False))),
                         "text_encoder (CLIP-L)": count(lambda: CLIPTextModel(CLIPTextConfig(
                             hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             projection_dim=768))),
                         "vae": count(lambda: AutoencoderKL(**flux_vae))},
        "qwen-image-edit": {"transformer": count(lambda: QwenImageTransformer2DModel()),
                            "text_encoder (Qwen2.5-VL-7B)": count(lambda: Qwen2_5_VLForConditionalGeneration(qwen_vl)),
                            "vae": count(lambda: AutoencoderKLQwenImage())},
    }


#: (rows per call, hidden, MLP width, text tokens, dense attention mask)
SHAPES = {"omnigen": (3, 3072, 8192, 80, True), "flux-kontext": (1, 3072, 12288, 512, False),
          "qwen-image-edit": (1, 3072, 12288, 100, False)}


def activations(name: str, px: int) -> dict[str, float]:
    rows, hidden, mlp, text, mask = SHAPES[name]
    tokens = 2 * (px // 16) ** 2 + text                       # output + conditioning image + text
    transformer = rows * tokens * (4 * hidden + mlp) * 2
    if mask:
        transformer += rows * tokens * tokens * 2
    return {"transformer": transformer, "vae": 4 * 128 * px * px * 2}


def table() -> str:
    sizes = components()
    lines = ["| method | parameters (B) | weights bf16 (GiB) | px | peak, offload=none (GiB) | "
             "peak, offload=model (GiB) |", "|---|---|---|---|---|---|"]
    for name, parts in sizes.items():
        weights = {k: 2 * v for k, v in parts.items()}
        total = sum(weights.values())
        for px in (512, 1024):
            act = activations(name, px)
            none = total + max(act.values())
            model = max(weights["transformer"] + act["transformer"], weights["vae"] + act["vae"],
                        *[w for k, w in weights.items() if k.startswith("text_encoder")])
            lines.append(f"| {name} | {sum(parts.values()) / 1e9:.2f} | {total / GIB:.1f} | {px} | "
                         f"{none / GIB:.1f} | {model / GIB:.1f} |")
    parts = "; ".join(f"{n}: " + ", ".join(f"{k} {v / 1e9:.3f}B" for k, v in p.items()) for n, p in sizes.items())
    return "\n".join(lines) + f"\n\nParameters per component: {parts}."


if __name__ == "__main__":
    print(table())
