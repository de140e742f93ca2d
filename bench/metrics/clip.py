"""CLIP-T (image-text) and CLIP-I (image-image) cosines, and the image helpers shared by the
embedding metrics.

docs/protocols.md section 2: CLIP-T is the cosine between the generated image and the prompt with
the identifier removed; CLIP-I the cosine of image embeddings averaged over all pairs
(generated image, real image of the subject); both with CLIP ViT-B/32 (OpenAI weights), reported
as cosines (about 0.30), not x100 and not clamped. The "paired" mode (DreamBench++, Kosmos-G)
compares each output only with its conditioning image(s).

Backbones:

- ``open_clip:<arch>/<pretrained>`` (default ``open_clip:ViT-B-32/openai``): the model and its own
  eval transform from ``open_clip.create_model_and_transforms``.
- ``hf:<id or folder>``: a transformers ``CLIPModel`` with the ``CLIPProcessor`` saved beside it
  (the pair torchmetrics' ``CLIPScore`` uses; docs/protocols.md section 6).

OpenAI weights are QuickGELU networks (docs/protocols.md section 6): :func:`create_open_clip` takes
the activation from open_clip's pretrained table and :func:`check_activation` refuses a model
built with the other one (open_clip itself only warns).

Preprocessing (parameter ``preprocessing``): "pil", the backbone's own eval transform;
"fastcomposer", FastComposer's evaluation (docs/protocols.md section 4): generated image files
read back as the JPEG its generation script saves, then a float-tensor bicubic resize without
antialiasing, centre crop, CLIP normalisation. The version names it ("2-fastcomposer").

Image files are read with bench.images.load_rgb. Image input (docs/protocols.md section 6): a path, a PIL image, a uint8 array/tensor, or a float
array/tensor with values in [0, 1], which is converted exactly (``round(x * 255)``). A float input
with values outside [0, 1] is refused: it is ambiguous (0..255 floats, or [-1, 1]) and scoring
it would silently measure a different image. Tensors are CHW (torch convention), numpy arrays
HWC (PIL convention); 1-channel images are expanded to RGB.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch
from PIL import Image

from bench import BenchError
from bench.images import as_saved_jpeg, jpeg_roundtrip, load_rgb, to_rgb
from bench.limits import clip_text, reason
from bench.metrics.base import Metric, ScoreItem
from bench.metrics.references import (REFERENCE_ID_SUFFIX, REFERENCES, check_references,  # noqa: F401 (re-exported)
                                      reference_choice, reference_set)
from bench.metrics.embeddings import EmbeddingCache, ReferenceBlocks, image_key  # noqa: F401 (image_key: also from here)

DEFAULT_BACKBONE = "open_clip:ViT-B-32/openai"
MODES = ("all-pairs", "paired")
#: "pil": the backbone's own eval transform on the decoded file (open_clip: PIL bicubic resize with
#: antialiasing, centre crop, normalise). "fastcomposer": FastComposer's evaluation (docs/protocols.md
#: section 4): generated images pass through a JPEG save/load first (PIL defaults, quality 75, as its
#: generation script saves them) and CLIP resizes a float tensor without antialiasing.
PREPROCESSING = ("pil", "fastcomposer")


# ---- images ---------------------------------------------------------------------------------
def to_rgb_image(image) -> Image.Image:
    """Any supported image input as an RGB PIL image (see the module docstring)."""
    if isinstance(image, (str, Path)):
        return load_rgb(Path(image))
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise BenchError(f"an image tensor must be CHW with 1 or 3 channels, got shape {tuple(image.shape)}")
        array = _to_uint8(image.detach().cpu(), "tensor").permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise BenchError(f"an image array must be HWC with 1 or 3 channels, got shape {image.shape}")
        array = _to_uint8(torch.from_numpy(np.ascontiguousarray(image)), "array").numpy()
    else:
        raise BenchError(f"unsupported image type {type(image).__name__}: pass a path, PIL image, "
                         "uint8 tensor (CHW) or array (HWC), or floats in [0, 1]")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _to_uint8(values: torch.Tensor, what: str) -> torch.Tensor:
    if values.dtype == torch.uint8:
        return values
    if values.is_floating_point():
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise BenchError(
                f"float image {what} with values in [{low:.3g}, {high:.3g}]: only [0, 1] floats are accepted "
                "(pass uint8 0..255, or divide by 255); other ranges would score a different image")
        return (values.double() * 255.0).round().to(torch.uint8)
    raise BenchError(f"image {what} of dtype {values.dtype}: pass uint8 (0..255) or floats in [0, 1]")


PRECISIONS = ("fp32", "fp16")


def check_precision(precision: str, device: str, metric: str) -> str:
    """fp32 (the default, everywhere) or fp16 (half precision forwards, CUDA only; the metric's
    version says so, so its scores never mix with fp32 ones in the cache)."""
    if precision not in PRECISIONS:
        raise BenchError(f"--metric-param {metric}.precision={precision!r}: use fp32 or fp16")
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise BenchError(f"--metric-param {metric}.precision=fp16 needs a CUDA device (--device cuda); "
                         "on the CPU use fp32")
    return precision


def normalize(features: torch.Tensor) -> torch.Tensor:
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True)


def mean_cosines(generated: torch.Tensor, groups: Iterable[torch.Tensor]) -> list[float]:
    """Per generated embedding, the mean cosine with every embedding of its group (all
    normalised): the "all pairs" average of docs/protocols.md section 2."""
    return [float((refs @ vector).mean()) for vector, refs in zip(generated, groups)]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


#: What every "cannot load a metric backbone" message ends with: the offline way to test.
OFFLINE_HINT = ("to test the pipeline without these weights, score with random metric models: "
                "--metric-preset tiny (bench run / bench score) or --preset tiny (bench metric)")


def weights_missing(what: str, how: str, exc: BaseException) -> BenchError:
    """One line: what could not load, the library's reason in full (bench.limits.reason: never
    cut mid-word), how to get the weights, and the offline alternative."""
    return BenchError(f"cannot load {what}: {reason(exc).rstrip('.')}. {how}; {OFFLINE_HINT}")


# ---- backends -------------------------------------------------------------------------------
def pretrained_uses_quick_gelu(arch: str, pretrained: str) -> bool:
    """Whether the weights ``pretrained`` of ``arch`` were trained with QuickGELU, from open_clip's
    own pretrained table (the ``openai`` tags say so; a ``*-quickgelu`` architecture says so too).
    A file path as ``pretrained`` follows the architecture name."""
    from open_clip.pretrained import get_pretrained_cfg

    if arch.lower().endswith("-quickgelu"):
        return True
    return bool((get_pretrained_cfg(arch, pretrained) or {}).get("quick_gelu", False))


def check_activation(model: torch.nn.Module, quick_gelu: bool, what: str) -> None:
    """Refuse a CLIP whose MLP activation is not the one its weights were trained with.

    open_clip builds ``ViT-B-32`` / ``ViT-L-14`` with plain GELU even for ``pretrained='openai'``
    (it only warns), which runs OpenAI's weights through the wrong network (docs/protocols.md
    section 6). Every open_clip model this harness builds passes through this check."""
    from open_clip.transformer import QuickGELU

    quick = sum(isinstance(m, QuickGELU) for m in model.modules())
    plain = sum(isinstance(m, torch.nn.GELU) for m in model.modules())
    if quick_gelu and (plain or not quick):
        raise BenchError(f"{what}: the weights need QuickGELU but the model has {plain} GELU and {quick} QuickGELU "
                         "layers (build it with force_quick_gelu=True or the '-quickgelu' architecture)")
    if not quick_gelu and quick:
        raise BenchError(f"{what}: the weights were trained with GELU but the model has {quick} QuickGELU layers")


def create_open_clip(arch: str, pretrained: str, device: str = "cpu"):
    """``(model, eval preprocess, tokenizer)`` from open_clip with the activation its weights were
    trained with (QuickGELU for OpenAI's), checked. The one place the harness builds an open_clip
    model with pretrained weights (CLIP-T, CLIP-I, the ViT-L/14 prompt score, EZIGen's stop rule)."""
    import open_clip

    quick = pretrained_uses_quick_gelu(arch, pretrained)
    logging.disable(logging.ERROR)      # open_clip logs a failed download itself; ours is the one line
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, device=device, force_quick_gelu=quick)
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:  # download/cache failures surface as many exception types
        raise weights_missing(
            f"CLIP {arch} ({pretrained}) with open_clip", "The weights are fetched into the Hugging Face "
            f"cache on first use: run once with network access, e.g. `python -c \"import open_clip; "
            f"open_clip.create_model_and_transforms('{arch}', pretrained='{pretrained}')\"`, "
            "then HF_HUB_OFFLINE=1 works", exc) from None
    finally:
        logging.disable(logging.NOTSET)
    check_activation(model, quick, f"CLIP {arch} ({pretrained})")
    return model.eval(), preprocess, tokenizer


def tensor_resize_transform(preprocess, size: int):
    """FastComposer's CLIP input (docs/protocols.md section 4): the image as a float tensor in
    [0, 1], resized bicubically on its shorter side to ``size`` WITHOUT antialiasing (what
    torchvision 0.14 did for tensors), centre-cropped, normalised with the mean/std of the
    model's own transform. No clamping after the resize (bicubic may overshoot [0, 1])."""
    from torchvision.transforms import InterpolationMode, Normalize
    from torchvision.transforms import functional as TF

    norm = [t for t in getattr(preprocess, "transforms", ()) if isinstance(t, Normalize)]
    if not norm:
        raise BenchError("fastcomposer preprocessing needs the model's Normalize transform")
    mean, std = list(norm[-1].mean), list(norm[-1].std)

    def run(image: Image.Image) -> torch.Tensor:
        pixels = TF.to_tensor(image)
        pixels = TF.resize(pixels, size, interpolation=InterpolationMode.BICUBIC, antialias=False)
        return TF.normalize(TF.center_crop(pixels, size), mean, std)
    return run


class _OpenClipBackend:
    def __init__(self, arch: str, pretrained: str, device: str, preset: str | None, preprocessing: str = "pil",
                 precision: str = "fp32"):
        if preset == "tiny":
            from bench.metrics.tiny import build_tiny_open_clip
            model, self.preprocess, self.tokenizer = build_tiny_open_clip(device=device)
        else:
            model, self.preprocess, self.tokenizer = create_open_clip(arch, pretrained, device)
        if preprocessing == "fastcomposer":
            size = model.visual.image_size
            self.preprocess = tensor_resize_transform(self.preprocess, size[0] if isinstance(size, tuple) else size)
        self.model = model.eval()
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if precision == "fp16":
            self.model = self.model.half()
        self.device = device

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        return self.encode_pixels(torch.stack([self.preprocess(im) for im in images]))

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(self.model.encode_image(pixels.to(self.device, self.dtype))).cpu()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        texts = [clip_text(t) for t in texts]      # 77 tokens survive: never tokenize megabytes
        return normalize(self.model.encode_text(self.tokenizer(texts).to(self.device))).cpu()


def _features(output) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class _HFClipBackend:
    def __init__(self, source: str, device: str, preset: str | None):
        if preset == "tiny":
            from bench.metrics.tiny import build_tiny_hf_clip
            model, self.processor = build_tiny_hf_clip()
        else:
            from transformers import CLIPModel, CLIPProcessor
            try:
                model = CLIPModel.from_pretrained(source)
                self.processor = CLIPProcessor.from_pretrained(source)
            except Exception as exc:
                raise weights_missing(
                    f"transformers CLIP {source!r}", "Pass a local folder with config.json, the weights and the "
                    "processor files, or download the id into the Hugging Face cache with network access "
                    "(`hf download ID`)", exc) from None
            if source.startswith("openai/"):
                acts = {model.config.vision_config.hidden_act, model.config.text_config.hidden_act}
                if acts != {"quick_gelu"}:
                    raise BenchError(f"transformers CLIP {source!r}: OpenAI weights need quick_gelu, the config says "
                                     f"{sorted(acts)}")
        self.model = model.to(device).eval()
        self.device = device

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return normalize(_features(self.model.get_image_features(pixel_values=pixels))).cpu()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor(text=[clip_text(t) for t in texts], return_tensors="pt", padding=True, truncation=True, max_length=77)
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return normalize(_features(self.model.get_text_features(**tokens))).cpu()


def parse_clip_backbone(backbone: str) -> tuple[str, str, str]:
    """("open_clip", arch, pretrained) or ("hf", source, "")."""
    kind, sep, rest = backbone.partition(":")
    if sep and kind == "open_clip":
        arch, slash, pretrained = rest.partition("/")
        if arch and slash and pretrained:
            return "open_clip", arch, pretrained
    if sep and kind == "hf" and rest:
        return "hf", rest, ""
    raise BenchError(f"bad CLIP backbone {backbone!r}: use open_clip:<arch>/<pretrained> "
                     f"(e.g. {DEFAULT_BACKBONE}) or hf:<model id or folder>")


# ---- the metric -----------------------------------------------------------------------------
class ClipMetric(Metric):
    """CLIP-T and CLIP-I on one backbone (the model loads on first use, so that a fully cached
    scoring run loads nothing). Ids: ``clip_t/<backbone>``, ``clip_i/<backbone>`` (all-pairs) or
    ``clip_i_paired/<backbone>`` (paired mode); the tiny preset's backbone reads ``tiny-random``."""

    family = "clip"

    @classmethod
    def requirements(cls, preset: str | None = None, backbone: str = DEFAULT_BACKBONE, **params) -> list:
        from bench import needs

        if preset is not None:
            return []
        kind, source, pretrained = parse_clip_backbone(backbone)
        if kind == "hf":
            return [needs.hf_weights(f"CLIP {source} weights, transformers", source,
                                     ("config.json", "model.safetensors|pytorch_model.bin"))]
        repo, size = needs.CLIP_HUB.get((source, pretrained), (f"open_clip:{source}/{pretrained}", None))
        return [needs.open_clip_weights(source, pretrained, repo, size)]

    # 2: OpenAI weights run with QuickGELU (version 1 ran them through plain GELU); files read
    # with bench.images.load_rgb (EXIF, alpha on white, 16-bit scaled).
    version = "2"

    @classmethod
    def precheck(cls, backbone: str = DEFAULT_BACKBONE, **_) -> None:
        """The backbone's spelling, checked before a run generates anything."""
        parse_clip_backbone(str(backbone))

    @classmethod
    def check_samples(cls, samples, **params) -> None:
        """references=held-out where a subject has no photo left: refused before any work."""
        check_references(samples, cls.family, **params)

    def __init__(self, device: str = "cpu", preset: str | None = None, backbone: str = DEFAULT_BACKBONE,
                 mode: Literal["all-pairs", "paired"] = "all-pairs", image_metric: bool = True, text_metric: bool = True,
                 preprocessing: Literal["pil", "fastcomposer"] = "pil", precision: Literal["fp32", "fp16"] = "fp32",
                 references: Literal["all", "held-out", "conditioning"] = "all"):
        if preset not in (None, "tiny"):
            raise BenchError(f"unknown metric preset {preset!r} (only 'tiny')")
        self.precision = check_precision(precision, device, "clip")
        if mode not in MODES:
            raise BenchError(f"unknown CLIP mode {mode!r}: use one of {', '.join(MODES)}")
        self.reference_choice = reference_choice(mode, references, "clip")
        if preprocessing not in PREPROCESSING:
            raise BenchError(f"unknown CLIP preprocessing {preprocessing!r}: use one of {', '.join(PREPROCESSING)}")
        self.kind, self.source, self.pretrained = parse_clip_backbone(backbone)
        if preprocessing == "fastcomposer" and self.kind != "open_clip":
            raise BenchError("CLIP preprocessing=fastcomposer needs an open_clip backbone")
        self.preprocessing = preprocessing
        # The preprocessing is part of the version, so cached scores of the other one are not reused.
        self.version = (type(self).version + ("" if preprocessing == "pil" else f"-{preprocessing}")
                        + ("" if self.precision == "fp32" else f"-{self.precision}"))
        self.backbone, self.device, self.preset, self.mode = backbone, device, preset, mode
        self.image_metric, self.text_metric = _as_bool(image_metric), _as_bool(text_metric)
        if not (self.image_metric or self.text_metric):
            raise BenchError("the CLIP metric needs image_metric or text_metric")
        name = (f"{self.source}-{self.pretrained}" if self.kind == "open_clip"
                else "hf-" + Path(self.source.rstrip("/")).name)
        if preset == "tiny":
            name = "tiny-random" if self.kind == "open_clip" else "hf-tiny-random"
        self.backbone_name = slug(name)
        self.text_id = f"clip_t/{self.backbone_name}"
        self.image_id = f"clip_i{REFERENCE_ID_SUFFIX[self.reference_choice]}/{self.backbone_name}"
        self._backend = None
        self.references = ReferenceBlocks()  # real images: per file computed once, per set stacked once
        self.texts = EmbeddingCache()        # prompts: computed once

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i for i, on in ((self.text_id, self.text_metric), (self.image_id, self.image_metric)) if on)

    @property
    def backend(self):
        if self._backend is None:
            if self.kind == "open_clip":
                self._backend = _OpenClipBackend(self.source, self.pretrained, self.device, self.preset,
                                                 self.preprocessing, self.precision)
            else:
                self._backend = _HFClipBackend(self.source, self.device, self.preset)
        return self._backend

    # -- building blocks, also used by `bench metric` --
    def embed_images(self, images: Sequence) -> torch.Tensor:
        return self.backend.encode_images([to_rgb_image(im) for im in images])

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.texts.get(list(texts), self.backend.encode_texts)

    def embed_references(self, paths: Sequence) -> torch.Tensor:
        """[len(paths), dim]: the reference files' embeddings, computed once per file and stacked
        once per set (:class:`ReferenceBlocks`)."""
        return self.references.get(paths, self.embed_images)

    def embed_generated(self, images: Sequence) -> torch.Tensor:
        """Generated images: with fastcomposer preprocessing, files go through a JPEG save/load
        first (unless they are JPEG files already), as FastComposer's pipeline stores them."""
        if self.preprocessing == "fastcomposer":
            images = [as_saved_jpeg(im) if isinstance(im, (str, Path)) else im for im in images]
        return self.embed_images(images)

    def clip_t(self, images: Sequence, texts: Sequence[str]) -> list[float]:
        if len(images) != len(texts):
            raise BenchError(f"CLIP-T needs one text per image: {len(images)} images, {len(texts)} texts")
        return [float(v) for v in (self.embed_generated(images) * self.embed_texts(texts)).sum(-1)]

    def clip_i(self, images: Sequence, references: Sequence[Sequence]) -> list[float]:
        """Per image, the mean cosine with each of its reference images (paths)."""
        return mean_cosines(self.embed_generated(images), [self.embed_references(r) for r in references])

    # -- the Metric interface --
    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        if not items:
            return []
        return self._rows(items, self.embed_generated([it.image for it in items]))

    def views(self):
        """The generated image as the backbone sees it (bench.metrics.pipeline): open_clip's eval
        transform split at ToTensor ("pil"), or FastComposer's JPEG read-back and tensor resize
        per image ("fastcomposer"). transformers backbones read their files in :meth:`score`."""
        if self.kind != "open_clip":
            return None
        from bench.metrics.pipeline import split_transform

        if self.preprocessing == "pil":
            return {"image": split_transform(self.backend.preprocess, "pil")}
        from bench.metrics.base import ImageView

        tensor_transform = self.backend.preprocess

        def prepare(image, path):
            return tensor_transform(image if _is_jpeg(path) else jpeg_roundtrip(image))
        size = getattr(self.backend.model.visual, "image_size", None)
        return {"image": ImageView(key=f"fastcomposer-jpeg-q75-tensor-resize:{size}:{id(tensor_transform)}",
                                   prepare=prepare, finish=lambda batch: batch)}

    def score_views(self, items: Sequence[ScoreItem], pixels) -> list[dict[str, float]]:
        return self._rows(items, self.backend.encode_pixels(pixels["image"]))

    def _rows(self, items: Sequence[ScoreItem], generated: torch.Tensor) -> list[dict[str, float]]:
        out = [{} for _ in items]
        if self.text_metric:
            text = self.embed_texts([it.eval_text for it in items])
            for row, value in zip(out, (generated * text).sum(-1)):
                row[self.text_id] = float(value)
        if self.image_metric:
            groups = [self.embed_references(reference_set(it, self.reference_choice)) for it in items]
            for row, value in zip(out, mean_cosines(generated, groups)):
                row[self.image_id] = value
        return out


def _is_jpeg(path) -> bool:
    """Whether a file is a JPEG (a header read, no decode): as_saved_jpeg's test."""
    with Image.open(path) as header:
        return header.format == "JPEG"


def _as_bool(value) -> bool:
    if isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise BenchError(f"expected a boolean, got {value!r}")
    return bool(value)
