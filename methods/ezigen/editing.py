"""EZIGen subject-driven editing (task "edit"; docs/protocols.md section 1, "Editing (DreamEdit)").

The source image is loop 0. Each loop:

1. invert the current image with DPM-Solver++ multistep inversion for the first 40% of a
   50-step schedule (20 steps, up to t=381), empty prompt, guidance 1, adapter off;
2. denoise from there with DPM-Solver++ (adapter on, guidance 2, the target prompt, empty
   negative prompt);
3. after every denoising step blend ``z = z * m + z_src_inv[t] * (1 - m)`` where ``m`` is the
   request's mask (white = edit) at latent size (nearest) and ``z_src_inv[t]`` the first loop's
   inversion trajectory of the source at the level the step landed on. The last step lands on
   the clean level and blends with the clean source latent (the reference code blends each
   step with the trajectory entry one level off).

Outside the mask the latents therefore equal the source trajectory exactly. Loops repeat under
the generation stop rule (CLIP cosine >= 0.99, 3..10 loops) when ``iterative``; otherwise one
loop. DPM-Solver++ is deterministic: editing draws no noise. With the "adaptive" reference
timestep, editing uses the reference features at the top level of the inversion (t=381).
"""

from __future__ import annotations

from typing import Sequence

import torch

from bench import BenchError
from bench.types import GenRequest
from methods.common import StableDiffusionParts, load_mask_tensor
from methods.ezigen.adapter import EZIGenAdapter, adapter_kwargs
from methods.ezigen.reference import ReferenceEncoder
from methods.ezigen.sampler import SamplerConfig
from methods.ezigen.similarity import ImageSimilarity


class EZIGenEditor:
    def __init__(self, parts: StableDiffusionParts, adapter: EZIGenAdapter, reference: ReferenceEncoder,
                 similarity: ImageSimilarity | None, config: SamplerConfig, guidance_scale: float = 2.0):
        self.sd, self.adapter, self.reference = parts, adapter, reference
        self.similarity, self.cfg, self.guidance_scale = similarity, config, guidance_scale
        self.inversion_steps = config.num_inference_steps - config.layout_steps     # 20 of 50

    def _scheduler(self, inverse: bool):
        """A fresh DPM-Solver++ (multistep state is per trajectory) on the protocol's 50 steps."""
        from diffusers import DPMSolverMultistepInverseScheduler, DPMSolverMultistepScheduler
        cls = DPMSolverMultistepInverseScheduler if inverse else DPMSolverMultistepScheduler
        scheduler = cls.from_config(self.sd.c.scheduler_config, algorithm_type="dpmsolver++")
        scheduler.set_timesteps(self.cfg.num_inference_steps)
        return scheduler

    def invert(self, clean: torch.Tensor, empty: torch.Tensor) -> dict[int, torch.Tensor]:
        """DPM-Solver++ inversion trajectory: {timestep level: latents}, level 0 = the clean latent."""
        inverse = self._scheduler(inverse=True)
        trajectory = {0: clean}
        latents = clean
        for k in range(self.inversion_steps):
            t = inverse.timesteps[k]
            latents = inverse.step(self.sd.noise(latents, t, empty), t, latents).prev_sample
            trajectory[int(inverse.timesteps[k + 1])] = latents
        return trajectory

    def denoise(self, start: torch.Tensor, source_trajectory: dict[int, torch.Tensor], mask: torch.Tensor,
                cond, uncond, tokens, trace: list | None = None) -> torch.Tensor:
        """Denoise the last steps from ``start`` with the adapter, blending outside the mask each step."""
        forward = self._scheduler(inverse=False)
        first = self.cfg.layout_steps
        forward.set_begin_index(first)
        timesteps = forward.timesteps
        latents = start
        for i in range(first, len(timesteps)):
            t = timesteps[i]
            noise = self.sd.guided_noise(latents, t, cond, uncond, self.guidance_scale, **adapter_kwargs(tokens))
            latents = forward.step(noise, t, latents).prev_sample
            level = int(timesteps[i + 1]) if i + 1 < len(timesteps) else 0
            if level not in source_trajectory:
                raise RuntimeError(f"the inversion trajectory has no latent at t={level}")
            latents = latents * mask + source_trajectory[level] * (1 - mask)
            if trace is not None:
                trace.append((level, latents.clone()))
        return latents

    @torch.no_grad()
    def edit(self, requests: Sequence[GenRequest], trace: dict | None = None) -> tuple[torch.Tensor, list[dict]]:
        """Edited images [B, 3, H, W] in [-1, 1] and per-image facts.

        ``trace`` (tests): filled with the source trajectory, the latent mask and the per-step
        blended latents of every loop.
        """
        sd, cfg, n = self.sd, self.cfg, len(requests)
        for r in requests:
            if r.mask is None:
                raise BenchError(f"edit request {r.key} has no mask: EZIGen editing needs the region to edit")
        latent_size = sd.latent_shape[-1]
        mask = torch.stack([load_mask_tensor(r.mask, latent_size) for r in requests]).to(sd.device, sd.dtype)
        cond = sd.encode_text([r.prompt for r in requests])
        empty = sd.encode_text([""] * n)
        source = sd.load_images([r.source_image for r in requests])
        clean_source = sd.encode(source)
        source_trajectory = self.invert(clean_source, empty)
        top = max(source_trajectory)                     # t=381 for 50 steps
        # Adaptive reference timestep: editing uses the features at the inversion's top level.
        tokens_all = self.adapter.tokens(self.reference.features(requests, timestep=top))
        calls = torch.full((n,), self.inversion_steps, dtype=torch.long)
        calls += torch.tensor([len(r.subject_images) for r in requests])
        if trace is not None:
            trace.update(source_trajectory=source_trajectory, mask=mask, steps=[])

        images = source
        embeddings = self.similarity.embed(images) if (cfg.iterative and self.similarity) else None
        loops = torch.zeros(n, dtype=torch.long)
        similarity = torch.full((n,), float("nan"))
        active = list(range(n))
        while active:
            rows = torch.tensor(active)
            sub_traj = {lvl: z[rows] for lvl, z in source_trajectory.items()}
            if int(loops[rows].max()) == 0:      # loop 1 starts from the source's inversion
                start = source_trajectory[top][rows]
            else:                                # later loops invert the current image
                start = self.invert(sd.encode(images[rows]), empty[rows])[top]
                calls[rows] += self.inversion_steps
            steps: list | None = [] if trace is not None else None
            latents = self.denoise(start, sub_traj, mask[rows], cond[rows], empty[rows],
                                   tokens_all.select(rows).for_guidance(), steps)
            calls[rows] += 2 * (cfg.num_inference_steps - cfg.layout_steps)
            if trace is not None:
                trace["steps"].append((active, steps))
            new_images = sd.decode(latents)
            loops[rows] += 1
            if embeddings is None:          # one pass, no loops: every sample is in this batch
                images = new_images
                break
            new_embeddings = self.similarity.embed(new_images)
            similarity[rows] = ImageSimilarity.cosine(embeddings[rows], new_embeddings).cpu()
            images = images.clone()
            images[rows], embeddings[rows] = new_images, new_embeddings
            done = (loops[rows] >= cfg.max_loops) | (
                (similarity[rows] >= cfg.similarity_threshold) & (loops[rows] >= cfg.min_loops))
            active = [i for i, d in zip(active, done.tolist()) if not d]
        facts = [{"loops": int(loops[i]),
                  "final_similarity": None if torch.isnan(similarity[i]) else round(float(similarity[i]), 6),
                  "unet_calls": int(calls[i]), "task": "edit"} for i in range(n)]
        return images, facts
