"""`bench check`: a regression check of a scored run against a stored baseline, for CI.

    python -m bench check RUN_DIR --baseline reports/baselines/NAME.json [--tol 0.005]
    python -m bench check RUN_DIR --baseline reports/baselines/NAME.json --update

The run is aggregated like the leaderboard (bench.report.summarize: per seed the mean over
images, then the mean over seeds). A metric fails when its mean moved by more than the tolerance
from the baseline's, or when the run lacks it; the printed table shows both means, the change,
and the seeds' std of each side so a move can be judged against seed noise. Exit status: 0 all
within tolerance, 1 something moved (CI fails), 2 bad input (no baseline, unscored run).
``--update`` (re)writes the baseline from the run and exits 0. See reports/baselines/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from bench import BenchError

BASELINE_FORMAT = 1
DEFAULT_TOL = 0.005


def run_summary(run_dir) -> tuple[dict, dict]:
    """(run facts, {metric id: {mean, std, n, images}}) of one scored run."""
    from bench.report import load_runs, load_scores, summarize

    runs = load_runs([run_dir])
    summary = summarize(load_scores([run_dir]))
    metrics = {rec.metric: {"mean": float(rec.mean), "std": None if math.isnan(rec.std) else float(rec.std),
                            "n": int(rec.n), "images": int(rec.images)}
               for rec in summary.itertuples(index=False)}
    info = runs.iloc[0]
    return {"suite": info["suite"], "method": info["method"], "weights": info["weights"]}, metrics


def write_baseline(run_dir, path: Path, tol: float | None) -> dict:
    facts, metrics = run_summary(run_dir)
    if not metrics:
        raise BenchError(f"{run_dir}: scores.parquet holds no metric values")
    data = {"format": BASELINE_FORMAT, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "run": str(run_dir), **facts, "tolerance": DEFAULT_TOL if tol is None else tol, "metrics": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return data


def read_baseline(path: Path) -> dict:
    if not path.exists():
        raise BenchError(f"baseline {path} does not exist: create it with `python -m bench check RUN_DIR "
                         f"--baseline {path} --update`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read baseline {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise BenchError(f"baseline {path} has no 'metrics' table")
    for metric, entry in data["metrics"].items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("mean"), (int, float))
                or isinstance(entry.get("mean"), bool) or not isinstance(entry.get("n"), int)):
            raise BenchError(f"baseline {path}: metric {metric!r} needs a numeric 'mean' and an integer 'n'")
    try:
        float(data.get("tolerance", 0))
    except (TypeError, ValueError):
        raise BenchError(f"baseline {path}: 'tolerance' must be a number") from None
    return data


def compare(baseline: dict, current: dict, tol: float) -> list[dict]:
    """One row per baseline metric (plus metrics new in the run); status ok / MOVED / MISSING / new."""
    rows = []
    for metric in sorted(set(baseline) | set(current)):
        base, cur = baseline.get(metric), current.get(metric)
        row = {"metric": metric, "baseline": base and base["mean"], "current": cur and cur["mean"],
               "delta": None, "baseline std": base and base.get("std"), "current std": cur and cur.get("std"),
               "seeds": f"{base['n'] if base else '-'} -> {cur['n'] if cur else '-'}"}
        if base is None:
            row["status"] = "new"
        elif cur is None or cur["mean"] is None or math.isnan(cur["mean"]):
            row["status"] = "MISSING"
        else:
            row["delta"] = cur["mean"] - base["mean"]
            row["status"] = "MOVED" if abs(row["delta"]) > tol + 1e-12 else "ok"
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    import pandas as pd

    def fmt(v, signed=False):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:+.4f}" if signed else f"{v:.4f}"

    table = pd.DataFrame([{"metric": r["metric"], "baseline": fmt(r["baseline"]), "current": fmt(r["current"]),
                           "delta": fmt(r["delta"], signed=True), "baseline std": fmt(r["baseline std"]),
                           "current std": fmt(r["current std"]), "seeds": r["seeds"], "status": r["status"]}
                          for r in rows])
    return table.to_markdown(index=False, disable_numparse=True)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a scored run directory")
    parser.add_argument("--baseline", required=True, help="baseline json, e.g. reports/baselines/smoke-sd.json")
    parser.add_argument("--tol", type=float, default=None,
                        help=f"largest allowed change of a metric's mean (default: the baseline's, else {DEFAULT_TOL})")
    parser.add_argument("--update", action="store_true", help="write the baseline from this run instead of checking")


def run(args) -> int:
    path = Path(args.baseline)
    if args.tol is not None and args.tol < 0:
        raise BenchError("--tol must be >= 0")
    if args.update:
        data = write_baseline(args.run_dir, path, args.tol)
        print(f"wrote baseline {path} ({len(data['metrics'])} metrics, tolerance {data['tolerance']})")
        return 0
    baseline = read_baseline(path)
    tol = args.tol if args.tol is not None else float(baseline.get("tolerance", DEFAULT_TOL))
    facts, current = run_summary(args.run_dir)
    if baseline.get("suite") and baseline["suite"] != facts["suite"]:
        raise BenchError(f"baseline {path} is for suite {baseline['suite']!r}, the run is {facts['suite']!r}")
    rows = compare(baseline["metrics"], current, tol)
    failed = [r for r in rows if r["status"] in ("MOVED", "MISSING")]
    print(format_table(rows))
    if failed:
        print(f"\nFAIL: {len(failed)} metric(s) moved beyond tolerance {tol} or are missing: "
              f"{', '.join(r['metric'] for r in failed)} (baseline {path})")
        return 1
    print(f"\nOK: {sum(r['status'] == 'ok' for r in rows)} metric(s) within tolerance {tol} of {path}")
    return 0
