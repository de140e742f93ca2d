"""The scoring stage: reads a run, writes per-image metric rows to scores.parquet.

Scoring is separate from generation (docs/architecture.md "Data flow"): a metric can change without
regenerating images, and images made by any other tool can be scored (bench/external_images.py
imports them as a run; bench/score_cli.py is the `bench score` command line).

``scores.parquet`` is long format, one row per (image, metric id)::

    key, seed, subject, category, prompt_index, metric, metric_version, value, sha256, context

It is also the run's score cache: a row is reused when the image bytes (sha256), the metric id
and version, and the item's context (eval text, subject, reference and source file names) are
unchanged, so re-scoring a run computes only new images or new metrics and, when nothing is new,
loads no model at all. Rows of metrics not requested this time are kept for the images that
still exist unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Iterable

from bench import BenchError
from bench.files import temporary_name
from bench.metrics.base import ScoreItem
from bench.store import RunStore
from bench.types import Sample

SCORE_COLUMNS = ["key", "seed", "subject", "category", "prompt_index", "metric", "metric_version", "value",
                 "sha256", "context"]


# ---- building the items ---------------------------------------------------------------------
def item_context(sample: Sample) -> str:
    """What besides the image bytes a score depends on: a short hash of the text and of the
    names of the real images (their content is the suite's, versioned by the suite)."""
    fields = [sample.subject, sample.class_noun, sample.eval_text,
              [p.name for p in sample.reference_images], [p.name for p in sample.subject_images],
              sample.source_image and sample.source_image.name, sample.mask and sample.mask.name]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]


def cell_of(key: str) -> str:
    """suite/subject/prompt of a key suite/subject/prompt/s<seed>/i<k> (types.request_key)."""
    return key.rsplit("/", 2)[0]


def load_run_samples(run: dict, run_json: Path) -> tuple[object, dict[str, Sample]]:
    from bench.suites import load_suite

    info = run.get("suite")
    if not isinstance(info, dict) or not info.get("name"):
        raise BenchError(f"{run_json} has no suite name (field 'suite.name')")
    suite = load_suite(info["name"], info.get("root"), **(info.get("options") or {}))
    return suite, {s.cell: s for s in suite.samples()}


def build_items(store: RunStore, cells: dict[str, Sample], verify: bool = False
                ) -> list[tuple[ScoreItem, Sample, str]]:
    """(ScoreItem, its sample, image sha256) for every recorded image, sorted by key (so that
    images of one subject are scored together and its reference embeddings are reused).

    Every image is checked against its record first (RunStore.check_record; ``verify``: a full
    re-hash): a missing, truncated or replaced image is refused, never scored from the cache."""
    good, bad = store.verified_records(verify)
    if bad:
        key, why = next(iter(sorted(bad.items())))
        external = any(r.get("external") for r in store.records().values())
        fix = ("re-import the images with `bench score --images ...`" if external
               else "run the same `bench run` command again to regenerate them")
        raise BenchError(f"{store.root}: {len(bad)} recorded image(s) do not match their records, e.g. {key}: "
                         f"{why}; {fix}")
    out = []
    for key, record in sorted(good.items()):
        sample = cells.get(cell_of(key))
        if sample is None:
            raise BenchError(f"{store.root}: image {key} is not a cell of the run's suite "
                             "(did the suite's data or options change?)")
        image = store.record_path(record)             # an absolute path stays absolute
        item = ScoreItem(key=key, image=image, seed=int(record["seed"]), subject=sample.subject,
                         class_noun=sample.class_noun, eval_text=sample.eval_text,
                         reference_images=sample.reference_images, subject_images=sample.subject_images,
                         source_image=sample.source_image, mask=sample.mask, category=sample.category,
                         iteration_images=tuple(store.root / it["image"] for it in record.get("iterations") or ()))
        out.append((item, sample, record["sha256"]))
    return out


# ---- metrics --------------------------------------------------------------------------------
def metric_names(value) -> list[str]:
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    return [n.strip() for n in names if n and n.strip()]


def build_metrics(names: Iterable[str], device: str, preset: str | None, params: dict[str, dict]) -> list:
    """Metric instances from registry names; ``params`` per name override the entry's."""
    from bench.registry import METRICS, check_method_params

    out = []
    for name in names:
        entry = METRICS.get(name)
        factory = entry.load()
        given = (check_method_params(name, factory, params[name], "--metric-param", "metric", f"{name}.")
                 if name in params else {})
        out.append(factory(device=device, preset=preset, **{**entry.params, **given}))
    return out


def read_scores(path: Path):
    import pandas as pd

    if not path.exists():
        return pd.DataFrame(columns=SCORE_COLUMNS)
    from bench.output_guard import require_regular

    require_regular(path, "scores file")           # a FIFO would block the read
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # a truncated or foreign file: rescore rather than fail
        print(f"warning: ignoring unreadable {path} ({exc}); rescoring", file=sys.stderr)
        return pd.DataFrame(columns=SCORE_COLUMNS)
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    return pd.DataFrame(columns=SCORE_COLUMNS) if missing else df


def _write_parquet_atomic(df, path: Path) -> None:
    tmp = temporary_name(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)       # a full disk or an interrupt leaves no temporary file
        raise


def score_images(items, metrics: list, todo: dict, store_values, batch_size: int, device: str, progress: bool = True,
                 workers: int | None = None):
    """Score ``todo[metric]`` (positions in ``items``) with every metric; ``store_values(metric,
    positions, rows)`` receives the results.

    Metrics that offer views (bench.metrics.pipeline) share one pass over the images: each image
    they need is decoded once, each distinct preprocessing applied once, in DataLoader workers, in
    batches of ``batch_size`` taken in key order (the same batches as scoring each metric alone
    when they need the same images). The others score their items themselves, batch by batch.
    Returns the pipeline's timing (None when no metric used it)."""
    import time

    from tqdm import tqdm

    from bench.metrics import pipeline

    shared = {m: m.views() for m in metrics}
    shared = {m: v for m, v in shared.items() if v is not None}
    timing = None
    if shared:
        views, names = {}, {}              # view key -> view; (metric, its name) -> view key
        for metric, own in shared.items():
            for name, view in own.items():
                views.setdefault(view.key, view)
                names[(metric, name)] = view.key
        wanted = {m: set(todo[m]) for m in shared}
        union = sorted(set().union(*wanted.values()))
        timing = pipeline.Timing()
        timing.metric_s = 0.0
        ids = ", ".join(i for m in shared for i in m.ids)
        with tqdm(total=len(union), desc=f"score {ids}", unit="img", disable=not progress, file=sys.stderr) as bar:
            batches = pipeline.batches([items[n][0].image for n in union], views, batch_size, device, workers, timing)
            for start, pixels in zip(range(0, len(union), batch_size), batches):
                positions = union[start:start + batch_size]
                begin = time.perf_counter()
                for metric in shared:
                    mine = [j for j, n in enumerate(positions) if n in wanted[metric]]
                    if not mine:
                        continue
                    own = {name: pixels[names[(metric, name)]] for name in shared[metric]}
                    if len(mine) < len(positions):
                        own = {name: tensor[mine] for name, tensor in own.items()}
                    chosen = [positions[j] for j in mine]
                    store_values(metric, chosen, metric.score_views([items[n][0] for n in chosen], own))
                timing.metric_s += time.perf_counter() - begin
                bar.update(len(positions))
    for metric in metrics:
        if metric in shared:
            continue
        positions = todo[metric]
        with tqdm(total=len(positions), desc=f"score {', '.join(metric.ids)}", unit="img", disable=not progress,
                  file=sys.stderr) as bar:
            for start in range(0, len(positions), batch_size):
                chosen = positions[start:start + batch_size]
                store_values(metric, chosen, metric.score([items[n][0] for n in chosen]))
                bar.update(len(chosen))
    return timing


def score_run(run_dir, metrics=None, device: str = "cpu", batch_size: int = 16, metric_preset: str | None = None,
              progress: bool = True, metric_params: dict[str, dict] | None = None, verify: bool = False,
              workers: int | None = None):
    """Score every recorded image of a run; write and return scores.parquet as a DataFrame.

    metrics: registry names (list or comma-separated); default run.json's "metrics", else the
    suite's default_metrics. metric_preset: "tiny" for tiny random metric models; default
    run.json's "metric_preset". metric_params: {metric name: {param: value}}.
    """
    import pandas as pd

    if batch_size < 1:
        raise BenchError("--batch-size must be at least 1")
    store = RunStore.open_existing(run_dir)
    store.remove_stale_temporaries()
    run = store.read_run()
    suite, cells = load_run_samples(run, store.run_json)
    names = metric_names(metrics) or metric_names(run.get("metrics")) or list(suite.default_metrics)
    if not names:
        raise BenchError(f"no metrics to score {store.root} with: pass --metrics")
    preset = metric_preset if metric_preset is not None else run.get("metric_preset")
    params = {**(run.get("metric_params") or {}), **(metric_params or {})}
    items = build_items(store, cells, verify)          # refuse stale images before any model loads
    if not items:       # an empty scores file would read as a scored run: refuse instead
        raise BenchError(f"{store.root}: no recorded image to score (no valid line in {store.root / 'generations'}); "
                         "generate first with `python -m bench run` and the run's options")
    for name, defaults in getattr(suite, "metric_params", dict)().items():   # the suite's protocol settings
        params[name] = {**defaults, **params.get(name, {})}
    instances = build_metrics(names, device, preset, params)
    for metric in instances:    # references=held-out with no photo held out: one line, before any model loads
        if getattr(metric, "reference_choice", None) == "held-out":
            metric.check_samples([item for item, _, _ in items], references="held-out")
    for metric in instances:
        if hasattr(metric, "bind_run"):          # a metric that keeps a side record (the judge's raw answers)
            metric.bind_run(store.root)

    old = read_scores(store.scores_path)
    cache = dict(zip(zip(old["sha256"], old["context"], old["metric"], old["metric_version"].astype(str)),
                     old["value"]))
    samples = {id(sample): sample for _, sample, _ in items}
    contexts = {key: item_context(sample) for key, sample in samples.items()}     # once per cell
    keys = [(sha, contexts[id(sample)]) for _, sample, sha in items]      # the cache key of each image
    todo = {}                                  # metric -> positions (in items) it still has to score
    for metric in instances:
        version = str(metric.version)
        todo[metric] = [n for n, (sha, context) in enumerate(keys)
                        if any((sha, context, mid, version) not in cache for mid in metric.ids)]

    def store_values(metric, positions, values) -> None:
        version = str(metric.version)
        for n, row in zip(positions, values):
            sha, context = keys[n]
            for mid in metric.ids:
                cache[(sha, context, mid, version)] = float(row.get(mid, math.nan))

    try:
        timing = score_images(items, [m for m in instances if todo[m]], todo, store_values, batch_size, device,
                              progress, workers)
    except BenchError:
        # a pass stopped half way (e.g. a judge endpoint that went down): the values computed so far
        # are written, so that `bench score` resumes where it stopped instead of asking again
        _write_scores(pd, store, old, items, contexts, instances, cache, partial=True)
        raise
    computed = sum(len(p) for p in todo.values())
    df, requested = _write_scores(pd, store, old, items, contexts, instances, cache)
    from bench.metrics.real_photos import write_real_photo_scores     # the report's "real photos" row
    write_real_photo_scores(store, [item for item, _, _ in items], instances, suite.name)
    store.update_run(scored={"metrics": names, "metric_preset": preset, "ids": sorted(requested)})
    if timing is not None and timing.images:
        print(f"pipeline: {timing.images} images decoded once each, {timing.wait_s:.1f} s waiting for decoded "
              f"images, {timing.metric_s:.1f} s in the metrics' forwards", file=sys.stderr)
    print(f"scored {len(items)} images with {', '.join(sorted(requested))}: {computed} (image, metric) pairs "
          f"computed, {len(items) * len(instances) - computed} from cache -> {store.scores_path}", file=sys.stderr)
    return df


def _write_scores(pd, store, old, items, contexts, instances, cache, partial: bool = False):
    """scores.parquet from the cache: every item x metric id (``partial``: those computed so far,
    and the old rows of the others kept); returns (the frame, the metric ids requested)."""
    rows = []
    requested = set()
    for metric in instances:
        version = str(metric.version)
        for mid in metric.ids:
            requested.add(mid)
            for item, sample, sha in items:
                value = cache.get((sha, contexts[id(sample)], mid, version))
                if value is None and partial:
                    continue
                rows.append((item.key, item.seed, item.subject, sample.category, sample.prompt_index, mid, version,
                             cache[(sha, contexts[id(sample)], mid, version)], sha, contexts[id(sample)]))
    if partial:
        written = {(r[0], r[5]) for r in rows}
        old = old[[(k, m) not in written for k, m in zip(old["key"], old["metric"])]] if len(old) else old
        requested = set()
    df = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    current = {item.key: sha for item, _, sha in items}
    if len(old):
        keep = old[~old["metric"].isin(requested) & old["key"].map(current).eq(old["sha256"])]
        if len(keep):
            df = pd.concat([df, keep[SCORE_COLUMNS]], ignore_index=True)
    df = df.astype({"seed": "int64", "prompt_index": "int64", "value": "float64", "metric_version": "string"})
    df = df.sort_values(["metric", "key"], ignore_index=True)
    _write_parquet_atomic(df, store.scores_path)
    return df, requested
