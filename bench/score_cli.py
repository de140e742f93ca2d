"""`bench score`: the command line of the scoring stage (bench/scoring.py), for a run directory or
for a folder of images made elsewhere (bench/external_images.py), and the console summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import BenchError
from bench.files import check_path_part
from bench.scoring import metric_names, score_run
from bench.store import RunStore


def parse_metric_params(items: list[str]) -> dict[str, dict]:
    """--metric-param NAME.KEY=VALUE (e.g. clip.mode=paired) -> {name: {key: value}}."""
    from bench.options import parse_params

    out: dict[str, dict] = {}
    for item in items:
        target, sep, rest = item.partition(".")
        if not sep or not rest or "=" not in rest:
            raise BenchError(f"--metric-param {item!r}: expected METRIC.KEY=VALUE, e.g. clip.mode=paired")
        out.setdefault(target, {}).update(parse_params([rest]))
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("run_dir", nargs="?", help="run directory to score (omit with --images)")
    add("--metrics", default=None, help="comma-separated metric names, e.g. clip,dino "
        "(default: the run's metrics, else the suite's protocol metrics)")
    add("--metric-param", action="append", default=[], metavar="METRIC.KEY=VALUE",
        help="a metric parameter, e.g. clip.mode=paired or clip.backbone=hf:openai/clip-vit-base-patch32 (repeatable)")
    add("--metric-preset", choices=["tiny"], default=None,
        help="tiny random metric models, for tests (default: the run's setting)")
    add("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add("--batch-size", type=int, default=16, help="images per metric forward pass (default 16)")
    add("--workers", type=int, default=None, help="processes decoding and preprocessing images beside the "
        "metric forwards (default: one per core less one, at most 16; 0: decode in the main process)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--suite", default=None, help="with --images: the suite the images answer")
    add("--images", default=None, help="a folder <subject>/<prompt index>/s<seed>/i<k>.png, or a CSV manifest "
        "with columns path and key (or subject, prompt_index, seed, image_index)")
    add("--data-root", default=None, help="with --images: the suite's data (default: its download location)")
    add("--mini", action="store_true", help="with --images: use the suite's embedded mini copy")
    add("--suite-option", action="append", default=[], metavar="KEY=VALUE",
        help="with --images: a suite option, as in `bench run` (repeatable)")
    add("--name", default=None, help="with --images: the method name shown in reports (default: the folder name)")
    add("--out", default=None, help="with --images: the run directory to create (default: runs/external-<name>)")
    add("--verify", action="store_true", help="re-hash every image (sha256) against its record before scoring; "
        "by default an image whose size and mtime match its record is trusted without a re-hash")


def run(args) -> int:
    from bench.options import (check_device, check_input_dir, check_int, check_run_dir,
                               default_device, parse_params)
    from bench.output_guard import check_library_path, guard_folder

    check_int(args.batch_size, "--batch-size", 1, 4096)
    check_int(args.workers, "--workers", 0, 256)
    device = check_device(args.device) or default_device()
    params = parse_metric_params(args.metric_param)
    from bench.registry import METRICS, check_method_params

    for name in metric_names(args.metrics) or []:
        METRICS.get(name)                      # an unknown metric: one line before anything is written
    for name, values in params.items():
        check_method_params(name, METRICS.get(name).load(), values, "--metric-param", "metric", f"{name}.")
    if args.images:
        if args.run_dir:
            raise BenchError("give a RUN_DIR or --images, not both")
        if not args.suite:
            raise BenchError("--images needs --suite (which suite the images answer)")
        images = Path(args.images)
        if not images.exists():
            raise BenchError(f"--images {images}: no such folder or file")
        label = args.name or (images.stem if images.is_file() else images.resolve().name)
        check_path_part(label, "--name" if args.name else f"--images {images}", "run name")
        if args.out is not None and not args.out.strip():
            raise BenchError("--out is empty: name the run directory")
        out = guard_folder(check_run_dir(Path(args.out) if args.out else Path("runs") / f"external-{label}"),
                           "--out", [images], run_ok=True)
        check_input_dir(args.data_root, "--data-root")
        from bench.external_images import prepare_external_run

        store = prepare_external_run(args.suite, images, out, data_root=args.data_root, mini=args.mini,
                                     suite_options=parse_params(args.suite_option), name=label,
                                     metrics=args.metrics, metric_preset=args.metric_preset, verify=args.verify,
                                     metric_params=params)
        run_dir = store.root
    elif args.run_dir:
        if args.suite or args.data_root or args.suite_option or args.name or args.out or args.mini:
            raise BenchError("--suite/--data-root/--suite-option/--name/--out/--mini go with --images only")
        run_dir = check_library_path(Path(args.run_dir), "RUN_DIR")     # pyarrow writes its scores.parquet
    else:
        raise BenchError("give a RUN_DIR to score, or --suite NAME --images DIR")
    df = score_run(run_dir, metrics=args.metrics, device=device, batch_size=args.batch_size,
                   metric_preset=args.metric_preset, progress=not args.no_progress, metric_params=params,
                   verify=args.verify, workers=args.workers)
    for line in summary_lines(df, RunStore(run_dir).read_run()):
        print(line)
    return 0


def summary_lines(df, run: dict, settings=None) -> list[str]:
    """The console summary of a scored run: per metric the protocol's mean with its cluster-bootstrap
    interval (bench.report.aggregate.intervals: the numbers `bench report` writes), over the values
    that exist (a NaN is a score that could not be computed, never a number)."""
    import pandas as pd

    from bench.report.aggregate import interval_text, intervals

    suite = str((run.get("suite") or {}).get("name") or "")
    label = str((run.get("method") or {}).get("name") or "run")
    stats = intervals(df.assign(run=label, suite=suite), settings) if len(df) else pd.DataFrame()
    by_metric = {r["metric"]: r for r in stats.to_dict("records")} if len(stats) else {}
    lines = []
    for metric, values in df.groupby("metric", sort=True)["value"]:
        total, n = len(values), int(values.notna().sum())
        count = f"{n} of {total} images have a value" if n < total else f"over {total} images"
        row = by_metric.get(metric)
        if row is None or n == 0:
            lines.append(f"{metric:<40} -       (no value: 0 of {total} images)")
            continue
        if row.get("ci_low") is None or pd.isna(row.get("ci_low")):
            lines.append(f"{metric:<40} {row['mean']:.4f}  (no interval with {row['units']} {row['unit']}; {count})")
        else:
            lines.append(f"{metric:<40} {row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]  ({count}, "
                         f"{row['units']} {row['unit']}s)")
    if lines:
        lines.append(f"mean: the suite's protocol mean; {interval_text(settings)}")
    return lines
