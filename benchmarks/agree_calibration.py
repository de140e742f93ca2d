"""Calibration of `bench agree`'s intervals on simulated ratings with a known truth.

    python benchmarks/agree_calibration.py                 # a few minutes
    python benchmarks/agree_calibration.py --sims 2000

Model: subjects x prompts items; an item's latent quality q = subject effect (sd 0.7) + item
effect (sd 1); each rater gives round(2 + 0.8 q + noise) clipped to 0..4 (DreamBench++'s scale);
a metric m = rho * q + sqrt(1 - rho^2) * e. The truths (Pearson, Spearman and Kendall tau-b
between the metric and the raters' mean, interval alpha between the raters) are the values on
one large sample (400,000 items; alpha on 60,000). Each simulated study is analysed with the
functions `bench agree` uses (cluster bootstrap over subjects, expanded percentile interval, for
alpha bias-corrected);
the table gives how often the 95% interval covers the truth. Seeded: the same numbers on every
machine. docs/agreement.md quotes the output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.agree.correlation import _kendall_reps, _pearson_spearman_reps  # noqa: E402
from bench.agree.reliability import boot_alpha, kd_alpha  # noqa: E402
from bench.agree.resample import Boot, ci, item_weights  # noqa: E402

SUBJECT_SD, ITEM_SD = 0.7, 1.0


def simulate(rng, subjects: int, prompts: int, raters: int, rho: float, noise: float):
    """(units (n,), ratings (raters, n), metric (n,)) of one simulated study."""
    units = np.repeat(np.arange(subjects), prompts)
    q = rng.normal(0, SUBJECT_SD, subjects)[units] + rng.normal(0, ITEM_SD, len(units))
    q = q / np.hypot(SUBJECT_SD, ITEM_SD)
    ratings = np.clip(np.round(2 + 0.8 * q + rng.normal(0, noise, (raters, len(units)))), 0, 4)
    metric = rho * q + np.sqrt(1 - rho ** 2) * rng.normal(size=len(units))
    return units, ratings, metric


def truth(rho: float, noise: float, raters: int, seed: int = 12345) -> dict:
    from scipy import stats

    rng = np.random.default_rng(seed)
    _, ratings, metric = simulate(rng, 400_000, 1, raters, rho, noise)
    human = ratings.mean(axis=0)
    return {"pearson": stats.pearsonr(metric, human).statistic, "spearman": stats.spearmanr(metric, human).statistic,
            "kendall": stats.kendalltau(metric, human).statistic,
            "alpha": kd_alpha(ratings[:, :60_000], "interval")}


def study(rng, subjects, prompts, raters, rho, noise, boot: Boot, kendall: bool = True) -> dict:
    """Each statistic's (low, high) on one simulated study (None where no interval)."""
    units, ratings, metric = simulate(rng, subjects, prompts, raters, rho, noise)
    human = ratings.mean(axis=0)
    weights = item_weights(units, subjects, boot)
    rep_p, rep_s = _pearson_spearman_reps(metric, human, weights)
    out = {"pearson": ci(rep_p, subjects, boot)[:2], "spearman": ci(rep_s, subjects, boot)[:2],
           "alpha": ci(boot_alpha(ratings, "interval", units, subjects, boot), subjects, boot,
                       estimate=kd_alpha(ratings, "interval"))[:2]}
    if kendall:
        out["kendall"] = ci(_kendall_reps(metric, human, weights), subjects, boot)[:2]
    return out


def coverage(sims: int, subjects: int, prompts: int, raters: int, rho: float, noise: float, resamples: int,
             seed: int = 0, kendall: bool | int = True, true: dict | None = None) -> dict:
    """Share of ``sims`` studies whose interval covers the truth, per statistic (Kendall's on the
    first ``kendall`` studies where it is a number: its resamples are the slow part)."""
    true = true or truth(rho, noise, raters)
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {}
    for k in range(sims):
        boot = Boot(resamples, seed=k)
        with_kendall = bool(kendall) if isinstance(kendall, bool) else k < kendall
        for name, (low, high) in study(rng, subjects, prompts, raters, rho, noise, boot, with_kendall).items():
            hits.setdefault(name, []).append(low is not None and low <= true[name] <= high)
    return {name: float(np.mean(h)) for name, h in hits.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--kendall-sims", type=int, default=None,
                        help="studies on which Kendall's interval is checked (default: all)")
    args = parser.parse_args(argv)
    args.kendall_sims = args.sims if args.kendall_sims is None else args.kendall_sims
    designs = [(15, 6, 3, 0.5, 0.8), (30, 9, 2, 0.6, 0.8), (60, 5, 3, 0.3, 1.0), (30, 9, 2, 0.0, 0.8)]
    print(f"Coverage of the 95% intervals ({args.sims} simulated studies each, Kendall's on {args.kendall_sims}; "
          f"{args.resamples} resamples, cluster bootstrap over subjects):\n")
    print("| subjects x prompts | raters | rho | rater noise sd | Pearson | Spearman | Kendall tau-b | alpha | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for subjects, prompts, raters, rho, noise in designs:
        start = time.time()
        cov = coverage(args.sims, subjects, prompts, raters, rho, noise, args.resamples, kendall=args.kendall_sims)
        print(f"| {subjects} x {prompts} | {raters} | {rho} | {noise} | {cov['pearson']:.3f} | {cov['spearman']:.3f} | "
              f"{cov['kendall']:.3f} | {cov['alpha']:.3f} | {time.time() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
