"""EZIGenMethod: the harness adapter for EZIGen and its registered variants.

One class; variants are parameter sets (bench/registry.py): ``ezigen`` (decoupled + iterative),
``ezigen-allstep`` (schedule="allstep", iterative=False), ``ezigen-decoupled`` (iterative=False),
and the Tab. 7 variants on the all-step schedule, one pass, no loops (docs/protocols.md
section 1b): ``ezigen-ref-t{1,100,300,500,800}`` (reference_timestep=N), ``ezigen-ref-adaptive``
(reference_timestep="adaptive"), ``ezigen-ref-trained-*`` (reference_trained=True).

``protocol`` (default ``release``) chooses the defaults of the parameters where the public
reference code and the paper text differ (:mod:`.protocol`); any one can be overridden.
"""

from __future__ import annotations

import copy
from typing import Literal, Sequence

import torch
from PIL import Image

from bench import BenchError
from bench.models import load_from_spec
from bench.types import GenRequest, LoadSpec
from methods.common import StableDiffusionParts, share_time_embedding, to_pil
from methods.ezigen.adapter import attach_adapter
from methods.ezigen.checkpoint import CheckpointError, load_adapter_state, load_reference_state, read_checkpoint
from methods.ezigen.background import BackgroundRemover
from methods.ezigen.editing import EditSettings, EZIGenEditor
from methods.ezigen.protocol import resolve as resolve_protocol
from methods.ezigen.reference import ReferenceEncoder
from methods.ezigen.sampler import EZIGenSampler, SamplerConfig
from methods.ezigen.similarity import ImageSimilarity

#: A trained reference UNet in fp32 (SD 2.1's UNet: 865.9M parameters), for bench doctor.
REFERENCE_UNET_BYTES = 3_464_000_000

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _as_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise BenchError(f"EZIGen parameter {name}={value!r} is not a boolean (use true/false)")


def _as_number(name: str, value, kind):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BenchError(f"EZIGen parameter {name}={value!r} is not a {kind.__name__}") from None


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    text = str(value).strip()
    if text not in choices:
        raise BenchError(f"EZIGen parameter {name}={value!r} must be one of: {', '.join(choices)}")
    return text


def _none(value):
    """A protocol-set parameter: None (or the text 'none'/'protocol') takes the protocol's value."""
    return None if value is None or str(value).strip().lower() in ("none", "protocol") else value


def _reference_timestep(value) -> int | str:
    if str(value).strip().lower() == "adaptive":
        return "adaptive"
    t = _as_number("reference_timestep", value, int)
    if not 0 <= t < 1000:
        raise BenchError(f"EZIGen parameter reference_timestep={value!r} must be in 0..999 or 'adaptive'")
    return t


class EZIGenMethod:
    tasks = frozenset({"generate", "edit"})
    #: `--preset smoke` runs it with the untrained adapter when no --adapter is given
    smoke_adapter = "init"
    #: text parameters that are templates, with the fields they may use (bench.limits.check_template)
    template_params = {"reference_prompt": frozenset({"class_noun"})}

    @classmethod
    def requirements(cls, spec: LoadSpec, subject_background: str = "remove", iterative: bool = True,
                     loops: int = 0, adapter: bool = True, reference_trained: bool = False, **params) -> list:
        """What a run needs on disk (bench/needs.py): the base model, the adapter (with a trained
        reference UNet for the ``ezigen-ref-trained-*`` variants, which ``--adapter init`` lacks),
        Grounded-SAM for the subject's background and CLIP ViT-B/32 for the loops' stop rule (real
        weights only)."""
        from bench import needs
        from methods.ezigen.checkpoint import ADAPTER_BYTES, adapter_need

        if not adapter:
            out = needs.base_model(spec)
        elif _as_bool("reference_trained", reference_trained):
            out = needs.base_model(spec) + adapter_need(
                None if spec.adapter == "init" else spec.adapter, "EZIGen adapter + trained reference UNet (--adapter)",
                "python -m bench train --method ezigen-ref-trained-t1 (or -adaptive) ... (methods/training/README.md), "
                "then --adapter OUT (its adapter.safetensors + reference_unet.safetensors)",
                ADAPTER_BYTES + REFERENCE_UNET_BYTES)
        else:
            out = needs.base_model(spec) + adapter_need(spec.adapter)
        if not spec.preset:
            if subject_background == "remove":
                out += needs.grounded_sam()
            if _as_bool("iterative", iterative) and not int(loops):
                out.append(needs.open_clip_weights("ViT-B-32", "openai", *needs.CLIP_HUB["ViT-B-32", "openai"]))
        return out

    def __init__(self, spec: LoadSpec, name: str = "ezigen", protocol: Literal["release", "paper"] = "release",
                 subject_background: Literal["remove", "keep"] = "remove",
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, split_ratio: float = 0.4,
                 schedule: Literal["decoupled", "allstep"] = "decoupled", iterative: bool = True,
                 loops: int = 0, min_loops: int = 3, max_loops: int | None = None,
                 similarity_threshold: float = 0.99, negative_prompt: str | None = None,
                 renoise: Literal["split", "resume"] | None = None,
                 vae_latent: Literal["sample", "mean"] | None = None,
                 subject_resize: Literal["bilinear", "bicubic"] | None = None,
                 edit_denoiser: Literal["ddpm", "dpmsolver"] | None = None,
                 inversion_text: Literal["exceptional", "empty"] | None = None,
                 inversion_grid: Literal["linspace", "leading"] | None = None,
                 edit_blend: Literal["release", "aligned"] | None = None,
                 edit_mask: Literal["bilinear", "nearest"] | None = None,
                 edit_aspect: Literal["source", "square"] | None = None,
                 split_steps: Literal["truncate", "round"] | None = None,
                 similarity_input: Literal["pil", "tensor"] | None = None,
                 reference_timestep: int | Literal["adaptive"] = 1, reference_trained: bool = False,
                 reference_seed: Literal["run", "request"] = "run", reference_prompt: str | None = None,
                 edit_guidance_scale: float = 2.0, keep_iterations: bool = False):
        """``protocol`` sets every parameter left at None (docs/protocols.md section 1b); ``loops=N``
        (N > 0) runs exactly N loops, similarity ignored; ``subject_background`` segments the subject
        and composites it on white before encoding (``keep``: as given)."""
        self.name = name
        self.spec = spec
        if spec.adapter is None:
            raise BenchError(f"method {name!r} needs adapter weights: pass --adapter DIR (our "
                             "adapter.safetensors folder or the official accelerate checkpoint folder) "
                             "or --adapter init for the untrained adapter (initialised from attn1/norm1)")
        self.protocol = _choice("protocol", protocol, ("release", "paper"))
        self.subject_background = _choice("subject_background", subject_background, ("remove", "keep"))
        overrides = dict(negative_prompt=negative_prompt, renoise=renoise, vae_latent=vae_latent,
                         subject_resize=subject_resize, edit_denoiser=edit_denoiser, inversion_text=inversion_text,
                         inversion_grid=inversion_grid, edit_blend=edit_blend, edit_mask=edit_mask,
                         edit_aspect=edit_aspect, split_steps=split_steps, similarity_input=similarity_input,
                         reference_prompt=reference_prompt,
                         max_loops=None if max_loops is None else _as_number("max_loops", max_loops, int))
        try:
            self.settings = resolve_protocol(self.protocol, **{k: _none(v) for k, v in overrides.items()})
        except ValueError as exc:
            raise BenchError(f"method {name!r}: {exc}") from None
        settings = self.settings
        try:
            self.config = SamplerConfig(
                num_inference_steps=_as_number("num_inference_steps", spec.num_inference_steps or num_inference_steps, int),
                guidance_scale=_as_number("guidance_scale", guidance_scale, float),
                split_ratio=_as_number("split_ratio", split_ratio, float),
                schedule=_choice("schedule", schedule, ("decoupled", "allstep")),
                iterative=_as_bool("iterative", iterative), min_loops=_as_number("min_loops", min_loops, int),
                max_loops=int(settings["max_loops"]),
                similarity_threshold=_as_number("similarity_threshold", similarity_threshold, float),
                negative_prompt=str(settings["negative_prompt"]), renoise=str(settings["renoise"]),
                vae_latent=str(settings["vae_latent"]), fixed_loops=_as_number("loops", loops, int),
                split_steps=str(settings["split_steps"]))
        except ValueError as exc:
            raise BenchError(f"method {name!r}: {exc}") from None
        if self.config.fixed_loops and not self.config.iterative:
            raise BenchError(f"method {name!r}: --param loops={self.config.fixed_loops} needs iterative=true "
                             "(this variant runs one pass, no loops)")
        if settings["edit_blend"] == "aligned" and \
                (settings["edit_denoiser"], settings["inversion_grid"]) != ("dpmsolver", "leading"):
            raise BenchError(f"method {name!r}: edit_blend=aligned needs edit_denoiser=dpmsolver and "
                             "inversion_grid=leading (the inversion must land on the denoising grid); "
                             "use edit_blend=release with the other settings")
        self.reference_timestep = _reference_timestep(reference_timestep)
        self.reference_trained = _as_bool("reference_trained", reference_trained)
        self.reference_seed = _choice("reference_seed", reference_seed, ("run", "request"))
        self.reference_prompt = str(settings["reference_prompt"])
        self.edit_guidance_scale = _as_number("edit_guidance_scale", edit_guidance_scale, float)
        # edits keep every loop's output in their records (DreamEdit's best-iteration evaluation)
        self.keep_iterations = _as_bool("keep_iterations", keep_iterations)

        components = load_from_spec(spec)
        self.components = components
        checkpoint = None
        if spec.adapter != "init":
            checkpoint = read_checkpoint(spec.adapter, set(components.unet.state_dict()))
        reference_unet = components.unet          # frozen reference shares the main UNet's weights
        if self.reference_trained:
            if checkpoint is None or checkpoint.reference_state is None:
                raise BenchError(f"method {name!r} uses a trained reference UNet: pass --adapter with a "
                                 "checkpoint that holds reference UNet weights (reference_unet.safetensors, "
                                 "or a model_N file of full UNet weights in an accelerate folder)")
            reference_unet = copy.deepcopy(components.unet)
            load_reference_state(reference_unet, checkpoint.reference_state, spec.adapter)
        self.sd = StableDiffusionParts(components, spec.resolution)
        share_time_embedding(reference_unet)
        self.adapter = attach_adapter(components.unet)
        self.adapter.eval().requires_grad_(False)
        if checkpoint is not None:
            load_adapter_state(self.adapter, checkpoint.adapter_state, spec.adapter)
        self.checkpoint = checkpoint
        self.background = BackgroundRemover(self.subject_background, device=str(components.device),
                                            tiny=components.random_weights)
        self.reference = ReferenceEncoder(self.sd, reference_unet, self.adapter.block_names,
                                          self.reference_timestep, self.reference_seed, self.reference_prompt,
                                          resize=str(settings["subject_resize"]), latent=str(settings["vae_latent"]))
        needs_similarity = self.config.iterative and not self.config.fixed_loops
        self.similarity = ImageSimilarity(components.device, tiny=components.random_weights,
                                          preprocess=str(settings["similarity_input"])) if needs_similarity else None
        self.sampler = EZIGenSampler(self.sd, self.adapter, self.reference, self.similarity, self.config)
        self.editor = EZIGenEditor(self.sd, self.adapter, self.reference, self.similarity, self.config,
                                   self.edit_guidance_scale, EditSettings.from_protocol(settings))

    def describe(self) -> dict:
        c = self.config
        params = {"protocol": self.protocol, "subject_background": self.subject_background,
                  "background_annotator": self.background.model_ids,
                  "num_inference_steps": c.num_inference_steps, "guidance_scale": c.guidance_scale,
                  "split_ratio": c.split_ratio, "schedule": c.schedule, "iterative": c.iterative,
                  "loops": c.fixed_loops or "stop rule", "min_loops": c.min_loops, "max_loops": c.max_loops,
                  "similarity_threshold": c.similarity_threshold,
                  **{k: v for k, v in self.settings.items() if k != "max_loops"},
                  "reference_timestep": self.reference_timestep, "reference_trained": self.reference_trained,
                  "reference_seed": self.reference_seed,
                  "edit_guidance_scale": self.edit_guidance_scale, "resolution": self.sd.resolution,
                  "scheduler": f"DDPM leading (generate), {self.editor.describe()} (edit)",
                  "similarity_backbone": self.similarity.backbone if self.similarity else None}
        if self.checkpoint is None:
            adapter = {"source": "init", "sha256": None}
        else:
            adapter = {"source": str(self.spec.adapter), "sha256": self.checkpoint.sha256,
                       "files": [p.name for p in self.checkpoint.files], "notes": self.checkpoint.notes}
        base = "random weights" if self.components.random_weights else "pretrained"
        status = f"{base}, {'untrained adapter' if self.checkpoint is None else 'trained adapter'}"
        return {"params": params, "model": self.components.describe(), "adapter": adapter,
                "weights_status": status}

    @torch.no_grad()
    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]:
        """One image per request, in order.

        Sub-batches share the task and the number of subject images: a request is never padded
        with empty, masked slots at inference, so its attention (and its bytes) do not depend on
        which other requests share its batch.
        """
        out: list[Image.Image | None] = [None] * len(requests)
        prepared, backgrounds = self.background.apply(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(prepared):
            groups.setdefault((r.task, len(r.subject_images), self.editor.source_size(r)), []).append(i)
        for (task, _, _), index in groups.items():
            batch = [prepared[i] for i in index]
            kept: list = []
            if task == "generate":
                images, facts = self.sampler.generate(batch)
            else:
                images, facts = self.editor.edit(batch, iterations=kept if self.keep_iterations else None)
            for j, (i, image, fact) in enumerate(zip(index, to_pil(images), facts)):
                if kept:
                    image.info["bench_iterations"] = kept[j]
                fact.update(protocol=self.protocol, subject_background=self.subject_background,
                            subjects=backgrounds[i])
                if any(b["background"].startswith("no-detection") for b in backgrounds[i]):
                    fact.setdefault("flags", []).append("subject-background-not-removed")
                if self.checkpoint is None:
                    fact["adapter"] = "untrained adapter"
                image.info["bench"] = fact
                out[i] = image
        return out
