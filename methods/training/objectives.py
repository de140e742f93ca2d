"""What is trained and its loss: the EZIGen adapter (with a frozen or a trained reference UNet)
and the CLIP/DINO projector baselines.

docs/protocols.md section 1, "Training", and 1b: epsilon-prediction MSE at t ~ U{0..999}; the
target image VAE-encoded (a posterior sample) times the scaling factor. Two recipes:

- ``release`` (default; reproduces the released checkpoint's training): subject dropout as
  released, ``randint(1, 10) / 10 > p`` for the whole batch at once (p = 0.2 drops 80% of the
  steps); always 4 subject slots, the empty ones filled with pads that go through the VAE and
  the reference UNet and are not masked (a pad is the reference code's zero tensor in the
  normalised [-1, 1] image space, i.e. mid-grey, with all-zero text ids); subject latents are
  posterior samples.
- ``fixed``: dropout p per sample (``keep = u >= p``: 20% dropped); only as many slots as the
  fullest sample, empty slots masked out of the adapter attention; subject latents are the
  posterior mean.

The main UNet, VAE and text encoder are frozen; only :meth:`Trainee.trainable_modules` get
gradients.

Every random draw of a step comes from the generator handed to :meth:`Trainee.forward`
(timesteps, target noise, VAE posterior sample, dropout, reference noise, in that order), so a
step is a function of the parameters, the batch and that generator.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import Components

SUBJECT_DROPOUT = 0.2
RECIPES = ("release", "fixed")
#: the text of a pad slot under the release recipe: all-zero token ids (not a string)
PAD_TEXT = "\x00pad-slot"
NUM_TRAIN_TIMESTEPS = 1000
TEXT_CACHE = 4096


class Trainee(nn.Module):
    """The frozen base model with the EZIGen adapter attached, and what feeds the adapter.

    Subclasses define :meth:`subject_features` (per-block tokens of the subject images) and
    may add trainable modules. ``forward(batch, generator)`` returns the loss.
    """

    kind = "ezigen"

    def __init__(self, components: Components, subject_dropout: float = SUBJECT_DROPOUT, recipe: str = "release"):
        super().__init__()
        from methods.ezigen.adapter import attach_adapter

        if recipe not in RECIPES:
            raise ValueError(f"training recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
        self.recipe = recipe

        self.components = components
        self.vae, self.text_encoder = components.vae, components.text_encoder
        for m in (components.unet, self.vae, self.text_encoder):
            m.eval().requires_grad_(False)
        self.adapter = attach_adapter(components.unet)   # registered first: its parameter names win
        self.unet = components.unet
        self.adapter.requires_grad_(True)
        self.block_names = list(self.adapter.block_names)
        self.subject_dropout = float(subject_dropout)
        self.noise_scheduler = components.make_scheduler()
        self.tokenizer = components.tokenizer
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # -- what is trained -----------------------------------------------------------------
    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"adapter": self.adapter}

    def trainable_parameters(self) -> list[nn.Parameter]:
        seen, params = set(), []
        for module in self.trainable_modules().values():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, m in self.trainable_modules().items() for k, v in m.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)

    def train(self, mode: bool = True):
        """Only the trainable modules change mode; the frozen base stays in eval mode."""
        self.training = mode
        for module in self.trainable_modules().values():
            module.train(mode)
        return self

    def export(self, folder) -> None:
        """Write the weights ``bench run --adapter FOLDER`` loads."""
        from methods.training.export import save_adapter_folder
        save_adapter_folder(folder, self)

    def describe(self) -> dict:
        return {"kind": self.kind}

    # -- the loss ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, 77, D] embeddings of the frozen text encoder; the most recent ``TEXT_CACHE``
        distinct texts are kept (subject prompts and prompt templates repeat all the time)."""
        cache = self._text_cache
        if PAD_TEXT in texts and PAD_TEXT not in cache:
            ids = torch.zeros(1, self.tokenizer.model_max_length, dtype=torch.long, device=self.device)
            cache[PAD_TEXT] = self.text_encoder(ids)[0][0]
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            tok = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
            for text, emb in zip(missing, self.text_encoder(tok.input_ids.to(self.device))[0]):
                cache[text] = emb
        for text in texts:
            cache.move_to_end(text)
        while len(cache) > TEXT_CACHE:
            cache.popitem(last=False)
        return torch.stack([cache[t] for t in texts])

    def keep_subjects(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """[B] bool: False where the sample's subject features are dropped (zeroed). A draw
        u ~ U[0, 1) keeps the subject when u >= p, so p = 0.2 drops 20% (docs/protocols.md section 1;
        the reference code's comparison drops 80%). Always drawn, so the random stream of a step
        is the same in train and eval mode; nothing is dropped in eval mode."""
        if self.recipe == "release":       # one draw for the whole batch: drop when u > p
            u = int(torch.randint(1, 11, (1,), generator=generator)) / 10
            keep = torch.full((batch_size,), not u > self.subject_dropout)
        else:
            keep = torch.rand(batch_size, generator=generator) >= self.subject_dropout
        return keep if self.training else torch.ones_like(keep)

    def subject_features(self, images: torch.Tensor, prompts: Sequence[str], timesteps: torch.Tensor,
                         generator: torch.Generator) -> list[torch.Tensor]:
        """Per-block subject tokens [N, L_l, C_l] (forward order) of N subject images."""
        raise NotImplementedError

    def forward(self, batch: dict, generator: torch.Generator, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``batch``. ``timesteps`` [B]: evaluate at these instead of t ~ U{0..999}
        (drawn all the same, so the other draws of ``generator`` do not depend on it)."""
        from methods.ezigen.adapter import SubjectTokens, adapter_kwargs

        device = self.device
        dtype = next(self.unet.parameters()).dtype
        target = batch["target"].to(device, self.vae.dtype)
        b = target.shape[0]
        drawn = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=generator)
        timesteps = drawn if timesteps is None else torch.as_tensor(timesteps, dtype=torch.long).expand(b).clone()
        with torch.no_grad():
            posterior = self.vae.encode(target).latent_dist
            latents = posterior.mean + posterior.std * torch.randn(
                posterior.mean.shape, generator=generator).to(device, posterior.mean.dtype)
            latents = (latents * self.vae.config.scaling_factor).to(dtype)
        noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
        keep = self.keep_subjects(b, generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps.to(device))

        # subject slots: only as many as the fullest sample of the batch; run the encoder on
        # the filled slots only
        slot_mask = batch["slot_mask"]
        subjects, subject_prompts = batch["subjects"], batch["subject_prompts"]
        if self.recipe == "release":       # every slot, pads included, through VAE and reference UNet
            subjects = torch.where(slot_mask.view(*slot_mask.shape, 1, 1, 1), subjects, torch.zeros_like(subjects))
            subject_prompts = [[p if on else PAD_TEXT for p, on in zip(row, m)]
                               for row, m in zip(subject_prompts, slot_mask.tolist())]
            slot_mask = torch.ones_like(slot_mask)
        slots = int(slot_mask.sum(dim=1).max())
        slot_mask = slot_mask[:, :slots]
        images = subjects[:, :slots][slot_mask].to(device, self.vae.dtype)
        prompts = [p for row, m in zip(subject_prompts, slot_mask) for p, on in zip(row, m) if on]
        owner = slot_mask.nonzero()[:, 0]                      # which sample each subject image belongs to
        flat = self.subject_features(images, prompts, timesteps[owner], generator)
        features = []
        keep_dev = keep.to(device)
        for f in flat:
            full = f.new_zeros(b, slots, *f.shape[1:])
            full[slot_mask.to(device)] = f
            full = full * keep_dev.view(b, 1, 1, 1).to(full.dtype)      # subject dropout: features zeroed
            features.append(full.reshape(b, slots * f.shape[1], f.shape[2]).to(dtype))
        tokens = SubjectTokens(features, self.adapter.learnable_weights,
                               None if bool(slot_mask.all()) else slot_mask.to(device))   # release: all True
        text = self.encode_text(batch["prompts"]).to(dtype)
        pred = self.unet(noisy, timesteps.to(device), encoder_hidden_states=text, return_dict=False,
                         **adapter_kwargs(tokens))[0]
        return F.mse_loss(pred.float(), noise.float())


class EZIGenTrainee(Trainee):
    """The EZIGen adapter fed by the reference UNet's norm1 outputs (docs/protocols.md section 1).

    ``reference_trained=False`` (the paper's default): the reference UNet is the frozen main
    UNet itself (no copy), run without the adapter. ``True`` (table 7's "trained" rows): a
    trainable copy of the base UNet, saved with the adapter. ``reference_timestep``: 1 (default)
    or "adaptive" (each subject noised at its sample's training timestep).
    """

    def __init__(self, components: Components, reference_trained: bool = False,
                 reference_timestep: int | str = 1, subject_dropout: float = SUBJECT_DROPOUT,
                 recipe: str = "release"):
        reference = copy.deepcopy(components.unet) if reference_trained else None   # before the adapter
        super().__init__(components, subject_dropout, recipe)
        self.reference_trained = bool(reference_trained)
        if reference is not None:
            reference.requires_grad_(True)
            self.reference_unet = reference
        self.reference_timestep = reference_timestep
        self.kind = "ezigen"

    @property
    def reference(self) -> nn.Module:
        return self.reference_unet if self.reference_trained else self.unet

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules = {"adapter": self.adapter}
        if self.reference_trained:
            modules["reference_unet"] = self.reference_unet
        return modules

    def describe(self) -> dict:
        return {"kind": "ezigen", "reference_trained": self.reference_trained,
                "reference_timestep": self.reference_timestep, "recipe": self.recipe}

    def subject_features(self, images, prompts, timesteps, generator):
        from methods.ezigen.reference import capture_norm1

        device = self.device
        with torch.no_grad():
            posterior = self.vae.encode(images).latent_dist
            clean = posterior.mean
            if self.recipe == "release":       # latent_dist.sample(), as released
                clean = clean + posterior.std * torch.randn(clean.shape, generator=generator).to(device, clean.dtype)
            clean = clean * self.vae.config.scaling_factor
        noise = torch.randn(clean.shape, generator=generator).to(device, clean.dtype)
        if self.reference_timestep == "adaptive":
            t_ref = timesteps.to(device)
        else:
            t_ref = torch.full((clean.shape[0],), int(self.reference_timestep), dtype=torch.long, device=device)
        unet = self.reference
        noisy = self.noise_scheduler.add_noise(clean, noise, t_ref).to(next(unet.parameters()).dtype)
        text = self.encode_text(prompts).to(noisy.dtype)
        with torch.set_grad_enabled(self.reference_trained and torch.is_grad_enabled()), \
                capture_norm1(unet, self.block_names) as captured:
            unet(noisy, t_ref, encoder_hidden_states=text, return_dict=False)
        return [captured[name][0] for name in self.block_names]


class ProjectorTrainee(Trainee):
    """CLIP/DINO patch tokens -> per-block projector -> the same adapter (methods/projector.py)."""

    def __init__(self, components: Components, encoder, subject_dropout: float = SUBJECT_DROPOUT,
                 recipe: str = "release"):
        from methods.projector import BlockProjector, block_widths

        super().__init__(components, subject_dropout, recipe)
        self.encoder = encoder.to(self.device)
        self.encoder.requires_grad_(False).eval()
        self.projector = BlockProjector(encoder.width, block_widths(self.unet, self.block_names)).to(self.device)
        self.kind = f"{encoder.kind}-projector"

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"adapter": self.adapter, "projector": self.projector}

    def describe(self) -> dict:
        return {"kind": self.kind, "encoder": self.encoder.kind, "encoder_model": self.encoder.name,
                "recipe": self.recipe}

    def subject_features(self, images, prompts, timesteps, generator):
        with torch.no_grad():
            tokens = self.encoder(images)
        return self.projector(tokens.to(self.projector.blocks[0].weight.dtype))
