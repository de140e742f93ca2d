"""Stable Diffusion building blocks shared by the method adapters.

Everything that is computed once is cached here: text embeddings per prompt, loaded subject
images per (file, size). Randomness is per request: :func:`request_generators` gives one CPU
generator per request seeded from the request alone, and every noise tensor is drawn from it,
so an image does not depend on its batch or its position in the batch.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from bench.images import load_rgb, open_image, to_rgb
from bench.limits import clip_text
from bench.models import Components


def request_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per request (CPU so the same seed gives the same noise on any device)."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def randn_per_request(generators: Sequence[torch.Generator], shape: tuple[int, ...],
                      device, dtype) -> torch.Tensor:
    """Stack one standard-normal draw of ``shape`` per generator."""
    draws = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(draws).to(device=device, dtype=dtype)


@lru_cache(maxsize=512)
def _load_rgb(path: str, size: int, mtime: float) -> np.ndarray:
    # bench.images.load_rgb: full decode, EXIF orientation, alpha on white, 16-bit scaled.
    im = load_rgb(path).resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8).copy()


def load_image_tensor(path: Path, size: int) -> torch.Tensor:
    """An image file as a [3, size, size] float tensor in [-1, 1] (cached per file and size)."""
    path = Path(path)
    arr = _load_rgb(str(path), size, path.stat().st_mtime)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1.0)


def load_mask_tensor(path: Path, size: int) -> torch.Tensor:
    """A mask file (white = 1) as a [1, size, size] float tensor in {0, 1}."""
    im = to_rgb(open_image(path)).convert("L").resize((size, size), Image.NEAREST)
    return torch.from_numpy((np.asarray(im) > 127).astype(np.float32))[None]


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> PIL images (round to nearest uint8)."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


def share_time_embedding(unet) -> None:
    """Compute a UNet call's timestep embedding once when every sample shares the timestep.

    Patches this UNet instance only (apply it again to a deep copy: the patch of the original
    would otherwise keep calling the original's embedding layers).
    """
    if getattr(unet, "_bench_shared_time_embed", None) == id(unet):
        return
    original = type(unet).get_time_embed.__get__(unet)

    def get_time_embed(sample, timestep):
        emb = original(sample=sample, timestep=timestep)
        if emb.shape[0] > 1 and bool((emb == emb[:1]).all()):
            return emb[:1]
        return emb

    unet.get_time_embed = get_time_embed
    unet._bench_shared_time_embed = id(unet)   # an id, so a deep copy is seen as unpatched


def make_batch_invariant(components: Components) -> None:
    """Make an image independent of the batch it is computed in (same request, same bytes).

    Three sources of batch dependence were measured on CPU (max abs difference ~1e-6 between a
    sample computed alone and inside a batch of 4, enough to flip a pixel after 50 steps):
    - the timestep embedding: small-M matrix products take another kernel at M=1 than at M=B.
      All samples of one UNet call share the timestep, so the embedding is computed once and
      broadcast (the resnets add it with broadcasting);
    - oneDNN convolutions pick a batch-dependent algorithm on CPU: disabled on CPU;
    - the VAE's attention block: encoded/decoded one sample at a time (diffusers' slicing).
    On CUDA the convolution algorithm may still depend on the batch (docs/running-and-resuming.md, "Determinism: what holds").
    """
    share_time_embedding(components.unet)
    components.vae.enable_slicing()
    if components.device.type == "cpu":
        torch.backends.mkldnn.enabled = False


class StableDiffusionParts:
    """Text encoding, VAE encode/decode and guided UNet calls on loaded :class:`Components`."""

    def __init__(self, components: Components, resolution: int | None = None, batch_invariant: bool = True):
        self.components = components
        if batch_invariant:
            make_batch_invariant(components)
        self.resolution = resolution or components.resolution
        factor = components.vae_scale_factor
        if self.resolution % factor:
            raise ValueError(f"resolution {self.resolution} is not a multiple of the VAE factor {factor}")
        self.latent_shape = (components.unet.config.in_channels, self.resolution // factor,
                             self.resolution // factor)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.unet_calls = 0      # UNet forward passes (a guided call on B samples counts B x 2)

    @property
    def device(self):
        return self.components.device

    @property
    def dtype(self):
        return self.components.dtype

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """[B, 77, D] text embeddings, each distinct prompt encoded once for the object's life."""
        missing = sorted({t for t in texts if t not in self._text_cache})
        if missing:
            tokenizer = self.components.tokenizer
            tokens = tokenizer([clip_text(t) for t in missing], padding="max_length", max_length=tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
            hidden = self.components.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)
            for text, embedding in zip(missing, hidden):
                self._text_cache[text] = embedding
        return torch.stack([self._text_cache[t] for t in texts])

    def initial_latents(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        return randn_per_request(generators, self.latent_shape, self.device, self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1] (float32)."""
        vae = self.components.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0].float()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents.

        Without ``generators``: the posterior mean (deterministic). With one generator per image:
        a posterior sample ``mean + std * eps`` (the reference code's ``latent_dist.sample()``),
        ``eps`` drawn on the CPU from that image's generator so it does not depend on the batch.
        """
        vae = self.components.vae
        posterior = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        latents = posterior.mean
        if generators is not None:
            if len(generators) != latents.shape[0]:
                raise ValueError("encode needs one generator per image to sample the posterior")
            eps = randn_per_request(generators, tuple(latents.shape[1:]), latents.device, latents.dtype)
            latents = latents + posterior.std * eps
        return (latents * vae.config.scaling_factor).to(self.dtype)

    def load_images(self, paths: Sequence[Path]) -> torch.Tensor:
        return torch.stack([load_image_tensor(p, self.resolution) for p in paths]).to(self.device)

    @torch.no_grad()
    def noise(self, latents: torch.Tensor, t, cond: torch.Tensor, **unet_kwargs) -> torch.Tensor:
        """Unguided noise prediction (guidance 1): one UNet call over the batch."""
        self.unet_calls += latents.shape[0]
        timestep = torch.as_tensor(t, device=self.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(latents.shape[0])
        return self.components.unet(latents, timestep, encoder_hidden_states=cond, return_dict=False, **unet_kwargs)[0]

    @torch.no_grad()
    def guided_noise(self, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor,
                     guidance: float, **unet_kwargs) -> torch.Tensor:
        """Classifier-free guided noise prediction: one UNet call over [uncond; cond]."""
        n = latents.shape[0]
        self.unet_calls += 2 * n
        model_in = torch.cat([latents, latents])
        timestep = torch.as_tensor(t, device=self.device).expand(2 * n) if torch.as_tensor(t).ndim == 0 else torch.cat([t, t])
        noise = self.components.unet(model_in, timestep, encoder_hidden_states=torch.cat([uncond, cond]),
                            return_dict=False, **unet_kwargs)[0]
        noise_uncond, noise_text = noise.chunk(2)
        return noise_uncond + guidance * (noise_text - noise_uncond)
