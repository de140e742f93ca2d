"""The plan of a run: the command line turned into a checked, immutable run configuration.

:func:`plan_run` checks every input (options, method and its parameters, the output folder, the
metric names, the suite's files and images, the adapter files) and expands the suite into the
work items of the run: every (sample, seed, image index) becomes one GenRequest whose key is
``suite/subject/prompt/s<seed>/i<k>``. Nothing is loaded (no model) and nothing is written;
``bench run --dry-run`` prints what it returns. :func:`plan_batches` cuts the work into the fixed
batches that the runner (bench/runner.py) generates.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from bench import BenchError
from bench.files import weight_files
from bench.images import check_image
from bench.options import (check_device, check_input_dir, check_int, check_run_dir, parse_params,
                           parse_seeds, split_list)
from bench.registry import check_method_params
from bench.types import GenRequest, Sample, request_key, request_seed

SMOKE = dict(model_preset="tiny", mini=True, seeds=(0,), images_per_prompt=1, resolution=64,
             num_inference_steps=10, metric_preset="tiny")
PRESETS = ("smoke", "tiny", "sd21-random")

#: Bounds of the numeric options (checked before anything loads). 1000 steps: the schedulers'
#: training timesteps (diffusers refuses more); 4096 px: beyond any SD model's size.
MAX_RESOLUTION = 4096
MAX_STEPS = 1000
MAX_IMAGES_PER_PROMPT = 1000
MAX_BATCH_SIZE = 4096
MAX_SHARDS = 100_000
#: a plan is built in memory: refuse one that could not be (the published protocols: <= 18,000)
MAX_PLAN_IMAGES = 1_000_000
#: The random-weight presets' models are built for 64 px (smoke) and SD 2.1's 512 px
#: (sd21-random); larger images would take hours on the CPUs these presets exist for.
MAX_PRESET_RESOLUTION = {"smoke": 512, "tiny": 512, "sd21-random": 1024}
#: Range checks of well-known method parameters, on top of the type checks of the signature.
#: Loops and prompt repetitions multiply the work of every image: bounded far above the
#: published settings (EZIGen: at most 9 loops; BLIP-Diffusion: 20 repetitions).
MAX_LOOPS = 100
MAX_PROMPT_REPS = 1000
PARAM_RANGES = {"num_inference_steps": (1, MAX_STEPS), "loops": (0, MAX_LOOPS), "min_loops": (0, MAX_LOOPS),
                "max_loops": (0, MAX_LOOPS), "prompt_reps": (1, MAX_PROMPT_REPS)}


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--method", required=True, help="method name (see `python -m bench ls methods`)")
    from bench.registry import SUITES

    add("--suite", required=True, help=f"suite name: {', '.join(SUITES.names())} (python -m bench ls suites)")
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
    add("--metric-param", action="append", default=[], metavar="METRIC.KEY=VALUE",
        help="a metric parameter for the scoring stage, kept in run.json (repeatable), e.g. judge.endpoint=URL")
    add("--no-score", action="store_true", help="generate only; score later with `bench score`")
    add("--shard", default=None, metavar="I/N", help="process I of N (default: RANK/WORLD_SIZE or 0/1)")
    add("--out", default=None, help="run directory (default runs/<suite>/<method>[-<preset>])")
    add("--dry-run", action="store_true", help="check every input, print the plan and exit without loading any model")
    add("--verify", action="store_true", help="re-hash every recorded image (sha256) before resuming and "
        "scoring; by default an image whose size and mtime match its record is trusted without a re-hash")


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RunConfig:
    """Everything `bench run` needs to execute, every part of it checked (bench/runner.py: execute)."""

    method: str                      # the registered name
    method_cls: type
    method_target: str               # "module:Class", and the registration's parameters
    method_defaults: dict
    params: dict                     # the effective method parameters (registration + --param)
    suite_name: str
    suite: object                    # the loaded suite (its sample list; no model)
    suite_options: dict
    plan: Plan
    skipped_without_mask: list[str]  # edit cells without a mask (nothing to edit)
    out: Path
    rank: int                        # this process's shard, of world
    world: int
    metrics: list[str] | None        # None: the suite's protocol metrics
    metric_preset: str | None
    model_preset: str | None         # a preset builds random weights
    weights: str | None              # --weights (None: the method's default base model)
    adapter: str | None
    smoke_note: str | None           # said on stderr when the smoke preset picks the adapter
    device: str | None               # None: cuda when available (resolved when executing)
    dtype: str | None
    resolution: int | None
    steps: int | None
    batch_size: int
    limit: int | None
    verify: bool
    score: bool
    metric_params: dict = field(default_factory=dict)   # --metric-param, kept in run.json for scoring

    @property
    def random_weights(self) -> bool:
        return bool(self.model_preset)


def plan_run(args) -> RunConfig:
    """The command line as a checked run configuration: nothing loaded, nothing written."""
    from bench.registry import METHODS
    from bench.suites import load_suite

    smoke = args.preset == "smoke"
    model_preset = SMOKE["model_preset"] if smoke else args.preset
    # 1. options, method and parameters
    check_options(args)
    rank, world = shard_of(args)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    entry = METHODS.get(args.method)
    method_cls = entry.load()
    params = method_params(args.method, method_cls, dict(entry.params), args.param)
    if hasattr(method_cls, "check_params"):
        method_cls.check_params(args.method, params)       # values its model would refuse, before it loads
    if hasattr(method_cls, "check_resolution"):
        method_cls.check_resolution(args.method, args.resolution)
    suite_options = parse_params(args.suite_option, "--suite-option")
    out = output_dir(args)
    metrics = metric_names(args.metrics)
    metric_params = metric_param_values(getattr(args, "metric_param", None) or [])
    check_input_dir(args.data_root, "--data-root")
    if not args.dry_run and not model_preset and hasattr(method_cls, "check_weights"):
        method_cls.check_weights(args.method, args.weights)   # missing weights named before any data is read
    # 2. the suite, its files and the plan
    suite_options = with_suite_defaults(suite_options, args, model_preset)
    suite = load_suite(args.suite, args.data_root, mini=smoke, **suite_options)
    tasks = getattr(method_cls, "tasks", frozenset({"generate"}))
    if suite.task not in tasks:
        raise BenchError(f"method {args.method!r} cannot do the '{suite.task}' task that suite "
                         f"{args.suite!r} needs (it does: {', '.join(sorted(tasks))})")
    all_samples = suite.samples()
    check_subject_images(args.method, method_cls, params, suite, select_samples(all_samples, args.subjects, args.limit))
    if hasattr(method_cls, "check_subject_sizes"):
        method_cls.check_subject_sizes(args.method, params, select_samples(all_samples, args.subjects, args.limit))
    samples, unmasked = chosen_samples(suite, all_samples, args)
    seeds = seeds or (SMOKE["seeds"] if smoke else suite.default_seeds)
    per_prompt = args.images_per_prompt or (SMOKE["images_per_prompt"] if smoke else suite.default_images_per_prompt)
    plan = Plan(samples, all_samples, seeds, per_prompt)
    if plan.total > MAX_PLAN_IMAGES:
        raise BenchError(f"the plan has {plan.total} images (cells x seeds x --images-per-prompt), more than "
                         f"{MAX_PLAN_IMAGES}: fewer --seeds or --images-per-prompt, or --limit")
    n_batches = len(plan_batches(plan.requests(), args.batch_size))
    if rank >= n_batches:                  # a shard with no batch would "succeed" at nothing
        raise BenchError(f"--shard {rank}/{world}: the plan has {n_batches} batch(es) of up to {args.batch_size} "
                         f"images, so shard {rank} would have nothing to do; use at most {n_batches} shards "
                         "(or a smaller --batch-size)")
    metric_preset = args.metric_preset or (SMOKE["metric_preset"] if model_preset else None)
    if not args.no_score:
        precheck_metrics(metrics or list(suite.default_metrics), metric_params, metric_preset, suite)
    # 3. the adapter files: checked now, hashed only once the run goes ahead
    adapter, smoke_note = chosen_adapter(args, method_cls, smoke)
    return RunConfig(
        method=args.method, method_cls=method_cls, method_target=entry.target, method_defaults=dict(entry.params),
        params=params, suite_name=args.suite, suite=suite, suite_options=suite_options, plan=plan,
        skipped_without_mask=unmasked, out=out, rank=rank, world=world, metrics=metrics,
        metric_preset=metric_preset,
        model_preset=model_preset, weights=args.weights, adapter=adapter, smoke_note=smoke_note,
        device=args.device, dtype=args.dtype, resolution=args.resolution or (SMOKE["resolution"] if smoke else None),
        steps=args.steps or (SMOKE["num_inference_steps"] if smoke else None), batch_size=args.batch_size,
        limit=args.limit, verify=args.verify, score=not args.no_score, metric_params=metric_params)


def print_plan(config: RunConfig) -> None:
    """What `bench run --dry-run` prints: the plan's counts and where the run goes."""
    plan = config.plan
    if config.smoke_note:
        print(config.smoke_note)          # part of the plan (stderr keeps to the one error line)
    print(f"method     {config.method} ({config.method_target}"
          f"{', ' + str(config.method_defaults) if config.method_defaults else ''})")
    print(f"suite      {config.suite_name} at {config.suite.root}")
    print(f"subjects   {len(plan.subjects)}")
    print(f"prompts    {len(plan.samples)}   (subject x prompt cells)")
    print(f"per prompt {plan.images_per_prompt} images")
    print(f"per seed   {plan.images_per_seed} images")
    print(f"seeds      {len(plan.seeds)}: {', '.join(map(str, plan.seeds))}")
    print(f"total      {plan.total} images")
    print(f"batches    {len(plan_batches(plan.requests(), config.batch_size))} of up to {config.batch_size}")
    if hasattr(config.suite, "describe"):
        print(f"protocol   {config.suite.describe()}  (at the suite's default images per prompt)")
    print(f"output     {config.out}")


# ---- the checks, one input each -----------------------------------------------------------
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
    limit = MAX_PRESET_RESOLUTION.get(args.preset)
    if limit and args.resolution and args.resolution > limit:
        raise BenchError(f"--resolution {args.resolution}: the {args.preset} preset's random models allow at most "
                         f"{limit} px (bench.plan.MAX_PRESET_RESOLUTION); real weights (--weights) allow up to "
                         f"{MAX_RESOLUTION}")


def shard_of(args) -> tuple[int, int]:
    text = args.shard or f"{os.environ.get('RANK', 0)}/{os.environ.get('WORLD_SIZE', 1)}"
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise BenchError(f"--shard {text!r}: expected I/N such as 0/2") from None
    if not 0 <= rank < world:
        raise BenchError(f"--shard {text!r}: I must be in 0..N-1")
    if world > MAX_SHARDS:
        raise BenchError(f"--shard {text!r}: more than {MAX_SHARDS} shards")
    return rank, world


def method_params(name: str, method_cls, entry_params: dict, overrides: list[str]) -> dict:
    params = check_method_params(name, method_cls, {**entry_params, **parse_params(overrides)})
    for key, (low, high) in PARAM_RANGES.items():
        if key in params and isinstance(params[key], int) and not low <= params[key] <= high:
            raise BenchError(f"--param {key}={params[key]}: must be between {low} and {high}")
    return params


def output_dir(args) -> Path:
    """--out, or runs/<suite>/<method>[-<preset>]: a folder that can be created or written into."""
    if args.out is not None and not str(args.out).strip():
        raise BenchError("--out is empty: name the run directory")
    out = Path(args.out) if args.out else Path("runs") / args.suite / (args.method + (f"-{args.preset}" if args.preset else ""))
    from bench.output_guard import guard_folder

    return guard_folder(check_run_dir(out), "--out", [args.data_root, args.adapter], run_ok=True)


def metric_param_values(items: list[str]) -> dict[str, dict]:
    """--metric-param NAME.KEY=VALUE, checked against each metric's parameters before anything runs."""
    from bench.registry import METRICS, check_method_params
    from bench.score_cli import parse_metric_params

    params = parse_metric_params(items)
    for name, values in params.items():
        check_method_params(name, METRICS.get(name).load(), values, "--metric-param", "metric", f"{name}.")
    return params


def precheck_metrics(names: list[str], params: dict[str, dict], preset: str | None, suite) -> None:
    """Files a metric needs that can be checked without loading a model (a metric class's optional
    ``precheck(preset=..., **params)``, e.g. the judge's instruction files): a missing one fails now,
    not after the images are generated."""
    from bench.registry import METRICS

    suite_params = getattr(suite, "metric_params", dict)()
    for name in names:
        entry = METRICS.get(name)
        check = getattr(entry.load(), "precheck", None)
        if check is not None:
            check(preset=preset, **{**entry.params, **suite_params.get(name, {}), **params.get(name, {})})
        given = {**entry.params, **suite_params.get(name, {}), **params.get(name, {})}
        if given.get("references") == "held-out" and hasattr(entry.load(), "check_samples"):
            entry.load().check_samples(suite.samples(), **given)      # a subject with no photo held out: refused now


def metric_names(text: str | None) -> list[str] | None:
    """--metrics as a list of registered metric names (None: the suite's protocol metrics)."""
    from bench.registry import METRICS

    metrics = split_list(text, "--metrics") if text is not None else None
    for name in metrics or []:
        METRICS.get(name)                     # an unknown metric fails now, not after generating
    return metrics


def with_suite_defaults(options: dict, args, model_preset: str | None) -> dict:
    """The --suite-option values plus what the command line implies: --task, and for DreamEdit
    the annotator (tiny with a preset; none for a dry run, which needs no Grounded-SAM weights)."""
    options = dict(options)
    if args.task:
        options["task_kind"] = args.task
    if model_preset and args.suite == "dreamedit":
        options.setdefault("annotator_preset", "tiny")
    if args.dry_run and args.suite == "dreamedit":
        options.setdefault("annotate", False)
    return options


def select_samples(samples: list[Sample], subjects: str | None, limit: int | None) -> list[Sample]:
    if subjects is not None:
        wanted = split_list(subjects, "--subjects")
        if not wanted:
            raise BenchError(f"--subjects {subjects!r} names no subject")
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


def chosen_samples(suite, all_samples: list[Sample], args) -> tuple[list[Sample], list[str]]:
    """The selected samples whose files all decode, and the edit cells skipped for lack of a mask."""
    samples = select_samples(all_samples, args.subjects, args.limit)
    check_subject_names(samples, args.suite)
    unmasked = [s.cell for s in samples if suite.task == "edit" and s.mask is None]
    if unmasked:
        # e.g. Grounded-SAM found no object in a replacement source: nothing to edit
        print(f"warning: {len(unmasked)} edit sample(s) have no mask and are skipped: "
              f"{', '.join(unmasked[:5])}{' ...' if len(unmasked) > 5 else ''}", file=sys.stderr)
        samples = [s for s in samples if s.mask is not None]
    check_request_images(samples)
    if not samples:
        raise BenchError(f"nothing to generate: the selection leaves no sample of suite {args.suite!r}")
    return samples, unmasked


def check_subject_names(samples: list[Sample], suite: str) -> None:
    """Every subject name becomes a folder of the run (images/<subject>/) and a page of the HTML
    report: refuse, at planning, one that is not a plain folder name or is longer than
    bench.limits.MAX_NAME_BYTES in UTF-8 (file systems allow 255 bytes a name)."""
    from bench.files import check_path_part
    from bench.limits import MAX_NAME_BYTES

    for subject in sorted({s.subject for s in samples}):
        check_path_part(subject, f"suite {suite}", "subject name")
        size = len(subject.encode("utf-8", "surrogateescape"))
        if size > MAX_NAME_BYTES:
            raise BenchError(f"suite {suite}: the subject name {subject[:40]!r}... is {size} bytes in UTF-8, more than "
                             f"the limit of {MAX_NAME_BYTES} (bench.limits.MAX_NAME_BYTES): rename its folder")


def check_subject_images(method: str, method_cls, params: dict, suite, samples: list[Sample]) -> None:
    """A suite whose items hold several different subjects' images (``distinct_subject_images``,
    OmniContext) runs only with a method that takes that many: the method class says how many
    through ``subject_images_taken(params)`` (None = all; a method without it takes one). Refused
    here, before any model loads or image is generated."""
    if not getattr(suite, "distinct_subject_images", False):
        return
    most = max((len(s.subject_images) for s in samples), default=0)
    taker = getattr(method_cls, "subject_images_taken", None)
    taken = taker(params) if taker is not None else 1
    if most <= 1 or taken is None or taken >= most:
        return
    over = [s for s in samples if len(s.subject_images) > taken]
    hint = getattr(suite, "fewer_images_hint", lambda n: "")(taken)
    raise BenchError(f"method {method!r} takes {taken} subject image(s) per request, but {len(over)} of the "
                     f"{len(samples)} items of suite {suite.name!r} have more (up to {most}, e.g. {over[0].cell}); "
                     f"nothing was generated{': ' + hint if hint else ''}")


def check_request_images(samples: list[Sample]) -> None:
    """Decode every file a method will read (subject images, sources, masks) in full now, so a
    truncated file fails here in one line and not inside a model mid-run."""
    seen = set()
    for s in samples:
        for path in (*s.subject_images, s.source_image, s.mask):
            if path is not None and path not in seen:
                seen.add(path)
                check_image(path)


def chosen_adapter(args, method_cls, smoke: bool) -> tuple[str | None, str | None]:
    """--adapter, or the untrained one the smoke preset picks (with the note that says so)."""
    adapter, note = args.adapter, None
    if smoke and adapter is None and getattr(method_cls, "smoke_adapter", None):
        adapter = method_cls.smoke_adapter
        note = f"smoke preset: {args.method} runs with --adapter {adapter} (untrained adapter)"
    if adapter not in (None, "init"):
        weight_files(Path(adapter))            # checked now; hashed only once the run goes ahead
    return adapter, note


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
