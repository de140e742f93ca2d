"""How much an image changes with the batch it is computed in (tiny preset, CPU).

Different batch sizes run different matrix shapes, and BLAS/oneDNN kernels (AVX2, AVX-512, AMX)
sum in different orders, so bytes can differ across batch sizes and CPUs. This script measures
by how much: each request is generated alone (batch 1) and inside one batch, and the images
are compared in 8-bit pixel levels. Run it under other kernels to see what another CPU does:

    python benchmarks/batch_tolerance.py
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/batch_tolerance.py
    ATEN_CPU_CAPABILITY=default python benchmarks/batch_tolerance.py

Prints one JSON line per method: max and mean absolute pixel difference, the share of pixels
that differ, and whether per-image facts (EZIGen's loops) changed; plus the sha256 of every
image so that runs under different kernels can be compared (--compare a.json b.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def requests(folder: Path, n: int = 4):
    from bench.types import GenRequest

    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        path = folder / f"s{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    places = ["in the jungle", "on the beach", "in the snow", "on a table"]
    return [GenRequest(key=f"k{i}", prompt=f"a dog {places[i % 4]}", class_noun="dog",
                       subject_images=(paths[i % 2],) if i != 3 else tuple(paths[:2]), seed=100 + i, run_seed=0)
            for i in range(n)]


def build(name: str, steps: int):
    from bench.types import LoadSpec

    if name == "sd":
        from methods.sd import StableDiffusionMethod
        return lambda: StableDiffusionMethod(LoadSpec(preset="tiny", num_inference_steps=steps))
    from methods.ezigen import EZIGenMethod
    return lambda: EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=steps), max_loops=3)


def measure(name: str, steps: int, reqs) -> dict:
    make = build(name, steps)
    batched = make().generate(reqs)
    alone = []
    for r in reqs:
        alone.append(make().generate([r])[0])        # fresh method: every cache computed alone
    diffs = [np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)) for a, b in zip(alone, batched)]
    facts_changed = sum((a.info.get("bench") or {}).get("loops") != (b.info.get("bench") or {}).get("loops")
                        for a, b in zip(alone, batched))
    sha = lambda im: hashlib.sha256(np.asarray(im).tobytes()).hexdigest()[:16]
    return {"method": name, "steps": steps, "batch": len(reqs),
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
            "MKL_ENABLE_INSTRUCTIONS": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
            "max_abs": int(max(d.max() for d in diffs)), "mean_abs": float(np.mean([d.mean() for d in diffs])),
            "share_differing": float(np.mean([(d > 0).mean() for d in diffs])),
            "identical_images": sum(int(d.max() == 0) for d in diffs), "loops_changed": facts_changed,
            "alone": [sha(a) for a in alone], "batched": [sha(b) for b in batched],
            "_arrays": {"alone": [np.asarray(a) for a in alone], "batched": [np.asarray(b) for b in batched]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sd,ezigen")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--save", default=None, help="write the images (npz) here, to compare across kernels")
    args = parser.parse_args()
    import torch

    print(f"# torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}", file=sys.stderr)
    saved = {}
    with tempfile.TemporaryDirectory() as tmp:
        reqs = requests(Path(tmp))
        for name in args.methods.split(","):
            result = measure(name, args.steps, reqs)
            arrays = result.pop("_arrays")
            for kind, images in arrays.items():
                for i, im in enumerate(images):
                    saved[f"{name}_{kind}_{i}"] = im
            print(json.dumps(result))
    if args.save:
        np.savez(args.save, **saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
