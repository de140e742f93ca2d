"""BLIP-Diffusion (Li et al. 2023) through diffusers' ``BlipDiffusionPipeline`` (docs/architecture.md:
methods; registered as ``blip-diffusion``).

Its own base model: ``Salesforce/blipdiffusion`` (a Q-Former subject encoder, a CLIP text encoder
that takes the subject embedding as context tokens, and an SD 1.5-derived UNet and VAE).

Defaults and their public source: the usage example of diffusers' ``BlipDiffusionPipeline``
(``pipeline_blip_diffusion.py``, EXAMPLE_DOC_STRING): guidance 7.5, 25 steps, the negative prompt
below, 512 x 512; ``prompt_strength=1.0, prompt_reps=20`` are the pipeline's defaults (the prompt
is repeated 20 times, as in the original code); the scheduler is the model's own (PNDM).

How the harness drives it:
- source and target subject are the request's class noun; the reference image is the first
  subject image (BLIP-Diffusion encodes one image);
- the pipeline writes the prompt as ``a <target subject> <text>``, so a suite prompt that already
  starts with ``a <class noun>`` (DreamBench: ``a dog in the jungle``) passes only the rest;
- the denoising loop is the pipeline's own, step for step, with one CPU generator per request for
  the initial noise (the pipeline's ``__call__`` takes one reference image per call and cannot be
  given precomputed embeddings); a test checks it against ``__call__`` on the same noise.

diffusers 0.42 with transformers 5: the pipeline's Q-Former calls ``invert_attention_mask`` and
``get_head_mask`` (helpers transformers 5 removed from its models) and the old calling convention of
``Blip2QFormerAttention``; :func:`make_qformer_compatible` restores both on the loaded instance,
with transformers 4's definitions, without changing any weight name.

Text encoder causality (transformers 5): diffusers' ``ContextCLIPTextTransformer`` builds CLIP's
causal mask and hands it to transformers' ``CLIPEncoder`` as ``causal_attention_mask``; transformers
5 moved causality into ``CLIPTextModel`` and its ``CLIPEncoder`` no longer reads that argument (it
falls through ``**kwargs`` to the attention function, which ignores it), so every token attended to
later ones. :func:`make_text_encoder_causal` passes the causal mask as the attention mask the
encoder honours (no-op on transformers 4). diffusers 0.42 cannot resolve the released folder's
``model_index.json`` (its components' library ``blip_diffusion`` moved under ``deprecated``), so
:func:`load_blip_diffusion` loads each component by its class. docs/methods-baselines.md,
"BLIP-Diffusion".
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from pathlib import Path
from types import MethodType, SimpleNamespace
from typing import Sequence

import torch
from PIL import Image

from bench import BenchError
from bench.limits import reason
from bench.images import load_rgb
from bench.models import DTYPES
from bench.types import GenRequest, LoadSpec
from methods.common import make_batch_invariant, randn_per_request, request_generators

BLIP_DIFFUSION = "Salesforce/blipdiffusion"
BLIP_NEGATIVE_PROMPT = ("over-exposure, under-exposure, saturated, duplicate, out of frame, lowres, cropped, "
                        "worst quality, low quality, jpeg artifacts, morbid, mutilated, out of frame, ugly, "
                        "bad anatomy, bad proportions, deformed, blurry, duplicate")


# ---- transformers 5 compatibility of the deprecated Q-Former ---------------------------------
def _invert_attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
    """transformers 4's ModuleUtilsMixin.invert_attention_mask: 1 = attend -> additive mask."""
    extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    extended = extended.to(self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _get_head_mask(self, head_mask, num_hidden_layers: int):
    """transformers 4's get_head_mask for the only case the pipeline uses (no head mask)."""
    if head_mask is not None:
        raise NotImplementedError("head masks are not supported")
    return [None] * num_hidden_layers


def _old_attention_call(module) -> None:
    """Let a transformers 5 Blip2QFormerAttention accept the transformers 4 call the diffusers
    Q-Former layer makes: (hidden, mask, head_mask, encoder_hidden, encoder_mask, ...) -> (out, None)."""
    new_forward = type(module).forward.__get__(module)

    def forward(hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, past_key_value=None, output_attentions=False):
        out = new_forward(hidden_states, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
                          encoder_attention_mask=encoder_attention_mask)
        return out, None

    module.forward = forward


def make_qformer_compatible(qformer) -> None:
    """Patch a diffusers Blip2QFormerModel instance to run on transformers 5 (no-op on 4)."""
    if hasattr(qformer, "invert_attention_mask") and hasattr(qformer, "get_head_mask"):
        return
    qformer.invert_attention_mask = MethodType(_invert_attention_mask, qformer)
    qformer.get_head_mask = MethodType(_get_head_mask, qformer)
    qformer_config = qformer.config.qformer_config
    if getattr(qformer_config, "_attn_implementation", None) is None:
        qformer_config._attn_implementation = "eager"      # transformers 4 computed it eagerly
    for layer in qformer.encoder.layer:
        _old_attention_call(layer.attention)
        if layer.has_cross_attention:
            _old_attention_call(layer.crossattention)


# ---- transformers 5: the context text encoder's causal mask ---------------------------------
def make_text_encoder_causal(text_encoder) -> bool:
    """Make a diffusers ContextCLIPTextModel causal again under transformers 5 (idempotent).

    Its text transformer passes ``causal_attention_mask=`` to ``CLIPEncoder.forward``; from
    transformers 5 that name is swallowed by ``**kwargs`` and never applied. The wrapper adds it to
    the (optional) padding mask and passes the sum as ``attention_mask``, which the eager and SDPA
    attention functions apply, as transformers 4's encoder did. Returns whether it patched.
    """
    encoder = text_encoder.text_model.encoder
    if "causal_attention_mask" in inspect.signature(type(encoder).forward).parameters:
        return False                                     # transformers 4 applies it itself
    if getattr(encoder, "_causal_mask_honoured", False):
        return True
    original = encoder.forward

    def forward(inputs_embeds, attention_mask=None, causal_attention_mask=None, **kwargs):
        if causal_attention_mask is not None:
            if attention_mask is None:
                attention_mask = causal_attention_mask
            else:   # both additive; clamp so two masked entries do not overflow to -inf
                attention_mask = (attention_mask + causal_attention_mask).clamp_min(
                    torch.finfo(causal_attention_mask.dtype).min)
        return original(inputs_embeds, attention_mask=attention_mask, **kwargs)

    encoder.forward = forward
    encoder._causal_mask_honoured = True
    return True


def make_transformers5_compatible(pipe) -> None:
    """Both transformers 5 repairs of a loaded BlipDiffusionPipeline: the Q-Former's calls and the
    text encoder's causal mask. Every way the method builds its pipeline goes through here."""
    make_qformer_compatible(pipe.qformer)
    make_text_encoder_causal(pipe.text_encoder)


# ---- loading ---------------------------------------------------------------------------------
def _missing(weights: str, detail: str) -> BenchError:
    return BenchError(
        f"BLIP-Diffusion weights {weights!r} are not available ({detail}). Fetch them once with "
        f"`hf download {BLIP_DIFFUSION}` (its Q-Former also loads the bert-base-uncased "
        f"tokenizer: `hf download bert-base-uncased vocab.txt tokenizer_config.json`), then "
        f"HF_HUB_OFFLINE=1 works; or pass --weights /path/to/a/BlipDiffusionPipeline folder; or use "
        f"--preset smoke|tiny for random weights")


def load_blip_diffusion(weights: str, device: str, dtype: str):
    """(pipeline, revision) for a HF id or a local pipeline folder, offline once cached."""
    from diffusers.pipelines import BlipDiffusionPipeline

    path = Path(weights).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise BenchError(f"{path} is not a BlipDiffusionPipeline folder: {path / 'model_index.json'} is missing")
        folder = path
        h = hashlib.sha256()
        for cfg in sorted(path.glob("*.json")) + sorted(path.glob("*/*.json")):
            h.update(cfg.relative_to(path).as_posix().encode() + cfg.read_bytes())
        revision = "sha256:" + h.hexdigest()[:16]
    else:
        if weights.count("/") != 1 or weights.startswith((".", "/")):
            raise BenchError(f"--weights {weights!r} is neither an existing folder nor a Hugging Face id")
        try:
            from huggingface_hub import snapshot_download
            folder = Path(snapshot_download(weights, local_files_only=os.environ.get("HF_HUB_OFFLINE", "0")
                                            in ("1", "true", "True")))
        except Exception as exc:  # not cached, offline, network down ...
            raise _missing(weights, type(exc).__name__) from None
        revision = folder.name
    try:
        pipe = _pipeline_from_folder(folder).to(dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise _missing(weights, reason(exc)) from None
    make_transformers5_compatible(pipe)
    return pipe.to(device), revision


def _pipeline_from_folder(folder: Path):
    """A BlipDiffusionPipeline from a pipeline folder, each component loaded by its class.

    diffusers 0.42 cannot resolve the released folder's ``model_index.json`` itself: it names the
    pipeline's own components by the library ``blip_diffusion``, which moved under
    ``pipelines.deprecated`` (and ``save_pretrained`` writes ``diffusers``, which does not export
    them). So every component is loaded here from its subfolder with its class, looked up in
    diffusers, transformers or the deprecated BLIP-Diffusion package."""
    import json

    import diffusers
    import transformers
    from diffusers.pipelines import BlipDiffusionPipeline
    from diffusers.pipelines.deprecated import blip_diffusion

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    components = {}
    for name in ("tokenizer", "text_encoder", "vae", "unet", "scheduler", "qformer", "image_processor"):
        library, class_name = index[name]
        module = {"transformers": transformers, "diffusers": diffusers}.get(library)
        cls = getattr(module, class_name, None) if module is not None else None
        cls = cls or getattr(blip_diffusion, class_name)
        components[name] = cls.from_pretrained(folder / name)
    config = {k: index[k] for k in ("ctx_begin_pos", "mean", "std") if k in index}
    return BlipDiffusionPipeline(**components, **config)


def subject_context(prompt: str, class_noun: str) -> str:
    """The text after ``a <class noun>`` (the pipeline writes that prefix itself)."""
    match = re.match(rf"\s*an?\s+{re.escape(class_noun)}\b\s*(.*)$", prompt, flags=re.IGNORECASE | re.DOTALL)
    return match.group(1).strip() if match else prompt.strip()


#: The pipeline writes the prompt int(prompt_strength * prompt_reps) times (20 by default).
MAX_PROMPT_REPEATS = 1000


class BlipDiffusionMethod:
    tasks = frozenset({"generate"})
    default_weights = BLIP_DIFFUSION

    @classmethod
    def requirements(cls, spec: LoadSpec, **params) -> list:
        """What a run needs on disk (bench/needs.py): the pipeline and the BERT tokenizer files."""
        from bench import needs

        if spec.preset is not None:
            return []
        weights = spec.weights if spec.weights != LoadSpec.weights else cls.default_weights
        # sizes of the released files: UNet 3.44 GB, Q-Former 1.98 GB, text encoder and VAE ~0.8 GB
        return [needs.hf_weights(f"BLIP-Diffusion pipeline {weights}", weights, ("model_index.json", "unet/*"),
                                 int(6.2 * needs.GB) if weights == cls.default_weights else None, f"hf download {weights}"),
                needs.hf_weights("bert-base-uncased tokenizer (BLIP-Diffusion's Q-Former)", "bert-base-uncased",
                                 ("vocab.txt", "tokenizer_config.json"), int(0.3 * needs.MB),
                                 "hf download bert-base-uncased vocab.txt tokenizer_config.json")]

    def __init__(self, spec: LoadSpec, name: str = "blip-diffusion", num_inference_steps: int = 25,
                 guidance_scale: float = 7.5, negative_prompt: str = BLIP_NEGATIVE_PROMPT,
                 prompt_strength: float = 1.0, prompt_reps: int = 20):
        self.name, self.spec = name, spec
        self.num_inference_steps = int(spec.num_inference_steps or num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = str(negative_prompt)
        self.prompt_strength = float(prompt_strength)
        self.prompt_reps = int(prompt_reps)
        if self.prompt_reps < 1 or self.num_inference_steps < 1:
            raise BenchError(f"method {name!r}: prompt_reps and num_inference_steps must be at least 1")
        # the pipeline repeats the prompt int(prompt_strength * prompt_reps) times
        if not 0 < self.prompt_strength * self.prompt_reps <= MAX_PROMPT_REPEATS:
            raise BenchError(f"method {name!r}: prompt_strength x prompt_reps = {self.prompt_strength * self.prompt_reps:g} "
                             f"repetitions of the prompt; it must be in (0, {MAX_PROMPT_REPEATS}] (defaults: 1.0 x 20)")
        if spec.preset == "tiny":
            from methods.tiny_baselines import tiny_blip_diffusion
            self.pipe, self.model_id, self.revision = tiny_blip_diffusion(spec.device, DTYPES[spec.dtype]), \
                "preset:tiny", "random"
        elif spec.preset is not None:
            raise BenchError(f"method {name!r} has no {spec.preset!r} preset; use --preset smoke or tiny")
        else:
            weights = spec.weights if spec.weights != LoadSpec.weights else self.default_weights
            self.pipe, self.revision = load_blip_diffusion(weights, spec.device, spec.dtype)
            self.model_id = weights
        self.random_weights = spec.preset is not None
        pipe = self.pipe
        pipe.set_progress_bar_config(disable=True)
        make_transformers5_compatible(pipe)
        self.device, self.dtype = torch.device(spec.device), pipe.unet.dtype
        make_batch_invariant(SimpleNamespace(unet=pipe.unet, vae=pipe.vae, device=self.device))
        factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.resolution = spec.resolution or 512                 # the example's height and width
        if self.resolution % factor:
            raise BenchError(f"--resolution {self.resolution} is not a multiple of the VAE factor {factor}")
        self.latent_shape = (pipe.unet.config.in_channels, self.resolution // factor, self.resolution // factor)
        self._queries: dict[tuple[str, str], torch.Tensor] = {}

    def describe(self) -> dict:
        model = {"model_id": self.model_id, "revision": self.revision, "random_weights": self.random_weights,
                 "resolution": self.resolution, "dtype": str(self.dtype).replace("torch.", ""),
                 "base_model": self.default_weights,
                 "num_query_tokens": int(self.pipe.qformer.config.num_query_tokens),
                 # before the fix (transformers 5) the context text encoder attended both ways
                 "text_encoder_attention": "causal"}
        return {"params": {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                           "negative_prompt": self.negative_prompt, "prompt_strength": self.prompt_strength,
                           "prompt_reps": self.prompt_reps, "resolution": self.resolution,
                           "scheduler": type(self.pipe.scheduler).__name__,
                           "reference_image": "first subject image", "subject": "class noun (source and target)",
                           "prompt": "a <class noun> <suite prompt without its leading 'a <class noun>'>"},
                "model": model, "adapter": None,
                "weights_status": "random weights" if self.random_weights else "pretrained"}

    @torch.no_grad()
    def _query(self, path: Path, class_noun: str) -> torch.Tensor:
        """The Q-Former's subject embedding [1, Q, D] of one image and noun, cached."""
        path = Path(path)
        key = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size, class_noun)
        if key not in self._queries:
            cfg = self.pipe.config
            pixels = self.pipe.image_processor.preprocess(load_rgb(path), image_mean=cfg.mean, image_std=cfg.std,
                                                          return_tensors="pt")["pixel_values"]
            self._queries[key] = self.pipe.get_query_embeddings(pixels.to(self.device, self.dtype), [class_noun])
        return self._queries[key]

    @torch.no_grad()
    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]:
        """One image per request, in order; one pipeline pass per (reference image, class noun)."""
        out: list[Image.Image | None] = [None] * len(requests)
        groups: dict[tuple[Path, str], list[int]] = {}
        for i, r in enumerate(requests):
            if r.task != "generate":
                raise BenchError(f"{self.name} only generates; request {r.key} is an edit")
            groups.setdefault((r.subject_images[0], r.class_noun), []).append(i)
        for (reference, noun), index in groups.items():
            batch = [requests[i] for i in index]
            for i, image in zip(index, self._generate_group(batch, reference, noun)):
                out[i] = image
        return out

    def _generate_group(self, batch: Sequence[GenRequest], reference: Path, noun: str) -> list[Image.Image]:
        """BlipDiffusionPipeline.__call__'s computation, with per-request initial noise."""
        pipe, n = self.pipe, len(batch)
        prompts = pipe._build_prompt(prompts=[subject_context(r.prompt, noun) for r in batch],
                                     tgt_subjects=[noun] * n, prompt_strength=self.prompt_strength,
                                     prompt_reps=self.prompt_reps)
        query = self._query(reference, noun).expand(n, -1, -1)
        text = pipe.encode_prompt(query, prompts, self.device)
        guided = self.guidance_scale > 1.0
        if guided:
            uncond_ids = pipe.tokenizer([self.negative_prompt] * n, padding="max_length",
                                        max_length=pipe.text_encoder.text_model.config.max_position_embeddings,
                                        return_tensors="pt").input_ids
            uncond = pipe.text_encoder(input_ids=uncond_ids.to(self.device), ctx_embeddings=None)[0]
            text = torch.cat([uncond, text])
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)   # fresh state (PNDM keeps history)
        scheduler.set_timesteps(self.num_inference_steps)
        generators = request_generators([r.seed for r in batch])
        latents = randn_per_request(generators, self.latent_shape, self.device, self.dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = torch.cat([latents] * 2) if guided else latents
            noise = pipe.unet(model_in, timestep=t, encoder_hidden_states=text, down_block_additional_residuals=None,
                              mid_block_additional_residual=None)["sample"]
            if guided:
                noise_uncond, noise_text = noise.chunk(2)
                noise = noise_uncond + self.guidance_scale * (noise_text - noise_uncond)
            latents = scheduler.step(noise, t, latents)["prev_sample"]
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        images = pipe.image_processor.postprocess(decoded, output_type="pil")
        calls = len(scheduler.timesteps) * (2 if guided else 1)
        for image in images:
            image.info["bench"] = {"unet_calls": calls}
        return images
