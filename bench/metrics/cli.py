"""`bench metric`: one metric on given files, one cosine per line (also the cross-check entry).

    python -m bench metric clip-t --images A.png B.png --texts "a dog" "a cat"
    python -m bench metric clip-i --images A.png B.png --refs R1.jpg R2.jpg
    python -m bench metric dino   --images A.png --refs R1.jpg R2.jpg [--pairwise]
    python -m bench metric dreamsim --images A.png --refs R1.jpg [--backbone ensemble]   (a distance)

clip-t: image i with text i (one text is used for every image). clip-i / dino / dinov2: per
image, the mean cosine over all --refs (the protocol's all-pairs average), or with --pairwise
image i with ref i. Values are cosines (not x100, not clamped); dreamsim prints distances (lower is
more similar; --backbone names its variant, docs/judge.md). ``--preprocessing fastcomposer``
reads clip-t/clip-i images as FastComposer's evaluation does (JPEG read-back, tensor resize without
antialiasing; docs/protocols.md section 4).
"""

from __future__ import annotations

import argparse

from bench import BenchError

WHICH = ("clip-t", "clip-i", "dino", "dinov2", "dreamsim")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", choices=WHICH, help="the metric to compute")
    parser.add_argument("--images", nargs="+", required=True, help="generated image files")
    parser.add_argument("--texts", nargs="+", default=None, help="clip-t: one text per image, or one for all")
    parser.add_argument("--refs", nargs="+", default=None, help="clip-i/dino/dinov2: real image files")
    parser.add_argument("--pairwise", action="store_true", help="compare image i with ref i instead of "
                        "averaging over all refs")
    parser.add_argument("--backbone", default=None, help="open_clip:ARCH/PRETRAINED or hf:ID_OR_DIR for CLIP "
                        "(default open_clip:ViT-B-32/openai); timm:NAME for dino (default "
                        "timm:vit_small_patch16_224.dino); hf:ID_OR_DIR for dinov2 (default hf:facebook/dinov2-base)")
    parser.add_argument("--preprocessing", choices=["pil", "fastcomposer"], default="pil",
                        help="clip-t/clip-i: pil = the model's own transform (default); fastcomposer = FastComposer's "
                        "evaluation (JPEG read-back, tensor resize without antialiasing)")
    parser.add_argument("--preset", choices=["tiny"], default=None, help="tiny random models (tests)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def compute(which: str, images: list[str], texts: list[str] | None = None, refs: list[str] | None = None,
            pairwise: bool = False, backbone: str | None = None, preset: str | None = None,
            device: str = "cpu", preprocessing: str = "pil") -> list[float]:
    from bench.images import check_image

    for path in [*images, *(refs or [])]:     # every file checked before a model loads
        check_image(path)
    options = {"device": device, "preset": preset}
    if backbone:
        options["backbone"] = backbone
    if which == "clip-t":
        from bench.metrics.clip import ClipMetric

        if not texts:
            raise BenchError("clip-t needs --texts")
        if len(texts) == 1:
            texts = texts * len(images)
        if len(texts) != len(images):
            raise BenchError(f"clip-t: {len(images)} images but {len(texts)} texts (give one per image, or one)")
        return ClipMetric(preprocessing=preprocessing, **options).clip_t(images, texts)
    if not refs:
        raise BenchError(f"{which} needs --refs")
    if pairwise:
        if len(refs) != len(images):
            raise BenchError(f"--pairwise: {len(images)} images but {len(refs)} refs")
        groups = [[r] for r in refs]
    else:
        groups = [refs] * len(images)
    if which == "clip-i":
        from bench.metrics.clip import ClipMetric
        return ClipMetric(preprocessing=preprocessing, **options).clip_i(images, groups)
    if which == "dreamsim":
        from bench.metrics.dreamsim import DreamSimMetric
        variant = {"variant": options.pop("backbone")} if "backbone" in options else {}
        return DreamSimMetric(**options, **variant).distances(images, groups)
    from bench.metrics.dino import DinoMetric, Dinov2Metric
    return (DinoMetric if which == "dino" else Dinov2Metric)(**options).similarity(images, groups)


def run(args) -> int:
    from bench.options import check_device

    check_device(args.device)                 # before any image is read or model built
    values = compute(args.which, args.images, texts=args.texts, refs=args.refs, pairwise=args.pairwise,
                     backbone=args.backbone, preset=args.preset, device=args.device,
                     preprocessing=args.preprocessing)
    for value in values:
        print(f"{value:.6f}")
    return 0
