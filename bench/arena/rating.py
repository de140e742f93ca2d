"""Bradley–Terry ratings from pairwise verdicts, with cluster-bootstrap intervals over subjects.

A game is one verdict: run i's image against run j's for one (subject, prompt, seed, image) and one
question (CP or PF), in one order. A win counts 1 for the winner; a tie counts 1/2 to each side (the
usual Bradley–Terry treatment of ties as half wins). A failed verdict is no game: never imputed.

The model: P(i beats j) = 1 / (1 + exp(-(θ_i - θ_j))). θ is fitted by maximum likelihood with
``scipy.optimize.minimize`` (L-BFGS-B, analytic gradient) on the win matrix plus ``prior`` virtual
ties between every two runs (default 0.5: it keeps θ finite when one run wins every game and pulls
nothing else noticeably; 0 gives the plain maximum likelihood, which for two runs with w wins and l
losses is θ_1 - θ_2 = ln(w / l)). Ratings are reported in Elo points, 1000 + 400·log10(e)·θ with θ
centred at mean 0, so 400 points are 10:1 odds.

Intervals: percentile intervals of the refitted ratings over ``resamples`` cluster-bootstrap
replicates that draw subjects with replacement (all games of a drawn subject come along), seeded.
"""

from __future__ import annotations

import math

import numpy as np

ELO_SCALE = 400.0 / math.log(10.0)
ELO_CENTRE = 1000.0
DEFAULT_PRIOR = 0.5


def fit_many(wins: np.ndarray, prior: float = DEFAULT_PRIOR, start: np.ndarray | None = None) -> np.ndarray:
    """θ (each row mean 0) of independent Bradley–Terry problems ``wins[b, i, j]``, fitted together in
    one ``scipy.optimize.minimize`` call: their likelihoods are independent, so the joint optimum is
    every problem's own (the bootstrap's replicates cost one optimisation, not one each)."""
    from scipy.optimize import minimize

    wins = np.asarray(wins, dtype=float)
    problems, n = wins.shape[0], wins.shape[1]
    if n < 2:
        return np.zeros((problems, n))
    w = wins + prior * (1.0 - np.eye(n)) / 2.0          # a virtual tie: half a win each way

    def objective(flat: np.ndarray):
        theta = flat.reshape(problems, n)
        diff = theta[:, :, None] - theta[:, None, :]
        loss = float((w * np.logaddexp(0.0, -diff)).sum())      # -log sigmoid(d), computed stably
        g = w * (0.5 - 0.5 * np.tanh(diff / 2.0))                # w * (1 - sigmoid(d))
        grad = -(g.sum(axis=2) - g.sum(axis=1))
        centre = theta.sum(axis=1, keepdims=True)                # pins each problem's free constant: mean 0
        return loss + 0.5 * float((centre ** 2).sum()), (grad + centre).ravel()
    x0 = np.zeros(problems * n) if start is None else np.broadcast_to(start, (problems, n)).ravel().copy()
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-9, "ftol": 1e-15, "maxiter": 5000})
    theta = result.x.reshape(problems, n)
    return theta - theta.mean(axis=1, keepdims=True)


def fit(wins: np.ndarray, prior: float = DEFAULT_PRIOR, start: np.ndarray | None = None) -> np.ndarray:
    """θ (mean 0) maximising the Bradley–Terry likelihood of ``wins[i, j]`` (i's wins over j, ties as
    halves), with ``prior`` virtual ties added between every two runs."""
    return fit_many(np.asarray(wins, dtype=float)[None], prior, start)[0]


def elo(theta: np.ndarray) -> np.ndarray:
    return ELO_CENTRE + ELO_SCALE * np.asarray(theta, dtype=float)


def bootstrap(per_subject: np.ndarray, resamples: int, seed: int, prior: float = DEFAULT_PRIOR,
              level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) Elo ratings per run: percentile intervals over cluster-bootstrap replicates of the
    subjects. ``per_subject``: array (subjects, runs, runs) of win matrices."""
    rng = np.random.default_rng(seed)
    subjects, n = per_subject.shape[0], per_subject.shape[1]
    start = fit(per_subject.sum(axis=0), prior)          # each replicate starts from the point estimate
    counts = np.stack([np.bincount(rng.integers(0, subjects, subjects), minlength=subjects)
                       for _ in range(resamples)]).astype(float)
    draws = np.empty((resamples, n))
    for first in range(0, resamples, 250):               # 250 replicates per optimisation
        chunk = np.tensordot(counts[first:first + 250], per_subject, axes=1)
        draws[first:first + 250] = elo(fit_many(chunk, prior, start))
    tail = (1.0 - level) / 2.0
    return np.quantile(draws, tail, axis=0), np.quantile(draws, 1.0 - tail, axis=0)


def win_matrix(games, n: int) -> np.ndarray:
    """``games``: iterable of (i, j, outcome) with outcome 1 (i won), 0 (j won) or 0.5 (tie)."""
    out = np.zeros((n, n))
    for i, j, outcome in games:
        out[i, j] += outcome
        out[j, i] += 1.0 - outcome
    return out


def position_bias(verdict_pairs) -> tuple[float | None, int]:
    """(share, pairs counted): of the pairs asked in both orders whose two verdicts each pick an image
    (no tie, no failure), the share whose verdicts pick the same slot (A then A, or B then B) rather
    than the same image. 0 for a judge that ignores position, 1 for one that always picks one slot."""
    counted = same = 0
    for first, second in verdict_pairs:
        if first in ("A", "B") and second in ("A", "B"):
            counted += 1
            same += first == second
    return (same / counted if counted else None), counted
