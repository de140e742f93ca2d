"""Plain Stable Diffusion, the text-only baseline (docs/architecture.md: methods/sd.py).

Prompted with the suite's prompt (class noun, no identifier); the subject images are ignored.
Same sampler as EZIGen's layout pass: DDPM, 50 "leading" steps, guidance 7.5 (docs/protocols.md
section 1), so the baseline differs from EZIGen only by the subject conditioning.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from bench.models import load_from_spec
from bench.types import GenRequest, LoadSpec
from methods.common import StableDiffusionParts, request_generators, to_pil


class StableDiffusionMethod:
    tasks = frozenset({"generate"})

    @classmethod
    def subject_images_taken(cls, params: dict) -> None:
        """None: no item has too many subject images for a text-only method, which reads none; on a
        several-reference suite (OmniContext) it is the row without any subject."""
        return None

    @classmethod
    def requirements(cls, spec: LoadSpec, **params) -> list:
        """What a run needs on disk (bench/needs.py): the base model."""
        from bench.needs import base_model
        return base_model(spec)

    def __init__(self, spec: LoadSpec, name: str = "sd", num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, negative_prompt: str = ""):
        self.name = name
        self.spec = spec
        self.components = load_from_spec(spec)
        self.sd = StableDiffusionParts(self.components, spec.resolution)
        self.num_inference_steps = spec.num_inference_steps or num_inference_steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt

    def describe(self) -> dict:
        return {"params": {"num_inference_steps": self.num_inference_steps,
                           "guidance_scale": self.guidance_scale, "negative_prompt": self.negative_prompt,
                           "resolution": self.sd.resolution, "scheduler": "DDPM leading"},
                "model": self.components.describe(), "adapter": None,
                "weights_status": "random weights" if self.components.random_weights else "pretrained"}

    @torch.no_grad()
    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]:
        sd = self.sd
        generators = request_generators([r.seed for r in requests])
        cond = sd.encode_text([r.prompt for r in requests])
        uncond = sd.encode_text([self.negative_prompt] * len(requests))
        scheduler = self.components.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        latents = sd.initial_latents(generators) * scheduler.init_noise_sigma
        calls_before = sd.unet_calls
        for t in scheduler.timesteps:
            noise = sd.guided_noise(latents, t, cond, uncond, self.guidance_scale)
            latents = scheduler.step(noise, t, latents, generator=generators).prev_sample
        images = to_pil(sd.decode(latents))
        per_image = (sd.unet_calls - calls_before) // len(requests)
        for im in images:
            im.info["bench"] = {"unet_calls": per_image}
        return images
