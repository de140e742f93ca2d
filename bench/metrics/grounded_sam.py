"""Grounded-SAM masks (docs/protocols.md section 3): the annotator, and how a region is cut.

Annotator (:class:`GroundedSam`): transformers ``GroundingDinoForObjectDetection`` finds boxes
for the text ``"<class noun>."``; the box with the highest score goes to ``SamModel`` (one mask,
``multimask_output=False``). Results are cached on disk by (image sha256, text, model ids,
thresholds): a second call for the same image does no model work. When no box passes the
thresholds the result says ``status="no-detection"`` and carries no mask: it is never turned
into a full or an empty mask silently.

Regions (how a region is cut and filled; docs/metrics.md, "How a DreamEdit region is cut and filled"):

- subject region of an image with foreground mask F (the Grounded-SAM mask of the class noun, at
  the image's size): every pixel outside F is set to white (255, 255, 255); the image is then
  cropped to the tight bounding box of F (inclusive pixel rows/columns) and padded with white to a
  square of side max(height, width), the crop centred (the odd pixel of padding goes right/bottom).
  The backbone's own preprocessing (resize, centre crop, normalisation) follows; a square input
  means its centre crop drops nothing.
- both sides of a -sub score are cut this way: the output's subject region, and each reference
  photo of the subject, annotated with the same class noun by the same Grounded-SAM (masks cached
  on disk, embeddings once per file). A reference in which nothing is detected is used whole (as
  it is) and counted in ``gsam_reference_uncut`` on the items that compared with it.
  ``reference_regions="raw"`` keeps the raw photos (version 1's behaviour; the version says it).
- background region of an output O with foreground mask F_O, compared with a source S whose
  edit region is M_S: let U = F_O | M_S (M_S resized to O's size, nearest); every pixel inside U
  is set to white in O and in S (S first resized to O's size, bicubic); the whole image is kept
  (no crop). Both images therefore show exactly the same pixel positions, and the score does not
  reward or punish the subject or the object it replaced.

The DreamEdit scores built on these regions are in :mod:`bench.metrics.dreamedit`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from bench import BenchError
from bench.files import cache_root, file_sha256
from bench.images import load_rgb, open_image

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"    # GroundingDINO Swin-T (Grounded-SAM's default)
DEFAULT_SEGMENTER = "facebook/sam-vit-huge"               # SAM ViT-H (Grounded-SAM's default)
BOX_THRESHOLD = 0.3
TEXT_THRESHOLD = 0.25
WHITE = 255
OFFICIAL_SIZE = 512
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "dog", "cat", "backpack", "vase",
              "sneaker", "toy", "bowl", "boot", "glasses", "teapot", "can", "candle", "clock", "cartoon",
              "stuffed", "animal", "man", "woman", "person"]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _rgb(path: Path) -> Image.Image:
    return load_rgb(path)


def read_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A boolean mask from a white-on-black file, optionally resized (nearest) to ``size`` (w, h)."""
    mask = open_image(path).convert("L")
    if size is not None and mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.NEAREST)
    return np.asarray(mask) >= 128


# ---- regions --------------------------------------------------------------------------------
def cut_subject(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """Pixels outside ``mask`` white, cropped to the mask's bounding box, padded white to a square."""
    arr = np.asarray(image.convert("RGB")).copy()
    if mask.shape != arr.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {arr.shape[:2]}")
    if not mask.any():
        raise ValueError("cut_subject needs a non-empty mask")
    arr[~mask] = WHITE
    rows, cols = np.nonzero(mask)
    crop = arr[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape[:2]
    side = max(h, w)
    square = np.full((side, side, 3), WHITE, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = crop
    return Image.fromarray(square)


def cut_background(image: Image.Image, foreground: np.ndarray) -> Image.Image:
    """Pixels inside ``foreground`` white, the whole image kept."""
    arr = np.asarray(image.convert("RGB")).copy()
    if foreground.shape != arr.shape[:2]:
        raise ValueError(f"mask {foreground.shape} does not match image {arr.shape[:2]}")
    arr[foreground] = WHITE
    return Image.fromarray(arr)


# ---- the annotator --------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskResult:
    status: str                        # "ok" | "no-detection"
    mask_path: Path | None             # white = the object, at the image's size; None without detection
    box: tuple[float, ...] | None      # (x0, y0, x1, y1) in the image's pixels
    score: float | None

    @property
    def found(self) -> bool:
        return self.status == "ok"


def _missing(model_id: str, exc: Exception) -> BenchError:
    return BenchError(f"Grounded-SAM weights {model_id!r} are not available ({type(exc).__name__}): fetch them once "
                      f"with `hf download {model_id}` (then HF_HUB_OFFLINE=1 works), pass a local folder, "
                      f"or, to test without these weights, random ones: --metric-preset tiny for the metrics, "
                      f"--suite-option annotator_preset=tiny for DreamEdit's masks")


def build_tiny_grounded_sam(seed: int = 0):
    """(detector, detector processor, segmenter, segmenter processor): small random models with the
    real architectures and processors, for tests and smoke runs."""
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SamConfig, SamImageProcessor,
                              SamModel, SamProcessor, SwinConfig)
    from bench.metrics.tiny import seeded

    folder = cache_root() / "tiny-grounding-dino"
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    if not vocab.exists():
        tmp = folder / f".vocab.{os.getpid()}.tmp"
        tmp.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
        os.replace(tmp, vocab)
    tokenizer = BertTokenizer(str(vocab))
    backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, image_size=128,
                          out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    # decoder_layers >= 2: the per-layer box heads are tied to layer 0's and need a second layer.
    detector_config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=10, max_text_len=16, encoder_n_points=2, decoder_n_points=2)
    segmenter_config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=16,
                           mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32))
    with seeded(seed):
        detector = GroundingDinoForObjectDetection(detector_config).eval()
        segmenter = SamModel(segmenter_config).eval()
    detector_processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 128}),
        tokenizer=tokenizer)
    segmenter_processor = SamProcessor(SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16}))
    return detector, detector_processor, segmenter, segmenter_processor


class GroundedSam:
    """Class-noun masks: GroundingDINO best box -> SAM, cached on disk."""

    def __init__(self, device: str = "cpu", preset: str | None = None, detector: str = DEFAULT_DETECTOR,
                 segmenter: str = DEFAULT_SEGMENTER, box_threshold: float = BOX_THRESHOLD,
                 text_threshold: float = TEXT_THRESHOLD, cache_dir: Path | str | None = None, batch_size: int = 8):
        if preset not in (None, "tiny"):
            raise BenchError(f"grounded-sam: unknown preset {preset!r} (use 'tiny' or none)")
        self.device = device
        self.preset = preset
        self.detector_id, self.segmenter_id = detector, segmenter
        self.box_threshold, self.text_threshold = float(box_threshold), float(text_threshold)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "grounded-sam"
        self.batch_size = batch_size
        self.calls = {"detect": 0, "segment": 0}       # model forward passes, for tests and logs
        self._models = None

    @property
    def model_ids(self) -> str:
        return "tiny-random" if self.preset == "tiny" else f"{self.detector_id}+{self.segmenter_id}"

    @property
    def short_id(self) -> str:
        return "tiny-random" if self.preset == "tiny" else "gdino-t+sam-h" if (
            self.detector_id, self.segmenter_id) == (DEFAULT_DETECTOR, DEFAULT_SEGMENTER) else "custom"

    # ---- models ----------------------------------------------------------------------------
    def _load(self):
        if self._models is not None:
            return self._models
        if self.preset == "tiny":
            models = build_tiny_grounded_sam()
        else:
            from transformers import AutoProcessor, GroundingDinoForObjectDetection, SamModel, SamProcessor
            local = _offline()
            try:
                detector = GroundingDinoForObjectDetection.from_pretrained(self.detector_id, local_files_only=local)
                detector_processor = AutoProcessor.from_pretrained(self.detector_id, local_files_only=local)
            except (OSError, ValueError) as exc:
                raise _missing(self.detector_id, exc) from None
            try:
                segmenter = SamModel.from_pretrained(self.segmenter_id, local_files_only=local)
                segmenter_processor = SamProcessor.from_pretrained(self.segmenter_id, local_files_only=local)
            except (OSError, ValueError) as exc:
                raise _missing(self.segmenter_id, exc) from None
            models = (detector.eval(), detector_processor, segmenter.eval(), segmenter_processor)
        detector, detector_processor, segmenter, segmenter_processor = models
        detector.to(self.device).requires_grad_(False)
        segmenter.to(self.device).requires_grad_(False)
        self._models = models
        return models

    @torch.no_grad()
    def detect(self, images: list[Image.Image], texts: list[str]) -> list[tuple[tuple[float, ...], float] | None]:
        """The best box (x0, y0, x1, y1 in pixels) and its score per image, or None."""
        detector, processor, _, _ = self._load()
        self.calls["detect"] += 1
        prompts = [f"{t.strip().lower().rstrip('.')}." for t in texts]
        inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt").to(self.device)
        outputs = detector(**inputs)
        results = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[(im.height, im.width) for im in images])
        best = []
        for result in results:
            if len(result["scores"]) == 0:
                best.append(None)
                continue
            i = int(torch.argmax(result["scores"]))
            box = tuple(float(v) for v in result["boxes"][i].tolist())
            best.append((box, float(result["scores"][i])))
        return best

    @torch.no_grad()
    def segment(self, images: list[Image.Image], boxes: list[tuple[float, ...]]) -> list[np.ndarray]:
        """One boolean mask per (image, box), at the image's size."""
        _, _, segmenter, processor = self._load()
        self.calls["segment"] += 1
        inputs = processor(images=images, input_boxes=[[list(b)] for b in boxes], return_tensors="pt").to(self.device)
        outputs = segmenter(**inputs, multimask_output=False)
        masks = processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())
        return [m[0, 0].numpy().astype(bool) for m in masks]

    # ---- cache -----------------------------------------------------------------------------
    def _key(self, image_sha: str, text: str) -> str:
        ident = (f"{image_sha}|{text.strip().lower()}|{self.model_ids}|{self.box_threshold}|{self.text_threshold}"
                 "|upright-rgb")        # computed on bench.images' upright, alpha-on-white reading
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    def _read_cached(self, key: str) -> MaskResult | None:
        meta = self.cache_dir / f"{key}.json"
        if not meta.exists():
            return None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
        mask = self.cache_dir / f"{key}.png"
        if info.get("status") == "ok" and not mask.exists():
            return None
        return MaskResult(info["status"], mask if info["status"] == "ok" else None,
                          tuple(info["box"]) if info.get("box") else None, info.get("score"))

    def _write_cached(self, key: str, text: str, mask: np.ndarray | None, box, score) -> MaskResult:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        mask_path = None
        if mask is not None:
            mask_path = self.cache_dir / f"{key}.png"
            tmp = self.cache_dir / f".{key}.{pid}.png.tmp"
            Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")
            os.replace(tmp, mask_path)
        status = "ok" if mask is not None else "no-detection"
        info = {"status": status, "text": text, "models": self.model_ids, "box": list(box) if box else None,
                "score": score, "box_threshold": self.box_threshold, "text_threshold": self.text_threshold}
        tmp = self.cache_dir / f".{key}.{pid}.json.tmp"
        tmp.write_text(json.dumps(info), encoding="utf-8")
        os.replace(tmp, self.cache_dir / f"{key}.json")
        return MaskResult(status, mask_path, tuple(box) if box else None, score)

    def annotate(self, images: Sequence[Path], texts: Sequence[str]) -> list[MaskResult]:
        """A mask result per (image file, class noun); model work only for pairs not cached."""
        if len(images) != len(texts):
            raise ValueError("annotate needs one text per image")
        keys = [self._key(file_sha256(p), t) for p, t in zip(images, texts)]
        results: list[MaskResult | None] = [self._read_cached(k) for k in keys]
        todo = {}
        for i, (key, result) in enumerate(zip(keys, results)):
            if result is None:
                todo.setdefault(key, i)             # the same image and text twice: one model call
        todo_items = list(todo.items())
        for start in range(0, len(todo_items), self.batch_size):
            chunk = todo_items[start:start + self.batch_size]
            pil = [_rgb(images[i]) for _, i in chunk]
            found = self.detect(pil, [texts[i] for _, i in chunk])
            hits = [j for j, f in enumerate(found) if f is not None]
            masks = self.segment([pil[j] for j in hits], [found[j][0] for j in hits]) if hits else []
            mask_of = dict(zip(hits, masks))
            for j, (key, i) in enumerate(chunk):
                box, score = found[j] if found[j] is not None else (None, None)
                mask = mask_of.get(j)
                if mask is not None and not mask.any():
                    mask = None                       # SAM returned nothing inside the box
                self._write_cached(key, texts[i], mask, box, score)
        return [r if r is not None else self._read_cached(k) for r, k in zip(results, keys)]
