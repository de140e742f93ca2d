"""Base-model loading: Hugging Face ids, local diffusers folders, and code-built presets.

Presets (random weights, nothing downloaded):

- ``tiny``: a small UNet with the same block structure as SD 2.1 (cross-attention down blocks,
  a mid block, cross-attention up blocks; linear projections), a small VAE with the SD latent
  factor 8, a 2-layer CLIP text encoder and the real CLIP BPE tokenizer from open_clip's vocab.
  Seeded: the same preset is the same model every time.
- ``sd21-random``: the SD 2.1-base architecture (865M-parameter UNet) with random weights, for
  speed and memory work. ``device="meta"`` builds it without allocating.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import BenchError
from bench.files import cache_root

DEFAULT_WEIGHTS = "stabilityai/stable-diffusion-2-1-base"
PRESETS = ("tiny", "sd21-random")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# SD 2.1-base configs (the public model's config.json values).
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0, act_fn="silu",
)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, act_fn="silu", scaling_factor=0.18215,
)
SD21_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)
# Tiny: same topology (2 cross-attn down blocks + 1 plain, mid, 1 plain up + 2 cross-attn up),
# so there are 2 + 1 + 4 = 7 transformer blocks in forward order down, mid, up.
TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=(2, 4, 4), use_linear_projection=True,
    norm_num_groups=8, flip_sin_to_cos=True, freq_shift=0, act_fn="silu",
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=64,
    block_out_channels=(8, 16, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    # 1 / the std of this random VAE's latents (about 0.29), so scaled latents have unit
    # variance as SD's do with 0.18215 (measured on the mini suites' images and on noise).
    norm_num_groups=8, act_fn="silu", scaling_factor=3.4,
)
TINY_TEXT = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
)
# The scheduler EZIGen samples with (docs/protocols.md section 1: DDPM, "leading" spacing,
# t = 981 ... 1 for 50 steps); betas are SD's.
SD_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
)


@dataclass
class Components:
    """A loaded base model and where it came from."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    model_id: str             # HF id, folder, or "preset:<name>"
    revision: str             # HF commit, a content hash of a folder's configs, or "random"
    random_weights: bool
    resolution: int           # native image size
    device: torch.device
    dtype: torch.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def make_scheduler(self):
        from diffusers import DDPMScheduler
        return DDPMScheduler.from_config(self.scheduler_config)

    def describe(self) -> dict:
        return {"model_id": self.model_id, "revision": self.revision,
                "random_weights": self.random_weights, "resolution": self.resolution,
                "dtype": str(self.dtype).replace("torch.", "")}


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte-level BPE alphabet, in CLIP's order: printable bytes (mapped to themselves)
    first, then the other bytes mapped to code points from 256 on."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + i) for i, b in enumerate(others)})
    return table


def tokenizer_dir() -> Path:
    """A CLIP tokenizer folder (vocab.json + merges.txt) built from open_clip's BPE file."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("the tiny preset needs open_clip_torch (for its CLIP BPE vocabulary)")
    bpe = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    out = cache_root() / "clip-tokenizer"
    if (out / "vocab.json").exists() and (out / "merges.txt").exists():
        return out
    # The CLIP BPE: the first line is a header, then merges; 49152 - 256 - 2 + 1 of them are used.
    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        os.replace(tmp / name, out / name)
    tmp.rmdir()
    return out


def load_tokenizer(source: str | Path | None = None, subfolder: str | None = None):
    from transformers import CLIPTokenizer
    if source is None:
        return CLIPTokenizer.from_pretrained(str(tokenizer_dir()), model_max_length=77)
    return CLIPTokenizer.from_pretrained(str(source), subfolder=subfolder, model_max_length=77)


def build_preset(preset: str, device: str = "cpu", dtype: str = "fp32", seed: int = 0) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if preset not in PRESETS:
        raise BenchError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unet_cfg, vae_cfg, text_cfg = ((TINY_UNET, TINY_VAE, TINY_TEXT) if preset == "tiny"
                                   else (SD21_UNET, SD21_VAE, SD21_TEXT))
    torch_dtype = DTYPES[dtype]
    build_device = "meta" if device == "meta" else "cpu"
    with torch.random.fork_rng(devices=[]), torch.device(build_device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    if preset == "tiny" and device != "meta":
        # A trained VAE's posterior is narrow; a random one's (std ~0.94) would drown the image
        # in sampling noise during training. Narrow it: log-variance channels -> -20.
        with torch.no_grad():
            vae.quant_conv.weight[vae.config.latent_channels:].zero_()
            vae.quant_conv.bias[vae.config.latent_channels:].fill_(-20.0)
    modules = [unet, vae, text_encoder]
    if device != "meta":
        for m in modules:
            m.to(device=device)
            if torch_dtype != torch.float32:
                m.to(dtype=torch_dtype)
    for m in modules:
        m.eval().requires_grad_(False)
    resolution = unet_cfg["sample_size"] * 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    return Components(unet, vae, text_encoder, load_tokenizer(), dict(SD_SCHEDULER),
                      model_id=f"preset:{preset}", revision="random", random_weights=True,
                      resolution=resolution, device=torch.device(device), dtype=torch_dtype)


def _missing_weights_message(weights: str, detail: str) -> str:
    return (f"model weights {weights!r} are not available ({detail}). Fetch them once with "
            f"`hf download {weights}` (then HF_HUB_OFFLINE=1 works), or pass "
            f"--weights /path/to/a/diffusers/folder (with unet/, vae/, text_encoder/, tokenizer/), "
            f"or use --preset tiny|sd21-random for random weights")


def resolve_weights(weights: str) -> tuple[Path, str]:
    """A local folder for a HF id or folder, and its revision (commit or config hash)."""
    path = Path(weights).expanduser()
    if path.exists():
        if not (path / "unet" / "config.json").exists():
            raise BenchError(f"{path} is not a diffusers model folder: {path / 'unet' / 'config.json'} is missing")
        h = hashlib.sha256()
        for cfg in sorted(path.glob("*/config.json")) + sorted(path.glob("*/*.safetensors*")):
            h.update(cfg.relative_to(path).as_posix().encode())
            h.update(cfg.read_bytes() if cfg.suffix == ".json" else str(cfg.stat().st_size).encode())
        return path, "sha256:" + h.hexdigest()[:16]
    if weights.count("/") != 1 or weights.startswith((".", "/")):
        raise BenchError(f"--weights {weights!r} is neither an existing folder nor a Hugging Face id")
    try:
        from huggingface_hub import snapshot_download
        local = Path(snapshot_download(
            weights, allow_patterns=["*/config.json", "*.json", "*.txt", "*/*.safetensors"],
            local_files_only=os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "True")))
    except Exception as exc:  # network down, not cached, gated, ...
        raise BenchError(_missing_weights_message(weights, type(exc).__name__)) from None
    return local, local.name


def load_components(weights: str = DEFAULT_WEIGHTS, preset: str | None = None, device: str = "cpu",
                    dtype: str = "fp32") -> Components:
    if dtype not in DTYPES:
        raise BenchError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if preset is not None:
        return build_preset(preset, device, dtype)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder, revision = resolve_weights(weights)
    torch_dtype = DTYPES[dtype]
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch_dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch_dtype)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=torch_dtype)
        tokenizer = load_tokenizer(folder, subfolder="tokenizer")
    except OSError as exc:
        raise BenchError(_missing_weights_message(weights, str(exc).splitlines()[0])) from None
    scheduler_config = dict(SD_SCHEDULER)
    sched_file = folder / "scheduler" / "scheduler_config.json"
    if sched_file.exists():
        cfg = json.loads(sched_file.read_text())
        for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type"):
            if k in cfg:
                scheduler_config[k] = cfg[k]
    for m in (unet, vae, text_encoder):
        m.to(device).eval().requires_grad_(False)
    resolution = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    return Components(unet, vae, text_encoder, tokenizer, scheduler_config, model_id=weights,
                      revision=revision, random_weights=False, resolution=resolution,
                      device=torch.device(device), dtype=torch_dtype)


def load_from_spec(spec) -> Components:
    """Components for a :class:`bench.types.LoadSpec`."""
    return load_components(spec.weights, spec.preset, spec.device, spec.dtype)
