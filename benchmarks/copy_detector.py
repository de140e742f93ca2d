"""The copy detector's false-positive rate on real photos and its detection of copies of the input,
on a DreamBench dataset folder (docs/metrics.md, "Copying"):

    python benchmarks/copy_detector.py datasets/dreambench/dataset            # tiny random backbones
    python benchmarks/copy_detector.py datasets/dreambench/dataset --real     # the pretrained ones

Per embedding (clip, dino, dinov2): with the first photo of each subject as the conditioning photo
(conditioning=first), the share of the other photos that the rule calls a copy when each is scored
as an output (leave-one-out: the real set without it), and the share of copy-input outputs (the
first photo centre-cropped and resized to each --resolutions size) it flags. Prints one JSON line
per embedding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.images import load_rgb  # noqa: E402
from bench.metrics.base import ScoreItem  # noqa: E402
from bench.metrics.copy import CopyMetric  # noqa: E402
from methods.copy_input import square_resize  # noqa: E402

SUFFIXES = (".jpg", ".jpeg", ".png")


def subjects(root: Path) -> dict[str, list[Path]]:
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        if len(photos) >= 3:
            out[folder.name] = photos
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a folder of <subject>/<photo> (DreamBench's dataset/)")
    parser.add_argument("--real", action="store_true", help="pretrained backbones (default: tiny random ones)")
    parser.add_argument("--embeddings", default="clip,dino,dinov2")
    parser.add_argument("--resolutions", default="64,512")
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    found = subjects(args.dataset)
    if not found:
        print(f"error: {args.dataset}: no subject folder with 3 or more photos", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.resolutions.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        copies = {}
        for subject, photos in found.items():
            for size in sizes:
                path = Path(tmp) / f"{subject}-{size}.png"
                square_resize(load_rgb(photos[0]), size).save(path)
                copies[(subject, size)] = path
        for embedding in args.embeddings.split(","):
            metric = CopyMetric(preset=None if args.real else "tiny", embedding=embedding, ratio=args.ratio)
            flags = []
            for photos in found.values():
                flags += [v for v in metric.real_photo_scores(photos, photos[:1]).values() if v == v]
            detected = {}
            for size in sizes:
                items = [ScoreItem(key=f"{s}/{size}", image=copies[(s, size)], seed=0, subject=s, class_noun="",
                                   eval_text="", reference_images=tuple(p), subject_images=tuple(p[:1]))
                         for s, p in found.items()]
                values = [r[metric.metric_id] for r in metric.score(items)]
                detected[str(size)] = round(sum(values) / len(values), 4)
            print(json.dumps({"metric": metric.metric_id, "ratio": args.ratio, "subjects": len(found),
                              "false_positive_rate": round(sum(flags) / len(flags), 4), "photos_scored": len(flags),
                              "copies_flagged": detected}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
