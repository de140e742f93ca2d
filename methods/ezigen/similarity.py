"""CLIP ViT-B/32 image similarity for the iterative stop rule (docs/protocols.md section 1, "Stop rule").

Real runs use open_clip ``ViT-B-32`` with the OpenAI weights (from the local cache; a missing
weight is one BenchError). Runs on a random-weight preset use a tiny random CLIP vision tower
built in code, so tests need no download; :attr:`ImageSimilarity.backbone` names which one ran
(recorded in ``describe()``).

Images are compared as they would be saved (rounded to uint8, :func:`methods.common.to_pil`), then
made CLIP input in one of two ways (``preprocess``):

- ``pil`` (protocol=release): exactly the release's input, OpenAI ``clip``'s preprocessing of
  8-bit PIL images (``clip.load``'s ``_transform``: torchvision ``Resize(n_px, BICUBIC)`` on a PIL
  image = PIL bicubic resize of the shorter side to n_px with the longer side ``int(n_px * long /
  short)``, the result rounded to 8 bits by PIL; ``CenterCrop(n_px)`` with offsets ``int(round((size
  - n_px) / 2))``; ``ToTensor`` (/255); ``Normalize`` with CLIP's mean/std);
- ``tensor`` (protocol=paper, and the project's earlier behaviour): the same steps on float
  tensors (antialiased bicubic interpolation in torch, no 8-bit rounding after the resize, floor
  crop offsets). On real photos the two inputs differ by 0.4-0.5% relative L2.

Each image is embedded on its own so the stop decision of a sample never depends on the batch it
is in.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench import BenchError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _tiny_clip_vision(seed: int = 0):
    from open_clip.model import CLIPVisionCfg, _build_vision_tower
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32)
        return _build_vision_tower(32, cfg), 32


def _openai_vit_b32(device):
    from bench.metrics.clip import create_open_clip   # QuickGELU for OpenAI's weights, checked
    try:
        model, _, _ = create_open_clip("ViT-B-32", "openai", device)
    except BenchError as exc:  # not cached and offline, hub error, corrupt file ...
        raise BenchError(f"the EZIGen stop rule needs CLIP ViT-B-32 (OpenAI weights): {exc}; "
                         "or run with --param iterative=false") from None
    return model.visual, model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size


class ImageSimilarity:
    """Cosine similarity between CLIP image embeddings of two image batches."""

    def __init__(self, device, tiny: bool, preprocess: str = "tensor"):
        if preprocess not in ("pil", "tensor"):
            raise ValueError(f"similarity preprocessing must be 'pil' or 'tensor', not {preprocess!r}")
        self.preprocess_mode = preprocess
        if tiny:
            self.model, self.size = _tiny_clip_vision()
            self.backbone = "tiny-random-clip-vision"
        else:
            self.model, self.size = _openai_vit_b32(device)
            self.backbone = "open_clip/ViT-B-32/openai"
        self.model = self.model.to(device).eval().requires_grad_(False)
        self.device = device
        self.mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> CLIP input [B, 3, size, size] (see the module docstring)."""
        if self.preprocess_mode == "pil":
            from methods.common import to_pil
            return torch.stack([self.release_input(image) for image in to_pil(images)]).to(self.device)
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
        h, w = pixels.shape[-2:]
        scale = self.size / min(h, w)
        size = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        pixels = F.interpolate(pixels.to(self.device), size=size, mode="bicubic", align_corners=False,
                               antialias=True).clamp(0, 1)
        top, left = (size[0] - self.size) // 2, (size[1] - self.size) // 2
        pixels = pixels[..., top:top + self.size, left:left + self.size]
        return (pixels - self.mean) / self.std

    def release_input(self, image: Image.Image) -> torch.Tensor:
        """One 8-bit PIL image -> [3, size, size], as OpenAI clip's preprocess makes it."""
        width, height = image.size
        if width <= height:
            size = (self.size, int(self.size * height / width))
        else:
            size = (int(self.size * width / height), self.size)
        resized = image.resize(size, Image.BICUBIC)
        left, top = int(round((size[0] - self.size) / 2.0)), int(round((size[1] - self.size) / 2.0))
        cropped = resized.crop((left, top, left + self.size, top + self.size)).convert("RGB")
        pixels = torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        return (pixels - self.mean[0].cpu()) / self.std[0].cpu()

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings [B, D], one image at a time (batch-independent)."""
        x = self.preprocess(images)
        return torch.cat([F.normalize(self.model(x[i:i + 1]).float(), dim=-1) for i in range(x.shape[0])])

    @staticmethod
    def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(-1)
