"""A full-protocol DreamBench run built from synthetic images, for performance work.

Not a test and not data: a stand-in with the real layout, written through the store's own writer
(``RunStore.open_for_run`` + ``GenerationWriter.write``), so every record is valid and every command
(`bench run --dry-run`, the resume check, `bench score`, `bench report`) treats it as a real run.

- the suite: a DreamBench copy with the real shape (30 subjects, 10 of them live, 25 prompts each,
  5 reference JPEGs a subject at ``--ref-size`` px) in the public layout;
- the images: ``n`` PNGs of ``size`` px (smooth random images with mild noise, about the size a
  diffusion model's PNG has), from a pool of distinct pictures; each file gets a unique PNG text
  chunk so that every image has its own bytes and sha256, as in a real run.

    python benchmarks/synthetic_run.py OUT --images 18000      # the six-seed protocol's size
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LIVE = ("cat", "dog")
OBJECTS = ("backpack", "bowl", "can", "candle", "clock", "sneaker", "teapot", "toy", "vase", "boot")
N_SUBJECTS, N_LIVE, N_PROMPTS, N_REFS = 30, 10, 25, 5
PROTOCOL_SEEDS, PROTOCOL_PER_PROMPT = (0, 1, 2, 3, 4, 5), 4
FULL_SIZE = N_SUBJECTS * N_PROMPTS * PROTOCOL_PER_PROMPT * len(PROTOCOL_SEEDS)     # 18,000


def picture(seed: int, size: int) -> Image.Image:
    """A smooth random RGB picture with mild noise (compresses about as a generated image does)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-6, 7, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def with_text_chunk(png: bytes, text: str) -> bytes:
    """The PNG with a tEXt chunk inserted before IEND: other bytes, the same pixels."""
    body = b"bench\x00" + text.encode("ascii")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


def write_suite(root: Path, ref_size: int = 512) -> Path:
    """A DreamBench copy in the public layout (dataset/prompts_and_classes.txt + dataset/<subject>/NN.jpg)."""
    dataset = root / "dataset"
    subjects = []
    for i in range(N_SUBJECTS):
        noun = LIVE[i % 2] if i < N_LIVE else OBJECTS[i % len(OBJECTS)]
        subjects.append((f"{noun}{i}", noun))
    lines = ["Classes", "", "subject_name,class", *(f"{s},{c}" for s, c in subjects), "", "Prompts", ""]
    for title, word in (("Object Prompts", "object"), ("Live Subject Prompts", "live")):
        lines += [title, "", "prompt_list = ["]
        lines += [f"'a {{0}} {{1}} in {word} scene number {k}'.format(unique_token, class_token)"
                  + ("," if k < N_PROMPTS - 1 else "") for k in range(N_PROMPTS)]
        lines += ["]", ""]
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "prompts_and_classes.txt").write_text("\n".join(lines), encoding="utf-8")
    for i, (subject, _) in enumerate(subjects):
        folder = dataset / subject
        folder.mkdir(exist_ok=True)
        for k in range(N_REFS):
            picture(10_000 + i * N_REFS + k, ref_size).save(folder / f"{k:02d}.jpg", quality=90)
    return root


def write_run(out: Path, data_root: Path, n_images: int = FULL_SIZE, size: int = 512, pool: int = 48,
              method: str = "synthetic", ranks: int = 1, progress: bool = True, identity: dict | None = None,
              seeds: tuple[int, ...] | None = None):
    """A run directory of ``n_images`` recorded PNGs over the suite at ``data_root``, in the plan's
    order (subject, seed, prompt, image index), written by ``ranks`` shard writers in turn.
    ``identity``: the run's identity (default: a synthetic one; give the one `bench run` records
    to resume the run with `bench run`); ``seeds``: the plan's seeds (default: as few as ``n_images``
    needs). Returns the RunStore."""
    from bench.plan import Plan
    from bench.store import RunStore, encode_png
    from bench.suites import load_suite
    from bench.suites.base import samples_hash

    suite = load_suite("dreambench", data_root)
    samples = suite.samples()
    per_prompt = PROTOCOL_PER_PROMPT
    seeds_needed = max(1, -(-n_images // (len(samples) * per_prompt)))
    seeds = tuple(seeds) if seeds is not None else tuple(range(seeds_needed))
    requests = Plan(samples, samples, seeds, per_prompt).requests()[:n_images]
    identity = identity or {"method": method, "model": "preset:tiny", "batch_size": 4,
                            "suite": {"name": "dreambench", "version": suite.version,
                                      "samples_hash": samples_hash(samples), "options": {}}}
    info = {"suite": {"name": "dreambench", "root": str(Path(data_root).resolve()), "options": {}},
            "plan": {"seeds": list(seeds), "images_per_prompt": per_prompt,
                     "images_per_seed": len(samples) * per_prompt,
                     "total": len(requests), "subjects": sorted({s.subject for s in samples})},
            "metrics": ["clip", "dino"], "metric_preset": "tiny", "random_weights": True,
            "method": {"name": method, "weights_status": "synthetic images"}, "weights_status": "synthetic images"}
    store = RunStore.open_for_run(out, identity, info)
    blobs = [encode_png(picture(k, size)) for k in range(pool)]
    stand_in = Image.new("RGB", (1, 1))          # the writer reads only .info; the bytes are ``data``
    writers = [store.writer(r) for r in range(ranks)]
    try:
        for n, request in enumerate(requests):
            data = with_text_chunk(blobs[n % pool], request.key)
            writers[(n // 4) % ranks].write(request.key, request.run_seed, stand_in, 0.0, data=data)
            if progress and n % 1000 == 999:
                print(f"  wrote {n + 1}/{len(requests)} images", file=sys.stderr)
    finally:
        for w in writers:
            w.close()
    return store


def write_synthetic_scores(store, seed: int = 0) -> int:
    """A scores.parquet for the run with the rows `bench score` would cache for the tiny CLIP and
    DINO metrics (each image's key, sha256, context, metric id and version) and random values: a
    fully cached run for timing the cache lookup without scoring every image first. Returns the rows."""
    import pandas as pd

    from bench.metrics.clip import ClipMetric
    from bench.metrics.dino import DinoMetric
    from bench.scoring import SCORE_COLUMNS, build_items, item_context, load_run_samples

    _, cells = load_run_samples(store.read_run(), store.run_json)
    items = build_items(store, cells)
    contexts = {id(sample): item_context(sample) for sample in {id(s): s for _, s, _ in items}.values()}
    rng = np.random.default_rng(seed)
    rows = [(item.key, item.seed, item.subject, sample.category, sample.prompt_index, mid, str(metric.version),
             float(rng.random()), sha, contexts[id(sample)])
            for metric in (ClipMetric(preset="tiny"), DinoMetric(preset="tiny")) for mid in metric.ids
            for item, sample, sha in items]
    df = pd.DataFrame(rows, columns=SCORE_COLUMNS).astype(
        {"seed": "int64", "prompt_index": "int64", "value": "float64", "metric_version": "string"})
    df.sort_values(["metric", "key"], ignore_index=True).to_parquet(store.scores_path, index=False)
    store.update_run(scored={"metrics": ["clip", "dino"], "metric_preset": "tiny",
                             "ids": sorted(df["metric"].unique()), "synthetic_values": True})
    return len(df)


REVISION = "0123456789abcdef0123456789abcdef01234567"


def plant_random_backbones(hub: Path) -> Path:
    """The protocol's metric architectures (open_clip ViT-B/32 with OpenAI's QuickGELU layout, timm
    DINO ViT-S/16) with seeded random weights, where their loaders look in a Hugging Face cache
    laid out as the hub lays it. Point HF_HUB_CACHE at ``hub`` (offline) and `bench score` loads
    them through the real code path. Returns ``hub``."""
    import open_clip
    import timm
    import torch
    from open_clip.pretrained import get_pretrained_cfg
    from safetensors.torch import save_file

    from bench.metrics.tiny import seeded

    def plant(repo_id: str, filename: str, state: dict) -> None:
        folder = hub / f"models--{repo_id.replace('/', '--')}"
        snapshot = folder / "snapshots" / REVISION
        snapshot.mkdir(parents=True, exist_ok=True)
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(REVISION)
        if not (snapshot / filename).exists():
            save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / filename))

    with seeded(1), torch.no_grad():
        clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    plant(get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].strip("/"), "open_clip_model.safetensors",
          clip.state_dict())
    with seeded(2):
        dino = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    plant(dino.pretrained_cfg["hf_hub_id"], "model.safetensors", dino.state_dict())
    return hub


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to create (suite/ and run/ inside)")
    parser.add_argument("--images", type=int, default=FULL_SIZE)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    data = write_suite(args.out / "suite")
    store = write_run(args.out / "run", data, args.images, args.size)
    print(store.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
