"""`bench check`: a regression check of a scored run against a stored baseline, as a paired
statistical test (docs/statistics.md, "bench check").

    python -m bench check RUN_DIR --baseline reports/baselines/NAME.json --update [--mode exact]
    python -m bench check RUN_DIR --baseline reports/baselines/NAME.json [--mode test|equivalence|exact] [--tol T]

The baseline keeps every score of the run it was made from (per metric, one value per
(subject, prompt, seed, image) key) and the facts of that run (suite, suite options, method,
method parameters). A check pairs the run with the baseline on the keys both hold and reports per
metric the change (run - baseline, the protocol's mean of the paired differences), its
cluster-bootstrap interval, the Holm-adjusted sign-flip p-value and the minimum detectable effect
(MDE). Modes:

- ``test`` (default): a metric fails when its change is significant (Holm-adjusted p < alpha)
  AND larger than the practical margin ``--tol``;
- ``equivalence``: a metric fails unless its whole interval lies within ``[-tol, +tol]``;
- ``exact``: a metric fails unless every paired value agrees within 1e-6 and the run holds every
  baseline key (bit-reproducible smoke runs on one machine).

A metric of the baseline that the run lacks fails in every mode. The baseline and current
columns are both sides' protocol means on the common keys (the change is their difference). A
design in which the check cannot fail is refused: test mode when the smallest reachable
Holm-adjusted p is at least alpha, equivalence mode below SMALL_SAMPLE_UNITS subjects, either mode
with a ``--tol`` at least the range of a metric's values; ``--update``
stores the strictest mode the run supports (test, else exact) and says why. Exit status: 0 pass,
1 a metric failed (the table says which; exact mode names the keys that moved), 2 bad input: no
or unreadable baseline, a baseline without per-key values (made before this format: rerun
``--update``), NaN, infinite or huge values, values that cancel, an empty baseline, no common
keys, a different method or suite, a NaN ``--tol``, a check that cannot fail, a size over its
limit (bench.limits).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from bench import BenchError
from bench.limits import MAX_BASELINE_BYTES, MAX_BASELINE_KEYS
from bench.stats.table import MAX_ABS_VALUE

BASELINE_FORMAT = 2
DEFAULT_TOL = 0.005
EXACT_TOL = 1e-6
MODES = ("test", "equivalence", "exact")
#: Names of keys shown when exact mode fails (then the count of the rest).
SHOWN_KEYS = 5
FACTS = ("suite", "suite_options", "method", "method_params")
KEY_FIELDS = ("subject", "prompt", "seed", "image")


# ---- the run's side ---------------------------------------------------------------------------
def run_facts(run_dir) -> dict:
    from bench.store import RunStore

    run = RunStore.open_existing(run_dir).read_run()
    identity = run.get("identity") if isinstance(run.get("identity"), dict) else {}
    suite = run.get("suite") if isinstance(run.get("suite"), dict) else {}
    ident_suite = identity.get("suite") if isinstance(identity.get("suite"), dict) else {}
    return {"suite": suite.get("name") or ident_suite.get("name"),
            "suite_options": suite.get("options") or ident_suite.get("options") or {},
            "method": identity.get("method"), "method_params": identity.get("method_params") or {},
            "model": identity.get("model"), "random_weights": bool(run.get("random_weights"))}


def run_table(run_dir):
    """The run's scores as a score table (bench.stats.table), refusing NaN or infinite values."""
    import numpy as np

    from bench.report.load import load_scores
    from bench.stats.table import check_table, from_scores

    scores = load_scores([run_dir])
    values = scores["value"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = scores.iloc[int(np.flatnonzero(bad)[0])]
        raise BenchError(f"{run_dir}: {int(bad.sum())} score(s) are NaN or infinite (first: {first['metric']} at "
                         f"{first['key']}); a check needs finite values: rescore the run, or drop that metric")
    if len(scores) == 0:
        raise BenchError(f"{run_dir}: scores.parquet holds no metric values")
    return check_table(from_scores(scores.assign(run="current")), f"{run_dir}/scores.parquet")


def suite_aggregate(suite) -> str:
    """The suite's protocol mean: "seeds" (DreamBench, DreamEdit) or "images" (FastComposer)."""
    from bench.registry import SUITES

    try:
        return getattr(SUITES.get(str(suite)).load(), "aggregate", "seeds")
    except BenchError:
        return "seeds"


# ---- the baseline -----------------------------------------------------------------------------
def baseline_mode(table, mode: str | None, settings) -> tuple[str, str]:
    """(mode, why): the given mode when the run's design supports it (else a BenchError), or
    with none given the strictest it supports: test, else exact."""
    from bench.stats.analysis import UNITS

    cols = list(UNITS[settings.resample])
    units = int(table.groupby(cols).ngroups) if settings.resample != "subject+prompt" else \
        int(min(table["subject"].nunique(), table["prompt"].nunique()))
    metrics = int(table["metric"].nunique())
    if mode is not None:
        if mode == "equivalence":       # its level rests on the subjects, whatever unit is resampled
            units = min(units, int(table["subject"].nunique()))
        why = impossible_mode(mode, units, metrics, settings) if mode != "exact" else None
        if why:
            raise BenchError(f"--mode {mode}: the run has {units} {settings.resample}s: {why}; store --mode exact "
                             "(reproducible runs) or score more subjects")
        return mode, "as given"
    why = impossible_mode("test", units, metrics, settings)
    if why is None:
        return "test", "the default"
    return "exact", f"the run's {units} {settings.resample}s support no test: {why}"


def write_baseline(run_dir, path: Path, tol: float | None, mode: str | None, settings=None) -> dict:
    from bench.stats.analysis import Settings

    table = run_table(run_dir)
    mode, why = baseline_mode(table, mode, settings or Settings())
    keys = table[list(KEY_FIELDS)].drop_duplicates().reset_index(drop=True)
    index = {tuple(k): i for i, k in enumerate(keys.itertuples(index=False, name=None))}
    metrics = {}
    for metric, group in table.groupby("metric", sort=True):
        values = [None] * len(keys)
        for k, v in zip(group[list(KEY_FIELDS)].itertuples(index=False, name=None), group["value"]):
            values[index[k]] = float(v)
        seed_means = group.groupby("seed")["value"].mean()
        metrics[metric] = {"mean": float(seed_means.mean()), "std": float(seed_means.std()) if len(seed_means) > 1
                           else None, "seeds": int(len(seed_means)), "images": int(len(group)), "values": values}
    data = {"format": BASELINE_FORMAT, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": str(run_dir),
            **run_facts(run_dir), "tolerance": DEFAULT_TOL if tol is None else tol, "mode": mode,
            "keys": [list(k) for k in keys.itertuples(index=False, name=None)], "metrics": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")     # path checked by run() before any work
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return {**data, "mode_reason": why}


def _number_ok(v) -> bool:
    """A JSON number a baseline may hold: finite and |v| <= MAX_ABS_VALUE (a 400-digit integer
    is refused here, before float() could overflow)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return abs(v) <= MAX_ABS_VALUE
    return math.isfinite(v) and abs(v) <= MAX_ABS_VALUE


def _refuse_constant(name: str):
    raise BenchError(f"holds {name}: a baseline's values must be finite numbers")


def read_baseline(path: Path) -> dict:
    """The baseline, checked; every problem is one BenchError line naming the file."""
    update = f"`python -m bench check RUN_DIR --baseline {path} --update`"
    if not path.exists():
        raise BenchError(f"baseline {path} does not exist: create it with {update}")
    try:
        size = path.stat().st_size
        if size > MAX_BASELINE_BYTES:
            raise BenchError(f"baseline {path} is {size / 2**20:.0f} MiB, more than a baseline can be "
                             f"({MAX_BASELINE_BYTES // 2**20} MiB, bench.limits.MAX_BASELINE_BYTES): is it the right "
                             "file?")
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text, parse_constant=_refuse_constant)
    except BenchError as exc:
        raise BenchError(f"baseline {path}: {exc}" if not str(exc).startswith("baseline") else str(exc)) from None
    except UnicodeDecodeError:
        raise BenchError(f"baseline {path} is not UTF-8 text (not a baseline json); recreate it with {update}") from None
    except RecursionError:
        raise BenchError(f"baseline {path} is nested too deeply to be a baseline; recreate it with {update}") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read baseline {path}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise BenchError(f"baseline {path} has no 'metrics' table; recreate it with {update}")
    if data.get("format") != BASELINE_FORMAT or "keys" not in data \
            or any(isinstance(m, dict) and "values" not in m for m in data["metrics"].values()):
        raise BenchError(f"baseline {path} holds only means, not the per-key values a paired check needs "
                         f"(an older format): rerun {update}")
    keys = data["keys"]
    if isinstance(keys, list) and len(keys) > MAX_BASELINE_KEYS:
        raise BenchError(f"baseline {path} has {len(keys)} keys, more than the limit of {MAX_BASELINE_KEYS} "
                         "(bench.limits.MAX_BASELINE_KEYS): is it the right file?")
    if not isinstance(keys, list) or not all(isinstance(k, list) and len(k) == 4 and all(isinstance(x, str) and x
                                                                                          for x in k) for k in keys):
        raise BenchError(f"baseline {path}: 'keys' must be a list of [subject, prompt, seed, image]; rerun {update}")
    repeated = len(keys) - len({tuple(k) for k in keys})
    if repeated:
        raise BenchError(f"baseline {path}: {repeated} key(s) repeat an earlier [subject, prompt, seed, image] key; "
                         f"each key needs one value per metric: rerun {update}")
    if not keys or not data["metrics"]:
        raise BenchError(f"baseline {path} is empty (no keys or no metrics): a check against it cannot fail; "
                         f"rerun {update} on a scored run")
    for metric, entry in data["metrics"].items():
        values = entry.get("values") if isinstance(entry, dict) else None
        if not isinstance(values, list) or len(values) != len(keys):
            raise BenchError(f"baseline {path}: metric {metric!r} needs one value per key ({len(keys)}); rerun {update}")
        numbers = [v for v in values if v is not None]
        if not numbers:
            raise BenchError(f"baseline {path}: metric {metric!r} holds no value; rerun {update}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise BenchError(f"baseline {path}: metric {metric!r} holds a value that is not a number; rerun {update}")
        if not all(isinstance(v, int) or math.isfinite(v) for v in numbers):
            raise BenchError(f"baseline {path}: metric {metric!r} holds NaN or infinite values (values must be finite); rerun {update}")
        if not all(_number_ok(v) for v in numbers):
            raise BenchError(f"baseline {path}: metric {metric!r} holds a value too large to be a score "
                             f"(|value| > {MAX_ABS_VALUE:g}); rerun {update}")
        entry["values"] = [None if v is None else float(v) for v in values]
    tol = data.get("tolerance", DEFAULT_TOL)
    if not _number_ok(tol) or tol < 0:
        shown = repr(tol) if len(repr(tol)) <= 40 else repr(tol)[:37] + "..."
        raise BenchError(f"baseline {path}: 'tolerance' must be a finite number between 0 and {MAX_ABS_VALUE:g}, "
                         f"not {shown}")
    data["tolerance"] = float(tol)
    if data.get("mode", "test") not in MODES:
        raise BenchError(f"baseline {path}: 'mode' must be one of {', '.join(MODES)}, not {data.get('mode')!r}")
    return data


def baseline_table(data: dict):
    import pandas as pd

    frames = []
    keys = pd.DataFrame(data["keys"], columns=list(KEY_FIELDS))
    for metric, entry in data["metrics"].items():
        frame = keys.assign(run="baseline", metric=metric, value=entry["values"])
        frames.append(frame[frame["value"].notna()])
    return pd.concat(frames, ignore_index=True).astype({"value": float})


def check_facts(baseline: dict, facts: dict, path: Path) -> None:
    """Refuse a baseline of another method or suite, or of other parameters or suite options."""
    for field in FACTS:
        if field in baseline and baseline[field] != facts.get(field):
            what = {"suite": "suite", "suite_options": "suite options", "method": "method",
                    "method_params": "method parameters"}[field]
            raise BenchError(f"baseline {path} was made with a different {what} ({baseline[field]!r}) than the run "
                             f"({facts.get(field)!r}): compare runs of the same method and suite, or make a baseline "
                             f"for this one with --update")


# ---- the comparison ---------------------------------------------------------------------------
def impossible_mode(mode: str, units: int, metrics: int, settings) -> str | None:
    """Why ``mode`` cannot fail (test) or cannot hold its level (equivalence) with ``units``
    paired units and ``metrics`` checked metrics; None when it can."""
    from bench.stats import bootstrap as bs
    from bench.stats.analysis import SMALL_SAMPLE_UNITS, TWO_WAY
    from bench.stats.linear import rademacher_tail_bound

    if mode == "test" and settings.resample != TWO_WAY:
        exact = units <= bs.EXACT_SIGN_FLIP_UNITS
        min_p = rademacher_tail_bound(units) if exact else 1.0 / (settings.resamples + 1)
        if metrics * min_p >= settings.alpha:
            why = (f"no sign pattern of {units} {settings.resample}s is rarer than 2/2^{units}" if exact else
                   f"a Monte-Carlo p-value of {settings.resamples} resamples is at least 1/(resamples+1); raise "
                   f"--resamples to at least {math.ceil(metrics / settings.alpha)}")
            return (f"the smallest Holm-adjusted p-value reachable over {metrics} metric(s) is "
                    f"{min(1.0, metrics * min_p):.3g} >= alpha {settings.alpha:g} ({why}), so a test-mode check "
                    "could not fail")
    if mode == "equivalence" and units < SMALL_SAMPLE_UNITS:
        return (f"with {units} subjects (fewer than {SMALL_SAMPLE_UNITS}) an equivalence check cannot "
                f"hold its level (its interval rests on the normality of {units} means)")
    return None


def _key_text(keys, count: int) -> str:
    names = ", ".join(f"{s}/{p}/s{k}/i{i}" for s, p, k, i in keys[:SHOWN_KEYS])
    return names + (f" and {count - SHOWN_KEYS} more" if count > SHOWN_KEYS else "")


def compare(base_table, table, mode: str, tol: float, settings) -> tuple[list[dict], list[str]]:
    """(rows, notes): one row per metric (baseline's and the run's), with a status. The
    baseline and current columns are the protocol's means on the keys both hold: the same keys
    as the change."""
    import numpy as np
    import pandas as pd

    from bench.stats.analysis import analyse

    both = pd.concat([base_table, table[base_table.columns]], ignore_index=True)
    base_metrics, run_metrics = set(base_table["metric"]), set(table["metric"])
    common_metrics = sorted(base_metrics & run_metrics)
    keyed = {name: frame.set_index(list(KEY_FIELDS) + ["metric"])["value"] for name, frame in
             (("baseline", base_table), ("current", table))}
    paired = keyed["current"].index.intersection(keyed["baseline"].index)
    if not common_metrics:
        raise BenchError(f"the run and the baseline share no metric (baseline: {', '.join(sorted(base_metrics))}; run: "
                         f"{', '.join(sorted(run_metrics)) or 'none'}): score the run with the baseline's metrics, "
                         "or make a baseline for this run with --update")
    if common_metrics and len(paired) == 0:
        raise BenchError("the run and the baseline share no (subject, prompt, seed, image) key: they are not runs "
                         "of the same plan; make a baseline for this run with --update")
    mine = both[both["metric"].isin(common_metrics)]
    stats = {r["metric"]: r for r in analyse(mine, settings, versus="baseline", strict=mode == "test")
             if r["run"] == "current"}
    if mode != "exact":
        counted = [s for s in stats.values() if s.get("paired_units")]
        # test: the family's floor is set by its best-placed metric; equivalence: every metric must hold its level
        pick = max if mode == "test" else min
        if mode == "test":
            units = pick((s["paired_units"] for s in counted), default=0)
        else:       # an interval over cells or images does not make 3 subjects into 27 independent units
            by_metric = paired.get_level_values("metric")
            subjects = pd.Series(paired.get_level_values("subject")).groupby(by_metric).nunique()
            units = min((min(s["paired_units"], int(subjects.get(s["metric"], 0))) for s in counted), default=0)
        family = max((s.get("family") or 0 for s in counted), default=0)      # judge repeats are not in it
        why = impossible_mode(mode, units, family or len(counted), settings) if counted else None
        if why:
            unit = settings.resample if mode == "test" else "subject"
            raise BenchError(f"the run and the baseline share {units} {unit}s: {why}; use --mode exact "
                             "(reproducible runs) or score more subjects")
        for metric in common_metrics:
            values = pd.concat([keyed[side].xs(metric, level="metric") for side in ("baseline", "current")])
            span = float(values.max() - values.min())
            if 0 < span <= tol:
                low, high = float(values.min()), float(values.max())
                raise BenchError(f"--tol {tol:g} is at least the whole range of metric {metric!r} in the baseline and "
                                 f"the run ({low:.4g} to {high:.4g}): no change of these values can exceed it, so the "
                                 f"{mode} check could not fail; give the smallest change you would act on, in the "
                                 "metric's units (docs/statistics.md, 'Choosing --tol')")
    rows, notes = [], []
    for metric in sorted(base_metrics | run_metrics):
        row = {"metric": metric, "status": "ok"}
        if metric not in run_metrics:
            row["status"] = "MISSING"
            rows.append(row)
            continue
        if metric not in base_metrics:
            row["status"] = "new"
            rows.append(row)
            continue
        b = keyed["baseline"].xs(metric, level="metric")
        c = keyed["current"].xs(metric, level="metric")
        common = c.index.intersection(b.index)
        diff = c.loc[common].to_numpy() - b.loc[common].to_numpy()
        lacking = b.index.difference(c.index)
        if len(lacking):
            notes.append(f"{metric}: the run lacks {len(lacking)} baseline key(s): {_key_text(lacking, len(lacking))}")
        extra = c.index.difference(b.index)
        if len(extra):
            notes.append(f"{metric}: {len(extra)} key(s) of the run are not in the baseline (not compared)")
        s = stats.get(metric) or {}
        row.update({"baseline": s.get("paired_versus_mean"), "current": s.get("paired_mean"),
                    "paired": int(len(common)),
                    "max_abs_diff": float(np.abs(diff).max()) if len(diff) else math.nan, "lacking": int(len(lacking))})
        row.update({k: s.get(k) for k in ("delta", "delta_ci_low", "delta_ci_high", "p", "p_holm", "mde",
                                          "paired_units")})
        if mode == "exact":
            moved = common[np.abs(diff) > EXACT_TOL]
            if len(moved):
                notes.append(f"{metric}: {len(moved)} key(s) moved by more than {EXACT_TOL:g}: "
                             f"{_key_text(moved, len(moved))}")
            if not len(common) or len(moved) or len(lacking):
                row["status"] = "CHANGED"
                row["moved_keys"] = _key_text(moved, len(moved)) if len(moved) else None
                row["moved"] = int(len(moved))
        else:
            if s.get("delta_ci_low") is None and (mode == "equivalence" or s.get("p") is None):
                raise BenchError(f"{metric}: {s.get('note') or 'no interval of the change'}; use --mode exact")
            if mode == "test" and s.get("p_holm") is None:
                row["status"] = "repeat"          # a judge's repeated pass: shown, not in the Holm family
            elif mode == "test":
                if s["p_holm"] < settings.alpha and abs(s["delta"]) > tol:
                    row["status"] = "REGRESSED" if s["delta"] < 0 else "CHANGED"
            elif not (s["delta_ci_low"] >= -tol and s["delta_ci_high"] <= tol):
                row["status"] = "NOT EQUIVALENT"
        rows.append(row)
    return rows, notes


def failure_text(row: dict) -> str:
    text = f"{row['metric']} {row['status']}"
    if row.get("moved_keys"):
        text += f" ({row['moved']} key(s) moved: {row['moved_keys']})"
    elif row.get("lacking"):
        text += f" ({row['lacking']} baseline key(s) missing)"
    return text


def format_table(rows: list[dict], mode: str, alpha: float) -> str:
    import pandas as pd

    def fmt(v, signed=False, digits=4):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"

    out = []
    for r in rows:
        line = {"metric": r["metric"], "baseline": fmt(r.get("baseline")), "current": fmt(r.get("current")),
                "change": fmt(r.get("delta"), signed=True)}
        line[f"{100 * (1 - alpha):g}% CI of change"] = (
            f"[{fmt(r['delta_ci_low'], True)}, {fmt(r['delta_ci_high'], True)}]" if r.get("delta_ci_low") is not None
            else "–")
        line["p (Holm)"] = fmt(r.get("p_holm"))
        line["MDE"] = fmt(r.get("mde"))
        if mode == "exact":
            line["max |diff|"] = "–" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.1e}"
        line["paired keys"] = str(r.get("paired", "–"))
        line["status"] = r["status"]
        out.append(line)
    return pd.DataFrame(out).to_markdown(index=False, disable_numparse=True)


# ---- CLI --------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    from bench.stats.cli import add_settings_options

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a scored run directory")
    parser.add_argument("--baseline", required=True, help="baseline json, e.g. reports/baselines/smoke-sd.json")
    parser.add_argument("--mode", choices=list(MODES), default=None,
                        help="test: fail when a change is significant and larger than --tol (default); equivalence: "
                             "fail unless the change's interval lies within ±tol; exact: fail unless every paired "
                             "value agrees within 1e-6 (default: the baseline's mode, else test)")
    parser.add_argument("--tol", type=float, default=None,
                        help=f"practical margin on a metric's mean (default: the baseline's, else {DEFAULT_TOL})")
    parser.add_argument("--update", action="store_true",
                        help="write the baseline from this run (with --tol and --mode as its defaults) instead of checking")
    add_settings_options(parser)


def run(args) -> int:
    from bench.stats.cli import settings_from

    path = Path(args.baseline)
    if args.tol is not None and not (math.isfinite(args.tol) and args.tol >= 0):
        raise BenchError(f"--tol must be a finite number >= 0, not {args.tol}")
    settings = settings_from(args, suite_aggregate(run_facts(args.run_dir)["suite"]))
    if args.update:
        from bench.output_guard import baseline, guard_file

        guard_file(path, "--baseline", [args.run_dir], baseline, "a baseline")     # not the run, not another file
        data = write_baseline(args.run_dir, path, args.tol, args.mode, settings)
        print(f"wrote baseline {path} ({len(data['metrics'])} metrics, {len(data['keys'])} keys, mode {data['mode']} "
              f"({data['mode_reason']}), tolerance {data['tolerance']})")
        return 0
    from bench.output_guard import require_regular

    baseline = read_baseline(require_regular(path, "--baseline"))      # a FIFO would block the read
    mode = args.mode or baseline.get("mode", "test")
    tol = args.tol if args.tol is not None else float(baseline.get("tolerance", DEFAULT_TOL))
    check_facts(baseline, run_facts(args.run_dir), path)
    rows, notes = compare(baseline_table(baseline), run_table(args.run_dir), mode, tol, settings)
    failed = [r for r in rows if r["status"] not in ("ok", "new", "repeat")]
    if mode == "exact":
        print(f"mode exact: every paired value must agree within {EXACT_TOL:g}; {settings.describe()}")
    else:
        print(f"mode {mode}, tolerance {tol:g}: {settings.describe()}; change = run - baseline on the keys both hold")
    print()
    print(format_table(rows, mode, settings.alpha))
    for note in notes:
        print(f"note: {note}")
    rule = {"test": f"a significant change (Holm p < {settings.alpha:g}) larger than {tol:g}",
            "equivalence": f"an interval reaching beyond ±{tol:g}",
            "exact": f"a paired value that moved by more than {EXACT_TOL:g} or a missing key"}[mode]
    if failed:
        print(f"\nFAIL: {len(failed)} metric(s) failed ({rule}, or missing): "
              f"{'; '.join(failure_text(r) for r in failed)} (baseline {path})")
        return 1
    print(f"\nOK: {sum(r['status'] == 'ok' for r in rows)} metric(s) pass against {path} (none with {rule})")
    return 0
