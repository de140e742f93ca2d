"""`bench doctor`: every piece a run needs, checked at once without loading a model.

Takes the options of `bench run` (same meaning) and lists, for the method x suite x metrics they
name, each piece the run would load: base model, adapter, suite data, Grounded-SAM, metric
weights, optional packages. Per piece: present or MISSING, its size (on disk, or the download
size when missing), where it was looked for, and the exact command or link that gets it. Exit
status 2 when anything is missing. `bench run --dry-run` prints the same list before the plan.

The pieces come from one classmethod per method, metric and suite class, ``requirements``
(bench/needs.py describes the hook and its helpers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import BenchError
from bench.needs import Need, base_model, hf_weights, human_size
from bench.options import check_input_dir, parse_params
from bench.plan import (SMOKE, check_options, configure, method_params, metric_names, metric_param_values, output_dir,
                        shard_of, with_suite_defaults)
from bench.types import LoadSpec

__all__ = ["configure", "run", "collect", "print_checklist"]


def run(args) -> int:
    shortfall = print_checklist(args)
    if shortfall:
        print(f"error: {shortfall}", file=sys.stderr)
    return 2 if shortfall else 0


def collect(args) -> list[tuple[Need, list[str]]]:
    """Every piece the run of these options needs, once each, with who needs it. The options are
    checked first (a bad option is an error, as for `bench run`); nothing is loaded."""
    from bench.registry import METHODS, METRICS, SUITES
    from bench.suites import REPO_ROOT

    smoke = args.preset == "smoke"
    model_preset = SMOKE["model_preset"] if smoke else args.preset
    check_options(args)
    shard_of(args)
    entry = METHODS.get(args.method)
    method_cls = entry.load()
    params = method_params(args.method, method_cls, dict(entry.params), args.param)
    real_run = argparse.Namespace(**{**vars(args), "dry_run": False})     # what the run itself loads
    suite_options = with_suite_defaults(parse_params(args.suite_option, "--suite-option"), real_run, model_preset)
    output_dir(args)
    metrics = metric_names(args.metrics)
    metric_params = metric_param_values(getattr(args, "metric_param", None) or [])
    if args.data_root is not None and Path(args.data_root).expanduser().exists():
        check_input_dir(args.data_root, "--data-root")      # a file is an error; a folder still to fetch is a piece
    suite_cls = SUITES.get(args.suite).load()
    tasks = getattr(method_cls, "tasks", frozenset({"generate"}))
    if suite_cls.task not in tasks:          # as the run's plan says it, before any list
        raise BenchError(f"method {args.method!r} cannot do the '{suite_cls.task}' task that suite "
                         f"{args.suite!r} needs (it does: {', '.join(sorted(tasks))})")

    adapter = args.adapter if args.adapter is not None or not smoke else getattr(method_cls, "smoke_adapter", None)
    spec = LoadSpec(weights=args.weights or getattr(method_cls, "default_weights", LoadSpec.weights),
                    preset=model_preset, adapter=adapter)
    declared = getattr(method_cls, "requirements", None)
    pieces = [(need, f"method {args.method}") for need in (declared(spec, **params) if declared else
                                                           fallback_requirements(spec))]
    root = (Path(args.data_root).expanduser() if args.data_root
            else REPO_ROOT / (suite_cls.mini_root if smoke else suite_cls.default_root))
    pieces += [(need, f"suite {args.suite}") for need in suite_cls.requirements(root, **suite_options)]
    if not args.no_score:
        metric_preset = args.metric_preset or (SMOKE["metric_preset"] if model_preset else None)
        for name in metrics or suite_cls.default_metrics:
            metric = METRICS.get(name)
            declared = metric.load().requirements(metric_preset, **{**metric.params, **metric_params.get(name, {})})
            pieces += [(need, f"metric {name}") for need in declared]
    merged: dict[str, tuple[Need, list[str]]] = {}
    for need, user in pieces:
        users = merged.setdefault(need.key, (need, []))[1]
        if user not in users:
            users.append(user)
    return list(merged.values())


def fallback_requirements(spec: LoadSpec) -> list[Need]:
    """For a method that declares no ``requirements``: its base model, present when cached at all."""
    if spec.preset:
        return []
    return [hf_weights(f"base model {spec.weights} (the method declares no other pieces)", spec.weights,
                       ("*.json",), None, f"hf download {spec.weights}")]


def print_checklist(args, file=None) -> str:
    """Print the checklist; returns one line saying what is missing ('' when nothing is), for the
    caller to print on stderr once it has printed the rest."""
    file = file or sys.stdout
    pieces = collect(args)
    metrics = "no scoring" if args.no_score else f"metrics: {args.metrics or 'the suite protocol'}"
    print(f"What `bench run --method {args.method} --suite {args.suite}` needs ({metrics}"
          f"{', preset ' + args.preset if args.preset else ''}):", file=file)
    missing, download, unknown = 0, 0, False
    for need, users in pieces:
        found = need.check()
        if found.present:
            size = human_size(found.size) if found.size is not None else ""
            print(f"  ok       {size:>9}  {need.what}  [{', '.join(users)}]", file=file)
            print(f"                      at {found.where}", file=file)
            continue
        missing += 1
        download += need.size or 0
        unknown |= need.size is None
        print(f"  MISSING  {'~' + human_size(need.size) if need.size else '?':>9}  {need.what}  [{', '.join(users)}]",
              file=file)
        print(f"                      {found.where}: {found.problem}" if found.where else
              f"                      {found.problem}", file=file)
        print(f"                      get it: {need.get}", file=file)
    if not pieces:
        print("  nothing to fetch: random weights and embedded data", file=file)
    if missing:
        total = (f"about {human_size(download)}" if download else "size unknown") + (
            " plus pieces of unknown size" if unknown and download else "")
        return (f"{missing} of {len(pieces)} pieces missing ({total} to download), each listed above with how "
                "to get it; a run would stop at the first")
    print(f"all {len(pieces)} pieces in place.", file=file)
    return ""
