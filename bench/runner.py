"""`bench run`: a checked plan (bench/plan.py), then its execution: identity, lock, model, generation, scoring.

The plan is cut into fixed batches by position (within each subject and seed;
:func:`bench.plan.plan_batches`), and the batch size is part of the run's identity: a batch is
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

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import BenchError
from bench.files import files_sha256, weight_files
from bench.options import default_device
from bench.plan import RunConfig, configure, plan_batches, plan_run, print_plan  # noqa: F401 (configure: the CLI's)
from bench.store import RunStore, encode_png, weights_status
from bench.suites.base import samples_hash
from bench.types import GenRequest, LoadSpec


def run(args) -> int:
    if args.dry_run:
        return dry_run(args)
    return execute(plan_run(args))


def dry_run(args) -> int:
    """`--dry-run`: the doctor's checklist of every piece the run needs, then the plan; exit
    status 2 when a piece is missing. Nothing is loaded or written."""
    from bench.doctor import print_checklist

    shortfall = print_checklist(args)
    print()
    try:
        print_plan(plan_run(args))
    except BenchError as exc:      # a missing piece (e.g. the suite's data) also stops the plan:
        if not shortfall:          # one line says both
            raise
        shortfall += f"; the plan stopped too: {exc}"
    if shortfall:
        print(f"error: {shortfall}", file=sys.stderr)
    return 2 if shortfall else 0


def execute(config: RunConfig) -> int:
    """Carry out a checked run configuration: identity, lock, model, generation, scoring."""
    device = config.device or default_device()
    spec = load_spec(config, device)
    identity = run_identity(config, spec)
    store = RunStore(config.out)
    store.check_identity(identity)            # refuse a mismatched run before loading anything
    batches = plan_batches(config.plan.requests(), config.batch_size)
    mine = [b for i, b in enumerate(batches) if i % config.world == config.rank]
    lock, store, recorded, todo, method = open_run(config, store, spec, identity, run_info(config, device), mine)
    if config.smoke_note:
        print(config.smoke_note, file=sys.stderr)
    with lock:
        n_mine = sum(len(b) for b in mine)
        n_todo = sum(1 for b in todo for r in b if r.key not in recorded)
        print(f"{config.method} on {config.suite_name}: {config.plan.total} images planned, {n_mine - n_todo} "
              f"already done, {n_todo} to generate in {len(todo)} batch(es) of up to {config.batch_size} -> "
              f"{store.root}", file=sys.stderr)
        if method is not None:
            description = method.describe()
            store.update_run(method=description, weights_status=description.get("weights_status"),
                             random_weights=config.random_weights
                             or bool(description.get("model", {}).get("random_weights")))
        status = weights_status(store.read_run())
        if "random weights" in status:           # the console says what every report will say
            print(f"weights: {status} (these numbers say nothing about the method)", file=sys.stderr)
        if method is not None:
            generate_into(store, method, todo, recorded, config.rank, total=n_mine)
        else:                                  # only a resume can find everything recorded
            print(f"nothing to do: all {n_mine} images of this shard are already recorded in {store.root}",
                  file=sys.stderr)
        store.update_run(finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return score(config, store, device)


def load_spec(config: RunConfig, device: str) -> LoadSpec:
    """How the method loads its base model. A method built on another base model (e.g.
    IP-Adapter on SD 1.5) names it as ``default_weights``."""
    default_weights = getattr(config.method_cls, "default_weights", LoadSpec.weights)
    cuda_dtype = getattr(config.method_cls, "cuda_dtype", "fp16")     # the in-context baselines: bf16
    return LoadSpec(weights=config.weights or default_weights, preset=config.model_preset, device=device,
                    dtype=config.dtype or (cuda_dtype if device.startswith("cuda") else "fp32"), adapter=config.adapter,
                    resolution=config.resolution, num_inference_steps=config.steps,
                    params=tuple(sorted(config.params.items())))


def run_identity(config: RunConfig, spec: LoadSpec) -> dict:
    """What a resumed run must match (run.json's identity): a differing one is refused."""
    return {
        "method": config.method, "method_params": config.params,
        "model": config.model_preset and f"preset:{config.model_preset}" or spec.weights,
        "adapter": adapter_identity(config.adapter),
        "dtype": spec.dtype, "resolution": spec.resolution, "steps": spec.num_inference_steps,
        "batch_size": config.batch_size,
        "suite": {"name": config.suite_name, "version": config.suite.version,
                  "samples_hash": samples_hash(config.plan.all_samples), "options": config.suite_options},
    }


def run_info(config: RunConfig, device: str) -> dict:
    """The rest of run.json: the suite's location, the plan, the metrics, the provenance."""
    plan = config.plan
    return {
        "suite": {"name": config.suite_name, "root": str(config.suite.root.resolve()), "options": config.suite_options},
        "plan": {"seeds": list(plan.seeds), "images_per_prompt": plan.images_per_prompt, "subjects": plan.subjects,
                 "limit": config.limit, "images_per_seed": plan.images_per_seed, "total": plan.total,
                 "skipped_without_mask": config.skipped_without_mask},
        "metrics": config.metrics or list(config.suite.default_metrics),
        "metric_preset": config.metric_preset, "random_weights": config.random_weights,
        **({"metric_params": config.metric_params} if config.metric_params else {}),
        "provenance": provenance(device),
    }


def open_run(config: RunConfig, store: RunStore, spec: LoadSpec, identity: dict, info: dict, mine: list):
    """Lock this shard, read what is recorded, load the model when anything is left to do, and
    write run.json (only once the model has loaded). Returns (lock, store, recorded, todo,
    method or None). On any failure nothing of a new run stays behind."""
    created, folder = [], Path(config.out) / "generations"     # folders this process creates, deepest first
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    lock = store.lock_shard(config.rank, config.world)      # the same shard started twice is refused here
    try:
        mine_keys = {r.key for b in mine for r in b}   # only this shard's images are checked (stat, hash)
        recorded, bad = store.verified_records(verify=config.verify, keys=mine_keys)
        if bad:
            first = next(iter(bad.items()))
            print(f"warning: {len(bad)} recorded image(s) fail their check and are regenerated, e.g. "
                  f"{first[0]}: {first[1]}", file=sys.stderr)
        todo = [b for b in mine if any(r.key not in recorded for r in b)]
        method = config.method_cls(spec, name=config.method, **config.params) if todo else None
        store = RunStore.open_for_run(config.out, identity, info)
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
    return lock, store, recorded, todo, method


def score(config: RunConfig, store: RunStore, device: str) -> int:
    """The scoring stage right after generation (not with --no-score, nor per shard)."""
    if not config.score:
        return 0
    if config.world > 1:
        print(f"shard {config.rank}/{config.world} done; once every shard has finished run: "
              f"python -m bench score {store.root}", file=sys.stderr)
        return 0
    try:
        from bench.scoring import score_run
    except ModuleNotFoundError:
        print("scoring is not available in this version; images and records are written", file=sys.stderr)
        return 0
    score_run(store.root, device=device, metric_preset=config.metric_preset, verify=config.verify)
    return 0


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


def adapter_identity(adapter: str | None) -> object:
    """'init' / None as given; a checkpoint: its path and a hash of the weight files it holds
    (bench.files.weight_files: never a whole folder tree)."""
    if adapter in (None, "init"):
        return adapter
    files = weight_files(Path(adapter))
    return {"path": str(Path(adapter).expanduser().resolve()), "sha256": files_sha256(files)[:16]}


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
