"""`bench run`: plan the work items of a suite, generate them in fixed batches, resume, shard.

Plan: every (sample, seed, image index) of the suite becomes one GenRequest whose key is
``suite/subject/prompt/s<seed>/i<k>``. The plan is cut into fixed batches by position (within
each subject; :func:`plan_batches`), and the batch size is part of the run's identity: a batch is
always computed with the same companions, so the same command gives the same bytes on the same
machine whether it runs uninterrupted, is killed and resumed, or is sharded. Recorded keys whose
image checks out are skipped; a partly finished batch is regenerated whole and only its missing
images are written. With several processes (``--shard i/n``, or the RANK/WORLD_SIZE variables
that ``accelerate launch`` sets) each whole batch belongs to one shard by its position, and each
process writes its own records file under an advisory lock.

Every input (options, method parameters, suite files, images, adapter files, the output folder)
is checked before a model loads or run.json is written.
"""

from __future__ import annotations

import argparse
import hashlib
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
from bench.files import files_sha256, weight_files
from bench.images import check_image
from bench.options import (check_device, check_input_dir, check_int, check_output_dir, default_device,
                           parse_params, parse_seeds, split_list)
from bench.registry import check_method_params
from bench.store import RunStore, encode_png
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
        "(default: the method's own base, stabilityai/stable-diffusion-2-1-base for EZIGen and sd)")
    add("--preset", choices=PRESETS, help="smoke: tiny random models + the embedded mini suite + one "
        "seed + 64px images (runs offline in well under 2 minutes on CPU); tiny / sd21-random: "
        "random-weight models on the chosen suite")
    add("--adapter", help="adapter weights for adapter methods: a checkpoint folder or file, or "
        "'init' for the untrained adapter initialised from the self-attention")
    add("--seeds", default=None, help="seeds, e.g. 0-5 or 0,2 (default: the suite's protocol: "
        "0-5 for DreamBench and DreamEdit, 0 for FastComposer)")
    add("--images-per-prompt", type=int, default=None, help="images per prompt and seed (default: the "
        "suite's protocol, 4)")
    add("--subjects", default=None, help="comma-separated subset of subjects")
    add("--limit", type=int, default=None, help="only the first N (subject, prompt) cells")
    add("--batch-size", type=int, default=4, help="requests per method call (default 4). Part of the run's "
        "identity: images agree across batch sizes only within a small tolerance, not byte for byte")
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
    add("--out", default=None, help="run directory (default runs/<suite>/<method>[-<preset>])")
    add("--dry-run", action="store_true", help="check every input, print the plan and exit without loading any model")
    add("--verify", action="store_true", help="re-hash every recorded image (sha256) before resuming and "
        "scoring; by default an image whose size and mtime match its record is trusted without a re-hash")


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
        """All requests, ordered by subject, then seed, then prompt: a batch shares its subject's
        cached features, and a run grown by more seeds cuts its new images into new batches."""
        out = []
        ordered = sorted(self.samples, key=lambda s: (s.subject, s.prompt_index))
        for _, group in groupby(ordered, key=lambda s: s.subject):
            group = list(group)
            for seed, sample, k in ((seed, sample, k) for seed in self.seeds for sample in group
                                    for k in range(self.images_per_prompt)):
                out.append(GenRequest(
                    key=request_key(sample, seed, k), prompt=sample.prompt, class_noun=sample.class_noun,
                    subject_images=sample.subject_images, seed=request_seed(seed, k),
                    source_image=sample.source_image, mask=sample.mask, run_seed=seed))
        return out


def select_samples(samples: list[Sample], subjects: str | None, limit: int | None) -> list[Sample]:
    if subjects is not None:
        wanted = split_list(subjects, "--subjects")
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
#: Bounds of the numeric options (checked before anything loads). 1000 steps: the schedulers'
#: training timesteps (diffusers refuses more); 4096 px: beyond any SD model's size.
MAX_RESOLUTION = 4096
MAX_STEPS = 1000
MAX_IMAGES_PER_PROMPT = 1000
MAX_BATCH_SIZE = 4096
#: a plan is built in memory: refuse one that could not be (the published protocols: <= 18,000)
MAX_PLAN_IMAGES = 1_000_000
#: Range checks of well-known method parameters, on top of the type checks of the signature.
PARAM_RANGES = {"num_inference_steps": (1, MAX_STEPS)}


def check_options(args) -> None:
    """Every numeric option, before anything is loaded or written."""
    check_int(args.resolution, "--resolution", 8, MAX_RESOLUTION, multiple_of=8)
    check_int(args.steps, "--steps", 1, MAX_STEPS)
    check_int(args.batch_size, "--batch-size", 1, MAX_BATCH_SIZE)
    check_int(args.images_per_prompt, "--images-per-prompt", 1, MAX_IMAGES_PER_PROMPT)
    check_int(args.limit, "--limit", 1)
    check_device(args.device)
    if args.preset and args.weights:
        raise BenchError("--weights and --preset exclude each other: a preset builds random weights")


def method_params(name: str, method_cls, entry_params: dict, overrides: list[str]) -> dict:
    params = check_method_params(name, method_cls, {**entry_params, **parse_params(overrides)})
    for key, (low, high) in PARAM_RANGES.items():
        if key in params and isinstance(params[key], int) and not low <= params[key] <= high:
            raise BenchError(f"--param {key}={params[key]}: must be between {low} and {high}")
    return params


def check_request_images(samples: list[Sample]) -> None:
    """Decode every file a method will read (subject images, sources, masks) in full now, so a
    truncated file fails here in one line and not inside a model mid-run."""
    seen = set()
    for s in samples:
        for path in (*s.subject_images, s.source_image, s.mask):
            if path is not None and path not in seen:
                seen.add(path)
                check_image(path)


def adapter_identity(adapter: str | None) -> object:
    """'init' / None as given; a checkpoint: its path and a hash of the weight files it holds
    (bench.files.weight_files: never a whole folder tree)."""
    if adapter in (None, "init"):
        return adapter
    files = weight_files(Path(adapter))
    return {"path": str(Path(adapter).expanduser().resolve()), "sha256": files_sha256(files)[:16]}


def run(args) -> int:
    from bench.registry import METHODS, METRICS
    from bench.suites import load_suite

    smoke = args.preset == "smoke"
    model_preset = SMOKE["model_preset"] if smoke else args.preset
    # 1. options, method and parameters: nothing is loaded or written yet
    check_options(args)
    rank, world = shard_of(args)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    entry = METHODS.get(args.method)
    method_cls = entry.load()
    params = method_params(args.method, method_cls, dict(entry.params), args.param)
    suite_options = parse_params(args.suite_option, "--suite-option")
    if args.out is not None and not str(args.out).strip():
        raise BenchError("--out is empty: name the run directory")
    out = Path(args.out) if args.out else Path("runs") / args.suite / (args.method + (f"-{args.preset}" if args.preset else ""))
    out = check_output_dir(out)
    metrics = split_list(args.metrics, "--metrics") if args.metrics is not None else None
    if metrics is not None and not metrics:
        raise BenchError(f"--metrics {args.metrics!r} names no metric")
    for name in metrics or []:
        METRICS.get(name)                     # an unknown metric fails now, not after generating
    check_input_dir(args.data_root, "--data-root")

    # 2. the suite and its files
    if args.task:
        suite_options["task_kind"] = args.task
    if model_preset and args.suite == "dreamedit":
        suite_options.setdefault("annotator_preset", "tiny")
    if args.dry_run and args.suite == "dreamedit":
        suite_options.setdefault("annotate", False)   # a plan needs no Grounded-SAM weights
    suite = load_suite(args.suite, args.data_root, mini=smoke, **suite_options)
    tasks = getattr(method_cls, "tasks", frozenset({"generate"}))
    if suite.task not in tasks:
        raise BenchError(f"method {args.method!r} cannot do the '{suite.task}' task that suite "
                         f"{args.suite!r} needs (it does: {', '.join(sorted(tasks))})")
    all_samples = suite.samples()
    samples = select_samples(all_samples, args.subjects, args.limit)
    unmasked = [s.cell for s in samples if suite.task == "edit" and s.mask is None]
    if unmasked:
        # e.g. Grounded-SAM found no object in a replacement source: nothing to edit
        print(f"warning: {len(unmasked)} edit sample(s) have no mask and are skipped: "
              f"{', '.join(unmasked[:5])}{' ...' if len(unmasked) > 5 else ''}", file=sys.stderr)
        samples = [s for s in samples if s.mask is not None]
    check_request_images(samples)
    if not samples:
        raise BenchError(f"nothing to generate: the selection leaves no sample of suite {args.suite!r}")
    seeds = seeds or (SMOKE["seeds"] if smoke else suite.default_seeds)
    per_prompt = args.images_per_prompt or (SMOKE["images_per_prompt"] if smoke else suite.default_images_per_prompt)
    plan = Plan(samples, all_samples, seeds, per_prompt)
    if plan.total > MAX_PLAN_IMAGES:
        raise BenchError(f"the plan has {plan.total} images (cells x seeds x --images-per-prompt), more than "
                         f"{MAX_PLAN_IMAGES}: fewer --seeds or --images-per-prompt, or --limit")
    adapter = args.adapter
    smoke_note = None
    if smoke and adapter is None and getattr(method_cls, "smoke_adapter", None):
        adapter = method_cls.smoke_adapter
        smoke_note = f"smoke preset: {args.method} runs with --adapter {adapter} (untrained adapter)"
    if adapter not in (None, "init"):
        weight_files(Path(adapter))            # checked now; hashed only once the run goes ahead

    if args.dry_run:
        if smoke_note:
            print(smoke_note, file=sys.stderr)
        print(f"method     {args.method} ({entry.target}{', ' + str(dict(entry.params)) if entry.params else ''})")
        print(f"suite      {args.suite} at {suite.root}")
        print(f"subjects   {len(plan.subjects)}")
        print(f"prompts    {len(plan.samples)}   (subject x prompt cells)")
        print(f"per prompt {plan.images_per_prompt} images")
        print(f"per seed   {plan.images_per_seed} images")
        print(f"seeds      {len(plan.seeds)}: {', '.join(map(str, plan.seeds))}")
        print(f"total      {plan.total} images")
        print(f"batches    {len(plan_batches(plan.requests(), args.batch_size))} of up to {args.batch_size}")
        if hasattr(suite, "describe"):
            print(f"protocol   {suite.describe()}  (at the suite's default images per prompt)")
        print(f"output     {out}")
        return 0

    # 3. identity, lock, model; run.json only once the model has loaded
    device = args.device or default_device()
    dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    # a method built on another base model (e.g. IP-Adapter on SD 1.5) names it as default_weights
    default_weights = getattr(method_cls, "default_weights", LoadSpec.weights)
    spec = LoadSpec(weights=args.weights or default_weights, preset=model_preset, device=device, dtype=dtype,
                    adapter=adapter, resolution=args.resolution or (SMOKE["resolution"] if smoke else None),
                    num_inference_steps=args.steps or (SMOKE["num_inference_steps"] if smoke else None),
                    params=tuple(sorted(params.items())))
    identity = {
        "method": args.method, "method_params": params,
        "model": model_preset and f"preset:{model_preset}" or spec.weights, "adapter": adapter_identity(adapter),
        "dtype": dtype, "resolution": spec.resolution, "steps": spec.num_inference_steps,
        "batch_size": args.batch_size,
        "suite": {"name": args.suite, "version": suite.version, "samples_hash": samples_hash(all_samples),
                  "options": suite_options},
    }
    metric_preset = args.metric_preset or (SMOKE["metric_preset"] if model_preset else None)
    info = {
        "suite": {"name": args.suite, "root": str(suite.root.resolve()), "options": suite_options},
        "plan": {"seeds": list(seeds), "images_per_prompt": per_prompt, "subjects": plan.subjects,
                 "limit": args.limit, "images_per_seed": plan.images_per_seed, "total": plan.total,
                 "skipped_without_mask": unmasked},
        "metrics": metrics or list(suite.default_metrics),
        "metric_preset": metric_preset, "random_weights": bool(model_preset),
        "provenance": provenance(device),
    }
    store = RunStore(out)
    store.check_identity(identity)            # refuse a mismatched run before loading anything
    batches = plan_batches(plan.requests(), args.batch_size)
    mine = [b for i, b in enumerate(batches) if i % world == rank]
    created, folder = [], Path(out) / "generations"     # folders this process creates, deepest first
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    lock = store.lock_shard(rank, world)      # the same shard started twice is refused here
    try:
        recorded, problems = store.verified_records(verify=args.verify)
        mine_keys = {r.key for b in mine for r in b}
        bad = {k: why for k, why in problems.items() if k in mine_keys}
        if bad:
            first = next(iter(bad.items()))
            print(f"warning: {len(bad)} recorded image(s) fail their check and are regenerated, e.g. "
                  f"{first[0]}: {first[1]}", file=sys.stderr)
        todo = [b for b in mine if any(r.key not in recorded for r in b)]
        method = method_cls(spec, name=args.method, **params) if todo else None
        store = RunStore.open_for_run(out, identity, info)
    except BaseException:
        lock.release()
        if not store.run_json.exists():       # nothing of this run may stay behind
            lock.path.unlink(missing_ok=True)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    pass
        raise
    if smoke_note:
        print(smoke_note, file=sys.stderr)
    with lock:
        n_mine = sum(len(b) for b in mine)
        n_todo = sum(1 for b in todo for r in b if r.key not in recorded)
        print(f"{args.method} on {args.suite}: {plan.total} images planned, {n_mine - n_todo} already "
              f"done, {n_todo} to generate in {len(todo)} batch(es) of up to {args.batch_size} -> {store.root}",
              file=sys.stderr)
        if method is not None:
            description = method.describe()
            store.update_run(method=description, weights_status=description.get("weights_status"),
                             random_weights=bool(model_preset) or bool(description.get("model", {}).get("random_weights")))
            generate_into(store, method, todo, recorded, rank, total=n_mine)
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
    score_run(store.root, device=device, metric_preset=metric_preset, verify=args.verify)
    return 0


def plan_batches(requests: list[GenRequest], batch_size: int) -> list[list[GenRequest]]:
    """The plan cut into fixed batches: by position within each (subject, seed) run of requests
    (a batch never mixes subjects or seeds). The cut depends only on the plan and the batch size,
    never on what is already done, so a resumed or sharded run computes every batch exactly as one
    uninterrupted process does, and more seeds never change the batches of the earlier ones."""
    batches = []
    for _, group in groupby(requests, key=lambda r: (r.subject_images, r.run_seed)):
        group = list(group)
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def generate_into(store: RunStore, method, batches: list[list[GenRequest]], recorded: dict[str, dict],
                  rank: int, total: int | None = None) -> None:
    """Generate whole batches and record each image not yet recorded.

    A partly finished batch (a run interrupted mid-batch) is regenerated whole, so that its
    images are computed in the same batch as before; only the missing images are written, and
    the regenerated bytes of the others are compared with their records."""
    from tqdm import tqdm

    n_todo = sum(1 for b in batches for r in b if r.key not in recorded)
    differing = []
    with store.writer(rank) as writer, tqdm(total=total or n_todo, initial=(total or n_todo) - n_todo, unit="img",
                                            desc=method.name, dynamic_ncols=True) as bar:
        try:
            for batch in batches:
                start = time.perf_counter()
                images = method.generate(batch)
                if len(images) != len(batch):
                    raise RuntimeError(f"method {method.name} returned {len(images)} images for {len(batch)} requests")
                seconds = (time.perf_counter() - start) / len(batch)
                for request, image in zip(batch, images):
                    data = encode_png(image)
                    if request.key in recorded:
                        if hashlib.sha256(data).hexdigest() != recorded[request.key]["sha256"]:
                            differing.append(request.key)
                        continue
                    writer.write(request.key, request.run_seed, image, seconds, image.info.get("bench"), data=data)
                    bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            print(f"\ninterrupted: {bar.n} of {bar.total} images are recorded in {store.root}; "
                  f"run the same command again to resume", file=sys.stderr)
            raise
    if differing:
        print(f"warning: {len(differing)} regenerated image(s) of partly finished batches differ from their "
              f"records (e.g. {differing[0]}): another machine or library version, or a grown --limit / "
              "--images-per-prompt that changed the batch, computed them; the recorded images are kept",
              file=sys.stderr)
