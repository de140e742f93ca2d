"""Calibration and speed of the statistics (bench/stats), on simulated DreamBench-shaped data.

    python benchmarks/stats_calibration.py              # about a minute on one core
    python benchmarks/stats_calibration.py --reruns 4000

Prints, for the default model (subject sd 0.05, prompt sd 0.03, residual sd 0.06; 30 subjects x
25 prompts x 6 seeds x 4 images): the coverage of the 95% intervals (cluster bootstrap over
subjects, expanded and plain percentile; naive bootstraps over cells and images), the false-alarm
rate of the paired sign-flip test and of `bench check`'s rule over three metrics, the power at
shifts of 2 and 3 standard errors, the time `bench stats` takes for a 10-run x 3-metric table
with --versus, and the minimum-detectable-effect table docs/statistics.md quotes. Seeded: the
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

from bench.stats import bootstrap as bs  # noqa: E402
from bench.stats.analysis import Settings, analyse  # noqa: E402
from bench.stats.power import components, mde_table  # noqa: E402
from bench.stats.simulate import Model, coverage, layout, paired_tests, simulate, table  # noqa: E402


def band(rate: float, n: int) -> str:
    return f"{100 * rate:5.1f}% (± {100 * 1.96 * math.sqrt(rate * (1 - rate) / n):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reruns", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    n, b = args.reruns, args.resamples
    model = Model()
    se_diff = math.sqrt(2) * model.se_of_mean()
    print(f"model: {model}; SE of one run's mean {model.se_of_mean():.5f}, of a paired difference "
          f"of two independent runs {se_diff:.5f}; {n} simulated reruns, {b} resamples\n")
    print("95% interval coverage of the true mean")
    print(f"  subject bootstrap, expanded percentile : {band(coverage('subject', n, b), n)}")
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
    grid = mde_table(comp, subjects, seeds, 0.05, 0.8)
    print("\nMDE of a paired difference (alpha 0.05, power 0.8), rows subjects, columns seeds")
    print("| subjects | " + " | ".join(f"{k} seed(s)" for k in seeds) + " |")
    print("|---:|" + "---:|" * len(seeds))
    for s, row in zip(subjects, grid):
        print(f"| {s} | " + " | ".join(f"{v:.4f}" for v in row) + " |")


if __name__ == "__main__":
    main()
