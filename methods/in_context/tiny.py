"""Tiny random stand-ins for the in-context baselines' pipelines, built in code (tests and
``--preset smoke|tiny``; docs/methods-in-context.md).

Each builder returns a pipeline of the real classes (the real transformer, VAE, text/vision
encoders and tokenizer classes) at toy sizes; :func:`tiny_pipeline_folder` saves it with
``save_pretrained`` so the method loads it through ``from_pretrained`` exactly as it loads real
weights. Tokenizers are built from small vocabularies written here (nothing is downloaded):

- OmniGen: a Phi-3 style ``LlamaTokenizer`` (byte-fallback BPE, ``<s>`` = 1 as OmniGen's
  processor expects), transformer with Phi-3 rotary factors sized to its head width;
- FLUX.1 Kontext: the project's CLIP BPE tokenizer and a ``T5Tokenizer`` over single characters;
- Qwen-Image-Edit: a byte-level ``Qwen2Tokenizer`` with Qwen's chat and vision special tokens,
  a ``Qwen2VLProcessor``, a 2-layer Qwen2.5-VL text/vision encoder;
- FLUX.2: the Llama-style single-character tokenizer with a small chat template (system and user
  text turns, as ``Flux2Pipeline`` formats its prompt), a Mistral3 encoder of 30 tiny layers (the
  pipeline stacks the hidden states of layers 10, 20 and 30), an ``AutoencoderKLFlux2``.

Made to respond to their inputs: a default-initialised toy transformer attends almost uniformly
over its (mostly text) tokens and predicts a small velocity, so the output would hardly depend on
the conditioning image and no test could see whether request k's subject reached request k. So
(1) the VAEs' latents of the mini suite's images have about zero mean and unit variance, as the
released VAEs' factors give for theirs (Flux: shift and scale; Qwen: its encoder's output
projection; measured at 64 px), and (2) :func:`_sharpen` scales the transformers' attention
(query/key norm gains) and output projection. Everything is seeded: the same call gives the same
weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from pathlib import Path

import torch

from bench.files import cache_root

#: characters every tiny vocabulary covers as single pieces
CHARS = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation


def _seeded(seed: int):
    fork = torch.random.fork_rng(devices=[])
    fork.__enter__()
    torch.manual_seed(seed)
    return fork


# ---- OmniGen -------------------------------------------------------------------------------
TINY_OMNIGEN = dict(in_channels=4, patch_size=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                    intermediate_size=64, num_layers=2, pad_token_id=2, vocab_size=None,
                    max_position_embeddings=4096, original_max_position_embeddings=4096, pos_embed_max_size=16)
TINY_SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                   block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                   up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, scaling_factor=3.4)


def phi3_tokenizer():
    """A Llama/Phi-3 style tokenizer: <unk>=0, <s>=1, </s>=2, byte fallback, single characters."""
    from transformers import LlamaTokenizer
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁"] + list(CHARS)
    return LlamaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], add_bos_token=True)


def tiny_omnigen(seed: int = 0, narrow: bool = True):
    """narrow=False keeps the random VAE's wide posterior (a test of the posterior draw)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenPipeline, OmniGenTransformer2DModel
    tokenizer = phi3_tokenizer()
    cfg = dict(TINY_OMNIGEN, vocab_size=len(tokenizer))
    half_head = cfg["hidden_size"] // cfg["num_attention_heads"] // 2
    cfg["rope_scaling"] = {"short_factor": [1.0] * half_head, "long_factor": [1.0] * half_head}
    fork = _seeded(seed)
    try:
        transformer = OmniGenTransformer2DModel(**cfg)
        vae = AutoencoderKL(**TINY_SD_VAE)
    finally:
        fork.__exit__(None, None, None)
    with torch.no_grad():                   # no query/key norms in OmniGen: every matrix x 3
        for weight in transformer.parameters():
            if weight.dim() >= 2:
                weight.mul_(3.0)
    if narrow:
        _narrow_posterior(vae)
    return OmniGenPipeline(transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(),
                           vae=vae.eval(), tokenizer=tokenizer)


def _sharpen(transformer, qk_gain: float = 4.0, out_gain: float = 4.0) -> None:
    """Sharper attention (query/key RMS-norm gains) and a larger velocity (output projection)."""
    with torch.no_grad():
        for name, weight in transformer.named_parameters():
            if any(part in name for part in ("norm_q.", "norm_k.", "norm_added_q.", "norm_added_k.")):
                weight.fill_(qk_gain)
            elif name.startswith("proj_out."):
                weight.mul_(out_gain)


def _narrow_posterior(vae) -> None:
    """A trained VAE's posterior is narrow; a random one's is not. Log-variance channels -> -20,
    as the tiny SD preset does, so the posterior sample is essentially its mean."""
    with torch.no_grad():
        vae.quant_conv.weight[vae.config.latent_channels:].zero_()
        vae.quant_conv.bias[vae.config.latent_channels:].fill_(-20.0)


# ---- FLUX.1 Kontext ------------------------------------------------------------------------
TINY_FLUX = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                 guidance_embeds=True, axes_dims_rope=(4, 4, 8))
TINY_FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                     block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                     up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, use_quant_conv=False,
                     use_post_quant_conv=False, shift_factor=0.049, scaling_factor=2.75)
TINY_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
               feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_encoder_decoder=False)


def t5_tokenizer():
    from transformers import T5Tokenizer
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)] + [(c, -2.0) for c in CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_flux_kontext(seed: int = 0):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from bench.models import TINY_TEXT, load_tokenizer
    tokenizer_2 = t5_tokenizer()
    fork = _seeded(seed)
    try:
        transformer = FluxTransformer2DModel(**TINY_FLUX)
        vae = AutoencoderKL(**TINY_FLUX_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
        text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), **TINY_T5))
    finally:
        fork.__exit__(None, None, None)
    _sharpen(transformer)
    # Flux's scheduler config: dynamic shifting by image sequence length (the released scheduler)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxKontextPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder.eval(),
                               tokenizer=load_tokenizer(), text_encoder_2=text_encoder_2.eval(),
                               tokenizer_2=tokenizer_2, transformer=transformer.eval())


# ---- Qwen-Image-Edit (Plus) ----------------------------------------------------------------
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
TINY_QWEN_TRANSFORMER = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                             num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False,
                             axes_dims_rope=(8, 4, 4))
TINY_QWEN_VAE = dict(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
                     latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
#: this random Qwen VAE's raw latent mean and std per channel on the mini suite's images (64 px)
QWEN_RAW_MEAN, QWEN_RAW_STD = [0.268, 0.234, 0.066, -0.125], [0.057, 0.047, 0.039, 0.067]


def qwen_tokenizer():
    from transformers import Qwen2Tokenizer

    from bench.models import _bytes_to_unicode
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    for token in QWEN_SPECIAL:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})
    return tokenizer


def tiny_qwen_image_edit(seed: int = 0):
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline,
                           QwenImageTransformer2DModel)
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)
    tokenizer = qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rope_theta": 1000000.0,
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16,
                       "fullatt_block_indexes": [1]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    fork = _seeded(seed)
    try:
        transformer = QwenImageTransformer2DModel(**TINY_QWEN_TRANSFORMER)
        vae = AutoencoderKLQwenImage(**TINY_QWEN_VAE)
        text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        fork.__exit__(None, None, None)
    _sharpen(transformer)
    with torch.no_grad():                   # encoder output -> about zero mean, unit variance
        z = TINY_QWEN_VAE["z_dim"]
        gain = 1.0 / torch.tensor(QWEN_RAW_STD)
        vae.quant_conv.weight[:z] *= gain.view(-1, *[1] * (vae.quant_conv.weight.dim() - 1))
        vae.quant_conv.bias[:z] = (vae.quant_conv.bias[:z] - torch.tensor(QWEN_RAW_MEAN)) * gain
    pixels = dict(min_pixels=28 * 28, max_pixels=56 * 56)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(**pixels))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192,
                                                time_shift_type="exponential")
    return QwenImageEditPlusPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder.eval(),
                                     tokenizer=tokenizer, processor=processor, transformer=transformer.eval())


# ---- FLUX.2 ---------------------------------------------------------------------------------
TINY_FLUX2 = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=32,
                  axes_dims_rope=(4, 4, 4, 4))
TINY_FLUX2_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                      block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=64,
                      use_quant_conv=False, use_post_quant_conv=False)
TINY_MISTRAL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=30, num_attention_heads=2,
                    num_key_value_heads=2, max_position_embeddings=1024, rope_theta=1000000.0, sliding_window=None)
#: this random FLUX.2 VAE's patchified latent mean and std per channel on the mini suite's images (64 px):
#: its batch-norm statistics, as the released VAE's normalise its latents
FLUX2_RAW_MEAN = [-0.336, -0.406, -0.313, -0.373, -0.041, -0.055, 0.076, 0.071,
                  -0.210, -0.198, -0.251, -0.211, 0.058, 0.100, 0.008, 0.059]
FLUX2_RAW_STD = [0.475, 0.464, 0.395, 0.450, 0.447, 0.249, 0.350, 0.297,
                 0.344, 0.384, 0.354, 0.355, 0.323, 0.248, 0.271, 0.354]
#: renders a batch of Flux2Pipeline conversations: each text part, after its role
FLUX2_CHAT_TEMPLATE = ("{% for message in messages %}{% for part in message['content'] %}"
                       "{% if part['type'] == 'text' %}{{ message['role'] + ': ' + part['text'] + ' ' }}{% endif %}"
                       "{% endfor %}{% endfor %}")


def flux2_tokenizer():
    tokenizer = phi3_tokenizer()
    tokenizer.pad_token = "<unk>"
    tokenizer.chat_template = FLUX2_CHAT_TEMPLATE
    tokenizer.model_max_length = 1024
    return tokenizer


def tiny_flux2(seed: int = 0):
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration
    tokenizer = flux2_tokenizer()
    config = Mistral3Config(
        text_config={"model_type": "mistral", "vocab_size": len(tokenizer), "pad_token_id": 0, "bos_token_id": 1,
                     "eos_token_id": 2, **TINY_MISTRAL},
        vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 16, "image_size": 32, "patch_size": 8, "num_channels": 3},
        image_token_index=3, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    fork = _seeded(seed)
    try:
        transformer = Flux2Transformer2DModel(**TINY_FLUX2)
        vae = AutoencoderKLFlux2(**TINY_FLUX2_VAE)
        text_encoder = Mistral3ForConditionalGeneration(config)
    finally:
        fork.__exit__(None, None, None)
    _sharpen(transformer)
    with torch.no_grad():                   # stacked hidden states of a random encoder are tiny: x 8
        transformer.context_embedder.weight.mul_(8.0)
        vae.bn.running_mean.copy_(torch.tensor(FLUX2_RAW_MEAN))
        vae.bn.running_var.copy_(torch.tensor(FLUX2_RAW_STD) ** 2)
    # FLUX.2-dev's scheduler: dynamic shifting by image sequence length
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return Flux2Pipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                         transformer=transformer.eval())


BUILDERS = {"omnigen": tiny_omnigen, "flux-kontext": tiny_flux_kontext, "qwen-image-edit": tiny_qwen_image_edit,
            "flux2": tiny_flux2}


def tiny_pipeline_folder(kind: str, seed: int = 0) -> Path:
    """A saved tiny pipeline folder (model_index.json + one subfolder per component), written
    once per (kind, configs, seed) under the cache folder."""
    configs = [TINY_OMNIGEN, TINY_SD_VAE, TINY_FLUX, TINY_FLUX_VAE, TINY_T5, TINY_QWEN_TRANSFORMER, TINY_QWEN_VAE,
               TINY_FLUX2, TINY_FLUX2_VAE, TINY_MISTRAL, FLUX2_CHAT_TEMPLATE, FLUX2_RAW_MEAN, FLUX2_RAW_STD]
    key = json.dumps({"kind": kind, "seed": seed, "version": 2, "configs": configs}, sort_keys=True, default=str)
    out = cache_root() / f"tiny-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (out / "model_index.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tiny-{kind}-"))
    BUILDERS[kind](seed).save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:            # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out
