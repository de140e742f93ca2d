"""DreamSim perceptual distance (Fu et al., NeurIPS 2023; pip package ``dreamsim``), an extra beside
CLIP-I and DINO. Lower is better: 0 means the same image to the model.

Per generated image, the mean over its reference images (all real images of the subject, or the
conditioning image(s) only in ``mode=paired``) of ``1 - cos(embed(a), embed(b))``, the package's own
distance. Preprocessing as the package's: resize to 224x224 (bicubic, aspect not kept), [0, 1]
tensor; each branch normalises inside the model.

Variants (``--metric-param dreamsim.variant=...``): ``ensemble`` (default: DINO ViT-B/16 + CLIP
ViT-B/16 + OpenCLIP ViT-B/16, LoRA-tuned) and the single-branch ``dino_vitb16``, ``dinov2_vitb14``,
``clip_vitb32``, ``open_clip_vitb32``, ``synclr_vitb16`` (and ``dino_vitb16_patch``,
``dinov2_vitb14_patch``). Ids: ``dreamsim/<variant>`` (``dreamsim_paired/...`` in paired mode).

Weights are read from a local folder only (``cache_dir``: ``--metric-param dreamsim.cache_dir=DIR``,
else ``$DREAMSIM_HOME``, else ``~/.cache/dreamsim``); the package would download into it, this
metric never does: a missing file is a one-line error saying how to fetch it once.

The ``tiny`` preset (tests, smoke runs) uses a tiny random DINO ViT from timm with the same
preprocessing and distance; its numbers mean nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Sequence

import torch

from bench import BenchError
from bench.metrics.base import Metric, ScoreItem
from bench.metrics.clip import MODES, to_rgb_image
from bench.metrics.embeddings import ReferenceBlocks
from bench.metrics.references import REFERENCE_ID_SUFFIX, check_references, reference_choice, reference_set

IMAGE_SIZE = 224
#: files each variant's loader reads from its cache folder (the package's own list), plus the
#: torch.hub code folders its DINO branches load from the same folder
REQUIRED_FILES = {
    "ensemble": ["dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                 "ensemble_lora", "facebookresearch_dino_main"],
    "dino_vitb16": ["dino_vitb16_pretrain.pth", "dino_vitb16_single_lora", "facebookresearch_dino_main"],
    "dinov2_vitb14": ["dinov2_vitb14_pretrain.pth", "dinov2_vitb14_single_lora", "facebookresearch_dinov2_main"],
    "open_clip_vitb32": ["open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"],
    "clip_vitb32": ["clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"],
    "synclr_vitb16": ["synclr_vit_b_16.pth", "synclr_vitb16_single_lora"],
    "dino_vitb16_patch": ["dino_vitb16_pretrain.pth", "dino_vitb16_patch_lora", "facebookresearch_dino_main"],
    "dinov2_vitb14_patch": ["dinov2_vitb14_pretrain.pth", "dinov2_vitb14_patch_lora", "facebookresearch_dinov2_main"],
}

#: approximate download sizes (bench doctor): the ensemble holds three ViT-B backbones in fp32, a
#: single variant one, plus their LoRA weights
DOWNLOAD_SIZES = {variant: int(1.05e9) if variant == "ensemble" else int(0.35e9) for variant in REQUIRED_FILES}


def default_cache_dir() -> Path:
    return Path(os.environ.get("DREAMSIM_HOME", Path.home() / ".cache" / "dreamsim")).expanduser()


def dreamsim_transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize((IMAGE_SIZE, IMAGE_SIZE), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor()])


def missing_files(cache_dir: Path, variant: str) -> list[str]:
    return [name for name in REQUIRED_FILES[variant] if not (cache_dir / name).exists()]


def load_dreamsim(variant: str, cache_dir: Path, device: str):
    """The package's model for ``variant`` from ``cache_dir`` (never downloading)."""
    base, patch = (variant[:-len("_patch")], True) if variant.endswith("_patch") else (variant, False)
    missing = missing_files(cache_dir, variant)
    if missing:
        raise BenchError(
            f"DreamSim {variant} weights not found in {cache_dir} (missing {', '.join(missing)}): fetch them once with "
            f"network access: python -c \"from dreamsim import dreamsim; dreamsim(pretrained=True, device='cpu', "
            f"cache_dir='{cache_dir}', dreamsim_type='{base}'{', use_patch_model=True' if patch else ''})\" "
            "(or pass --metric-param dreamsim.cache_dir=DIR)")
    try:
        from dreamsim import dreamsim
    except ImportError as exc:
        raise BenchError(f"DreamSim needs the package 'dreamsim' ({exc}): pip install dreamsim") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):        # its "Using cached ..." line
            model, _ = dreamsim(pretrained=True, device=device, cache_dir=str(cache_dir), dreamsim_type=base,
                                use_patch_model=patch)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BenchError(f"cannot load DreamSim {variant} from {cache_dir}: {first}. Remove the folder's files of "
                         "this variant and fetch them again (see docs/judge.md, DreamSim)") from None
    return model


class DreamSimMetric(Metric):
    family = "dreamsim"
    version = "1"
    lower_is_better = True

    def __init__(self, device: str = "cpu", preset: str | None = None, variant: str = "ensemble",
                 cache_dir: str | None = None, mode: str = "all-pairs", batch_size: int = 16, references: str = "all"):
        if preset not in (None, "tiny"):
            raise BenchError(f"unknown metric preset {preset!r} (only 'tiny')")
        if variant not in REQUIRED_FILES:
            raise BenchError(f"--metric-param dreamsim.variant={variant!r}: choose one of {', '.join(REQUIRED_FILES)}")
        if mode not in MODES:
            raise BenchError(f"--metric-param dreamsim.mode={mode!r}: choose one of {', '.join(MODES)}")
        self.device, self.preset, self.variant, self.mode = device, preset, variant, mode
        self.reference_choice = reference_choice(mode, references, "dreamsim")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.batch_size = max(1, int(batch_size))
        name = "tiny-random" if preset == "tiny" else variant.replace("_", "-")
        self.metric_id = f"dreamsim{REFERENCE_ID_SUFFIX[self.reference_choice]}/{name}"
        self.transform = dreamsim_transform()
        # per file embedded once; per reference set stacked and normalised once
        self.references = ReferenceBlocks(finish=lambda block: torch.nn.functional.normalize(block, dim=-1))
        self._model = None

    @classmethod
    def requirements(cls, preset: str | None = None, variant: str = "ensemble", cache_dir: str | None = None,
                     **params) -> list:
        """The package and, for real scores, the variant's files in the cache folder (bench/needs.py)."""
        from bench import needs

        out = [needs.package("dreamsim", "dreamsim", "pip install 'dreamsim>=0.2.1'")]
        if preset is None and variant in REQUIRED_FILES:
            folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
            base, patch = (variant[:-len("_patch")], True) if variant.endswith("_patch") else (variant, False)
            get = (f"HF_HUB_OFFLINE=0 python -c \"from dreamsim import dreamsim; dreamsim(pretrained=True, device='cpu', "
                   f"cache_dir='{folder}', dreamsim_type='{base}'{', use_patch_model=True' if patch else ''})\"  "
                   "(once, online)")

            def problem() -> str | None:
                missing = missing_files(folder, variant)
                return f"lacks {', '.join(missing)}" if missing else None
            out.append(needs.probe(f"DreamSim {variant} weights", f"dreamsim:{folder}:{variant}", get, problem,
                                   where=str(folder), size=DOWNLOAD_SIZES.get(variant), measure=folder))
        return out

    @classmethod
    def precheck(cls, preset: str | None = None, variant: str = "ensemble", cache_dir: str | None = None, **_) -> None:
        """The variant's weight files, checked before a run generates anything."""
        if preset is None and variant in REQUIRED_FILES:
            folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
            if missing_files(folder, variant):
                load_dreamsim(variant, folder, "cpu")         # raises the one-line error naming them

    @classmethod
    def check_samples(cls, samples, **params) -> None:
        """references=held-out where a subject has no photo left: refused before any work."""
        check_references(samples, "dreamsim", **params)

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.metric_id,)

    @property
    def model(self):
        if self._model is None:
            if self.preset == "tiny":
                from bench.metrics.tiny import IMAGENET_MEAN, IMAGENET_STD, build_tiny_timm_dino
                from torchvision import transforms as T

                vit, norm = build_tiny_timm_dino(device=self.device), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
                self._model = lambda x: vit.forward_features(norm(x))[:, 0]
            else:
                model = load_dreamsim(self.variant, self.cache_dir, self.device)
                self._model = model.embed
        return self._model

    @torch.no_grad()
    def embed(self, images: Sequence) -> torch.Tensor:
        """DreamSim embeddings [N, D] (float32, on the CPU) of images (paths or PIL images)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.transform(to_rgb_image(im)) for im in images[start:start + self.batch_size]])
            out.append(self.model(pixels.to(self.device)).reshape(len(pixels), -1).float().cpu())
        return torch.cat(out)

    def distances(self, images: Sequence, references: Sequence[Sequence]) -> list[float]:
        """Per image, the mean of 1 - cosine with each of its reference images (paths)."""
        generated = torch.nn.functional.normalize(self.embed(list(images)), dim=-1)
        out = []
        for vector, refs in zip(generated, references):
            ref = self.references.get(refs, self.embed)
            out.append(float((1 - ref @ vector).mean()))
        return out

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        if not items:
            return []
        values = self.distances([it.image for it in items], [reference_set(it, self.reference_choice) for it in items])
        return [{self.metric_id: v} for v in values]
