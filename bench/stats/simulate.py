"""Simulated score tables from a known hierarchical model, for calibration tests, benchmarks and
the planning tables in docs/statistics.md.

A score is ``mean + subject effect + prompt effect (within the subject) + residual`` with normal
effects of the given standard deviations; the residual is independent per seed and image. The
default shape is DreamBench's protocol: 30 subjects x 25 prompts x 6 seeds x 4 images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DREAMBENCH_SHAPE = (30, 25, 6, 4)          # subjects, prompts per subject, seeds, images per prompt and seed


@dataclass(frozen=True)
class Model:
    mean: float = 0.70
    sd_subject: float = 0.05
    sd_prompt: float = 0.03
    sd_residual: float = 0.06
    sd_shared_prompt: float = 0.0       # a prompt effect shared by every subject (crossed, not nested)

    def se_of_mean(self, shape=DREAMBENCH_SHAPE) -> float:
        """The true standard error of the protocol's mean of one simulated run."""
        s, p, k, i = shape
        return float(np.sqrt(self.sd_subject ** 2 / s + self.sd_prompt ** 2 / (s * p)
                             + self.sd_residual ** 2 / (s * p * k * i)))


def layout(shape=DREAMBENCH_SHAPE) -> dict[str, np.ndarray]:
    """Integer codes subject, prompt, seed, image of every score, in a fixed order."""
    grids = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return dict(zip(("subject", "prompt", "seed", "image"), (g.ravel() for g in grids)))


def simulate(rng: np.random.Generator, model: Model = Model(), shape=DREAMBENCH_SHAPE, reruns: int = 1,
             shift: float = 0.0) -> np.ndarray:
    """Scores (n, reruns) of ``reruns`` independent runs (fresh subject and prompt effects each),
    rows in :func:`layout`'s order. The residuals are drawn in float32 (fast); sums are float64."""
    s, p, k, i = shape
    subject = rng.normal(0.0, model.sd_subject, (s, 1, 1, 1, reruns))
    prompt = rng.normal(0.0, model.sd_prompt, (s, p, 1, 1, reruns))
    if model.sd_shared_prompt:
        prompt = prompt + rng.normal(0.0, model.sd_shared_prompt, (1, p, 1, 1, reruns))
    residual = rng.standard_normal((s, p, k, i, reruns), dtype=np.float32)
    residual *= np.float32(model.sd_residual)
    return (residual + (model.mean + shift + subject + prompt)).reshape(s * p * k * i, reruns)


def table(rng: np.random.Generator, runs: dict[str, float], metrics=("clip_i",), model: Model = Model(),
          shape=DREAMBENCH_SHAPE):
    """A long-format score table (bench.stats.table) with one run per ``runs`` entry (name ->
    shift of its mean) and each metric drawn independently."""
    import pandas as pd

    codes = layout(shape)
    frames = []
    for run, shift in runs.items():
        for metric in metrics:
            frames.append(pd.DataFrame({
                "run": run, "subject": [f"subject{c:02d}" for c in codes["subject"]],
                "prompt": codes["prompt"].astype(str), "seed": codes["seed"].astype(str),
                "image": codes["image"].astype(str), "metric": metric,
                "value": simulate(rng, model, shape, 1, shift)[:, 0]}))
    return pd.concat(frames, ignore_index=True)


# ---- calibration by simulation (tests/test_statistics.py, benchmarks/stats_calibration.py) ----------
def _blocks(rng, model, shape, n, chunk, shift=0.0, paired=False):
    """Blocks of simulated reruns (scores, chunk): one run's scores or (``paired``) the
    differences of two independent runs, the first shifted by ``shift``."""
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        first = simulate(rng, model, shape, size, shift)
        yield first - simulate(rng, model, shape, size) if paired else first


def unit_codes(unit: str, shape=DREAMBENCH_SHAPE) -> np.ndarray:
    codes = layout(shape)
    return {"subject": codes["subject"], "cell": codes["subject"] * shape[1] + codes["prompt"],
            "image": np.arange(len(codes["subject"]))}[unit]


INTERVALS = ("joined", "expanded", "plain", "t")


def intervals(values: np.ndarray, unit: str, shape, rng: np.random.Generator, resamples: int, alpha: float = 0.05,
              method: str = "joined") -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (reruns,), of simulated reruns ``values`` (scores, reruns) in
    :func:`layout`'s order. ``method``: joined (what the harness prints: the expanded percentile
    bootstrap joined with the t interval), expanded, plain (percentile) or t. ``unit``: subject,
    cell, image or subject+prompt (the two-way bootstrap)."""
    from bench.stats import bootstrap as bs
    from bench.stats import linear as ln
    from bench.stats import twoway

    codes = layout(shape)
    two_way = unit == "subject+prompt"
    clusters = bs.cluster(unit_codes("cell" if two_way else unit, shape), codes["seed"], values)
    if two_way:
        cell_subject, cell_prompt = np.divmod(np.arange(shape[0] * shape[1]), shape[1])
        n = twoway.effective_units(cell_subject, cell_prompt)
        se = twoway.standard_error(clusters, cell_subject, cell_prompt)
        reps = twoway.replicates(clusters, cell_subject, cell_prompt, rng, resamples)
    else:
        n = clusters.n_units
        se = ln.standard_error(clusters)
        reps = bs.replicates(clusters, rng, resamples)
    t_low, t_high = ln.t_interval(bs.estimate(clusters), se, alpha, n)
    if method == "t":
        return t_low, t_high
    b_low, b_high = bs.interval(reps, alpha, n, expand=method != "plain")
    if method == "joined":
        return np.minimum(b_low, t_low), np.maximum(b_high, t_high)
    return b_low, b_high


def coverage(unit: str = "subject", reruns: int = 600, resamples: int = 1000, alpha: float = 0.05,
             expand: bool = True, seed: int = 1, model: Model = Model(), shape=DREAMBENCH_SHAPE,
             shift: float = 0.0, paired: bool = False, method: str | None = None) -> float:
    """The share of simulated reruns whose interval (cluster bootstrap over ``unit``) covers the
    true mean (or, ``paired``, the true difference ``shift`` of two runs). ``method``: see
    :func:`intervals` (default: joined, or expanded / plain by ``expand``)."""
    method = method or "joined"
    if not expand:
        method = "plain"
    rng = np.random.default_rng(seed)
    truth = shift if paired else model.mean + shift
    hits = []
    for values in _blocks(rng, model, shape, reruns, 200, shift, paired):
        low, high = intervals(values, unit, shape, rng, resamples, alpha, method)
        hits.append((low <= truth) & (truth <= high))
    return float(np.concatenate(hits).mean())


def paired_tests(shift: float = 0.0, reruns: int = 600, resamples: int = 1000, metrics: int = 1, seed: int = 3,
                 model: Model = Model(), shape=DREAMBENCH_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(p, delta), each (metrics, reruns): sign-flip p-values and paired differences of two
    independent simulated runs, the first shifted by ``shift``, per metric (drawn independently)."""
    from bench.stats import bootstrap as bs

    rng = np.random.default_rng(seed)
    units, seeds = unit_codes("subject", shape), layout(shape)["seed"]
    p, delta = np.empty((metrics, reruns)), np.empty((metrics, reruns))
    for m in range(metrics):
        done = 0
        for diff in _blocks(rng, model, shape, reruns, 200, shift, paired=True):
            clusters = bs.cluster(units, seeds, diff)
            p[m, done:done + diff.shape[1]] = bs.sign_flip_p(clusters, rng, resamples)
            delta[m, done:done + diff.shape[1]] = bs.estimate(clusters)
            done += diff.shape[1]
    return p, delta


# ---- few clusters, heavy tails and a judge-like metric (issue 30; tests and the calibration table) ----
KINDS = ("normal", "t3", "judge")


def kind_scores(rng: np.random.Generator, shape, reruns: int, kind: str = "normal") -> np.ndarray:
    """Scores (n, reruns) in :func:`layout`'s order from the default model, with subject effects
    normal or t(3)-distributed (heavy tails, same scale), or ``judge``: the normal scores rounded to
    a judge's 0, 0.25, ..., 1 scale."""
    s, p, k, i = shape
    model = Model()
    if kind == "t3":
        subject = rng.standard_t(3, (s, 1, 1, 1, reruns)) * model.sd_subject
    else:
        subject = rng.normal(0, model.sd_subject, (s, 1, 1, 1, reruns))
    values = (model.mean + subject + rng.normal(0, model.sd_prompt, (s, p, 1, 1, reruns))
              + rng.normal(0, model.sd_residual, (s, p, k, i, reruns)))
    if kind == "judge":
        values = np.clip(np.round((values - 0.45) * 8) / 4, 0, 1)
    return values.reshape(s * p * k * i, reruns)


def kind_truth(kind: str) -> float:
    """The true mean of :func:`kind_scores` (the judge-like metric's by a large seeded draw)."""
    if kind != "judge":
        return Model().mean
    return float(kind_scores(np.random.default_rng(99), (4000, 3, 2, 1), 1, "judge").mean())


def kind_coverage(n_subjects: int, kind: str = "normal", method: str = "joined", reruns: int = 500,
                  resamples: int = 300, rest=(3, 2, 1), seed: int = 0) -> float:
    """Coverage of the true mean by 95% intervals over ``n_subjects`` subjects."""
    shape = (n_subjects, *rest)
    rng = np.random.default_rng([seed, n_subjects, KINDS.index(kind)])
    truth = kind_truth(kind)
    hits = []
    for start in range(0, reruns, 250):
        values = kind_scores(rng, shape, min(250, reruns - start), kind)
        low, high = intervals(values, "subject", shape, rng, resamples, 0.05, method)
        hits.append((low <= truth) & (truth <= high))
    return float(np.concatenate(hits).mean())
