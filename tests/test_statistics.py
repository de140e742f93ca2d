"""The statistics checked by simulation from a known hierarchical model (subject effect + prompt
effect + noise, DreamBench's shape 30 subjects x 25 prompts x 6 seeds x 4 images): interval
coverage, false alarms of the paired test and of `bench check`'s rule, power at a 3-SE shift, and
the under-coverage of a naive image-level bootstrap. Reruns are vectorised (one column each) and
every random number is seeded, so the numbers are the same on every machine."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.stats import bootstrap as bs
from bench.stats.analysis import Settings, analyse
from bench.stats.distributions import t_quantile
from bench.stats.power import components
from bench.stats.simulate import DREAMBENCH_SHAPE, Model, coverage, layout, paired_tests, simulate

MODEL = Model()
CODES = layout()
SUBJECTS, PROMPTS, SEEDS, IMAGES = DREAMBENCH_SHAPE
ALPHA = 0.05
RERUNS = 600          # coverage estimates then have a standard error of about 0.9%


@pytest.fixture(scope="module")
def subject_coverage():
    return coverage("subject", RERUNS)


def test_subject_bootstrap_covers_the_true_mean(subject_coverage):
    assert 0.93 <= subject_coverage <= 0.97


def test_naive_bootstraps_under_cover_on_the_same_data(subject_coverage):
    """Resampling images (or cells) as if independent ignores the subject effect: far too narrow."""
    naive = coverage("image", reruns=200, resamples=200)
    cell = coverage("cell", reruns=200, resamples=400)
    assert naive < 0.6 and cell < 0.8
    assert naive < subject_coverage - 0.3 and cell < subject_coverage - 0.15


def test_plain_percentile_interval_is_narrower_than_the_expanded_one(subject_coverage):
    """Why the interval is expanded: the plain percentile interval misses more often with 30
    clusters (the same simulated data and resamples)."""
    assert coverage("subject", RERUNS, expand=False) < subject_coverage


def true_se_of_difference() -> float:
    return math.sqrt(2) * MODEL.se_of_mean()


def test_paired_test_false_alarms_at_most_alpha_plus_2_percent():
    p, _ = paired_tests(reruns=RERUNS, seed=3)
    rate = float((p[0] < ALPHA).mean())
    assert rate <= ALPHA + 0.02
    assert rate >= ALPHA - 0.025          # and not a test that never fires


def test_check_rule_false_alarms_over_three_metrics():
    """`bench check`'s default rule (Holm-adjusted p < alpha and |change| > tol, here tol = 0)
    on two runs from the same distribution, three metrics per check."""
    p, delta = paired_tests(reruns=400, metrics=3, seed=4)
    adjusted = np.apply_along_axis(bs.holm, 0, p)
    fails = ((adjusted < ALPHA) & (np.abs(delta) > 0.0)).any(axis=0)
    assert fails.mean() <= ALPHA + 0.02


def test_three_standard_error_shift_is_detected():
    shift = 3 * true_se_of_difference()
    p, delta = paired_tests(shift=shift, reruns=400, seed=5)
    assert (p[0] < ALPHA).mean() >= 0.80
    assert abs(delta.mean() - shift) < 0.2 * shift


def test_paired_interval_covers_the_true_shift():
    assert 0.92 <= coverage("subject", 400, shift=2 * true_se_of_difference(), paired=True, seed=6) <= 0.98


def test_bootstrap_standard_error_and_mde_match_the_model():
    values = simulate(np.random.default_rng(8), MODEL, reruns=200)
    clusters = bs.cluster(CODES["subject"], CODES["seed"], values)
    se = bs.standard_error(bs.replicates(clusters, np.random.default_rng(0), 1000), SUBJECTS)
    assert abs(np.median(se) / MODEL.se_of_mean() - 1) < 0.08
    # the MDE at 80% power is the shift whose test fires 80% of the time (checked above at 3 SE)
    mde = bs.detectable_effect(MODEL.se_of_mean(), SUBJECTS)
    assert 2.7 * MODEL.se_of_mean() < mde < 3.0 * MODEL.se_of_mean()


def test_variance_components_are_recovered_and_predict_the_standard_error():
    values = simulate(np.random.default_rng(9), MODEL, reruns=200)
    cells = CODES["subject"] * PROMPTS + CODES["prompt"]
    estimates = np.array([[getattr(components(CODES["subject"], cells, CODES["seed"], values[:, r]), f)
                           for r in range(0, 200, 10)] for f in ("var_subject", "var_prompt", "var_residual")])
    truth = np.array([MODEL.sd_subject, MODEL.sd_prompt, MODEL.sd_residual]) ** 2
    assert np.all(np.abs(np.sqrt(estimates.mean(axis=1) / truth) - 1) < 0.1)
    comp = components(CODES["subject"], cells, CODES["seed"], values[:, 0])
    assert comp.prompts == pytest.approx(PROMPTS) and comp.images == pytest.approx(IMAGES)
    predicted = math.sqrt(comp.variance(SUBJECTS, SEEDS))
    empirical = values.mean(axis=0).std(ddof=1)                 # balanced: the protocol mean is the plain mean
    assert abs(predicted / empirical - 1) < 0.25


# ---- exact pieces ---------------------------------------------------------------------------------
def test_t_quantiles_match_tables():
    for df, p, value in ((1, 0.975, 12.7062047), (4, 0.975, 2.7764451), (29, 0.975, 2.0452296),
                         (29, 0.8, 0.8541920), (10, 0.995, 3.1692727), (5000, 0.975, 1.9604386)):
        assert abs(t_quantile(p, df) - value) < 1e-6
        assert abs(t_quantile(1 - p, df) + value) < 1e-6


def test_sign_flip_p_is_exact_for_few_units():
    # three subjects all moved up: of the 8 sign patterns, 2 reach |sum| = 3 units
    clusters = bs.cluster([0, 1, 2], [0, 0, 0], [0.1, 0.1, 0.1])
    assert bs.sign_flip_p(clusters, np.random.default_rng(0), 1000)[0] == pytest.approx(2 / 8)
    identical = bs.cluster([0, 1, 2, 3], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0])
    assert bs.sign_flip_p(identical, np.random.default_rng(0), 1000)[0] == 1.0
    # 20 units: a Monte Carlo p never below 1 / (resamples + 1)
    many = bs.cluster(np.arange(20), np.zeros(20, int), np.full(20, 0.2))
    assert bs.sign_flip_p(many, np.random.default_rng(0), 999)[0] == pytest.approx(1 / 1000)


def test_holm_matches_a_worked_example():
    adjusted = bs.holm([0.01, 0.04, 0.03, np.nan, 0.005])
    np.testing.assert_allclose(adjusted[[0, 1, 2, 4]], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[3])
    assert list(bs.holm([0.5, 0.9])) == [1.0, 1.0] and list(bs.holm([0.01, 0.9])) == [0.02, 0.9]


def test_protocol_mean_with_unequal_seeds_is_the_reports_mean():
    """Per seed the mean over images, then the mean over seeds, as the leaderboard computes it."""
    rng = np.random.default_rng(3)
    rows = [{"run": "a", "subject": f"s{s}", "prompt": str(p), "seed": str(k), "image": str(i), "metric": "m",
             "value": rng.normal()} for s in range(5) for p in range(3) for k in range(3) for i in range(1 + k)]
    df = pd.DataFrame(rows).iloc[3:]                     # unequal images per seed
    row = analyse(df, Settings(resamples=200))[0]
    per_seed = df.groupby("seed")["value"].mean()
    assert row["mean"] == pytest.approx(per_seed.mean())
    assert row["std"] == pytest.approx(per_seed.std(ddof=1))
    assert row["n"] == len(df) and row["units"] == 5 and row["seeds"] == 3
    images = analyse(df, Settings(resamples=200, aggregate="images"))[0]
    assert images["mean"] == pytest.approx(df["value"].mean())


def test_paired_delta_equals_the_difference_of_means_on_common_keys():
    rng = np.random.default_rng(4)
    base = pd.DataFrame([{"subject": f"s{s}", "prompt": str(p), "seed": str(k), "image": "0", "metric": "m",
                          "value": rng.normal()} for s in range(6) for p in range(2) for k in range(2)])
    other = base.assign(run="b", value=base["value"] + 0.3 + rng.normal(0, 0.1, len(base))).iloc[2:]
    df = pd.concat([base.assign(run="a"), other], ignore_index=True)
    row = next(r for r in analyse(df, Settings(resamples=300), versus="a") if r["run"] == "b")
    common = base.iloc[2:]
    expected = (other.groupby("seed")["value"].mean() - common.groupby("seed")["value"].mean()).mean()
    assert row["delta"] == pytest.approx(expected)
    assert row["delta_ci_low"] < row["delta"] < row["delta_ci_high"]
    assert row["only_in_versus"] == 2 and row["only_in_run"] == 0 and row["paired"] == len(other)


def test_results_are_reproducible_and_independent_of_other_runs():
    rng = np.random.default_rng(5)
    from bench.stats.simulate import table
    df = table(rng, {"a": 0.0, "b": 0.01, "c": 0.0}, shape=(8, 3, 2, 1))
    first = analyse(df, Settings(resamples=300, seed=7), versus="a")
    again = analyse(df, Settings(resamples=300, seed=7), versus="a")
    assert first == again
    fewer = analyse(df[df["run"] != "c"], Settings(resamples=300, seed=7), versus="a")
    strip = lambda r: {k: v for k, v in r.items() if k not in ("p_holm", "significant", "min_p_holm", "family", "mde", "mde_alpha")}   # noqa: E731
    assert [strip(r) for r in fewer] == [strip(r) for r in first if r["run"] != "c"]
    other_seed = analyse(df, Settings(resamples=300, seed=8), versus="a")
    assert other_seed[0]["ci_low"] != first[0]["ci_low"] and other_seed[0]["mean"] == first[0]["mean"]
