"""EZIGen subject-driven editing (task "edit"; docs/protocols.md sections 1 "Editing" and 1b).

The source image is loop 0. Each loop:

1. invert the current image with DPM-Solver++ multistep inversion for the first 40% of a
   50-step schedule (20 steps), guidance 1, adapter off. ``inversion_grid``: ``linspace``
   (0, 20, ..., 380, reaching t=400, as released) or ``leading`` (1, 20, ..., reaching t=381);
   ``inversion_text``: the release's "exceptional prompt" (77 ids of 7788 without position
   embeddings) or the empty prompt;
2. denoise the last 20 steps (from t=381) with the adapter on, guidance 2, the target prompt
   and an empty negative prompt. ``edit_denoiser``: ``ddpm`` (the release's stochastic DDPM,
   noise from the request's generator) or ``dpmsolver`` (DPM-Solver++, deterministic);
3. after denoising step i (0-based, of 20) blend ``z = z * m + z_src[k] * (1 - m)`` where
   ``z_src[k]`` is the first loop's inversion latent after k steps. ``edit_blend="release"``:
   k = 20 - i, so the last step blends with the latent after one inversion step, never the
   clean one; ``"aligned"``: k = 19 - i, the level the step landed on (the last step uses the
   clean source latent). ``m`` is the request's mask (white = edit) at latent size,
   ``edit_mask``: bilinear (soft edges, as released) or nearest.

``edit_aspect="source"`` keeps the source's aspect ratio with the short side at the resolution
(long side rounded down to a multiple of the VAE factor); ``"square"`` resizes to a square.
Loops repeat under the generation stop rule when ``iterative``; otherwise one loop. Later loops
re-invert the current image but blend with the first loop's trajectory. With the "adaptive"
reference timestep, editing uses the reference features at the inversion's top level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench import BenchError
from bench.types import GenRequest
from bench.images import load_rgb, open_image, to_rgb
from methods.common import StableDiffusionParts, load_mask_tensor, request_generators, to_pil
from methods.ezigen.adapter import EZIGenAdapter, adapter_kwargs
from methods.ezigen.protocol import exceptional_prompt_embeddings
from methods.ezigen.reference import ReferenceEncoder
from methods.ezigen.sampler import SamplerConfig
from methods.ezigen.similarity import ImageSimilarity


@dataclass(frozen=True)
class EditSettings:
    denoiser: str = "dpmsolver"          # "ddpm" (release) | "dpmsolver"
    inversion_text: str = "empty"        # "exceptional" (release) | "empty"
    inversion_grid: str = "leading"      # "linspace" (release) | "leading"
    blend: str = "aligned"               # "release" | "aligned"
    mask: str = "nearest"                # "bilinear" (release) | "nearest"
    aspect: str = "square"               # "source" (release) | "square"
    latent: str = "mean"                 # VAE encode: "sample" (release) | "mean"

    @classmethod
    def from_protocol(cls, settings: dict) -> "EditSettings":
        return cls(denoiser=settings["edit_denoiser"], inversion_text=settings["inversion_text"],
                   inversion_grid=settings["inversion_grid"], blend=settings["edit_blend"],
                   mask=settings["edit_mask"], aspect=settings["edit_aspect"], latent=settings["vae_latent"])


def source_dimensions(width: int, height: int, short: int, multiple: int) -> tuple[int, int]:
    """(w, h) with the short side ``short`` and the long side scaled (truncated as released),
    rounded down to ``multiple``."""
    if width < height:
        w, h = short, int(height / width * short)
    else:
        w, h = int(width / height * short), short
    return w - w % multiple, h - h % multiple


def load_soft_mask(path: Path, size: tuple[int, int], latent_hw: tuple[int, int], mode: str) -> torch.Tensor:
    """The release's mask: resized with the source, value 255 -> 1, bilinear to latent size.
    ``nearest``: the paper path's binary mask at latent size."""
    if mode == "nearest":
        return load_mask_tensor(path, latent_hw[0]) if latent_hw[0] == latent_hw[1] else \
            (F.interpolate(_binary_mask(path, size)[None], size=latent_hw, mode="nearest")[0])
    return F.interpolate(_binary_mask(path, size)[None], size=latent_hw, mode="bilinear", align_corners=False)[0]


def _binary_mask(path: Path, size: tuple[int, int]) -> torch.Tensor:
    mask = np.asarray(to_rgb(open_image(path)).convert("L").resize(size, Image.BICUBIC))
    return torch.from_numpy((mask == 255).astype(np.float32))[None]


class EZIGenEditor:
    def __init__(self, parts: StableDiffusionParts, adapter: EZIGenAdapter, reference: ReferenceEncoder,
                 similarity: ImageSimilarity | None, config: SamplerConfig, guidance_scale: float = 2.0,
                 settings: EditSettings | None = None):
        self.sd, self.adapter, self.reference = parts, adapter, reference
        self.similarity, self.config, self.guidance_scale = similarity, config, guidance_scale
        self.settings = settings or EditSettings()
        self.inversion_steps = config.inversion_steps     # 20 of 50

    def describe(self) -> str:
        s = self.settings
        denoiser = "DDPM" if s.denoiser == "ddpm" else "DPM-Solver++"
        return f"DPM-Solver++ inversion ({s.inversion_grid}, {s.inversion_text} prompt) + {denoiser}"

    def source_size(self, request: GenRequest) -> tuple[int, int] | None:
        """(w, h) of the edited image, or None for the square resolution (also for generation)."""
        if request.task != "edit" or self.settings.aspect == "square" or request.source_image is None:
            return None
        width, height = open_image(request.source_image).size      # upright (EXIF applied)
        return source_dimensions(width, height, self.sd.resolution, self.sd.components.vae_scale_factor)

    def _scheduler(self, inverse: bool):
        """A fresh scheduler on the protocol's 50 steps (multistep state is per trajectory)."""
        from diffusers import DPMSolverMultistepInverseScheduler, DPMSolverMultistepScheduler
        if inverse:
            scheduler = DPMSolverMultistepInverseScheduler.from_config(
                self.sd.components.scheduler_config, algorithm_type="dpmsolver++",
                timestep_spacing=self.settings.inversion_grid)
        elif self.settings.denoiser == "ddpm":
            scheduler = self.sd.components.make_scheduler()
        else:
            scheduler = DPMSolverMultistepScheduler.from_config(self.sd.components.scheduler_config,
                                                                algorithm_type="dpmsolver++")
        scheduler.set_timesteps(self.config.num_inference_steps)
        return scheduler

    def inversion_text(self, n: int) -> torch.Tensor:
        if self.settings.inversion_text == "exceptional":
            return exceptional_prompt_embeddings(self.sd.components.text_encoder, n).to(self.sd.dtype)
        return self.sd.encode_text([""] * n)

    def invert(self, clean: torch.Tensor, text: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """DPM-Solver++ inversion trajectory: [(timestep level, latents)], entry k after k steps
        (entry 0 is the clean latent at level 0)."""
        inverse = self._scheduler(inverse=True)
        trajectory = [(0, clean)]
        latents = clean
        for k in range(self.inversion_steps):
            t = inverse.timesteps[k]
            latents = inverse.step(self.sd.noise(latents, t, text), t, latents).prev_sample
            trajectory.append((int(inverse.timesteps[k + 1]), latents))
        return trajectory

    def denoise(self, start: torch.Tensor, source_trajectory: list[tuple[int, torch.Tensor]], mask: torch.Tensor,
                cond, uncond, tokens, generators=None, trace: list | None = None) -> torch.Tensor:
        """Denoise the last steps from ``start`` with the adapter, blending outside the mask each step."""
        forward = self._scheduler(inverse=False)
        first = self.config.resume_step
        timesteps = forward.timesteps
        if hasattr(forward, "set_begin_index"):
            forward.set_begin_index(first)
        n = len(timesteps) - first
        inverted = len(source_trajectory) - 1
        if inverted != n and not (self.settings.blend == "release" and inverted > n):
            raise RuntimeError(f"the inversion has {inverted} steps, denoising {n}")
        latents = start
        for i in range(n):
            t = timesteps[first + i]
            noise = self.sd.guided_noise(latents, t, cond, uncond, self.guidance_scale, **adapter_kwargs(tokens))
            step = {"generator": list(generators)} if self.settings.denoiser == "ddpm" else {}
            latents = forward.step(noise, t, latents, **step).prev_sample
            if self.settings.blend == "release":      # the latent after (inverted - i) inversion steps
                level, blend = source_trajectory[inverted - i]
            else:
                level, blend = source_trajectory[n - i - 1]
                landed = int(timesteps[first + i + 1]) if first + i + 1 < len(timesteps) else 0
                if landed != level:
                    raise RuntimeError(f"edit_blend=aligned needs the inversion on the denoising grid: step "
                                       f"lands on t={landed}, the inversion latent is at t={level}")
            latents = latents * mask + blend * (1 - mask)
            if trace is not None:
                trace.append((level, latents.clone()))
        return latents

    def _load_sources(self, requests: Sequence[GenRequest]) -> torch.Tensor:
        size = self.source_size(requests[0])
        if size is None:
            return self.sd.load_images([r.source_image for r in requests])
        tensors = []
        for r in requests:
            image = load_rgb(r.source_image).resize(size, Image.BICUBIC)
            tensors.append(torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1))
        return torch.stack(tensors).float().div(127.5).sub(1.0).to(self.sd.device)

    @torch.no_grad()
    def edit(self, requests: Sequence[GenRequest], trace: dict | None = None,
             iterations: list | None = None) -> tuple[torch.Tensor, list[dict]]:
        """Edited images [B, 3, H, W] in [-1, 1] and per-image facts.

        ``iterations`` (a list): extended with, per request, the PIL output of every loop in order
        (the last is the returned image), for DreamEdit's best-iteration evaluation.

        ``trace`` (tests): filled with the source trajectory, the latent mask and the per-step
        blended latents of every loop.
        """
        sd, cfg, n = self.sd, self.config, len(requests)
        for r in requests:
            if r.mask is None:
                raise BenchError(f"edit request {r.key} has no mask: EZIGen editing needs the region to edit")
        source = self._load_sources(requests)
        factor = sd.components.vae_scale_factor
        latent_hw = (source.shape[-2] // factor, source.shape[-1] // factor)
        pixel_size = (source.shape[-1], source.shape[-2])
        mask = torch.stack([load_soft_mask(r.mask, pixel_size, latent_hw, self.settings.mask)
                            for r in requests]).to(sd.device, sd.dtype)
        generators = request_generators([r.seed for r in requests])
        sample = self.settings.latent == "sample"
        cond = sd.encode_text([r.prompt for r in requests])
        empty = sd.encode_text([""] * n)
        inversion_text = self.inversion_text(n)
        clean_source = sd.encode(source, generators if sample else None)
        source_trajectory = self.invert(clean_source, inversion_text)
        top = source_trajectory[-1][0]                   # t=400 (linspace) or 381 (leading)
        # Adaptive reference timestep: editing uses the features at the inversion's top level.
        tokens_all = self.adapter.tokens(self.reference.features(requests, timestep=top))
        calls = torch.full((n,), self.inversion_steps, dtype=torch.long)
        calls += torch.tensor([len(r.subject_images) for r in requests])
        if trace is not None:
            trace.update(source_trajectory=dict(source_trajectory), trajectory=source_trajectory, mask=mask, steps=[])

        images = source
        loops_on = cfg.iterative
        embeddings = self.similarity.embed(images) if (loops_on and self.similarity) else None
        loops = torch.zeros(n, dtype=torch.long)
        similarity = torch.full((n,), float("nan"))
        active = list(range(n))
        kept = None if iterations is None else [[] for _ in range(n)]
        while active:
            rows = torch.tensor(active)
            gens = [generators[i] for i in active]
            sub_traj = [(lvl, z[rows]) for lvl, z in source_trajectory]
            if int(loops[rows].max()) == 0:      # loop 1 starts from the source's inversion
                start = source_trajectory[-1][1][rows]
            else:                                # later loops invert the current image
                start = self.invert(sd.encode(images[rows], gens if sample else None), inversion_text[rows])[-1][1]
                calls[rows] += self.inversion_steps
            steps: list | None = [] if trace is not None else None
            latents = self.denoise(start, sub_traj, mask[rows], cond[rows], empty[rows],
                                   tokens_all.select(rows).for_guidance(), gens, steps)
            calls[rows] += 2 * (cfg.num_inference_steps - cfg.resume_step)
            if trace is not None:
                trace["steps"].append((active, steps))
            new_images = sd.decode(latents)
            loops[rows] += 1
            if kept is not None:
                for i, image in zip(active, to_pil(new_images)):
                    kept[i].append(image)
            if not loops_on:                # one pass, no loops: every sample is in this batch
                images = new_images
                break
            if embeddings is not None:
                new_embeddings = self.similarity.embed(new_images)
                similarity[rows] = ImageSimilarity.cosine(embeddings[rows], new_embeddings).cpu()
                embeddings[rows] = new_embeddings
            images = images.clone()
            images[rows] = new_images
            done = cfg.finished(loops[rows], similarity[rows])
            active = [i for i, d in zip(active, done.tolist()) if not d]
        if kept is not None:
            iterations.extend(kept)
        facts = [{"loops": int(loops[i]),
                  "final_similarity": None if torch.isnan(similarity[i]) else round(float(similarity[i]), 6),
                  "unet_calls": int(calls[i]), "task": "edit"} for i in range(n)]
        return images, facts
