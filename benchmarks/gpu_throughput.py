"""Full-protocol throughput in one call: EZIGen, the sd baseline, the released loop, scoring.

Not a test. One run measures, with the same components and in the same process:

- the per-sample time of one UNet forward (guided shape: 2B samples), with and without the
  EZIGen adapter, at each batch size; the best of these is the unit of the overhead ratio;
- EZIGen images/s per batch size (loops fixed at ``--loops`` so that runs compare; the
  reference pass is included: the reference cache is cleared before each timed batch), its
  UNet units per image (a guided step counts 2), and wall / (units x best per-sample UNet time);
- the ``sd`` baseline's images/s per batch size (the harness's StableDiffusionMethod on the
  same components; the adapter is gated off, so it is the base UNet bit for bit);
- the released loop replayed with our components (docs/protocols.md section 1b,
  "Cost per image"): fp32, one request at a time, classifier-free guidance, the full-injection and the
  text-only side images, the decoupled image and ``--loops`` loops, 301 + 40L units, no key/value
  cache; ``speedup_vs_release`` = its seconds per image / EZIGen's best;
- scoring images/s (CLIP-T + CLIP-I + DINO through the project's metric classes, PNG decoding
  included) as the scoring stage runs them, and with the images decoded once by a thread pool
  (and, on CUDA, under bf16 autocast), with the largest score difference each variant causes;
- with ``--levers`` (default): EZIGen images/s at the middle batch size with each lever
  switched (subject key/value cache off, batched VAE, channels_last) and the largest pixel
  difference from the default images (the determinism check of the lever);
- peak GPU memory per batch size and the batch size that fits the device's memory.

Every figure is from random weights (the real architectures: SD 2.1-base, CLIP ViT-B/32,
DINO ViT-S/16), which cost what trained weights cost. Results go to one JSON file per run.

    python benchmarks/gpu_throughput.py                  # CUDA: sd21-random, 512 px, 50 steps, fp16
    python benchmarks/gpu_throughput.py --quick          # one batch size, fewer images
    python benchmarks/gpu_throughput.py --device cpu     # the CPU version (tiny preset; make perf)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.images import load_rgb  # noqa: E402
from bench.metrics.base import ScoreItem  # noqa: E402
from bench.types import GenRequest, LoadSpec  # noqa: E402
from methods.common import randn_per_request, request_generators  # noqa: E402
from methods.ezigen import EZIGenMethod  # noqa: E402
from methods.ezigen.adapter import adapter_kwargs  # noqa: E402

SUBJECT_DIR = ROOT / "datasets/mini-dreambench/dataset/dog"
PROMPTS = ["a dog on the beach", "a dog in the jungle", "a dog in the snow", "a dog on a cobblestone street"]


def release_units(steps: int, layout_steps: int, loops: int) -> int:
    """UNet units per image of the released loop (docs/protocols.md section 1b): one reference pass,
    three guided trajectories of ``steps`` and the guided appearance steps of each loop
    (301 + 40L at 50 steps)."""
    return 1 + 3 * 2 * steps + loops * 2 * (steps - layout_steps)


DEFAULTS = {  # (device kind, quick) -> settings
    ("cuda", False): dict(preset="sd21-random", resolution=512, steps=50, dtype="fp16", batch_sizes="4,8,16",
                          release_requests=2, scoring_images=512, levers=True,
                          scoring_models="real-random"),
    ("cuda", True): dict(preset="sd21-random", resolution=512, steps=50, dtype="fp16", batch_sizes="8",
                         release_requests=1, scoring_images=128, levers=True,
                         scoring_models="real-random"),
    ("cpu", False): dict(preset="tiny", resolution=64, steps=4, dtype="fp32", batch_sizes="2,4",
                         release_requests=1, scoring_images=8, levers=True, scoring_models="tiny"),
    ("cpu", True): dict(preset="tiny", resolution=64, steps=4, dtype="fp32", batch_sizes="2",
                        release_requests=1, scoring_images=8, levers=False, scoring_models="tiny"),
}


# ---- timing helpers ---------------------------------------------------------------------------
class Clock:
    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def measure(self, out: dict, key: str):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        out[key] = time.perf_counter() - start

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


def versions() -> dict:
    import diffusers
    import open_clip
    import timm
    import transformers
    out = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
           "transformers": transformers.__version__, "open_clip": open_clip.__version__, "timm": timm.__version__,
           "cuda": torch.version.cuda}
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def requests_for(batch: int, subject: Path, offset: int = 0) -> list[GenRequest]:
    return [GenRequest(key=f"r{offset + i}", prompt=PROMPTS[i % len(PROMPTS)], class_noun="dog",
                       subject_images=(subject,), seed=offset + i, run_seed=0) for i in range(batch)]


def clear_reference_cache(method: EZIGenMethod) -> None:
    """So that a timed batch pays its reference pass, as the first batch of a subject does."""
    method.reference._features.clear()
    method.reference._latents.clear()


def max_pixel_diff(a: list[Image.Image], b: list[Image.Image]) -> int:
    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b))


# ---- generation ---------------------------------------------------------------------------------
def build_method(args, dtype: str, levers: bool = True) -> EZIGenMethod:
    """EZIGen on the benchmark's preset; ``levers=False``: as released (no cache, default layouts)."""
    spec = LoadSpec(preset=args.preset, device=args.device, dtype=dtype, adapter="init",
                    resolution=args.resolution, num_inference_steps=args.steps)
    method = EZIGenMethod(spec, min_loops=args.loops, max_loops=args.loops)
    if levers and args.channels_last:
        set_channels_last(method, True)
    if levers and args.vae_batched:
        method.components.vae.disable_slicing()
    method.adapter.cache_subject_kv = levers and not args.no_kv_cache
    return method


def set_channels_last(method: EZIGenMethod, on: bool) -> None:
    fmt = torch.channels_last if on else torch.contiguous_format
    for module in (method.components.unet, method.components.vae):
        module.to(memory_format=fmt)


@torch.no_grad()
def unet_seconds_per_sample(method: EZIGenMethod, batch: int, clock: Clock, repeats: int, adapter: bool) -> float:
    """One UNet forward over a guided batch (2 x ``batch`` samples), per sample."""
    sd = method.sd
    n = 2 * batch
    latents = torch.randn((n,) + sd.latent_shape, device=sd.device, dtype=sd.dtype)
    text = sd.encode_text([""] * n)
    kwargs = {}
    if adapter:
        reference = method.reference.features(requests_for(1, method._subject))[0][0]
        tokens = method.adapter.tokens([[[f.clone() for f in reference]] for _ in range(batch)]).for_guidance()
        kwargs = adapter_kwargs(tokens)
    t = torch.tensor(381, device=sd.device).expand(n)
    for _ in range(2):
        sd.components.unet(latents, t, encoder_hidden_states=text, return_dict=False, **kwargs)
    times = {}
    with clock.measure(times, "s"):
        for _ in range(repeats):
            sd.components.unet(latents, t, encoder_hidden_states=text, return_dict=False, **kwargs)
    return times["s"] / repeats / n


def time_ezigen(method: EZIGenMethod, batch: int, clock: Clock, offset: int = 0) -> tuple[dict, list]:
    requests = requests_for(batch, method._subject, offset)
    clear_reference_cache(method)
    clock.reset_peak()
    times = {}
    with clock.measure(times, "s"):
        images = method.generate(requests)
    facts = [im.info["bench"] for im in images]
    return {"batch": batch, "seconds": times["s"], "images_per_s": batch / times["s"],
            "units_per_image": float(np.mean([f["unet_calls"] for f in facts])),
            "loops": float(np.mean([f["loops"] for f in facts])), "peak_memory_gib": clock.peak_gib()}, images


def time_sd(method: EZIGenMethod, batch: int, clock: Clock) -> dict:
    """The ``sd`` baseline through methods.sd.StableDiffusionMethod, on the EZIGen method's components
    (adapter gated off: the base UNet bit for bit)."""
    from methods import sd as sd_module
    vae = method.components.vae
    slicing = vae.use_slicing
    with mock.patch.object(sd_module, "load_from_spec", lambda spec: method.components):
        baseline = sd_module.StableDiffusionMethod(method.spec)
    vae.use_slicing = slicing                          # its set-up turns slicing back on
    requests = requests_for(batch, method._subject)
    baseline.generate(requests[:1])                    # text embeddings and kernels warm
    times = {}
    with clock.measure(times, "s"):
        images = baseline.generate(requests)
    row = {"batch": batch, "seconds": times["s"], "images_per_s": batch / times["s"],
           "units_per_image": float(np.mean([im.info["bench"]["unet_calls"] for im in images]))}
    print(f"sd batch {batch}: {row['images_per_s']:.3f} images/s", flush=True)
    return row


@torch.no_grad()
def release_replay(method: EZIGenMethod, request: GenRequest, loops: int) -> int:
    """The released per-image loop on our components (docs/protocols.md section 1b): returns its UNet units.

    Batch 1, guidance on every step, subject features re-projected at every call (no cache):
    a full-injection side image (adapter on for all steps), a text-only side image, the
    decoupled image, then ``loops`` loops of re-noise + appearance steps + decode + CLIP stop rule.
    """
    sd, cfg, sampler = method.sd, method.config, method.sampler
    cache = method.adapter.cache_subject_kv
    method.adapter.cache_subject_kv = False
    clear_reference_cache(method)
    units_before = sd.unet_calls
    try:
        generators = request_generators([request.seed])
        cond = sd.encode_text([request.prompt])
        layout_uncond = sd.encode_text([cfg.negative_prompt])
        loop_uncond = sd.encode_text([""])
        tokens = method.adapter.tokens(method.reference.features([request]))
        scheduler = sd.components.make_scheduler()
        scheduler.set_timesteps(cfg.num_inference_steps)
        timesteps = scheduler.timesteps

        def trajectory(latents, steps, adapter_from, uncond):
            for i, t in enumerate(steps):
                kwargs = adapter_kwargs(tokens.for_guidance() if i >= adapter_from else None)
                noise = sd.guided_noise(latents, t, cond, uncond, cfg.guidance_scale, **kwargs)
                latents = scheduler.step(noise, t, latents, generator=generators).prev_sample
            return latents

        for adapter_from in (0, len(timesteps)):       # the two side images, decoded and discarded
            sd.decode(trajectory(sd.initial_latents(generators) * scheduler.init_noise_sigma, timesteps,
                                 adapter_from, layout_uncond))
        images = sd.decode(trajectory(sd.initial_latents(generators) * scheduler.init_noise_sigma, timesteps,
                                      cfg.layout_steps, layout_uncond))
        previous = sampler.similarity.embed(images) if sampler.similarity is not None else None
        resume = timesteps[cfg.layout_steps]
        for _ in range(loops):
            noise = randn_per_request(generators, sd.latent_shape, sd.device, sd.dtype)
            latents = scheduler.add_noise(sd.encode(images), noise, resume.expand(1))
            images = sd.decode(trajectory(latents, timesteps[cfg.layout_steps:], 0, loop_uncond))
            if previous is not None:
                current = sampler.similarity.embed(images)
                sampler.similarity.cosine(previous, current)
                previous = current
    finally:
        method.adapter.cache_subject_kv = cache
    return sd.unet_calls - units_before


# ---- scoring ------------------------------------------------------------------------------------
def scoring_metrics(device: str, models: str):
    """CLIP (T and I) and DINO metric objects of the project; ``real-random``: the protocol's
    architectures (open_clip ViT-B-32, timm DINO ViT-S/16) with random weights, no download."""
    from bench.metrics.clip import ClipMetric, _OpenClipBackend
    from bench.metrics.dino import DinoMetric
    if models == "tiny":
        return ClipMetric(device=device, preset="tiny"), DinoMetric(device=device, preset="tiny")
    import open_clip
    import timm
    clip, dino = ClipMetric(device=device), DinoMetric(device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None, device=device)
        backend = _OpenClipBackend.__new__(_OpenClipBackend)
        backend.model, backend.preprocess, backend.device = model.eval(), preprocess, device
        backend.tokenizer = open_clip.get_tokenizer("ViT-B-32")
        clip._backend = backend
        dino._model = timm.create_model("vit_small_patch16_224.dino", pretrained=False,
                                        num_classes=0).to(device).eval()
    return clip, dino


def score_all(metrics, items: list[ScoreItem], batch: int) -> list[dict]:
    rows = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        per_metric = [m.score(chunk) for m in metrics]
        rows += [{k: v for part in parts for k, v in part.items()} for parts in zip(*per_metric)]
    return rows


def score_prefetched(metrics, items: list[ScoreItem], batch: int, workers: int) -> list[dict]:
    """Each image decoded once, by a thread pool running ahead of the metrics."""
    rows = []
    with ThreadPoolExecutor(workers) as pool:
        decoded = [pool.submit(load_rgb, it.image) for it in items]
        for start in range(0, len(items), batch):
            chunk = [ScoreItem(**{**it.__dict__, "image": decoded[start + i].result()})
                     for i, it in enumerate(items[start:start + batch])]
            per_metric = [m.score(chunk) for m in metrics]
            rows += [{k: v for part in parts for k, v in part.items()} for parts in zip(*per_metric)]
    return rows


def max_score_diff(a: list[dict], b: list[dict]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


def bench_scoring(args, images: list[Image.Image], folder: Path, clock: Clock) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    originals = []
    for i, image in enumerate(images):
        originals.append(folder / f"unique{i}.png")
        image.save(originals[-1])
    paths = []
    for i in range(args.scoring_images):      # copies of the generated PNGs, decoded as separate files
        paths.append(folder / f"image{i:05d}.png")
        shutil.copyfile(originals[i % len(originals)], paths[-1])
    references = tuple(sorted(SUBJECT_DIR.glob("*.jpg")))
    items = [ScoreItem(key=f"s{i}", image=p, seed=0, subject="dog", class_noun="dog",
                       eval_text=PROMPTS[i % len(PROMPTS)], reference_images=references,
                       subject_images=references[:1]) for i, p in enumerate(paths)]
    metrics = scoring_metrics(args.device, args.scoring_models)
    score_all(metrics, items[:args.score_batch], args.score_batch)   # warm: models, references, prompts
    result = {"images": len(items), "batch": args.score_batch, "models": args.scoring_models}
    times = {}
    with clock.measure(times, "as_run"):
        plain = score_all(metrics, items, args.score_batch)
    with clock.measure(times, "prefetch"):
        prefetched = score_prefetched(metrics, items, args.score_batch, args.decode_workers)
    result["as_run_images_per_s"] = len(items) / times["as_run"]
    result["prefetch_images_per_s"] = len(items) / times["prefetch"]
    result["prefetch_max_score_diff"] = max_score_diff(plain, prefetched)
    result["decode_workers"] = args.decode_workers
    if clock.cuda:
        with torch.autocast("cuda", dtype=torch.bfloat16), clock.measure(times, "autocast"):
            low = score_prefetched(metrics, items, args.score_batch, args.decode_workers)
        result["prefetch_bf16_autocast_images_per_s"] = len(items) / times["autocast"]
        result["prefetch_bf16_autocast_max_score_diff"] = max_score_diff(plain, low)
    print(f"scoring (CLIP-T + CLIP-I + DINO, {result['models']} models, PNG decoding included): "
          f"{result['as_run_images_per_s']:.1f} images/s as the scoring stage runs, "
          f"{result['prefetch_images_per_s']:.1f} with threaded decoding", flush=True)
    return result


# ---- the run ------------------------------------------------------------------------------------
def suggested_batch_size(peaks: dict[int, float], total_gib: float, headroom: float = 0.9) -> int | None:
    """Largest batch whose peak memory, linear in the batch size, fits ``headroom`` of the device."""
    points = sorted((b, m) for b, m in peaks.items() if m is not None)
    if len(points) < 2:
        return None
    (b0, m0), (b1, m1) = points[0], points[-1]
    per_sample = (m1 - m0) / (b1 - b0)
    if per_sample <= 0:
        return None
    return int((headroom * total_gib - m0) / per_sample + b0)


def attempt(errors: dict, name: str, section):
    """Run one optional section; a failure is recorded (and printed) instead of losing the run."""
    try:
        return section()
    except Exception as exc:  # noqa: BLE001 - a one-call GPU run must still write what it measured
        traceback.print_exc()
        errors[name] = f"{type(exc).__name__}: {exc}"
        return {}


def time_release(args, subject: Path, clock: Clock) -> dict:
    """Seconds per image of the released loop (fp32, batch 1, as released: no levers)."""
    fp32 = build_method(args, "fp32", levers=False)
    fp32._subject = subject
    replay_requests = requests_for(args.release_requests + 1, subject, offset=1000)
    release_replay(fp32, replay_requests[0], args.loops)          # warm-up
    times, units = {}, []
    with clock.measure(times, "s"):
        for request in replay_requests[1:]:
            units.append(release_replay(fp32, request, args.loops))
    release = {"requests": args.release_requests, "s_per_image": times["s"] / args.release_requests,
               "units_per_image": float(np.mean(units)),
               "expected_units_per_image": release_units(args.steps, fp32.config.layout_steps, args.loops),
               "unet_fp32_b1_s_per_sample": unet_seconds_per_sample(fp32, 1, clock, 3, adapter=True)}
    print(f"released loop (fp32, batch 1): {release['s_per_image']:.3f} s/image, "
          f"{release['units_per_image']:.0f} UNet units/image", flush=True)
    del fp32
    gc.collect()                 # module patches hold reference cycles: free the fp32 weights now,
    if clock.cuda:               # so that they do not count in the peak memory measured later
        torch.cuda.empty_cache()
    return release


def time_levers(args, method: EZIGenMethod, batch_sizes: list[int], clock: Clock) -> dict:
    """EZIGen at the middle batch size with each lever switched alone, and its pixel difference;
    ``default`` is the same batch without any switch, timed right before them."""
    batch = batch_sizes[len(batch_sizes) // 2]
    default, reference_images = time_ezigen(method, batch, clock)   # timed again next to the levers
    switches = [("kv_cache_off", lambda on: setattr(method.adapter, "cache_subject_kv", not on))]
    if not args.vae_batched:
        switches.append(("vae_batched", lambda on: method.components.vae.disable_slicing() if on
                         else method.components.vae.enable_slicing()))
    if not args.channels_last:
        switches.append(("channels_last", lambda on: set_channels_last(method, on)))
    levers = {"default": default}
    for name, switch in switches:
        switch(True)
        try:
            if clock.cuda:
                time_ezigen(method, batch, clock)      # warm the switched path's kernels
            row, lever_images = time_ezigen(method, batch, clock)
        finally:
            switch(False)
        row["max_pixel_diff_vs_default"] = max_pixel_diff(reference_images, lever_images)
        levers[name] = row
        print(f"lever {name} at batch {batch}: {row['images_per_s']:.3f} images/s "
              f"(default {default['images_per_s']:.3f}), max pixel difference "
              f"{row['max_pixel_diff_vs_default']}", flush=True)
    return levers


def run(args) -> dict:
    clock = Clock(args.device)
    batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(args.device) if clock.cuda else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "versions": versions(), "weights": "random (real architectures)" if args.preset != "tiny" else "random (tiny preset)",
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    print(f"device {result['device']}; preset {args.preset} {args.resolution}px {args.steps} steps, "
          f"{args.loops} loops, {args.dtype}, batch sizes {batch_sizes}", flush=True)
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subject = Path(tmp) / "subject.png"
        load_rgb(sorted(SUBJECT_DIR.glob("*.jpg"))[0]).save(subject)

        # The released loop first (fp32), then the fp32 copy is freed before our dtype is built.
        release = attempt(errors, "release", lambda: time_release(args, subject, clock)) if args.release_requests else {}

        method = build_method(args, args.dtype)
        method._subject = subject
        unet = {}
        for batch in batch_sizes:
            unet[batch] = {"base_s_per_sample": unet_seconds_per_sample(method, batch, clock, args.unet_repeats, False),
                           "adapter_s_per_sample": unet_seconds_per_sample(method, batch, clock, args.unet_repeats, True)}
            print(f"UNet batch {batch} (guided: {2 * batch} samples): {unet[batch]['base_s_per_sample'] * 1e3:.2f} "
                  f"ms/sample, with adapter {unet[batch]['adapter_s_per_sample'] * 1e3:.2f} ms/sample", flush=True)
        best_base = min(u["base_s_per_sample"] for u in unet.values())
        best_adapter = min(u["adapter_s_per_sample"] for u in unet.values())

        method.generate(requests_for(batch_sizes[0], subject, offset=500))   # warm: VAE, CLIP, scheduler
        ezigen, images = {}, []
        for batch in batch_sizes:
            row, images = time_ezigen(method, batch, clock)
            row["overhead_ratio"] = row["seconds"] / batch / (row["units_per_image"] * best_base)
            row["overhead_ratio_vs_adapter_unet"] = row["seconds"] / batch / (row["units_per_image"] * best_adapter)
            ezigen[batch] = row
            print(f"ezigen batch {batch}: {row['images_per_s']:.3f} images/s, {row['units_per_image']:.1f} units/image, "
                  f"{row['loops']:.1f} loops, overhead {row['overhead_ratio']:.2f} "
                  f"({row['overhead_ratio_vs_adapter_unet']:.2f} vs adapter UNet), peak {row['peak_memory_gib']} GiB",
                  flush=True)
        sd_rows = attempt(errors, "sd", lambda: {batch: time_sd(method, batch, clock) for batch in batch_sizes})
        levers = attempt(errors, "levers", lambda: time_levers(args, method, batch_sizes, clock)) if args.levers else {}
        scoring = attempt(errors, "scoring", lambda: bench_scoring(args, images, Path(tmp) / "scoring", clock))

    best = max(ezigen.values(), key=lambda r: r["images_per_s"])
    result.update({
        "ezigen_images_per_s": best["images_per_s"], "ezigen_best_batch": best["batch"],
        "sd_images_per_s": max((r["images_per_s"] for r in sd_rows.values()), default=None),
        "overhead_ratio": best["overhead_ratio"],
        "overhead_ratio_vs_adapter_unet": best["overhead_ratio_vs_adapter_unet"],
        "speedup_vs_release": (release["s_per_image"] * best["images_per_s"]) if release else None,
        "scoring_images_per_s": scoring.get("as_run_images_per_s"),
        "peak_memory_gib": {str(b): r["peak_memory_gib"] for b, r in ezigen.items()} if clock.cuda else None,
        "unet": {str(b): u for b, u in unet.items()}, "ezigen": {str(b): r for b, r in ezigen.items()},
        "sd": {str(b): r for b, r in sd_rows.items()}, "release": release, "levers": levers, "scoring": scoring,
        "errors": errors,
    })
    if clock.cuda:
        total = torch.cuda.get_device_properties(args.device).total_memory / 2**30
        result["suggested_batch_size"] = suggested_batch_size(
            {b: r["peak_memory_gib"] for b, r in ezigen.items()}, total)
    print(f"EZIGen {result['ezigen_images_per_s']:.3f} images/s (batch {best['batch']}), sd "
          f"{result['sd_images_per_s'] or float('nan'):.3f} images/s, overhead ratio {result['overhead_ratio']:.2f}, "
          f"speedup vs the released loop {result['speedup_vs_release'] or float('nan'):.2f}x, "
          f"scoring {result['scoring_images_per_s'] or float('nan'):.1f} images/s"
          + (f"; FAILED sections: {', '.join(errors)}" if errors else ""), flush=True)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="one batch size, fewer images (a check that it runs)")
    parser.add_argument("--preset", help="tiny | sd21-random (default: sd21-random on CUDA, tiny on CPU)")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--steps", type=int, help="denoising steps (protocol: 50)")
    parser.add_argument("--loops", type=int, default=3, help="iterative loops, fixed so that runs compare")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-sizes", help="comma-separated requests per generate call")
    parser.add_argument("--release-requests", type=int, help="requests timed for the released loop (0: skip)")
    parser.add_argument("--scoring-images", type=int)
    parser.add_argument("--score-batch", type=int, default=64)
    parser.add_argument("--decode-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads decoding PNGs ahead of the metrics (the prefetch variant)")
    parser.add_argument("--scoring-models", choices=["real-random", "tiny"],
                        help="real-random: the protocol's backbones with random weights (default on CUDA); "
                             "tiny: the tiny metric presets (default on CPU)")
    parser.add_argument("--unet-repeats", type=int, default=5)
    parser.add_argument("--no-kv-cache", action="store_true", help="re-project subject keys/values at every call")
    parser.add_argument("--vae-batched", action="store_true",
                        help="decode/encode the whole batch at once (default: one image at a time, batch-invariant)")
    parser.add_argument("--channels-last", action="store_true", help="UNet and VAE in channels_last memory format")
    lever = parser.add_mutually_exclusive_group()
    lever.add_argument("--levers", dest="levers", action="store_true", default=None,
                       help="also time each lever switched at the middle batch size")
    lever.add_argument("--no-levers", dest="levers", action="store_false")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="folder for the JSON (default: reports/perf on CUDA, runs/perf on CPU)")
    args = parser.parse_args(argv)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    for key, value in DEFAULTS[(kind, args.quick)].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = ROOT / ("reports/perf" if kind == "cuda" else "runs/perf")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for the CPU version")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    device = "".join(c if c.isalnum() else "-" for c in result["device"].split(" (")[0].lower()).strip("-")
    stamp = result["date"].replace(":", "").replace("+0000", "Z")
    path = args.out / f"throughput-{device}-{args.preset}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
