"""Decoupled + iterative EZIGen sampling (docs/protocols.md section 1, "Generation").

One batch of requests, one CPU generator per request (``request.seed``); every noise draw
(initial latents, DDPM step noise, each re-noise) comes from that request's generator in a
fixed order, so an image does not depend on its batch. Samples whose loop converged leave the
batch, so they stop costing UNet calls while the others go on.

Schedule (defaults): DDPM, 50 "leading" steps (t = 981 ... 1), guidance 7.5.

- Pass 0: layout generation (text only, negative prompt ``dark, blur, defoucus, lack of content,
  dizzy.`` as released, typo included; ``defocus`` under protocol=paper) for the first 60% of the steps, then appearance transfer (adapter on) for the last
  40% (``split_ratio``), one continuous trajectory. ``schedule="allstep"``: adapter on for
  every step.
- Loops (``iterative``): decode, VAE re-encode (``vae_latent``: a posterior sample as released,
  or the mean), re-noise and denoise the last 40% of the steps with the adapter on (empty
  negative prompt). ``renoise="split"`` (release): noise is added at t = split_ratio x 1000
  (400) while denoising resumes at the step where the last 40% begins (t=381);
  ``renoise="resume"`` (paper): both at t=381.
- Split steps at ratios other than 0.4 (``split_steps``): the release's integer rules
  (``truncate``: adapter on at floor((1 - r) x steps), loops resume at int(steps - r x steps)) or
  ``round`` (protocol=paper); both give 30 of 50 at 0.4 (docs/protocols.md section 1b).
- Stop rule: CLIP ViT-B/32 cosine between the previous and current image >= 0.99, at least 3
  and at most ``max_loops`` loops (9 as released: its loop condition; 10 in the paper text).
  ``fixed_loops=N`` runs exactly N loops and ignores the similarity (the release's
  ``num_interations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from bench.types import GenRequest
from methods.common import StableDiffusionParts, randn_per_request, request_generators
from methods.ezigen.adapter import EZIGenAdapter, SubjectTokens, adapter_kwargs
from methods.ezigen.reference import ReferenceEncoder
from methods.ezigen.protocol import PAPER_NEGATIVE_PROMPT as LAYOUT_NEGATIVE_PROMPT
from methods.ezigen.similarity import ImageSimilarity


@dataclass(frozen=True)
class SamplerConfig:
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    split_ratio: float = 0.4              # fraction of the steps with the adapter on
    schedule: str = "decoupled"           # "decoupled" | "allstep"
    iterative: bool = True
    min_loops: int = 3
    max_loops: int = 10                   # 9: the reference code's loop condition
    similarity_threshold: float = 0.99
    negative_prompt: str = LAYOUT_NEGATIVE_PROMPT
    renoise: str = "resume"               # "split": noise at split_ratio x 1000 (release); "resume"
    vae_latent: str = "mean"              # loop re-encode: "sample" (release) or "mean"
    fixed_loops: int = 0                  # N > 0: exactly N loops, similarity ignored
    split_steps: str = "round"            # "truncate": the release's integer rule (see layout_steps)

    def __post_init__(self):
        if self.schedule not in ("decoupled", "allstep"):
            raise ValueError(f"schedule must be 'decoupled' or 'allstep', not {self.schedule!r}")
        if not 0 < self.split_ratio <= 1:
            raise ValueError(f"split_ratio must be in (0, 1], not {self.split_ratio}")
        if not 0 <= self.min_loops <= self.max_loops:
            raise ValueError(f"need 0 <= min_loops <= max_loops, got {self.min_loops}, {self.max_loops}")
        if self.renoise not in ("split", "resume") or self.vae_latent not in ("sample", "mean"):
            raise ValueError(f"renoise must be split|resume and vae_latent sample|mean, not "
                             f"{self.renoise!r}, {self.vae_latent!r}")
        if self.split_steps not in ("truncate", "round"):
            raise ValueError(f"split_steps must be 'truncate' or 'round', not {self.split_steps!r}")
        if self.fixed_loops < 0:
            raise ValueError(f"loops must be >= 0 (0: the similarity stop rule), not {self.fixed_loops}")

    def renoise_timestep(self, resume: torch.Tensor) -> torch.Tensor:
        """The timestep the loops add noise at (the release: split_ratio x 1000, e.g. 400, made a
        float32 tensor and truncated by ``.long()`` as its ``add_noise_to_image`` does)."""
        if self.renoise == "split":
            return torch.tensor(self.split_ratio * 1000).long()
        return resume

    def finished(self, loops: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
        """Which samples stop after their current loop count."""
        if self.fixed_loops:
            return loops >= self.fixed_loops
        return (loops >= self.max_loops) | ((similarity >= self.similarity_threshold) & (loops >= self.min_loops))

    @property
    def layout_steps(self) -> int:
        """Steps of the first pass before the adapter is switched on (30 of 50 by default).

        ``split_steps="truncate"`` (release): the release switches the adapter on at step i
        (0-based) when ``(1 - split_ratio) * steps < i + 1`` (``skip_adapter_ratio * infer_steps <
        inf_timestep + 1`` in its attention blocks), i.e. at floor((1 - r) * steps): 0.33 -> 33,
        0.45 -> 27. ``"round"``: round((1 - r) * steps) (34, 28). Both give 30 at 0.4."""
        steps, r = self.num_inference_steps, self.split_ratio
        if self.split_steps == "truncate":
            return next(i for i in range(steps + 1) if (1 - r) * steps < i + 1)
        return round(steps * (1 - r))

    @property
    def resume_step(self) -> int:
        """Index of the step where every loop (and every edit) resumes denoising (30 of 50: t=381).

        ``"truncate"`` (release): ``int(steps - split_ratio * steps)`` (its ``skipped_steps``);
        ``"round"``: the same as :attr:`layout_steps`."""
        steps, r = self.num_inference_steps, self.split_ratio
        if self.split_steps == "truncate":
            return int(steps - r * steps)
        return self.layout_steps

    @property
    def inversion_steps(self) -> int:
        """Inversion steps of an edit (20 of 50). ``"truncate"`` (release): its inversion loop
        breaks at the first step i with ``split_ratio * steps <= i``; for a few ratios (e.g. 0.28
        at 50 steps) that is one more than the denoising steps, as in the release."""
        steps, r = self.num_inference_steps, self.split_ratio
        if self.split_steps == "truncate":
            return next((i for i in range(steps) if r * steps <= i), steps)
        return steps - self.resume_step


class EZIGenSampler:
    def __init__(self, parts: StableDiffusionParts, adapter: EZIGenAdapter, reference: ReferenceEncoder,
                 similarity: ImageSimilarity | None, config: SamplerConfig):
        self.sd, self.adapter, self.reference = parts, adapter, reference
        self.similarity, self.config = similarity, config
        if config.iterative and similarity is None and not config.fixed_loops:
            raise ValueError("the iterative sampler needs an ImageSimilarity for its stop rule")

    # -- helpers ---------------------------------------------------------------------------
    def _guided_tokens(self, requests: Sequence[GenRequest], t) -> SubjectTokens:
        """Subject tokens for a guided call (both CFG halves); fixed-t features come from the cache."""
        features = self.reference.features(requests, timestep=int(t) if self.reference.adaptive else None)
        return self.adapter.tokens(features).for_guidance()

    def _denoise(self, scheduler, latents, timesteps, adapter_from: int, cond, uncond,
                 requests, generators, calls: torch.Tensor, fixed_tokens: SubjectTokens | None) -> torch.Tensor:
        """Guided DDPM steps over ``timesteps``; the adapter is on from step ``adapter_from`` with
        ``fixed_tokens`` (guidance-expanded), or with tokens re-encoded every step (adaptive)."""
        for i, t in enumerate(timesteps):
            tokens = None
            if i >= adapter_from:
                if self.reference.adaptive:
                    tokens = self._guided_tokens(requests, t)
                    calls += torch.tensor([len(r.subject_images) for r in requests])
                else:
                    tokens = fixed_tokens
            noise = self.sd.guided_noise(latents, t, cond, uncond, self.config.guidance_scale, **adapter_kwargs(tokens))
            calls += 2
            latents = scheduler.step(noise, t, latents, generator=list(generators)).prev_sample
        return latents

    # -- the method ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, requests: Sequence[GenRequest]) -> tuple[torch.Tensor, list[dict]]:
        """Images [B, 3, H, W] in [-1, 1] and per-image facts (loops, final similarity, UNet calls)."""
        sd, cfg, n = self.sd, self.config, len(requests)
        generators = request_generators([r.seed for r in requests])
        cond = sd.encode_text([r.prompt for r in requests])
        layout_uncond = sd.encode_text([cfg.negative_prompt] * n)
        loop_uncond = sd.encode_text([""] * n)
        scheduler = sd.components.make_scheduler()
        scheduler.set_timesteps(cfg.num_inference_steps)
        timesteps = scheduler.timesteps
        split = cfg.layout_steps if cfg.schedule == "decoupled" else 0
        cached = [self.reference.is_cached(r) for r in requests]
        calls = torch.zeros(n, dtype=torch.long)
        tokens = None                            # fixed-timestep subject tokens, built once
        if not self.reference.adaptive:          # the one reference pass each image relies on
            calls += torch.tensor([len(r.subject_images) for r in requests])
            tokens = self.adapter.tokens(self.reference.features(requests))

        # Pass 0: layout (text only) then appearance transfer, one trajectory.
        latents = sd.initial_latents(generators) * scheduler.init_noise_sigma
        latents = self._denoise(scheduler, latents, timesteps, split, cond, layout_uncond,
                                requests, generators, calls, None if tokens is None else tokens.for_guidance())
        images = sd.decode(latents)
        loops = torch.zeros(n, dtype=torch.long)
        similarity = torch.full((n,), float("nan"))

        # Iterative appearance transfer: re-noise to the resume step, denoise with the adapter.
        if cfg.iterative:
            resume = timesteps[cfg.resume_step]             # where denoising resumes (t=381)
            noise_at = cfg.renoise_timestep(resume)         # t=400 as released, or 381
            embeddings = self.similarity.embed(images) if self.similarity is not None else None
            active = list(range(n))
            while active:
                rows = torch.tensor(active)
                sub = [requests[i] for i in active]
                gens = [generators[i] for i in active]
                clean = sd.encode(images[rows], gens if cfg.vae_latent == "sample" else None)
                noise = randn_per_request(gens, sd.latent_shape, sd.device, sd.dtype)
                latents = scheduler.add_noise(clean, noise, noise_at.expand(len(active)))
                sub_calls = calls[rows].clone()
                latents = self._denoise(scheduler, latents, timesteps[cfg.resume_step:], 0, cond[rows],
                                        loop_uncond[rows], sub, gens, sub_calls,
                                        None if tokens is None else tokens.select(rows).for_guidance())
                calls[rows] = sub_calls
                new_images = sd.decode(latents)
                if embeddings is not None:
                    new_embeddings = self.similarity.embed(new_images)
                    similarity[rows] = ImageSimilarity.cosine(embeddings[rows], new_embeddings).cpu()
                    embeddings[rows] = new_embeddings
                images[rows] = new_images
                loops[rows] += 1
                done = cfg.finished(loops[rows], similarity[rows])
                active = [i for i, d in zip(active, done.tolist()) if not d]

        facts = [{"loops": int(loops[i]),
                  "final_similarity": None if torch.isnan(similarity[i]) else round(float(similarity[i]), 6),
                  "unet_calls": int(calls[i]), "reference_cached": cached[i],
                  "subject_images": len(requests[i].subject_images)} for i in range(n)]
        return images, facts
