"""The two-way cluster bootstrap for crossed designs (``--resample subject+prompt``).

In DreamBench every subject is asked the same prompts, so a prompt that is hard for one subject
tends to be hard for all: a *crossed* prompt effect, which the one-way bootstrap over subjects
treats as fixed. The product (pigeonhole) bootstrap of Owen (2007, "The pigeonhole bootstrap",
Ann. Appl. Stat. 1(2)) resamples subjects and prompts independently, each with replacement, and
weights every (subject, prompt) cell by the product of its subject's and its prompt's counts. Its
variance is slightly conservative (it counts the cell-level variance twice over). The closed
form beside it adds the subjects' and the prompts' linearised variances.
"""

from __future__ import annotations

import numpy as np

from bench.stats import bootstrap as bs
from bench.stats import linear as ln


def _draw_counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def replicates(clusters: bs.Clusters, cell_subject: np.ndarray, cell_prompt: np.ndarray,
               rng: np.random.Generator, resamples: int) -> np.ndarray:
    """The statistic on ``resamples`` product-bootstrap resamples (rows with no drawn cell left
    out): (<= resamples, R). ``clusters`` has one unit per (subject, prompt) cell; ``cell_subject``
    and ``cell_prompt`` are each cell's codes 0..S-1 and 0..P-1."""
    n_subjects, n_prompts = int(cell_subject.max()) + 1, int(cell_prompt.max()) + 1
    block = max(1, min(resamples, bs._CHUNK_CELLS // max(clusters.n_units + n_subjects + n_prompts, 1)))
    out, done = [], 0
    while done < resamples:
        b = min(block, resamples - done)
        weights = _draw_counts(rng, b, n_subjects)[:, cell_subject] * _draw_counts(rng, b, n_prompts)[:, cell_prompt]
        seed_sums, seed_counts = bs._weighted_seed_sums(weights, clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            stat = bs.statistic(seed_sums, seed_counts, clusters.aggregate)
        out.append(stat[np.isfinite(stat).all(axis=1)])
        done += b
    return np.concatenate(out, axis=0)


def standard_error(clusters: bs.Clusters, cell_subject: np.ndarray, cell_prompt: np.ndarray) -> np.ndarray:
    """sqrt(S/(S-1) sum_s Z_s^2 + P/(P-1) sum_p Z_p^2), Z the cells' linearised influences summed
    per subject and per prompt: (R,)."""
    z = ln.influence(clusters)
    total = np.zeros(z.shape[1])
    for codes in (cell_subject, cell_prompt):
        n = int(codes.max()) + 1
        if n < 2:
            continue
        per = np.stack([np.bincount(codes, z[:, r], n) for r in range(z.shape[1])], axis=1)
        total += n / (n - 1) * (per ** 2).sum(axis=0)
    return np.sqrt(total)


def effective_units(cell_subject: np.ndarray, cell_prompt: np.ndarray) -> int:
    """The degrees of freedom + 1 of the two-way t interval: the smaller of the subjects and the
    prompts (a single prompt: the subjects)."""
    n_subjects, n_prompts = len(np.unique(cell_subject)), len(np.unique(cell_prompt))
    return min(n_subjects, n_prompts) if n_prompts >= 2 else n_subjects
