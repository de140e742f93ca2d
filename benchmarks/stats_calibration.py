"""Calibration and speed of the statistics (bench/stats), on simulated DreamBench-shaped data.

    python benchmarks/stats_calibration.py              # several minutes on one core
    python benchmarks/stats_calibration.py --reruns 4000
    python benchmarks/stats_calibration.py --only few,mde,equivalence,two-way,ceiling,speed

Prints, for the default model (subject sd 0.05, prompt sd 0.03, residual sd 0.06; 30 subjects x
25 prompts x 6 seeds x 4 images): the coverage of the 95% intervals (cluster bootstrap over
subjects, expanded and plain percentile; naive bootstraps over cells and images), the false-alarm
rate of the paired sign-flip test and of `bench check`'s rule over three metrics, the power at
shifts of 2 and 3 standard errors, the time `bench stats` takes for a 10-run x 3-metric table
with --versus, and the minimum-detectable-effect table docs/statistics.md quotes. Then the
issue-30 tables: coverage at 2-30 subjects (normal, t(3) and judge-like scores; the expanded
percentile alone, the t interval, and the joined interval the harness prints), power at the
printed MDE with 1, 3 and 8 metrics under Holm, the equivalence check's level, one-way vs two-way
coverage under a shared prompt effect, and the cost of 2M rows with 2M subjects. Seeded: the
same numbers on every machine.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.limits import MAX_RESAMPLED_UNITS  # noqa: E402
from bench.stats import bootstrap as bs  # noqa: E402
from bench.stats.analysis import Settings, analyse, mde  # noqa: E402
from bench.stats.power import components, mde_table  # noqa: E402
from bench.stats.simulate import (KINDS, Model, coverage, intervals, kind_coverage, layout,  # noqa: E402
                                  paired_tests, simulate, table)


def band(rate: float, n: int) -> str:
    return f"{100 * rate:5.1f}% (± {100 * 1.96 * math.sqrt(rate * (1 - rate) / n):.1f})"


def few_clusters(n: int, b: int) -> None:
    print("\n95% interval coverage with few subjects (9 prompts x 3 seeds each; subject sd 0.05, prompt 0.03, "
          "residual 0.06)")
    print("| subjects | scores | expanded percentile alone | t interval | joined (printed) |")
    print("|---:|---|---:|---:|---:|")
    for kind in KINDS:
        for subjects in (2, 3, 4, 5, 6, 8, 10, 15, 30):
            cells = [band(kind_coverage(subjects, kind, method, n, b, rest=(9, 3, 1)), n)
                     for method in ("expanded", "t", "joined")]
            print(f"| {subjects} | {kind} | " + " | ".join(cells) + " |", flush=True)


def mde_power(n: int, b: int) -> None:
    print("\npower at the printed MDE (one metric shifted by it, the others unchanged; Holm over all; "
          "DreamBench's shape)")
    print("| metrics | MDE level | MDE / SE | found | old MDE (alpha, t + t) / SE | found at the old MDE |")
    print("|---:|---:|---:|---:|---:|---:|")
    se = math.sqrt(2) * Model().se_of_mean()
    for metrics in (1, 3, 8):
        row = []
        for shift in (mde(se, 30, 0.05 / metrics, 0.8), float(bs.detectable_effect(se, 30, 0.05, 0.8))):
            p = paired_tests(shift, n, b, metrics=1, seed=20 + metrics)[0]
            if metrics > 1:
                p = np.vstack([p, paired_tests(0.0, n, b, metrics=metrics - 1, seed=40 + metrics)[0]])
            row.append((shift / se, float((np.apply_along_axis(bs.holm, 0, p)[0] < 0.05).mean())))
        print(f"| {metrics} | {0.05 / metrics:.4f} | {row[0][0]:.2f} | {band(row[0][1], n)} | {row[1][0]:.2f} | "
              f"{band(row[1][1], n)} |", flush=True)


def equivalence(n: int, b: int) -> None:
    print("\nequivalence check passing when the true change equals the tolerance (2 SE; nominal <= 2.5%)")
    print("| subjects | passes |")
    print("|---:|---:|")
    for subjects in (3, 5, 8, 15, 30):
        shape = (subjects, 9, 3, 1)
        model = Model()
        tol = 2 * math.sqrt(2) * model.se_of_mean(shape)
        rng = np.random.default_rng(subjects)
        passes = []
        for start in range(0, n, 250):
            size = min(250, n - start)
            values = simulate(rng, model, shape, size, tol) - simulate(rng, model, shape, size)
            low, high = intervals(values, "subject", shape, rng, b)
            passes.append((low >= -tol) & (high <= tol))
        print(f"| {subjects} | {band(float(np.concatenate(passes).mean()), n)} |", flush=True)


def two_way(n: int, b: int) -> None:
    print("\ncoverage of the mean over prompts with a prompt effect shared by all subjects (30 subjects x 25 "
          "prompts, one image; subject sd 0.05, prompt-within-subject 0.03, residual 0.06)")
    print("| shared prompt sd | one-way (subject) | two-way (subject+prompt) |")
    print("|---:|---:|---:|")
    shape = (30, 25, 1, 1)
    for shared in (0.0, 0.01, 0.02, 0.05):
        model = Model(sd_shared_prompt=shared)
        cells = [band(coverage(unit, n, b, model=model, shape=shape, seed=7), n) for unit in ("subject", "subject+prompt")]
        print(f"| {shared:g} | " + " | ".join(cells) + " |", flush=True)


def ceiling(n: int, b: int) -> None:
    """A judge's 0/0.25/.../1 scale near its top (true mean about 0.95), 3 prompts per subject:
    how often every unit has the same mean (no interval printed), and the coverage of the
    intervals that are printed, against counting a zero-width bracket as one."""
    import pandas as pd

    print("\n95% intervals of a judge metric near its ceiling (latent 0.97 + subject 0.03 + prompt 0.03 + "
          "residual 0.08, rounded to 0, 0.25, ..., 1; 3 prompts, 1 seed)")
    print("| subjects | no interval (all units equal) | printed intervals cover | zero-width bracket counted |")
    print("|---:|---:|---:|---:|")
    rng = np.random.default_rng(32)

    def judge(latent):
        return np.clip(np.round(latent * 4) / 4, 0, 1)

    m = 4_000_000
    truth = float(judge(0.97 + rng.normal(0, 0.03, m) + rng.normal(0, 0.03, m) + rng.normal(0, 0.08, m)).mean())
    for subjects in (2, 3, 5, 8, 15):
        rows = []
        for r in range(n):
            effect = rng.normal(0, 0.03, subjects)
            for s in range(subjects):
                scores = judge(0.97 + effect[s] + rng.normal(0, 0.03, 3) + rng.normal(0, 0.08, 3))
                rows += [(f"r{r}", f"s{s}", str(p), "0", "0", "judge", v) for p, v in enumerate(scores)]
        out = analyse(pd.DataFrame(rows, columns=["run", "subject", "prompt", "seed", "image", "metric", "value"]),
                      Settings(resamples=b))
        printed = [r for r in out if r["ci_low"] is not None]
        covered = sum(r["ci_low"] <= truth <= r["ci_high"] for r in printed)
        bare = sum(r["mean"] == truth for r in out if r["ci_low"] is None)      # [x, x] covers only if x = truth
        shown = band(covered / max(len(printed), 1), len(printed))
        print(f"| {subjects} | {100 * (n - len(printed)) / n:.1f}% | {shown} | {band((covered + bare) / n, n)} |",
              flush=True)


def speed() -> None:
    import pandas as pd

    rows = 2_000_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"run": np.where(np.arange(rows) % 2 == 0, "a", "b"), "subject": (np.arange(rows) // 2).astype(str),
                       "prompt": "0", "seed": "0", "image": "0", "metric": "m", "value": rng.random(rows)})
    for unit in ("subject", "image"):
        start = time.perf_counter()
        analyse(df, Settings(resample=unit), versus="a")
        print(f"\nbench stats on 2M rows, 1M distinct subjects per run, --resample {unit}, --versus: "
              f"{time.perf_counter() - start:.1f} s (closed forms beyond {MAX_RESAMPLED_UNITS:,} units)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reruns", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--only", default=None, help="comma-separated: base,few,mde,equivalence,two-way,ceiling,speed")
    args = parser.parse_args()
    n, b = args.reruns, args.resamples
    parts = {"few": few_clusters, "mde": mde_power, "equivalence": equivalence, "two-way": two_way, "ceiling": ceiling}
    only = set(args.only.split(",")) if args.only else {"base", "speed", *parts}
    for name, part in parts.items():
        if name in only:
            part(n, b)
    if "speed" in only:
        speed()
    if "base" in only:
        base(n, b)


def base(n: int, b: int) -> None:
    model = Model()
    se_diff = math.sqrt(2) * model.se_of_mean()
    print(f"model: {model}; SE of one run's mean {model.se_of_mean():.5f}, of a paired difference "
          f"of two independent runs {se_diff:.5f}; {n} simulated reruns, {b} resamples\n")
    print("95% interval coverage of the true mean")
    print(f"  subject bootstrap, joined (printed)    : {band(coverage('subject', n, b), n)}")
    print(f"  subject bootstrap, expanded percentile : {band(coverage('subject', n, b, method='expanded'), n)}")
    print(f"  subject bootstrap, plain percentile    : {band(coverage('subject', n, b, expand=False), n)}")
    print(f"  cell bootstrap (naive)                 : {band(coverage('cell', min(n, 400), b), min(n, 400))}")
    print(f"  image bootstrap (naive)                : {band(coverage('image', 200, 200), 200)}")
    print(f"  paired difference at a 2-SE shift      : {band(coverage('subject', n, b, shift=2 * se_diff, paired=True, seed=6), n)}")
    p, _ = paired_tests(0.0, n, b, seed=3)
    print(f"\nfalse alarms of the paired test at alpha 0.05 : {band(float((p[0] < 0.05).mean()), n)}")
    p3, d3 = paired_tests(0.0, n, b, metrics=3, seed=4)
    fails = (np.apply_along_axis(bs.holm, 0, p3) < 0.05).any(axis=0)
    print(f"false alarms of bench check (3 metrics, Holm) : {band(float(fails.mean()), n)}")
    for k in (2, 3):
        pk, _ = paired_tests(k * se_diff, n, b, seed=5)
        print(f"power at a {k}-SE shift                       : {band(float((pk[0] < 0.05).mean()), n)}")

    df = table(np.random.default_rng(0), {f"run{i}": 0.002 * i for i in range(10)},
               metrics=("clip_i", "clip_t", "dino"), model=model)
    start = time.perf_counter()
    rows = analyse(df, Settings(), versus="run0")
    took = time.perf_counter() - start
    print(f"\nbench stats on 10 runs x 3 metrics x 18,000 scores ({len(df):,} rows), --versus run0, "
          f"{Settings().resamples} resamples: {took:.2f} s ({len(rows)} intervals, {len(rows) - 3} comparisons)")

    codes = layout()
    values = simulate(np.random.default_rng(1), model, reruns=1)[:, 0] - simulate(np.random.default_rng(2), model,
                                                                                  reruns=1)[:, 0]
    comp = components(codes["subject"], codes["subject"] * 25 + codes["prompt"], codes["seed"], values)
    subjects, seeds = [10, 20, 30, 50, 100], [1, 2, 4, 6]
    grid = mde_table(comp, subjects, seeds, 0.05, 0.8)          # one comparison: alpha itself
    print("\nMDE of a paired difference (alpha 0.05, power 0.8), rows subjects, columns seeds")
    print("| subjects | " + " | ".join(f"{k} seed(s)" for k in seeds) + " |")
    print("|---:|" + "---:|" * len(seeds))
    for s, row in zip(subjects, grid):
        print(f"| {s} | " + " | ".join(f"{v:.4f}" for v in row) + " |")


if __name__ == "__main__":
    main()
