"""The reference UNet (subject encoder): one UNet forward over the noised subject latent.

docs/protocols.md section 1, "Reference UNet". For each subject image:

- the image as the method hands it over: with ``subject_background="remove"`` (default) the
  method has already composited the segmented subject on white (:mod:`.background`). RGB,
  resized to the generation resolution (512 for SD 2.1; ``resize``: bilinear as released, or
  bicubic), scaled to [-1, 1];
- VAE-encoded and multiplied by the VAE scaling factor (``latent``: a posterior sample as
  released, its eps drawn before the noise from the same seeded generator; or the mean);
- noised with DDPM ``add_noise`` at t=1 (variants: 100/300/500/800, or the main UNet's
  current timestep for "adaptive");
- one forward of the frozen base UNet with the reference text (``prompt_template`` with
  ``{class_noun}`` or ``{}`` filled in: ``a {class_noun}`` under protocol=release, the release's
  command-line subject prompt; ``a photo of a {class_noun}.`` under protocol=paper);
- captured: the output of ``norm1`` of every transformer block, in forward order
  (:func:`capture_norm1`); the UNet output is discarded.

The noise is drawn from a generator seeded from (run seed, image content) under the default
seed policy "run", so features are computed once per subject image per protocol seed and
shared by all images of that seed (policy "request": from each request's own seed).

When the reference UNet is not trained it *is* the main UNet object (no second copy in
memory); the adapter cannot fire in the reference pass because the pass is made without the
adapter's ``cross_attention_kwargs``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from bench.files import file_sha256
from bench.types import GenRequest
from bench.images import load_rgb
from methods.common import StableDiffusionParts, load_image_tensor

from methods.ezigen.protocol import PAPER_REFERENCE_PROMPT as REFERENCE_PROMPT


def reference_text(template: str, class_noun: str) -> str:
    """The reference-pass text: ``{class_noun}`` (or a bare ``{}``) replaced by the noun."""
    return template.replace("{class_noun}", class_noun).replace("{}", class_noun)


def subject_tensor(path: Path, size: int, resize: str = "bicubic") -> torch.Tensor:
    """A subject image as [3, size, size] in [-1, 1]; ``bilinear`` is the reference code's
    torchvision Resize (antialiased on PIL input), ``bicubic`` the project's loader."""
    if resize == "bicubic":
        return load_image_tensor(path, size)
    image = load_rgb(path).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


@contextmanager
def capture_norm1(unet: nn.Module, block_names: Sequence[str]):
    """Record the ``norm1`` output of each named block during the forwards inside the context.

    Yields a dict name -> list of captured tensors (one per forward); hooks are removed on exit.
    """
    modules = dict(unet.named_modules())
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in block_names}
    handles = [modules[name].norm1.register_forward_hook(
        lambda _m, _inp, out, name=name: captured[name].append(out)) for name in block_names]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def noise_seed(*parts: object) -> int:
    """A 63-bit generator seed derived from the given parts."""
    digest = hashlib.sha256("|".join(str(p) for p in ("ezigen-reference",) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ReferenceEncoder:
    """Subject features per (image content, class noun, timestep, seed policy, seed), cached.

    ``forward_passes`` counts reference-UNet forwards (one per subject image computed), so tests
    and records can check that the pass runs once per subject, not per step or loop.
    """

    def __init__(self, parts: StableDiffusionParts, unet: nn.Module, block_names: Sequence[str],
                 timestep: int | str = 1, seed_policy: str = "run", prompt_template: str = REFERENCE_PROMPT,
                 cache_size: int = 64, resize: str = "bicubic", latent: str = "mean"):
        if seed_policy not in ("run", "request"):
            raise ValueError(f"reference seed policy must be 'run' or 'request', not {seed_policy!r}")
        self.parts = parts
        self.unet = unet
        self.block_names = list(block_names)
        self.timestep = timestep
        self.seed_policy = seed_policy
        self.prompt_template = prompt_template
        if resize not in ("bilinear", "bicubic") or latent not in ("sample", "mean"):
            raise ValueError(f"reference resize must be bilinear|bicubic and latent sample|mean, not {resize!r}, {latent!r}")
        self.resize, self.latent = resize, latent
        self.noise_scheduler = parts.components.make_scheduler()
        self._digests: dict[tuple[str, float], str] = {}
        self._paths: dict[tuple, Path] = {}
        # Bounded (least recently used first out): the runner sends requests subject by subject,
        # so a subject's features are not needed again once its batches are done; unbounded,
        # DreamBench x 6 seeds would hold ~4 GB of SD 2.1 features on the GPU.
        self.cache_size = cache_size
        self._latents: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # (clean, noise)
        self._features: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()
        self.forward_passes = 0

    @property
    def adaptive(self) -> bool:
        return self.timestep == "adaptive"

    def _digest(self, path: Path) -> str:
        path = Path(path)
        key = (str(path), path.stat().st_mtime)
        if key not in self._digests:
            self._digests[key] = file_sha256(path)
        return self._digests[key]

    def subject_keys(self, request: GenRequest) -> list[tuple]:
        """One cache key per subject image: (content sha256, class noun, seed policy, seed).

        The timestep is fixed per encoder, so it is part of the encoder, not of the key."""
        seed = request.run_seed if self.seed_policy == "run" else request.seed
        keys = []
        for path in request.subject_images:
            key = (self._digest(path), request.class_noun, self.seed_policy, seed)
            self._paths.setdefault(key, Path(path))
            keys.append(key)
        return keys

    def _remember(self, cache: OrderedDict, key: tuple, value, keep: set) -> None:
        """Insert into a bounded cache, evicting the least recently used keys not in ``keep``."""
        cache[key] = value
        for old in [k for k in cache if k not in keep][:max(0, len(cache) - self.cache_size)]:
            del cache[old]

    def is_cached(self, request: GenRequest) -> bool:
        """Whether every subject image of ``request`` already has fixed-timestep features."""
        return all(k in self._features for k in self.subject_keys(request))

    def _clean_and_noise(self, key: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """The subject's scaled VAE latent and its noise (drawn once from the seeded generator)."""
        if key in self._latents:
            self._latents.move_to_end(key)
        else:
            digest, _noun, policy, seed = key
            image = subject_tensor(self._paths[key], self.parts.resolution, self.resize)[None]
            generator = torch.Generator("cpu").manual_seed(noise_seed(policy, seed, digest))
            clean = self.parts.encode(image, [generator] if self.latent == "sample" else None)[0]
            noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
            self._remember(self._latents, key, (clean, noise.to(clean.device, clean.dtype)), {key})
        return self._latents[key]

    @torch.no_grad()
    def _run(self, keys: list[tuple], timestep: int) -> list[list[torch.Tensor]]:
        """One reference forward over the given subject images at ``timestep`` (callers pass one)."""
        pairs = [self._clean_and_noise(k) for k in keys]
        clean = torch.stack([c for c, _ in pairs])
        noise = torch.stack([n for _, n in pairs])
        t = torch.full((len(keys),), int(timestep), dtype=torch.long)
        noisy = self.noise_scheduler.add_noise(clean, noise, t)
        text = self.parts.encode_text([reference_text(self.prompt_template, k[1]) for k in keys])
        with capture_norm1(self.unet, self.block_names) as captured:
            self.unet(noisy, t.to(noisy.device), encoder_hidden_states=text, return_dict=False)
        self.forward_passes += len(keys)
        self.parts.unet_calls += len(keys)
        return [[captured[name][0][i] for name in self.block_names] for i in range(len(keys))]

    def features(self, requests: Sequence[GenRequest], timestep: int | None = None
                 ) -> list[list[list[torch.Tensor]]]:
        """Per request, per subject image, the per-block features [L, C] in forward order.

        Each subject image is encoded by its own forward (batch of one), so its features do not
        depend on which other requests share the batch, nor on what the cache already held.
        Fixed timestep: computed once per cache key. Adaptive: computed at ``timestep`` (the main
        UNet's) for every call, once per distinct subject image in the batch.
        """
        if self.adaptive:
            if timestep is None:
                raise ValueError("the adaptive reference encoder needs the main UNet's timestep")
            keys = [k for r in requests for k in self.subject_keys(r)]
            distinct = list(dict.fromkeys(keys))
            # one forward per subject image, so its features never depend on its batch companions
            computed = {k: self._run([k], int(timestep))[0] for k in distinct}
            return [[computed[k] for k in self.subject_keys(r)] for r in requests]
        wanted = [[k for k in self.subject_keys(r)] for r in requests]
        batch_keys = {k for keys in wanted for k in keys}
        missing = list(dict.fromkeys(k for keys in wanted for k in keys if k not in self._features))
        for key in batch_keys - set(missing):
            self._features.move_to_end(key)
        for key in missing:   # one forward per subject image: the same features whatever the batch
            self._remember(self._features, key, self._run([key], int(self.timestep))[0], batch_keys)
        return [[self._features[k] for k in keys] for keys in wanted]

    def passes_per_image(self, request: GenRequest, main_steps_with_adapter: int) -> int:
        """Reference forwards an image needs on its own (for the per-image UNet-call record)."""
        per_subject = main_steps_with_adapter if self.adaptive else 1
        return per_subject * len(request.subject_images)
