"""CLIP ViT-B/32 image similarity for the iterative stop rule (docs/protocols.md section 1, "Stop rule").

Real runs use open_clip ``ViT-B-32`` with the OpenAI weights (from the local cache; a missing
weight is one BenchError). Runs on a random-weight preset use a tiny random CLIP vision tower
built in code, so tests need no download; :attr:`ImageSimilarity.backbone` names which one ran
(recorded in ``describe()``).

Images are compared as they would be saved: rounded to uint8, resized (bicubic, shorter side to
the model size, centre crop) and normalised with CLIP's mean/std. Each image is embedded on its
own so the stop decision of a sample never depends on the batch it is in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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

    def __init__(self, device, tiny: bool):
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
        """[B, 3, H, W] in [-1, 1] -> CLIP input (uint8 rounding as when saved, resize, crop, normalise)."""
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
        h, w = pixels.shape[-2:]
        scale = self.size / min(h, w)
        size = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        pixels = F.interpolate(pixels.to(self.device), size=size, mode="bicubic", align_corners=False,
                               antialias=True).clamp(0, 1)
        top, left = (size[0] - self.size) // 2, (size[1] - self.size) // 2
        pixels = pixels[..., top:top + self.size, left:left + self.size]
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings [B, D], one image at a time (batch-independent)."""
        x = self.preprocess(images)
        return torch.cat([F.normalize(self.model(x[i:i + 1]).float(), dim=-1) for i in range(x.shape[0])])

    @staticmethod
    def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(-1)
