"""EZIGenMethod: the harness adapter for EZIGen and its registered variants.

One class; variants are parameter sets (bench/registry.py): ``ezigen`` (decoupled + iterative),
``ezigen-allstep`` (schedule="allstep", iterative=False), ``ezigen-decoupled`` (iterative=False),
``ezigen-ref-t{100,300,500,800}`` (reference_timestep=N), ``ezigen-ref-adaptive``
(reference_timestep="adaptive"), ``ezigen-ref-trained-*`` (reference_trained=True).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from PIL import Image

from bench import BenchError
from bench.models import load_from_spec
from bench.types import GenRequest, LoadSpec
from methods.common import StableDiffusionParts, share_time_embedding, to_pil
from methods.ezigen.adapter import attach_adapter
from methods.ezigen.checkpoint import CheckpointError, load_adapter_state, load_reference_state, read_checkpoint
from methods.ezigen.editing import EZIGenEditor
from methods.ezigen.reference import REFERENCE_PROMPT, ReferenceEncoder
from methods.ezigen.sampler import LAYOUT_NEGATIVE_PROMPT, EZIGenSampler, SamplerConfig
from methods.ezigen.similarity import ImageSimilarity

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

    def __init__(self, spec: LoadSpec, name: str = "ezigen", num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, split_ratio: float = 0.4, schedule: str = "decoupled",
                 iterative: bool = True, min_loops: int = 3, max_loops: int = 10,
                 similarity_threshold: float = 0.99, negative_prompt: str = LAYOUT_NEGATIVE_PROMPT,
                 reference_timestep: int | str = 1, reference_trained: bool = False,
                 reference_seed: str = "run", reference_prompt: str = REFERENCE_PROMPT,
                 edit_guidance_scale: float = 2.0):
        self.name = name
        self.spec = spec
        if spec.adapter is None:
            raise BenchError(f"method {name!r} needs adapter weights: pass --adapter DIR (our "
                             "adapter.safetensors folder or the official accelerate checkpoint folder) "
                             "or --adapter init for the untrained adapter (initialised from attn1/norm1)")
        try:
            self.config = SamplerConfig(
                num_inference_steps=_as_number("num_inference_steps", spec.num_inference_steps or num_inference_steps, int),
                guidance_scale=_as_number("guidance_scale", guidance_scale, float),
                split_ratio=_as_number("split_ratio", split_ratio, float), schedule=str(schedule),
                iterative=_as_bool("iterative", iterative), min_loops=_as_number("min_loops", min_loops, int),
                max_loops=_as_number("max_loops", max_loops, int),
                similarity_threshold=_as_number("similarity_threshold", similarity_threshold, float),
                negative_prompt=str(negative_prompt))
        except ValueError as exc:
            raise BenchError(f"method {name!r}: {exc}") from None
        self.reference_timestep = _reference_timestep(reference_timestep)
        self.reference_trained = _as_bool("reference_trained", reference_trained)
        self.reference_seed = str(reference_seed)
        if self.reference_seed not in ("run", "request"):
            raise BenchError(f"EZIGen parameter reference_seed={reference_seed!r} must be 'run' or 'request'")
        self.reference_prompt = str(reference_prompt)
        self.edit_guidance_scale = _as_number("edit_guidance_scale", edit_guidance_scale, float)

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
            try:
                load_adapter_state(self.adapter, checkpoint.adapter_state, spec.adapter)
            except CheckpointError:
                raise
        self.checkpoint = checkpoint
        self.reference = ReferenceEncoder(self.sd, reference_unet, self.adapter.block_names,
                                          self.reference_timestep, self.reference_seed, self.reference_prompt)
        self.similarity = (ImageSimilarity(components.device, tiny=components.random_weights)
                           if self.config.iterative else None)
        self.sampler = EZIGenSampler(self.sd, self.adapter, self.reference, self.similarity, self.config)
        self.editor = EZIGenEditor(self.sd, self.adapter, self.reference, self.similarity, self.config,
                                   self.edit_guidance_scale)

    def describe(self) -> dict:
        c = self.config
        params = {"num_inference_steps": c.num_inference_steps, "guidance_scale": c.guidance_scale,
                  "split_ratio": c.split_ratio, "schedule": c.schedule, "iterative": c.iterative,
                  "min_loops": c.min_loops, "max_loops": c.max_loops,
                  "similarity_threshold": c.similarity_threshold, "negative_prompt": c.negative_prompt,
                  "reference_timestep": self.reference_timestep, "reference_trained": self.reference_trained,
                  "reference_seed": self.reference_seed, "reference_prompt": self.reference_prompt,
                  "edit_guidance_scale": self.edit_guidance_scale, "resolution": self.sd.resolution,
                  "scheduler": "DDPM leading (generate), DPM-Solver++ (edit)",
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
        groups: dict[tuple[str, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.task, len(r.subject_images)), []).append(i)
        for (task, _), index in groups.items():
            batch = [requests[i] for i in index]
            run = self.sampler.generate if task == "generate" else self.editor.edit
            images, facts = run(batch)
            for i, image, fact in zip(index, to_pil(images), facts):
                if self.checkpoint is None:
                    fact["adapter"] = "untrained adapter"
                image.info["bench"] = fact
                out[i] = image
        return out
