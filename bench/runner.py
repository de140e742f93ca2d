"""`bench run`: plan the work items of a suite, generate them in batches, resume, shard.

Plan: every (sample, seed, image index) of the suite becomes one GenRequest whose key is
``suite/subject/prompt/s<seed>/i<k>``. Keys already recorded in the run directory are skipped,
so re-running the same command resumes. With several processes (``--shard i/n``, or the
RANK/WORLD_SIZE variables that ``accelerate launch`` sets) each key belongs to one shard by its
position in the full plan, and each process writes its own records file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from bench import BenchError
from bench.files import tree_sha256
from bench.options import default_device, parse_params, parse_seeds  # noqa: F401 (re-exported)
from bench.store import RunStore
from bench.suites.base import samples_hash
from bench.types import GenRequest, LoadSpec, Sample, request_key, request_seed

SMOKE = dict(model_preset="tiny", mini=True, seeds=(0,), images_per_prompt=1, resolution=64,
             num_inference_steps=10, metric_preset="tiny")
PRESETS = ("smoke", "tiny", "sd21-random")


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--method", required=True, help="method name (see `python -m bench ls methods`)")
    add("--suite", required=True, help="suite name: dreambench, dreamedit or fastcomposer")
    add("--data-root", type=Path, help="a copy of the suite's data (for DreamBench the dreambooth "
        "repository root or its dataset/ folder); default: datasets/<suite> as `bench data fetch` lays it")
    add("--weights", default=None, help="base model: a Hugging Face id or a local diffusers folder "
        "(default stabilityai/stable-diffusion-2-1-base)")
    add("--preset", choices=PRESETS, help="smoke: tiny random models + the embedded mini suite + one "
        "seed + 64px images (runs offline in well under 2 minutes on CPU); tiny / sd21-random: "
        "random-weight models on the chosen suite")
    add("--adapter", help="adapter weights for adapter methods: a checkpoint folder or file, or "
        "'init' for the untrained adapter initialised from the self-attention")
    add("--seeds", default=None, help="seeds, e.g. 0-5 (the published protocol, default) or 0,2")
    add("--images-per-prompt", type=int, default=None, help="images per prompt and seed (default: the "
        "suite's protocol, 4)")
    add("--subjects", default=None, help="comma-separated subset of subjects")
    add("--limit", type=int, default=None, help="only the first N (subject, prompt) cells")
    add("--batch-size", type=int, default=4, help="requests per method call (does not change images)")
    add("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    add("--dtype", choices=["fp16", "bf16", "fp32"], default=None,
        help="model precision (default: fp16 on CUDA, fp32 on CPU)")
    add("--resolution", type=int, default=None, help="image size (default: the model's, 512 for SD 2.1)")
    add("--steps", type=int, default=None, help="denoising steps (default: the method's published value)")
    add("--param", action="append", default=[], metavar="KEY=VALUE",
        help="override a method parameter, e.g. --param max_loops=9 (repeatable)")
    add("--suite-option", action="append", default=[], metavar="KEY=VALUE",
        help="a suite option, e.g. identifier=sks or conditioning=all (repeatable)")
    add("--task", choices=["replacement", "addition", "both"], default=None,
        help="DreamEdit: which editing task (default both)")
    add("--metrics", default=None, help="comma-separated metrics for the scoring stage "
        "(default: the suite's protocol metrics)")
    add("--metric-preset", choices=["tiny"], default=None,
        help="score with tiny random metric models (default with --preset)")
    add("--no-score", action="store_true", help="generate only; score later with `bench score`")
    add("--shard", default=None, metavar="I/N", help="process I of N (default: RANK/WORLD_SIZE or 0/1)")
    add("--out", type=Path, default=None, help="run directory (default runs/<suite>/<method>[-<preset>])")
    add("--dry-run", action="store_true", help="print the plan and exit without loading any model")


# ---- planning -----------------------------------------------------------------------------
@dataclass
class Plan:
    samples: list[Sample]
    all_samples: list[Sample]
    seeds: tuple[int, ...]
    images_per_prompt: int

    @property
    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self.samples})

    @property
    def images_per_seed(self) -> int:
        return len(self.samples) * self.images_per_prompt

    @property
    def total(self) -> int:
        return self.images_per_seed * len(self.seeds)

    def requests(self) -> list[GenRequest]:
        """All requests, ordered by subject so a batch shares its subject's cached features."""
        out = []
        for sample in sorted(self.samples, key=lambda s: (s.subject, s.prompt_index)):
            for seed in self.seeds:
                for k in range(self.images_per_prompt):
                    out.append(GenRequest(
                        key=request_key(sample, seed, k), prompt=sample.prompt, class_noun=sample.class_noun,
                        subject_images=sample.subject_images, seed=request_seed(seed, k),
                        source_image=sample.source_image, mask=sample.mask, run_seed=seed))
        return out


def select_samples(samples: list[Sample], subjects: str | None, limit: int | None) -> list[Sample]:
    if subjects:
        wanted = [s.strip() for s in subjects.split(",") if s.strip()]
        known = sorted({s.subject for s in samples})
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise BenchError(f"--subjects: unknown subject(s) {', '.join(unknown)}; known: {', '.join(known)}")
        samples = [s for s in samples if s.subject in wanted]
    if limit is not None:
        if limit < 1:
            raise BenchError("--limit must be at least 1")
        samples = samples[:limit]
    return samples


def shard_of(args) -> tuple[int, int]:
    text = args.shard or f"{os.environ.get('RANK', 0)}/{os.environ.get('WORLD_SIZE', 1)}"
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise BenchError(f"--shard {text!r}: expected I/N such as 0/2") from None
    if not 0 <= rank < world:
        raise BenchError(f"--shard {text!r}: I must be in 0..N-1")
    return rank, world


def provenance(device: str) -> dict:
    packages = {}
    for name in ("torch", "diffusers", "transformers", "open_clip_torch", "timm", "accelerate"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    device_name = device
    if device.startswith("cuda"):
        import torch
        device_name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {"packages": packages, "git_commit": commit, "python": platform.python_version(),
            "platform": platform.platform(), "device": device_name, "command": sys.argv}


# ---- the command --------------------------------------------------------------------------
def run(args) -> int:
    from bench.registry import METHODS
    from bench.suites import load_suite

    smoke = args.preset == "smoke"
    model_preset = SMOKE["model_preset"] if smoke else args.preset
    if args.preset and args.weights:
        raise BenchError("--weights and --preset exclude each other: a preset builds random weights")
    entry = METHODS.get(args.method)
    suite_options = parse_params(args.suite_option, "--suite-option")
    if args.task:
        suite_options["task_kind"] = args.task
    if model_preset and args.suite == "dreamedit":
        suite_options.setdefault("annotator_preset", "tiny")
    if args.dry_run and args.suite == "dreamedit":
        suite_options.setdefault("annotate", False)   # a plan needs no Grounded-SAM weights
    suite = load_suite(args.suite, args.data_root, mini=smoke, **suite_options)
    all_samples = suite.samples()
    samples = select_samples(all_samples, args.subjects, args.limit)
    unmasked = [s.cell for s in samples if suite.task == "edit" and s.mask is None]
    if unmasked:
        # e.g. Grounded-SAM found no object in a replacement source: nothing to edit
        print(f"warning: {len(unmasked)} edit sample(s) have no mask and are skipped: "
              f"{', '.join(unmasked[:5])}{' ...' if len(unmasked) > 5 else ''}", file=sys.stderr)
        samples = [s for s in samples if s.mask is not None]
    seeds = parse_seeds(args.seeds) if args.seeds else (SMOKE["seeds"] if smoke else suite.default_seeds)
    per_prompt = args.images_per_prompt or (SMOKE["images_per_prompt"] if smoke else suite.default_images_per_prompt)
    if per_prompt < 1:
        raise BenchError("--images-per-prompt must be at least 1")
    plan = Plan(samples, all_samples, seeds, per_prompt)
    out = args.out or Path("runs") / args.suite / (args.method + (f"-{args.preset}" if args.preset else ""))

    if args.dry_run:
        print(f"method     {args.method} ({entry.target}{', ' + str(dict(entry.params)) if entry.params else ''})")
        print(f"suite      {args.suite} at {suite.root}")
        print(f"subjects   {len(plan.subjects)}")
        print(f"prompts    {len(plan.samples)}   (subject x prompt cells)")
        print(f"per prompt {plan.images_per_prompt} images")
        print(f"per seed   {plan.images_per_seed} images")
        print(f"seeds      {len(plan.seeds)}: {', '.join(map(str, plan.seeds))}")
        print(f"total      {plan.total} images")
        if hasattr(suite, "describe"):
            print(f"protocol   {suite.describe()}  (at the suite's default images per prompt)")
        print(f"output     {out}")
        return 0

    method_cls = entry.load()
    tasks = getattr(method_cls, "tasks", frozenset({"generate"}))
    if suite.task not in tasks:
        raise BenchError(f"method {args.method!r} cannot do the '{suite.task}' task that suite "
                         f"{args.suite!r} needs (it does: {', '.join(sorted(tasks))})")
    device = args.device or default_device()
    dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    params = {**entry.params, **parse_params(args.param)}
    adapter = args.adapter
    if smoke and adapter is None and getattr(method_cls, "smoke_adapter", None):
        adapter = method_cls.smoke_adapter
        print(f"smoke preset: {args.method} runs with --adapter {adapter} (untrained adapter)", file=sys.stderr)
    if adapter not in (None, "init"):
        if not Path(adapter).exists():
            raise BenchError(f"--adapter {adapter}: no such file or folder")
        adapter_id = {"path": str(Path(adapter).resolve()), "sha256": tree_sha256(Path(adapter))[:16]}
    else:
        adapter_id = adapter
    # a method built on another base model (e.g. IP-Adapter on SD 1.5) names it as default_weights
    default_weights = getattr(method_cls, "default_weights", LoadSpec.weights)
    spec = LoadSpec(weights=args.weights or default_weights, preset=model_preset, device=device, dtype=dtype,
                    adapter=adapter, resolution=args.resolution or (SMOKE["resolution"] if smoke else None),
                    num_inference_steps=args.steps or (SMOKE["num_inference_steps"] if smoke else None),
                    params=tuple(sorted(params.items())))
    identity = {
        "method": args.method, "method_params": params,
        "model": model_preset and f"preset:{model_preset}" or spec.weights, "adapter": adapter_id,
        "dtype": dtype, "resolution": spec.resolution, "steps": spec.num_inference_steps,
        "suite": {"name": args.suite, "version": suite.version, "samples_hash": samples_hash(all_samples),
                  "options": suite_options},
    }
    rank, world = shard_of(args)
    metric_preset = args.metric_preset or (SMOKE["metric_preset"] if model_preset else None)
    info = {
        "suite": {"name": args.suite, "root": str(suite.root.resolve()), "options": suite_options},
        "plan": {"seeds": list(seeds), "images_per_prompt": per_prompt, "subjects": plan.subjects,
                 "limit": args.limit, "total": plan.total, "skipped_without_mask": unmasked},
        "metrics": args.metrics.split(",") if args.metrics else list(suite.default_metrics),
        "metric_preset": metric_preset, "random_weights": bool(model_preset),
        "provenance": provenance(device),
    }
    store = RunStore(out)
    store.check_identity(identity)            # refuse a mismatched run before loading anything
    requests = plan.requests()
    mine = [r for i, r in enumerate(requests) if i % world == rank]
    done = store.done_keys()
    todo = [r for r in mine if r.key not in done]
    method = method_cls(spec, name=args.method, **params) if todo else None
    store = RunStore.open_for_run(out, identity, info)
    print(f"{args.method} on {args.suite}: {plan.total} images planned, {len(mine) - len(todo)} already "
          f"done, {len(todo)} to generate -> {store.root}", file=sys.stderr)
    if method is not None:
        description = method.describe()
        store.update_run(method=description, weights_status=description.get("weights_status"),
                         random_weights=bool(model_preset) or bool(description.get("model", {}).get("random_weights")))
        generate_into(store, method, todo, args.batch_size, rank, already=len(mine) - len(todo), total=len(mine))
    store.update_run(finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))

    if args.no_score:
        return 0
    if world > 1:
        print(f"shard {rank}/{world} done; once every shard has finished run: python -m bench score {store.root}",
              file=sys.stderr)
        return 0
    try:
        from bench.scoring import score_run
    except ModuleNotFoundError:
        print("scoring is not available in this version; images and records are written", file=sys.stderr)
        return 0
    score_run(store.root, device=device, metric_preset=metric_preset)
    return 0


def generate_into(store: RunStore, method, requests: list[GenRequest], batch_size: int, rank: int,
                  already: int = 0, total: int | None = None) -> None:
    """Generate ``requests`` in batches of one subject and record each image as it lands."""
    from tqdm import tqdm

    if batch_size < 1:
        raise BenchError("--batch-size must be at least 1")
    batches = []
    for _, group in groupby(requests, key=lambda r: r.subject_images):
        group = list(group)
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    with store.writer(rank) as writer, tqdm(total=total or len(requests), initial=already, unit="img",
                                            desc=method.name, dynamic_ncols=True) as bar:
        try:
            for batch in batches:
                start = time.perf_counter()
                images = method.generate(batch)
                if len(images) != len(batch):
                    raise RuntimeError(f"method {method.name} returned {len(images)} images for {len(batch)} requests")
                seconds = (time.perf_counter() - start) / len(batch)
                for request, image in zip(batch, images):
                    writer.write(request.key, request.run_seed, image, seconds, image.info.get("bench"))
                bar.update(len(batch))
        except KeyboardInterrupt:
            bar.close()
            print(f"\ninterrupted: {bar.n} of {bar.total} images are recorded in {store.root}; "
                  f"run the same command again to resume", file=sys.stderr)
            raise
