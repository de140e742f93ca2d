"""What a run needs on disk: one :class:`Need` per piece (weights, data, packages), checked without
loading anything.

Every method, metric and suite class declares its pieces through one classmethod,
``requirements``, built from the helpers below (``hf_weights``, ``local_folder``, ...):

    method:  requirements(cls, spec: LoadSpec, **params) -> list[Need]
    metric:  requirements(cls, preset: str | None = None, **params) -> list[Need]
    suite:   requirements(cls, root: Path, **options) -> list[Need]

`bench doctor` (bench/doctor.py) collects them for a method x suite x metrics, checks each
(presence in the Hugging Face cache or on disk, size) and prints the command or link that gets
the missing ones. Sizes of missing pieces are the download sizes the class declares
(approximate, fp32 weights as the loaders read them).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

GB, MB = 1_000_000_000, 1_000_000


@dataclass(frozen=True)
class Need:
    """One piece a run needs. ``key`` identifies it across methods and metrics (one line each)."""

    what: str                                 # e.g. "CLIP ViT-B/32 (OpenAI) weights"
    key: str                                  # HF repo id, path or package name
    get: str                                  # the exact command or link that gets it
    size: int | None = None                   # download size in bytes, when known
    check: Callable[[], "Found"] = field(default=lambda: Found(False), compare=False, repr=False)


@dataclass(frozen=True)
class Found:
    present: bool
    where: str = ""                           # where it was found, or where it is looked for
    size: int | None = None                   # bytes on disk
    problem: str = ""                         # why it does not count as present


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GB", GB), ("MB", MB), ("KB", 1000)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def folder_size(path: Path) -> int:
    """Bytes of the files below ``path`` (links followed once; Hugging Face blobs counted once)."""
    seen, total = set(), 0
    for p in [path] if path.is_file() else path.rglob("*"):
        try:
            real = p.resolve()
            if real.is_file() and real not in seen:
                seen.add(real)
                total += real.stat().st_size
        except (OSError, RuntimeError):   # RuntimeError: a symlink loop (Python before 3.13)
            pass
    return total


# ---- the Hugging Face cache --------------------------------------------------------------------
def hf_hub_cache() -> Path:
    """The hub cache as huggingface_hub computes it (read from the environment at each call)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hf_snapshot(repo: str) -> Path | None:
    """The cached snapshot of ``repo`` (the one refs/main names, else the newest), or None."""
    folder = hf_hub_cache() / ("models--" + repo.replace("/", "--"))
    ref = folder / "refs" / "main"
    if ref.is_file() and (folder / "snapshots" / ref.read_text().strip()).is_dir():
        return folder / "snapshots" / ref.read_text().strip()
    snapshots = sorted((folder / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return snapshots[-1] if snapshots else None


def _missing_files(folder: Path, files: tuple[str, ...]) -> list[str]:
    """The patterns (``a|b``: either) that match no file in ``folder``."""
    return [pattern for pattern in files
            if not any(p.is_file() for alternative in pattern.split("|") for p in folder.glob(alternative))]


def hf_weights(what: str, repo: str, files: tuple[str, ...], size: int | None = None, get: str | None = None) -> Need:
    """Weights from the Hugging Face hub; present when every pattern of ``files`` is in the cache.
    A local folder given instead of an id is checked for the same files."""
    if repo.startswith(("/", ".", "~")) or Path(repo).expanduser().exists():
        return local_folder(what, Path(repo), files, get or f"{repo}: a local copy of the model")
    get = get or f"hf download {repo} --include " + " ".join(f'"{f}"' for p in files for f in p.split("|")[:1])

    def check() -> Found:
        snapshot = hf_snapshot(repo)
        if snapshot is None:
            return Found(False, str(hf_hub_cache()), problem="not in the Hugging Face cache")
        missing = _missing_files(snapshot, files)
        return Found(not missing, str(snapshot), folder_size(snapshot),
                     f"the cached copy lacks {', '.join(missing)}" if missing else "")
    return Need(what, repo, get, size, check)


def local_folder(what: str, path: Path, files: tuple[str, ...], get: str, size: int | None = None) -> Need:
    """A folder on disk holding every pattern of ``files``."""
    path = Path(path).expanduser()

    def check() -> Found:
        if not path.is_dir():
            return Found(False, str(path), problem="no such folder")
        missing = _missing_files(path, files)
        return Found(not missing, str(path), folder_size(path), f"lacks {', '.join(missing)}" if missing else "")
    return Need(what, str(path), get, size, check)


def local_file(what: str, path: Path, get: str, size: int | None = None) -> Need:
    path = Path(path).expanduser()

    def check() -> Found:
        return Found(path.is_file(), str(path), path.stat().st_size if path.is_file() else None,
                     "" if path.is_file() else "no such file")
    return Need(what, str(path), get, size, check)


def package(what: str, module: str, get: str) -> Need:
    """An optional Python package (found without importing it)."""
    def check() -> Found:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        return Found(spec is not None, spec.origin or module if spec else module,
                     problem="" if spec else "not installed")
    return Need(what, f"package:{module}", get, None, check)


def probe(what: str, key: str, get: str, test: Callable[[], str | None], where: str = "",
          size: int | None = None, measure: Path | None = None) -> Need:
    """A piece checked by a function that returns None when it is in place, else the problem."""
    def check() -> Found:
        problem = test()
        on_disk = folder_size(measure) if measure is not None and measure.exists() else None
        return Found(problem is None, where or key, on_disk, problem or "")
    return Need(what, key, get, size, check)


# ---- pieces several classes share -------------------------------------------------------------
#: Approximate fp32 download sizes of the base models the harness knows (parameter counts x 4 bytes).
BASE_MODEL_SIZES = {"stabilityai/stable-diffusion-2-1-base": int(5.2 * GB),
                    "stable-diffusion-v1-5/stable-diffusion-v1-5": int(4.3 * GB)}
DIFFUSERS_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                   "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                   "tokenizer/vocab.json", "tokenizer/merges.txt")


def base_model(spec) -> list[Need]:
    """The diffusers base model of a LoadSpec (nothing for a preset: random weights built in code)."""
    if spec.preset:
        return []
    get = (f'hf download {spec.weights} --include "*.json" "*.txt" "unet/diffusion_pytorch_model.safetensors" '
           '"vae/diffusion_pytorch_model.safetensors" "text_encoder/model.safetensors"')
    return [hf_weights(f"base model {spec.weights}", spec.weights, DIFFUSERS_FILES,
                       BASE_MODEL_SIZES.get(spec.weights), get)]


def open_clip_weights(arch: str, pretrained: str, hub_repo: str, size: int | None) -> Need:
    """open_clip weights as ``create_open_clip`` fetches them (``hub_repo``: where open_clip's
    pretrained table points, e.g. timm/vit_base_patch32_clip_224.openai)."""
    get = (f"HF_HUB_OFFLINE=0 python -c \"import open_clip; open_clip.create_model_and_transforms('{arch}', "
           f"pretrained='{pretrained}')\"  (once, online)")
    return hf_weights(f"CLIP {arch} ({pretrained}) weights, open_clip", hub_repo,
                      ("open_clip_model.safetensors|open_clip_pytorch_model.bin",), size, get)


def timm_weights(model_name: str, size: int | None) -> Need:
    get = f"HF_HUB_OFFLINE=0 python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\"  (once, online)"
    return hf_weights(f"timm {model_name} weights", f"timm/{model_name}",
                      ("model.safetensors|pytorch_model.bin",), size, get)


CLIP_HUB = {("ViT-B-32", "openai"): ("timm/vit_base_patch32_clip_224.openai", int(605 * MB)),
            ("ViT-L-14", "openai"): ("timm/vit_large_patch14_clip_224.openai", int(1.71 * GB))}
TIMM_SIZES = {"vit_small_patch16_224.dino": int(87 * MB), "vit_base_patch16_224.dino": int(343 * MB)}


def grounded_sam(detector: str = "IDEA-Research/grounding-dino-tiny", segmenter: str = "facebook/sam-vit-huge") -> list[Need]:
    """GroundingDINO + SAM weights (subject background removal, DreamEdit masks and metrics)."""
    files = ("config.json", "preprocessor_config.json", "model.safetensors|pytorch_model.bin")
    sizes = {"IDEA-Research/grounding-dino-tiny": int(689 * MB), "facebook/sam-vit-huge": int(2.56 * GB)}
    return [hf_weights(f"Grounded-SAM detector {detector}", detector, files, sizes.get(detector),
                       f'hf download {detector} --include "*.json" "*.txt" "model.safetensors"'),
            hf_weights(f"Grounded-SAM segmenter {segmenter}", segmenter, files, sizes.get(segmenter),
                       f'hf download {segmenter} --include "*.json" "model.safetensors"')]
