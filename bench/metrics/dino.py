"""DINO image similarity (docs/protocols.md section 2) and a DINOv2 extra.

DINO (the protocol's): cosine of the CLS token after the final norm of DINO ViT-S/16 (timm
``vit_small_patch16_224.dino``, the weights of ``dino_vits16``); preprocessing Resize(256, bicubic),
CenterCrop(224), ImageNet normalisation; averaged over all pairs (generated image, real image of
the subject) like CLIP-I, or over the conditioning image(s) only in "paired" mode.
Ids: ``dino/vit-s-16`` (``dino_paired/...`` in paired mode).

DINOv2 (an extra, named separately so it never mixes with the protocol's DINO column): a
transformers ``Dinov2Model`` with its own image processor; CLS token after the final layernorm.
Ids: ``dinov2/vit-b-14`` for ``facebook/dinov2-base``.

Image input rules are those of :mod:`bench.metrics.clip` (uint8 or [0, 1] floats, else refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch

from bench import BenchError
from bench.metrics.base import Metric, ScoreItem
from bench.metrics.clip import MODES, check_precision, mean_cosines, normalize, slug, to_rgb_image, weights_missing
from bench.metrics.embeddings import ReferenceBlocks
from bench.metrics.references import REFERENCE_ID_SUFFIX, check_references, reference_choice, reference_set
from bench.metrics.tiny import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_DINO = "timm:vit_small_patch16_224.dino"
DEFAULT_DINOV2 = "hf:facebook/dinov2-base"
_KNOWN_NAMES = {
    "vit_small_patch16_224.dino": "vit-s-16", "vit_small_patch8_224.dino": "vit-s-8",
    "vit_base_patch16_224.dino": "vit-b-16", "vit_base_patch8_224.dino": "vit-b-8",
    "facebook/dinov2-small": "vit-s-14", "facebook/dinov2-base": "vit-b-14",
    "facebook/dinov2-large": "vit-l-14", "facebook/dinov2-giant": "vit-g-14",
}


def dino_transform():
    """Resize(256, bicubic) on the shorter side, CenterCrop(224), ToTensor, ImageNet
    normalisation (docs/protocols.md section 2, DINO)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class _EmbeddingSimilarity(Metric):
    """Shared logic: image embeddings, a per-file cache of the real images, mean cosines."""

    prefix = ""

    def __init__(self, device: str, preset: str | None, backbone: str, mode: str, name: str, references: str = "all"):
        if preset not in (None, "tiny"):
            raise BenchError(f"unknown metric preset {preset!r} (only 'tiny')")
        if mode not in MODES:
            raise BenchError(f"unknown {self.prefix} mode {mode!r}: use one of {', '.join(MODES)}")
        self.device, self.preset, self.backbone, self.mode = device, preset, backbone, mode
        self.reference_choice = reference_choice(mode, references, self.family)
        self.backbone_name = "tiny-random" if preset == "tiny" else slug(name)
        self.metric_id = f"{self.prefix}{REFERENCE_ID_SUFFIX[self.reference_choice]}/{self.backbone_name}"
        self.references = ReferenceBlocks()   # per file computed once, per reference set stacked once
        self._model = None

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.metric_id,)

    @classmethod
    def check_samples(cls, samples, **params) -> None:
        """references=held-out where a subject has no photo left: refused before any work."""
        check_references(samples, cls.family, **params)

    def embed_images(self, images: Sequence) -> torch.Tensor:
        return self._encode([to_rgb_image(im) for im in images])

    def embed_references(self, paths: Sequence) -> torch.Tensor:
        return self.references.get(paths, self.embed_images)

    def similarity(self, images: Sequence, references: Sequence[Sequence]) -> list[float]:
        """Per image, the mean cosine with each of its reference images (paths)."""
        return mean_cosines(self.embed_images(images), [self.embed_references(r) for r in references])

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        if not items:
            return []
        values = self.similarity([it.image for it in items], [reference_set(it, self.reference_choice) for it in items])
        return [{self.metric_id: v} for v in values]

    def _encode(self, images) -> torch.Tensor:
        raise NotImplementedError


class DinoMetric(_EmbeddingSimilarity):
    family = "dino"

    @classmethod
    def requirements(cls, preset: str | None = None, backbone: str = DEFAULT_DINO, **params) -> list:
        from bench import needs

        name = backbone.partition(":")[2]
        return [] if preset is not None else [needs.timm_weights(name, needs.TIMM_SIZES.get(name))]
    version = "2"          # 2: files read with bench.images.load_rgb (EXIF, alpha on white, 16-bit scaled)
    prefix = "dino"

    @classmethod
    def precheck(cls, backbone: str = DEFAULT_DINO, **_) -> str:
        """The backbone's spelling (checked before a run generates anything); its model name."""
        kind, _, model_name = str(backbone).partition(":")
        if kind != "timm" or not model_name:
            raise BenchError(f"bad DINO backbone {backbone!r}: use timm:<model name> (default {DEFAULT_DINO})")
        return model_name

    def __init__(self, device: str = "cpu", preset: str | None = None, backbone: str = DEFAULT_DINO,
                 mode: Literal["all-pairs", "paired"] = "all-pairs", precision: Literal["fp32", "fp16"] = "fp32",
                 references: Literal["all", "held-out", "conditioning"] = "all"):
        self.precision = check_precision(precision, device, "dino")
        if self.precision != "fp32":
            self.version = f"{type(self).version}-{self.precision}"
        self.model_name = self.precheck(backbone)
        super().__init__(device, preset, backbone, mode, _KNOWN_NAMES.get(self.model_name, self.model_name), references)
        self._transform = None

    @property
    def transform(self):
        """The protocol's transform, built on first use (a fully cached scoring run imports no torchvision)."""
        if self._transform is None:
            self._transform = dino_transform()
        return self._transform

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            if self.preset == "tiny":
                from bench.metrics.tiny import build_tiny_timm_dino
                self._model = build_tiny_timm_dino(device=self.device)
            else:
                import timm
                try:
                    model = timm.create_model(self.model_name, pretrained=True, num_classes=0)
                except Exception as exc:
                    raise weights_missing(
                        f"DINO {self.model_name} with timm", "timm fetches it into the Hugging Face cache on first "
                        f"use: run once with network access, e.g. `python -c \"import timm; timm.create_model("
                        f"'{self.model_name}', pretrained=True)\"`, then HF_HUB_OFFLINE=1 works", exc) from None
                self._model = model.to(self.device).eval()
            if self.precision == "fp16":
                self._model = self._model.half()
        return self._model

    def preprocess(self, images) -> torch.Tensor:
        return torch.stack([self.transform(to_rgb_image(im)) for im in images])

    @torch.no_grad()
    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised CLS tokens after the final norm for preprocessed pixels [N, 3, 224, 224]."""
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        tokens = self.model.forward_features(pixels.to(self.device, dtype))   # timm applies the final norm here
        return normalize(tokens[:, 0]).cpu()

    def _encode(self, images) -> torch.Tensor:
        return self.embed_pixels(self.preprocess(images))

    def views(self):
        """The protocol's transform split at ToTensor (bench.metrics.pipeline)."""
        from bench.metrics.pipeline import split_transform

        return {"image": split_transform(self.transform, "dino")}

    def score_views(self, items: Sequence[ScoreItem], pixels) -> list[dict[str, float]]:
        generated = self.embed_pixels(pixels["image"])
        return [{self.metric_id: v} for v in
                mean_cosines(generated, [self.embed_references(reference_set(it, self.reference_choice)) for it in items])]


class Dinov2Metric(_EmbeddingSimilarity):
    family = "dinov2"

    @classmethod
    def requirements(cls, preset: str | None = None, backbone: str = DEFAULT_DINOV2, **params) -> list:
        from bench import needs

        source = backbone.partition(":")[2]
        return [] if preset is not None else [needs.hf_weights(
            f"DINOv2 {source} weights", source, ("config.json", "preprocessor_config.json",
                                                "model.safetensors|pytorch_model.bin"), None,
            f'hf download {source} --include "*.json" "model.safetensors"')]
    version = "2"          # 2: files read with bench.images.load_rgb
    prefix = "dinov2"

    def __init__(self, device: str = "cpu", preset: str | None = None, backbone: str = DEFAULT_DINOV2,
                 mode: Literal["all-pairs", "paired"] = "all-pairs",
                 references: Literal["all", "held-out", "conditioning"] = "all"):
        kind, _, self.source = backbone.partition(":")
        if kind != "hf" or not self.source:
            raise BenchError(f"bad DINOv2 backbone {backbone!r}: use hf:<model id or folder> (default {DEFAULT_DINOV2})")
        name = _KNOWN_NAMES.get(self.source, Path(self.source.rstrip("/")).name)
        super().__init__(device, preset, backbone, mode, name, references)
        self._processor = None

    def _load(self) -> None:
        if self.preset == "tiny":
            from bench.metrics.tiny import build_tiny_dinov2
            model, self._processor = build_tiny_dinov2()
        else:
            from transformers import AutoImageProcessor, Dinov2Model
            try:
                model = Dinov2Model.from_pretrained(self.source)
                self._processor = AutoImageProcessor.from_pretrained(self.source)
            except Exception as exc:
                raise weights_missing(
                    f"DINOv2 {self.source!r} with transformers", "Pass a local folder, or download the id into the "
                    "Hugging Face cache with network access (`hf download ID`)", exc) from None
        self._model = model.to(self.device).eval()

    @torch.no_grad()
    def _encode(self, images) -> torch.Tensor:
        if self._model is None:
            self._load()
        pixels = self._processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return normalize(self._model(pixel_values=pixels).last_hidden_state[:, 0]).cpu()
