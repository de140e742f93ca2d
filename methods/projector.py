"""CLIP/DINO + projector + EZIGen adapter: the image-encoder baselines of paper table 7 (left).

docs/protocols.md section 1, "Ablations and variants": the subject tokens are the patch tokens of a
CLIP or DINO ViT (instead of the reference UNet's norm1 outputs), projected per transformer
block to that block's width, and fed to the same adapter. Trained by the same command as the
adapter (``python -m bench train --method clip-projector ...``); everything but the
projectors and the adapter is frozen.

- CLIP: an open_clip ViT; tokens = the patch tokens after ``ln_post`` (the class token
  dropped), width of the ViT. Default ``ViT-L-14/openai`` (the paper does not name the size:
  an assumption, override with ``--param encoder_model=ARCH/PRETRAINED``).
- DINO: a timm ViT; tokens = ``forward_features`` after the final norm, prefix tokens dropped.
  Default ``vit_base_patch16_224.dino`` (the same caveat; ``--param encoder_model=NAME``).
- Preprocessing: the subject image (its background removed by the same Grounded-SAM step as
  EZIGen's, ``subject_background``; square, [-1, 1]) resized to the
  encoder's input size (bicubic, antialiased) and normalised with the encoder's statistics.
- Projector: one ``Linear(vit_width, block_width)`` per transformer block, in forward order.

Checkpoint: the adapter files of :mod:`methods.ezigen` plus ``projector.safetensors`` (keys
``blocks.{i}.weight|bias``) and ``projector.json`` (encoder kind, model, widths).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench import BenchError

DEFAULT_ENCODERS = {"clip": "ViT-L-14/openai", "dino": "vit_base_patch16_224.dino"}
PROJECTOR_WEIGHTS = "projector.safetensors"
PROJECTOR_CONFIG = "projector.json"


class SubjectViT(nn.Module):
    """A frozen ViT turning [-1, 1] subject images into patch tokens [N, P, D]."""

    def __init__(self, kind: str, model: nn.Module, image_size: int, mean: Sequence[float],
                 std: Sequence[float], name: str):
        super().__init__()
        if kind not in ("clip", "dino"):
            raise BenchError(f"projector encoder must be 'clip' or 'dino', not {kind!r}")
        self.kind, self.model, self.image_size, self.name = kind, model, int(image_size), name
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if kind == "clip":
            self.model.output_tokens = True
            self.width = int(model.transformer.width)
        else:
            self.width = int(model.embed_dim)
        self.model.eval().requires_grad_(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1) / 2
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                              align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images).to(next(self.model.parameters()).dtype)
        if self.kind == "clip":
            _pooled, tokens = self.model(x)
            return tokens
        feats = self.model.forward_features(x)
        return feats[:, self.model.num_prefix_tokens:]


def build_encoder(kind: str, model_name: str | None = None, preset: str | None = None,
                  device: str = "cpu") -> SubjectViT:
    """The frozen ViT of a projector baseline: real weights, or a tiny random one for presets."""
    if kind not in DEFAULT_ENCODERS:
        raise BenchError(f"projector encoder must be 'clip' or 'dino', not {kind!r}")
    if preset is not None:
        from bench.metrics.tiny import (IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
                                        build_tiny_open_clip, build_tiny_timm_dino)
        if kind == "clip":
            model = build_tiny_open_clip(device=device)[0].visual
            return SubjectViT(kind, model, 224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "tiny-random-open-clip")
        return SubjectViT(kind, build_tiny_timm_dino(device=device), 224, IMAGENET_MEAN, IMAGENET_STD,
                          "tiny-random-timm-dino")
    name = model_name or DEFAULT_ENCODERS[kind]
    if kind == "clip":
        import open_clip
        arch, _, pretrained = name.partition("/")
        try:
            model = open_clip.create_model(arch, pretrained=pretrained or None, device=device).visual
        except Exception as exc:  # not cached / no network / unknown tag
            raise BenchError(f"CLIP encoder {name} (open_clip) is not available ({type(exc).__name__}); fetch it "
                             f"once with network access: python -c \"import open_clip; open_clip.create_model("
                             f"'{arch}', pretrained='{pretrained}')\", then HF_HUB_OFFLINE=1 works") from None
        cfg = getattr(model, "preprocess_cfg", {}) or {}
        size = model.image_size[0] if isinstance(model.image_size, (tuple, list)) else model.image_size
        return SubjectViT(kind, model, size, cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)),
                          cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), name)
    import timm
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0).to(device)
    except Exception as exc:
        raise BenchError(f"DINO encoder {name} (timm) is not available ({type(exc).__name__}); fetch it once "
                         f"with network access: python -c \"import timm; timm.create_model('{name}', "
                         f"pretrained=True)\", then HF_HUB_OFFLINE=1 works") from None
    cfg = model.pretrained_cfg
    return SubjectViT(kind, model, cfg.get("input_size", (3, 224, 224))[-1], cfg.get("mean", (0.485, 0.456, 0.406)),
                      cfg.get("std", (0.229, 0.224, 0.225)), name)


class BlockProjector(nn.Module):
    """One linear map per transformer block, ViT width -> that block's width (forward order)."""

    def __init__(self, in_width: int, block_widths: Sequence[int]):
        super().__init__()
        self.in_width, self.block_widths = int(in_width), [int(w) for w in block_widths]
        self.blocks = nn.ModuleList(nn.Linear(self.in_width, w) for w in self.block_widths)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        return [proj(tokens) for proj in self.blocks]


def block_widths(unet: nn.Module, block_names: Sequence[str]) -> list[int]:
    """The hidden width of each named transformer block (its norm1's size)."""
    modules = dict(unet.named_modules())
    return [int(modules[n].norm1.normalized_shape[0]) for n in block_names]


def save_projector(folder: Path, projector: BlockProjector, encoder: SubjectViT) -> None:
    from safetensors.torch import save_file
    folder = Path(folder)
    save_file({k: v.detach().contiguous().cpu() for k, v in projector.state_dict().items()},
              str(folder / PROJECTOR_WEIGHTS))
    (folder / PROJECTOR_CONFIG).write_text(json.dumps(
        {"encoder": encoder.kind, "encoder_model": encoder.name, "in_width": projector.in_width,
         "block_widths": projector.block_widths}, indent=2))


def load_projector(folder: Path, encoder: SubjectViT, widths: Sequence[int]) -> BlockProjector:
    """The trained projector in ``folder``, checked against the encoder and the UNet."""
    from safetensors.torch import load_file
    folder = Path(folder)
    cfg_path, weights_path = folder / PROJECTOR_CONFIG, folder / PROJECTOR_WEIGHTS
    if not cfg_path.exists() or not weights_path.exists():
        raise BenchError(f"--adapter {folder}: no {PROJECTOR_CONFIG}/{PROJECTOR_WEIGHTS} (a projector baseline "
                         f"needs a checkpoint from `python -m bench train --method {encoder.kind}-projector`)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("encoder") != encoder.kind:
        raise BenchError(f"--adapter {folder}: projector trained for the {cfg.get('encoder')} encoder, "
                         f"not {encoder.kind}")
    if int(cfg["in_width"]) != encoder.width or [int(w) for w in cfg["block_widths"]] != list(widths):
        raise BenchError(f"--adapter {folder}: projector widths {cfg['in_width']} -> {cfg['block_widths']} do not "
                         f"match this encoder ({encoder.width}) and UNet ({list(widths)})")
    projector = BlockProjector(encoder.width, widths)
    state = load_file(str(weights_path))
    missing, unexpected = set(projector.state_dict()) - set(state), set(state) - set(projector.state_dict())
    if missing or unexpected:
        raise BenchError(f"--adapter {folder}: {PROJECTOR_WEIGHTS} keys differ (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    projector.load_state_dict(state)
    return projector


# ---- the method -----------------------------------------------------------------------------

class ProjectorFeatures:
    """Drop-in for :class:`methods.ezigen.reference.ReferenceEncoder` in the EZIGen sampler:
    per request, per subject image, the projected ViT tokens of every block (no noise, no
    timestep: computed once per image content and cached)."""

    adaptive = False
    timestep = None

    def __init__(self, parts, encoder: SubjectViT, projector: BlockProjector):
        self.parts, self.encoder, self.projector = parts, encoder, projector
        self._features: dict[tuple, list[torch.Tensor]] = {}
        self._digests: dict[tuple[str, float], str] = {}
        self.forward_passes = 0

    def subject_keys(self, request) -> list[tuple]:
        from bench.files import file_sha256
        keys = []
        for path in request.subject_images:
            path = Path(path)
            stamp = (str(path), path.stat().st_mtime)
            if stamp not in self._digests:
                self._digests[stamp] = file_sha256(path)
            keys.append((self._digests[stamp], str(path)))
        return keys

    @torch.no_grad()
    def features(self, requests, timestep=None) -> list[list[list[torch.Tensor]]]:
        from methods.common import load_image_tensor
        missing = list(dict.fromkeys(k for r in requests for k in self.subject_keys(r) if k not in self._features))
        if missing:
            device = next(self.projector.parameters()).device
            for key in missing:      # one image per forward: features never depend on the batch
                image = load_image_tensor(Path(key[1]), self.parts.resolution)[None].to(device)
                self._features[key] = [f[0].to(self.parts.dtype) for f in self.projector(self.encoder(image))]
            self.forward_passes += len(missing)
        return [[self._features[k] for k in self.subject_keys(r)] for r in requests]

    def is_cached(self, request) -> bool:
        return all(k in self._features for k in self.subject_keys(request))


class ProjectorMethod:
    """``clip-projector`` / ``dino-projector``: EZIGen's sampler and adapter with ViT subject
    tokens. Same parameters, ``generate``/``describe`` contract and records as EZIGenMethod
    (which builds the base model, the adapter and the sampler: nothing is copied), plus
    ``encoder`` ("clip" | "dino") and ``encoder_model``. ``--adapter`` must be a folder written
    by ``bench train --method {clip,dino}-projector`` (adapter + projector files)."""

    tasks = frozenset({"generate", "edit"})
    #: ``**ezigen_params`` go to EZIGenMethod: the runner checks --param against its signature too
    forwards_params_to = "methods.ezigen.method:EZIGenMethod"

    @classmethod
    def requirements(cls, spec, encoder: str = "clip", encoder_model: str | None = None, **ezigen_params) -> list:
        """What a run needs on disk (bench/needs.py): EZIGen's pieces, the trained projector folder
        (--adapter) and the ViT encoder's weights."""
        from bench import needs
        from methods.ezigen.checkpoint import ADAPTER_BYTES, adapter_need
        from methods.ezigen.method import EZIGenMethod

        method = "clip-projector" if encoder == "clip" else "dino-projector"
        out = EZIGenMethod.requirements(spec, adapter=False, **ezigen_params)
        out += adapter_need(None if spec.adapter == "init" else spec.adapter, f"trained {method} folder (--adapter)",
                            f"python -m bench train --method {method} ... (see methods/training/README.md)",
                            size=ADAPTER_BYTES)
        if not spec.preset:
            name = encoder_model or DEFAULT_ENCODERS[encoder]
            if encoder == "clip":
                arch, _, pretrained = name.partition("/")
                repo, size = needs.CLIP_HUB.get((arch, pretrained), (f"(open_clip {name})", None))
                out.append(needs.open_clip_weights(arch, pretrained, repo, size))
            else:
                out.append(needs.timm_weights(name, needs.TIMM_SIZES.get(name)))
        return out

    def __init__(self, spec, name: str = "clip-projector", encoder: Literal["clip", "dino"] = "clip",
                 encoder_model: str | None = None, **ezigen_params):
        from methods.ezigen.editing import EZIGenEditor
        from methods.ezigen.method import EZIGenMethod
        from methods.ezigen.sampler import EZIGenSampler

        if spec.adapter in (None, "init") or not Path(spec.adapter).is_dir():
            raise BenchError(f"method {name!r} needs a trained projector: pass --adapter DIR written by "
                             f"`python -m bench train --method {name}` (adapter.safetensors + {PROJECTOR_WEIGHTS})")
        for key in ("reference_timestep", "reference_trained", "reference_seed", "reference_prompt",
                    "subject_resize"):            # the projector's encoder resizes its own way
            if key in ezigen_params:
                raise BenchError(f"method {name!r} has no reference UNet: parameter {key} does not apply")
        self.base = EZIGenMethod(spec, name=name, **ezigen_params)
        self.name, self.spec = name, spec
        base = self.base
        device = str(base.components.device)
        self.encoder = build_encoder(encoder, encoder_model, spec.preset, device).to(device)
        widths = block_widths(base.components.unet, base.adapter.block_names)
        self.projector = load_projector(Path(spec.adapter), self.encoder, widths).to(device).eval()
        self.features = ProjectorFeatures(base.sd, self.encoder, self.projector)
        base.reference = self.features
        base.sampler = EZIGenSampler(base.sd, base.adapter, self.features, base.similarity, base.config)
        base.editor = EZIGenEditor(base.sd, base.adapter, self.features, base.similarity, base.config,
                                   base.edit_guidance_scale, base.editor.settings)

    def describe(self) -> dict:
        info = self.base.describe()
        for key in ("reference_timestep", "reference_trained", "reference_seed", "reference_prompt"):
            info["params"].pop(key, None)
        info["params"].update({"encoder": self.encoder.kind, "encoder_model": self.encoder.name})
        return info

    def generate(self, requests):
        images = self.base.generate(requests)
        for image, request in zip(images, requests):
            facts = image.info.get("bench", {})
            if "unet_calls" in facts:       # the sampler counts one reference-UNet pass per subject image
                facts["unet_calls"] -= len(request.subject_images)
            facts["encoder"] = self.encoder.kind
        return images
