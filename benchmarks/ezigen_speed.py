"""EZIGen speed: wall time and UNet calls per image, and the sampler's overhead over the UNet.

Not a test. For each configuration it prints

- wall seconds per image (``generate`` over a batch, after one warm-up batch),
- UNet forward passes per image (from the image records: guided calls count 2, reference
  pass included),
- ratio = wall / (UNet calls x the time of one UNet forward measured in this process at the
  same resolution and per-sample batch; a guided call over B samples is 2B forwards).
  1.0 means all time is spent in the UNet; the excess is VAE, CLIP, text encoder, scheduler
  and Python overhead.

    python benchmarks/ezigen_speed.py                      # tiny @64 and sd21-random @256, CPU
    python benchmarks/ezigen_speed.py --device cuda --dtype fp16 --resolution 512 --steps 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.types import GenRequest, LoadSpec  # noqa: E402
from methods.ezigen import EZIGenMethod  # noqa: E402
from methods.ezigen.adapter import adapter_kwargs  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _subject_files(folder: Path, count: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"subject{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def unet_forward_seconds(method: EZIGenMethod, batch: int, repeats: int, with_adapter: bool) -> float:
    """Seconds of one UNet forward per sample (a call over ``2 * batch`` samples, as guided calls)."""
    sd = method.sd
    latents = torch.randn((2 * batch,) + sd.latent_shape, device=sd.device, dtype=sd.dtype)
    text = sd.encode_text([""] * (2 * batch))
    kwargs = {}
    if with_adapter:
        shapes = [captured.shape for captured in _one_reference(method)]
        per_sample = [[[torch.zeros(s, device=sd.device, dtype=sd.dtype) for s in shapes]] for _ in range(2 * batch)]
        kwargs = adapter_kwargs(method.adapter.tokens(per_sample))
    t = torch.tensor(381, device=sd.device)
    with torch.no_grad():
        for _ in range(2):
            sd.components.unet(latents, t.expand(2 * batch), encoder_hidden_states=text, **kwargs)
        _sync(str(sd.device))
        start = time.perf_counter()
        for _ in range(repeats):
            sd.components.unet(latents, t.expand(2 * batch), encoder_hidden_states=text, **kwargs)
        _sync(str(sd.device))
    return (time.perf_counter() - start) / repeats / (2 * batch)


def _one_reference(method: EZIGenMethod):
    req = GenRequest(key="probe", prompt="", class_noun="dog", subject_images=(method._probe_subject,), seed=0)
    return method.reference.features([req])[0][0]


def bench(preset: str, resolution: int, steps: int, batch: int, device: str, dtype: str,
          max_loops: int, folder: Path) -> dict:
    spec = LoadSpec(preset=preset, device=device, dtype=dtype, adapter="init", resolution=resolution,
                    num_inference_steps=steps)
    method = EZIGenMethod(spec, max_loops=max_loops)
    subjects = _subject_files(folder, batch, resolution)
    method._probe_subject = subjects[0]
    requests = [GenRequest(key=f"r{i}", prompt="a dog on the beach", class_noun="dog",
                           subject_images=(subjects[i],), seed=i, run_seed=0) for i in range(batch)]
    method.generate(requests[:1])                       # warm-up (and reference features of subject 0)
    method.reference._features.clear()                  # measure with a cold reference cache
    _sync(device)
    start = time.perf_counter()
    images = method.generate(requests)
    _sync(device)
    wall = (time.perf_counter() - start) / batch
    calls = float(np.mean([im.info["bench"]["unet_calls"] for im in images]))
    loops = float(np.mean([im.info["bench"]["loops"] for im in images]))
    base = unet_forward_seconds(method, batch, repeats=3, with_adapter=False)
    with_adapter = unet_forward_seconds(method, batch, repeats=3, with_adapter=True)
    return {"preset": preset, "resolution": resolution, "steps": steps, "batch": batch, "device": device,
            "dtype": dtype, "wall_per_image_s": wall, "unet_calls_per_image": calls, "loops": loops,
            "unet_forward_s": base, "unet_forward_with_adapter_s": with_adapter,
            "ratio": wall / (calls * base), "ratio_vs_adapter_forward": wall / (calls * with_adapter)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="model precision")
    parser.add_argument("--presets", default="tiny,sd21-random", help="comma-separated presets")
    parser.add_argument("--resolution", type=int, default=None,
                        help="image size (default: 64 for tiny, 256 for sd21-random)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps (protocol: 50)")
    parser.add_argument("--batch", type=int, default=2, help="requests per generate call")
    parser.add_argument("--max-loops", type=int, default=3, help="iterative loops cap (protocol: 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            resolution = args.resolution or (64 if preset == "tiny" else 256)
            rows.append(bench(preset, resolution, args.steps, args.batch, args.device, args.dtype,
                              args.max_loops, Path(tmp)))
            r = rows[-1]
            print(f"{r['preset']:>12} {r['resolution']}px {r['steps']} steps batch {r['batch']} "
                  f"{r['device']}/{r['dtype']}: {r['wall_per_image_s']:.3f} s/image, "
                  f"{r['unet_calls_per_image']:.0f} UNet calls/image ({r['loops']:.1f} loops), "
                  f"one UNet forward {r['unet_forward_s'] * 1e3:.2f} ms "
                  f"({r['unet_forward_with_adapter_s'] * 1e3:.2f} ms with adapter), "
                  f"ratio {r['ratio']:.2f} (vs adapter forward {r['ratio_vs_adapter_forward']:.2f})",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
