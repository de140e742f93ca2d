"""IP-Adapter (Ye et al. 2023) on Stable Diffusion 1.5, through diffusers' ``load_ip_adapter``
(docs/architecture.md: methods; registered as ``ip-adapter-sd15`` and ``ip-adapter-plus-sd15``).

Its own base model: SD 1.5 (``stable-diffusion-v1-5/stable-diffusion-v1-5``, the current home of
``runwayml/stable-diffusion-v1-5``); there are no official SD 2.1 IP-Adapter weights. Adapter
weights: ``h94/IP-Adapter``, ``models/ip-adapter_sd15.bin`` (CLIP image embedding -> 4 tokens) or
``models/ip-adapter-plus_sd15.bin`` (penultimate CLIP patch features -> 16 tokens through a
resampler), image encoder ``models/image_encoder`` (OpenCLIP ViT-H/14).

Defaults and their public sources (tencent-ailab/IP-Adapter):
- ``scale=0.5``: README "Best Practice": for multimodal (image + text) prompts "setting
  scale=0.5 can get good results"; DreamBench prompts are multimodal.
- ``negative_prompt``: the default of ``IPAdapter.generate`` in ``ip_adapter/ip_adapter.py``.
- ``guidance_scale=7.5``: the default of ``IPAdapter.generate``.
- 50 DDIM steps, DDIM with SD's betas, ``clip_sample=False, set_alpha_to_one=False,
  steps_offset=1``: the SD 1.5 demo notebooks (``ip_adapter_demo.ipynb``, ``ip_adapter-plus_demo.ipynb``);
  ``IPAdapter.generate`` itself defaults to 30 steps.
The prompt is the suite's prompt (class noun, no identifier); the subject images go through the
image encoder (several subject images: diffusers' ``num_images`` axis, their tokens side by side).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Sequence

import torch
from PIL import Image

from bench import BenchError
from bench.limits import reason
from bench.files import file_sha256
from bench.images import load_rgb
from bench.models import DTYPES, load_components, resolve_weights
from bench.types import GenRequest, LoadSpec
from methods.common import StableDiffusionParts, randn_per_request, request_generators
from methods.tiny_baselines import IP_ADAPTER_FILES, tiny_ip_adapter_folder

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
IP_ADAPTER_REPO = "h94/IP-Adapter"
IP_NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"
DDIM_CONFIG = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "True")


def _fetch_hint(weight_name: str) -> str:
    return (f"`hf download {IP_ADAPTER_REPO} models/{weight_name} --include 'models/image_encoder/*'` "
            f"(then HF_HUB_OFFLINE=1 works), or pass --adapter /path/to/a/clone "
            f"of {IP_ADAPTER_REPO} (with models/{weight_name} and models/image_encoder/)")


def resolve_ip_adapter(source: str | None, weight_name: str) -> tuple[Path, str]:
    """A folder laid out as h94/IP-Adapter holding ``models/<weight_name>`` and the image
    encoder, and its revision (hub commit, or "local")."""
    if source is not None and Path(source).expanduser().exists():
        folder, revision = Path(source).expanduser(), "local"
    else:
        repo = source or IP_ADAPTER_REPO
        try:
            from huggingface_hub import snapshot_download
            folder = Path(snapshot_download(repo, allow_patterns=[f"models/{weight_name}", "models/image_encoder/*"],
                                            local_files_only=_offline()))
        except Exception as exc:  # not cached, offline, gated, network down ...
            raise BenchError(f"IP-Adapter weights {repo}: models/{weight_name} are not available "
                             f"({type(exc).__name__}). Fetch them once with {_fetch_hint(weight_name)}") from None
        revision = folder.name
    missing = [p for p in (f"models/{weight_name}", "models/image_encoder/config.json") if not (folder / p).exists()]
    if missing:
        raise BenchError(f"IP-Adapter folder {folder} lacks {', '.join(missing)}. Fetch them with "
                         f"{_fetch_hint(weight_name)}")
    return folder, revision


#: download sizes (bench doctor): the adapter file (44.6 MB / 98 MB) plus the ViT-H image encoder (2.53 GB)
IP_ADAPTER_BYTES = {"sd15": int(2.57e9), "plus": int(2.63e9)}


class IPAdapterMethod:
    tasks = frozenset({"generate"})
    #: the base model the released weights were trained for (used when --weights is not given)
    default_weights = SD15

    @classmethod
    def requirements(cls, spec: LoadSpec, variant: str = "sd15", **params) -> list:
        """What a run needs on disk (bench/needs.py): SD 1.5 and the IP-Adapter files."""
        from dataclasses import replace

        from bench import needs

        if spec.preset is not None:
            return []
        weights = spec.weights if spec.weights != LoadSpec.weights else cls.default_weights
        weight_name = IP_ADAPTER_FILES.get(variant, IP_ADAPTER_FILES["sd15"])
        files = (f"models/{weight_name}", "models/image_encoder/config.json",
                 "models/image_encoder/model.safetensors|models/image_encoder/pytorch_model.bin")
        get = f'hf download {IP_ADAPTER_REPO} --include "models/{weight_name}" "models/image_encoder/*"'
        return needs.base_model(replace(spec, weights=weights)) + [
            needs.hf_weights(f"IP-Adapter {weight_name} and its image encoder", spec.adapter or IP_ADAPTER_REPO,
                             files, IP_ADAPTER_BYTES.get(variant), get)]

    def __init__(self, spec: LoadSpec, name: str = "ip-adapter-sd15", variant: Literal["sd15", "plus"] = "sd15",
                 scale: float = 0.5, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 negative_prompt: str = IP_NEGATIVE_PROMPT):
        from diffusers import DDIMScheduler, StableDiffusionPipeline
        from transformers import CLIPVisionModelWithProjection

        if variant not in IP_ADAPTER_FILES:
            raise BenchError(f"method {name!r}: variant={variant!r} is not one of {', '.join(IP_ADAPTER_FILES)}")
        self.name, self.spec, self.variant = name, spec, variant
        self.scale = float(scale)
        self.num_inference_steps = int(spec.num_inference_steps or num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = str(negative_prompt)
        self.weight_name = IP_ADAPTER_FILES[variant]

        weights = spec.weights if spec.weights != LoadSpec.weights else self.default_weights
        random_adapter = spec.preset is not None and spec.adapter is None
        problems = []                  # name every missing piece (base and adapter) in one message
        if spec.preset is None:
            try:
                resolve_weights(weights)
            except BenchError as exc:
                problems.append(str(exc))
        if not random_adapter:
            try:
                folder, revision = resolve_ip_adapter(spec.adapter, self.weight_name)
            except BenchError as exc:
                problems.append(str(exc))
        if problems:
            raise BenchError(" -- and: ".join(problems))
        components = load_components(weights, spec.preset, spec.device, spec.dtype)
        self.components = components
        if random_adapter:
            folder, revision = tiny_ip_adapter_folder(variant, components.unet), "random"
            self.adapter_source = "random (built in code)"
        else:
            self.adapter_source = str(spec.adapter or IP_ADAPTER_REPO)
        self.adapter_revision = revision
        self.adapter_sha256 = file_sha256(folder / "models" / self.weight_name)[:16]
        try:
            encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "models" / "image_encoder",
                                                                    dtype=DTYPES[spec.dtype])
        except OSError as exc:
            raise BenchError(f"IP-Adapter image encoder in {folder / 'models' / 'image_encoder'} cannot be loaded "
                             f"({str(exc).splitlines()[0]}); fetch it with {_fetch_hint(self.weight_name)}") from None
        encoder.to(components.device).eval().requires_grad_(False)
        self.image_encoder_config = {k: getattr(encoder.config, k)
                                     for k in ("hidden_size", "projection_dim", "image_size", "patch_size")}

        self.sd = StableDiffusionParts(components, spec.resolution)   # text cache + batch invariance
        sched = components.scheduler_config
        scheduler = DDIMScheduler(num_train_timesteps=sched["num_train_timesteps"], beta_start=sched["beta_start"],
                                  beta_end=sched["beta_end"], beta_schedule=sched["beta_schedule"],
                                  prediction_type=sched["prediction_type"], **DDIM_CONFIG)
        self.pipe = StableDiffusionPipeline(
            vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
            unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            image_encoder=encoder, requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        try:
            self.pipe.load_ip_adapter(str(folder), subfolder="models", weight_name=self.weight_name,
                                      local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            detail = f"{type(exc).__name__}: {reason(exc)}"
            raise BenchError(f"IP-Adapter weights {folder / 'models' / self.weight_name} do not fit base model "
                             f"{components.model_id} ({detail})") from None
        self.pipe.set_ip_adapter_scale(self.scale)
        self._embeds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def describe(self) -> dict:
        model = dict(self.components.describe(), base_model=self.default_weights,
                     image_encoder=f"{self.adapter_source}:models/image_encoder",
                     image_encoder_config=self.image_encoder_config)
        return {"params": {"variant": self.variant, "scale": self.scale,
                           "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                           "negative_prompt": self.negative_prompt, "resolution": self.sd.resolution,
                           "scheduler": "DDIM (clip_sample=False, set_alpha_to_one=False, steps_offset=1), eta 0",
                           "image_features": "penultimate CLIP hidden states" if self.variant == "plus"
                           else "CLIP image embedding"},
                "model": model,
                "adapter": {"source": self.adapter_source, "weight_name": f"models/{self.weight_name}",
                            "revision": self.adapter_revision, "sha256": self.adapter_sha256},
                "weights_status": ("random weights, random IP-Adapter" if self.components.random_weights
                                   else "pretrained")}

    @torch.no_grad()
    def _image_embeds(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """(image features, unconditional features) of one subject image, cached per file."""
        path = Path(path)
        key = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)
        if key not in self._embeds:
            pos, neg = self.pipe.encode_image(load_rgb(path), self.components.device, 1,
                                              output_hidden_states=self.variant == "plus")
            self._embeds[key] = (pos[0], neg[0])
        return self._embeds[key]

    @torch.no_grad()
    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]:
        """One image per request, in order; requests are grouped by their number of subject
        images (no padding), each group one pipeline call."""
        out: list[Image.Image | None] = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            if r.task != "generate":
                raise BenchError(f"{self.name} only generates; request {r.key} is an edit")
            groups.setdefault(len(r.subject_images), []).append(i)
        for index in groups.values():
            batch = [requests[i] for i in index]
            for i, image in zip(index, self._generate_group(batch)):
                out[i] = image
        return out

    def _generate_group(self, batch: Sequence[GenRequest]) -> list[Image.Image]:
        """StableDiffusionPipeline.__call__'s computation with IP-Adapter image embeddings, one
        subject per request: the pipeline's own ``__call__`` repeats one set of image embeddings
        over the whole batch, so the loop is written out here (a test checks it against
        ``__call__`` at batch 1)."""
        sd = self.sd
        generators = request_generators([r.seed for r in batch])
        embeds = [[self._image_embeds(p) for p in r.subject_images] for r in batch]
        pos = torch.stack([torch.stack([e[0] for e in per]) for per in embeds]).to(sd.dtype)
        neg = torch.stack([torch.stack([e[1] for e in per]) for per in embeds]).to(sd.dtype)
        guided = self.guidance_scale > 1
        cond = sd.encode_text([r.prompt for r in batch])
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(self.num_inference_steps, device=sd.device)
        latents = randn_per_request(generators, sd.latent_shape, sd.device, sd.dtype) * scheduler.init_noise_sigma
        if guided:                                 # built once, not at every step
            uncond = sd.encode_text([self.negative_prompt] * len(batch))
            guided_embeds = {"image_embeds": [torch.cat([neg, pos])]}
        calls_before = sd.unet_calls
        for t in scheduler.timesteps:
            if guided:
                noise = sd.guided_noise(latents, t, cond, uncond, self.guidance_scale, added_cond_kwargs=guided_embeds)
            else:
                noise = sd.noise(latents, t, cond, added_cond_kwargs={"image_embeds": [pos]})
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        vae = self.pipe.vae
        decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        images = self.pipe.image_processor.postprocess(decoded, output_type="pil", do_denormalize=[True] * len(batch))
        calls = (sd.unet_calls - calls_before) // len(batch)
        for image in images:
            image.info["bench"] = {"unet_calls": calls}
        return images
