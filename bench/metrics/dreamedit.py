"""The DreamEdit scores (docs/protocols.md section 3), on the regions Grounded-SAM cuts
(:mod:`bench.metrics.grounded_sam`: how a region is cut and filled).

Scores (paper protocol, metric entry "masked"): DINO-sub and CLIP-I-sub = mean over the
subject's reference images of the cosine between the output's subject region and the reference
image's subject region; DINO-back and CLIP-I-back = cosine between the two background regions. No detection in
an output: the -sub scores are 0 (the subject is missing; ``no_detection="nan"`` leaves them
out instead), -back uses U = M_S, and ``gsam_no_detection/...`` is 1 for that image.

Official DreamEdit protocol (entry "dreamedit-official"): no masks; all images resized to
512x512; -sub = mean over reference images of the whole-output cosine, -back = whole output vs
whole source; overall = geometric mean of the four scores (negatives count as 0.001, as released).
The released code repeats DINO-back in place of CLIP-I-back in the mean: both the corrected and
the as-released overall are written, named so. ``iteration="best"`` (the DreamEdit suite's option
``official_iteration=best``): the released evaluation (``src/auto_evaluation.py``) scores every
iteration's output of a sample and keeps the iteration with the highest as-released geometric
mean (the first one on a tie), reporting its four scores and that mean; an item's
``iteration_images`` are those outputs (just the final image when the method did not keep them).
Its ids start ``official_best_`` so the two choices never mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image

from bench import BenchError
from bench.metrics.base import Metric, ScoreItem
from bench.metrics.grounded_sam import (OFFICIAL_SIZE, GroundedSam, _rgb, cut_background, cut_subject,
                                        read_mask)


# ---- image embeddings (DINO ViT-S/16, CLIP ViT-B/32) ----------------------------------------
Embedder = Callable[[list[Image.Image]], torch.Tensor]     # images -> L2-normalised [N, D]


class _EmbeddingCache:
    """Embeddings of image files, computed once per (backbone, file)."""

    def __init__(self, embed: Embedder, resize: int | None = None):
        self.embed, self.resize = embed, resize
        self._cache: dict[Path, torch.Tensor] = {}

    def load(self, path: Path) -> Image.Image:
        im = _rgb(path)
        return im.resize((self.resize, self.resize), Image.BICUBIC) if self.resize else im

    def files(self, paths: Sequence[Path]) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in paths if p not in self._cache))
        if missing:
            for p, e in zip(missing, self.embed([self.load(p) for p in missing])):
                self._cache[p] = e
        return torch.stack([self._cache[p] for p in paths])


def _mean_reference_cosine(embeddings: torch.Tensor, refs: torch.Tensor) -> float:
    return float((refs @ embeddings).mean())


class _DreamEditBase(Metric):
    """DINO ViT-S/16 and CLIP ViT-B/32 image embeddings from the DreamBench metrics
    (bench.metrics.dino / bench.metrics.clip: same weights, preprocessing and tiny preset)."""

    #: whether the metric segments with Grounded-SAM (its weights are then needed too)
    uses_grounded_sam = False

    @classmethod
    def requirements(cls, preset: str | None = None, dino_backbone: str | None = None,
                     clip_backbone: str | None = None, **params) -> list:
        from bench.metrics.clip import ClipMetric
        from bench.metrics.dino import DinoMetric
        from bench.needs import grounded_sam

        out = DinoMetric.requirements(preset, **({"backbone": dino_backbone} if dino_backbone else {}))
        out += ClipMetric.requirements(preset, **({"backbone": clip_backbone} if clip_backbone else {}))
        return out + (grounded_sam() if cls.uses_grounded_sam and preset is None else [])

    def __init__(self, device: str = "cpu", preset: str | None = None, batch_size: int = 16,
                 dino_backbone: str | None = None, clip_backbone: str | None = None):
        from bench.metrics.clip import ClipMetric
        from bench.metrics.dino import DinoMetric

        self.device, self.preset, self.batch_size = device, preset, batch_size
        dino = DinoMetric(device=device, preset=preset, **({"backbone": dino_backbone} if dino_backbone else {}))
        clip = ClipMetric(device=device, preset=preset, text_metric=False,
                          **({"backbone": clip_backbone} if clip_backbone else {}))
        self.dino_name, self.clip_name = dino.backbone_name, clip.backbone_name
        self.backbones = {"dino": self._chunked(dino.embed_images), "clip_i": self._chunked(clip.embed_images)}

    def _chunked(self, embed: Embedder) -> Embedder:
        def run(images: list[Image.Image]) -> torch.Tensor:
            parts = [embed(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
            return torch.cat(parts) if parts else torch.zeros(0, 1)
        return run

    def _name(self, family: str) -> str:
        return self.dino_name if family == "dino" else self.clip_name

    @staticmethod
    def _check(items: Sequence[ScoreItem]) -> None:
        for item in items:
            if item.source_image is None:
                raise BenchError(f"{item.key}: DreamEdit metrics need the source image (an editing suite's item)")
            if not item.reference_images:
                raise BenchError(f"{item.key}: no reference images for subject {item.subject!r}")


class MaskedRegionMetric(_DreamEditBase):
    """EZIGen's DreamEdit protocol: DINO/CLIP-I -sub and -back through Grounded-SAM masks."""

    family = "masked"
    uses_grounded_sam = True
    # 2: reference photos cut like the output (Grounded-SAM region, white, square); OpenAI CLIP
    # with QuickGELU; files read with bench.images.load_rgb.
    version = "2"

    def __init__(self, device: str = "cpu", preset: str | None = None, annotator: GroundedSam | None = None,
                 no_detection: str = "zero", batch_size: int = 16, dino_backbone: str | None = None,
                 clip_backbone: str | None = None, reference_regions: Literal["cut", "raw"] = "cut",
                 **annotator_options):
        if no_detection not in ("zero", "nan"):
            raise BenchError(f"masked: no_detection={no_detection!r} is not 'zero' or 'nan'")
        if reference_regions not in ("cut", "raw"):
            raise BenchError(f"masked: reference_regions={reference_regions!r} is not 'cut' or 'raw'")
        super().__init__(device, preset, batch_size, dino_backbone, clip_backbone)
        self.reference_regions = reference_regions
        self.version = (type(self).version + ("" if reference_regions == "cut" else "-raw-references")
                        + ("" if no_detection == "zero" else "-no-detection-nan"))   # cached values never mix
        self.annotator = annotator or GroundedSam(device=device, preset=preset, **annotator_options)
        self.no_detection = no_detection
        self._refs = {f: _EmbeddingCache(e) for f, e in self.backbones.items()}
        tag = "gsam" if self.annotator.short_id == "gdino-t+sam-h" else f"gsam-{self.annotator.short_id}"
        self._ids = {(f, part): f"{f}_{part}/{self._name(f)}+{tag}" for f in self.backbones for part in ("sub", "back")}
        self.flag_id = f"gsam_no_detection/{self.annotator.short_id}"
        self.uncut_id = f"gsam_reference_uncut/{self.annotator.short_id}"
        self._ref_cuts: dict[tuple[Path, str], tuple[Image.Image, bool]] = {}
        self._ref_embeddings: dict[tuple[str, Path, str], torch.Tensor] = {}

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ids.values()) + (self.flag_id,) + ((self.uncut_id,) if self.reference_regions == "cut" else ())

    def reference_region(self, path: Path, class_noun: str) -> tuple[Image.Image, bool]:
        """A reference photo cut like an output's subject region (white outside the Grounded-SAM
        mask, cropped to it, square-padded white), and whether a region was found (else the whole
        photo)."""
        self._cut_references([Path(path)], class_noun)
        return self._ref_cuts[(Path(path), class_noun)]

    def _cut_references(self, paths: Sequence[Path], class_noun: str) -> None:
        missing = list(dict.fromkeys(Path(p) for p in paths if (Path(p), class_noun) not in self._ref_cuts))
        if not missing:
            return
        for path, result in zip(missing, self.annotator.annotate(missing, [class_noun] * len(missing))):
            image = _rgb(path)
            mask = read_mask(result.mask_path, image.size) if result.found else None
            found = mask is not None and bool(mask.any())
            self._ref_cuts[(path, class_noun)] = (cut_subject(image, mask), True) if found else (image, False)

    def _reference_embeddings(self, family: str, item: ScoreItem) -> tuple[torch.Tensor, int]:
        """[R, D] embeddings of the item's references as the -sub score sees them, and how many
        of them had no region (used whole)."""
        if self.reference_regions == "raw":
            return self._refs[family].files(list(item.reference_images)), 0
        missing = [p for p in item.reference_images if (family, Path(p), item.class_noun) not in self._ref_embeddings]
        if missing:
            self._cut_references(missing, item.class_noun)
            cuts = [self.reference_region(p, item.class_noun)[0] for p in missing]
            for p, e in zip(missing, self.backbones[family](cuts)):
                self._ref_embeddings[(family, Path(p), item.class_noun)] = e
        refs = torch.stack([self._ref_embeddings[(family, Path(p), item.class_noun)] for p in item.reference_images])
        uncut = sum(not self.reference_region(p, item.class_noun)[1] for p in item.reference_images)
        return refs, uncut

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        self._check(items)
        found = self.annotator.annotate([it.image for it in items], [it.class_noun for it in items])
        subjects, backs, sources, has_subject = [], [], [], []
        for item, result in zip(items, found):
            out = _rgb(item.image)
            fg = read_mask(result.mask_path, out.size) if result.found else np.zeros(out.size[::-1], bool)
            src_region = read_mask(item.mask, out.size) if item.mask is not None else np.zeros_like(fg)
            union = fg | src_region
            source = _rgb(item.source_image)
            if source.size != out.size:
                source = source.resize(out.size, Image.BICUBIC)
            backs.append(cut_background(out, union))
            sources.append(cut_background(source, union))
            has_subject.append(bool(fg.any()))
            if fg.any():
                subjects.append(cut_subject(out, fg))
        rows = [{self.flag_id: 0.0 if ok else 1.0} for ok in has_subject]
        for family, embed in self.backbones.items():
            sub = embed(subjects) if subjects else None
            back = embed(backs)
            src = embed(sources)
            k = 0
            for i, item in enumerate(items):
                rows[i][self._ids[(family, "back")]] = float((back[i] * src[i]).sum())
                refs, uncut = self._reference_embeddings(family, item)
                if self.reference_regions == "cut":
                    rows[i][self.uncut_id] = float(uncut)
                if has_subject[i]:
                    rows[i][self._ids[(family, "sub")]] = _mean_reference_cosine(sub[k], refs)
                    k += 1
                else:
                    rows[i][self._ids[(family, "sub")]] = 0.0 if self.no_detection == "zero" else float("nan")
        return rows


def geometric_mean(values: Sequence[float]) -> float:
    """DreamEdit's overall score: negatives count as 0.001 (as in the released evaluation)."""
    arr = np.where(np.asarray(values, dtype=np.float64) < 0, 0.001, np.asarray(values, dtype=np.float64))
    return float(arr.prod() ** (1.0 / len(arr)))


class OfficialDreamEditMetric(_DreamEditBase):
    """The DreamEdit release's protocol: whole images, 512x512, overall geometric mean."""

    family = "dreamedit-official"
    version = "2"      # 2: OpenAI CLIP with QuickGELU; files read with bench.images.load_rgb

    def __init__(self, device: str = "cpu", preset: str | None = None, batch_size: int = 16,
                 dino_backbone: str | None = None, clip_backbone: str | None = None,
                 iteration: Literal["final", "best"] = "final"):
        if iteration not in ("final", "best"):
            raise BenchError(f"dreamedit-official: iteration={iteration!r} is not 'final' or 'best'")
        super().__init__(device, preset, batch_size, dino_backbone, clip_backbone)
        self.iteration = iteration
        self._files = {f: _EmbeddingCache(e, resize=OFFICIAL_SIZE) for f, e in self.backbones.items()}
        stem = "official_best" if iteration == "best" else "official"
        self._ids = {(f, part): f"{stem}_{f}_{part}/{self._name(f)}" for f in self.backbones for part in ("sub", "back")}
        both = f"{self.dino_name}+{self.clip_name}"
        self.overall_id = f"{stem}_overall/{both}"
        self.as_released_id = f"{stem}_overall_as_released/{both}"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ids.values()) + (self.overall_id, self.as_released_id)

    def _candidates(self, item: ScoreItem) -> list[Path]:
        if self.iteration == "best" and item.iteration_images:
            return list(item.iteration_images)
        return [item.image]

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        self._check(items)
        candidates = [self._candidates(it) for it in items]
        owner = [i for i, paths in enumerate(candidates) for _ in paths]
        rows: list[dict[str, float]] = [{} for _ in owner]        # one per candidate image
        for family, cache in self._files.items():
            # Generated images are not cached across calls (each is scored once); sources and references are.
            outs = cache.embed([cache.load(p) for paths in candidates for p in paths])
            sources = cache.files([it.source_image for it in items])
            for j, i in enumerate(owner):
                refs = cache.files(list(items[i].reference_images))
                rows[j][self._ids[(family, "sub")]] = _mean_reference_cosine(outs[j], refs)
                rows[j][self._ids[(family, "back")]] = float((outs[j] * sources[i]).sum())
        for row in rows:
            d_sub, d_back = row[self._ids[("dino", "sub")]], row[self._ids[("dino", "back")]]
            c_sub, c_back = row[self._ids[("clip_i", "sub")]], row[self._ids[("clip_i", "back")]]
            row[self.overall_id] = geometric_mean([d_sub, c_sub, d_back, c_back])
            row[self.as_released_id] = geometric_mean([d_sub, c_sub, d_back, d_back])
        best: dict[int, dict[str, float]] = {}
        for j, i in enumerate(owner):     # the released rule: max of the as-released mean, first on a tie
            if i not in best or rows[j][self.as_released_id] > best[i][self.as_released_id]:
                best[i] = rows[j]
        return [best[i] for i in range(len(items))]
