"""One prepared GPU check (not a test): precision behaviour and speed of the SD 2.1-base
architecture with random weights, batch invariance on CUDA, and EZIGen's cost per image.

    python benchmarks/gpu_check.py --out results.json [--quick]

Prints a table and writes the numbers as JSON. Every figure is from random weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import DTYPES, build_preset  # noqa: E402

DEVICE = "cuda"
PRESET = "sd21-random"
TEXT_DIM = 1024


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def cuda_time(fn, warmup=3, iters=10) -> float:
    """Median seconds of fn() measured with CUDA events (wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    if DEVICE == "cpu":
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - start) / iters
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def unet_checks(components, dtype_name: str, results: dict, latent: int) -> None:
    unet = components.unet
    dtype = DTYPES[dtype_name]
    gen = torch.Generator("cpu").manual_seed(0)
    for batch in (2, 8):
        x = torch.randn(batch, 4, latent, latent, generator=gen).to(DEVICE, dtype)
        text = torch.randn(batch, 77, TEXT_DIM, generator=gen).to(DEVICE, dtype)
        t = torch.tensor(500, device=DEVICE)
        out = unet(x, t, encoder_hidden_states=text).sample
        seconds = cuda_time(lambda: unet(x, t, encoder_hidden_states=text))
        results[f"unet_{dtype_name}_b{batch}_s"] = round(seconds, 5)
        results[f"unet_{dtype_name}_b{batch}_finite"] = bool(torch.isfinite(out).all())
        results[f"unet_{dtype_name}_b{batch}_absmax"] = float(out.float().abs().max())
    print(f"{dtype_name}: UNet batch 2 {results[f'unet_{dtype_name}_b2_s'] * 1000:.1f} ms, batch 8 "
          f"{results[f'unet_{dtype_name}_b8_s'] * 1000:.1f} ms, finite {results[f'unet_{dtype_name}_b8_finite']}",
          flush=True)


@torch.no_grad()
def precision_drift(fp32_unet, low_unet, dtype_name: str, results: dict, latent: int) -> None:
    gen = torch.Generator("cpu").manual_seed(1)
    x = torch.randn(2, 4, latent, latent, generator=gen).to(DEVICE)
    text = torch.randn(2, 77, TEXT_DIM, generator=gen).to(DEVICE)
    t = torch.tensor(500, device=DEVICE)
    ref = fp32_unet(x, t, encoder_hidden_states=text).sample
    low = low_unet(x.to(DTYPES[dtype_name]), t, encoder_hidden_states=text.to(DTYPES[dtype_name])).sample.float()
    rel = ((low - ref).norm() / ref.norm()).item()
    results[f"unet_{dtype_name}_rel_err_vs_fp32"] = rel
    print(f"{dtype_name}: relative error of the UNet output vs fp32: {rel:.2e}", flush=True)


def method_checks(dtype_name: str, results: dict, resolution: int, steps: int) -> None:
    """The sd and ezigen methods end to end on sd21-random: seconds per image, batch invariance."""
    import numpy as np

    from bench.types import GenRequest, LoadSpec
    from methods.sd import StableDiffusionMethod

    spec = LoadSpec(preset=PRESET, device=DEVICE, dtype=dtype_name, resolution=resolution,
                    num_inference_steps=steps, adapter="init")
    sd = StableDiffusionMethod(spec)
    reqs = [GenRequest(f"k{i}", "a dog in the jungle", "dog", (), seed=i) for i in range(4)]
    sd.generate(reqs[:1])
    sync()
    start = time.perf_counter()
    batch4 = sd.generate(reqs)
    sync()
    results[f"sd_{dtype_name}_{resolution}px_{steps}steps_s_per_image_b4"] = (time.perf_counter() - start) / 4
    singles = [sd.generate([r])[0] for r in reqs]
    diffs = [int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()) for a, b in zip(batch4, singles)]
    results[f"sd_{dtype_name}_batch1_vs_batch4_max_pixel_diff"] = max(diffs)
    print(f"sd {dtype_name}: {results[f'sd_{dtype_name}_{resolution}px_{steps}steps_s_per_image_b4']:.2f} s/image "
          f"at batch 4; batch 1 vs 4 max pixel difference {max(diffs)}", flush=True)
    del sd
    try:
        from methods.ezigen import EZIGenMethod
    except Exception as exc:  # the method may not exist in this checkout
        results["ezigen_error"] = repr(exc)
        return
    subject = Path(__file__).resolve().parents[1] / "datasets/mini-dreambench/dataset"
    images = sorted(p for p in subject.rglob("*.jpg"))[:1]
    ez = EZIGenMethod(spec, name="ezigen")
    reqs = [GenRequest(f"k{i}", "a dog in the jungle", "dog", tuple(images), seed=i) for i in range(4)]
    ez.generate(reqs[:1])
    sync()
    start = time.perf_counter()
    out = ez.generate(reqs)
    sync()
    seconds = (time.perf_counter() - start) / 4
    calls = [im.info.get("bench", {}).get("unet_calls") for im in out]
    loops = [im.info.get("bench", {}).get("loops") for im in out]
    results[f"ezigen_{dtype_name}_{resolution}px_{steps}steps_s_per_image_b4"] = seconds
    results[f"ezigen_{dtype_name}_unet_calls"] = calls
    results[f"ezigen_{dtype_name}_loops"] = loops
    print(f"ezigen {dtype_name}: {seconds:.2f} s/image at batch 4, UNet calls {calls}, loops {loops}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cpu-rehearsal", action="store_true",
                        help="run the same script on CPU with the tiny preset (to check it before a GPU run)")
    args = parser.parse_args()
    global DEVICE, PRESET, TEXT_DIM
    if args.cpu_rehearsal:
        DEVICE, PRESET, TEXT_DIM = "cpu", "tiny", 32
    else:
        assert torch.cuda.is_available(), "this check needs a CUDA device"
    results: dict = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                     "torch": torch.__version__}
    latent = args.resolution // 8
    t0 = time.perf_counter()
    base = build_preset(PRESET, device=DEVICE, dtype="fp32")
    results["build_sd21_random_s"] = time.perf_counter() - t0
    fp32_unet = base.unet
    unet_checks(base, "fp32", results, latent)
    for dtype_name in ("bf16", "fp16"):
        low = copy.deepcopy(fp32_unet).to(DTYPES[dtype_name])
        base.unet = low
        unet_checks(base, dtype_name, results, latent)
        precision_drift(fp32_unet, low, dtype_name, results, latent)
        base.unet = fp32_unet
        del low
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    del base, fp32_unet
    for dtype_name in ("fp16", "bf16") if DEVICE == "cuda" else ("fp32",):
        method_checks(dtype_name, results, args.resolution, args.steps)
    if DEVICE == "cuda":
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
