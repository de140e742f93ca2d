"""From verdicts to the arena's result: games, Bradley–Terry ratings with intervals, the win matrix
and the position-bias rate (the fields of ``bench arena --json``, docs/judge.md)."""

from __future__ import annotations

import numpy as np

from bench.arena.rating import DEFAULT_PRIOR, bootstrap, elo, fit, position_bias, win_matrix


def outcome(q, verdict: str) -> float:
    """The game's result for run q.i against run q.j: 1, 0 or 0.5 (tie)."""
    if verdict == "tie":
        return 0.5
    i_shown_as_a = q.order == 0
    return 1.0 if (verdict == "A") == i_shown_as_a else 0.0


def ratings(games, subjects: list[str], n: int, resamples: int, seed: int, prior: float) -> list[dict]:
    """Per run its Elo rating and interval from games [(subject, i, j, outcome)]."""
    index = {s: k for k, s in enumerate(subjects)}
    per_subject = np.zeros((max(len(subjects), 1), n, n))
    for subject, i, j, result in games:
        per_subject[index[subject], i, j] += result
        per_subject[index[subject], j, i] += 1.0 - result
    point = elo(fit(per_subject.sum(axis=0), prior))
    if games and resamples:
        low, high = bootstrap(per_subject, resamples, seed, prior)
    else:
        low = high = np.full(n, np.nan)
    played = per_subject.sum(axis=(0, 2)) + per_subject.sum(axis=(0, 1))      # games of each run

    def number(x, k: int) -> float | None:            # a run without games has no rating
        return float(x) if np.isfinite(x) and played[k] > 0 else None
    return [{"rating": number(point[k], k), "rating_low": number(low[k], k), "rating_high": number(high[k], k)}
            for k in range(n)]


def summarise(entrants, verdicts: dict, kinds: tuple[str, ...], resamples: int, seed: int,
              prior: float = DEFAULT_PRIOR) -> dict:
    n = len(entrants)
    subject_of = {q: entrants[q.i].items[q.key][0].subject for q in verdicts}
    subjects = sorted(set(subject_of.values()))
    games = {kind: [] for kind in kinds}
    failures = {kind: 0 for kind in kinds}
    both_orders: dict[tuple, dict[int, str | None]] = {}
    for q, (verdict, _why) in verdicts.items():
        both_orders.setdefault((q.i, q.j, q.key, q.kind), {})[q.order] = verdict
        if verdict is None:
            failures[q.kind] += 1
        else:
            games[q.kind].append((subject_of[q], q.i, q.j, outcome(q, verdict)))
    every = [g for kind in kinds for g in games[kind]]
    overall = ratings(every, subjects, n, resamples, seed, prior)
    by_kind = {kind: ratings(games[kind], subjects, n, resamples, seed, prior) for kind in kinds}
    wins = win_matrix(((i, j, r) for _, i, j, r in every), n)
    played = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(played > 0, wins / np.where(played > 0, played, 1), np.nan)
    bias_by_kind = {}
    for kind in kinds:
        share, counted = position_bias((v.get(0), v.get(1)) for (_, _, _, k), v in both_orders.items() if k == kind)
        bias_by_kind[kind] = {"position_bias": share, "pairs": counted}
    share, counted = position_bias((v.get(0), v.get(1)) for v in both_orders.values())
    records = []
    for k, entrant in enumerate(entrants):
        mine = [(i, j, r) for _, i, j, r in every if k in (i, j)]
        won = sum(r if i == k else 1.0 - r for i, j, r in mine if r != 0.5)
        tied = sum(1 for *_, r in mine if r == 0.5)
        records.append({"run": entrant.label, "run_dir": str(entrant.run_dir), **overall[k],
                        "games": len(mine), "wins": int(won), "ties": tied, "losses": len(mine) - int(won) - tied,
                        "by_kind": {kind: by_kind[kind][k] for kind in kinds}})
    return {
        "runs": records,
        "position_bias": share, "position_bias_pairs": counted, "position_bias_by_kind": bias_by_kind,
        "win_matrix": {"runs": [e.label for e in entrants], "wins": wins.tolist(),
                       "win_rate": [[None if np.isnan(x) else float(x) for x in row] for row in rate]},
        "kinds": list(kinds), "questions": len(verdicts), "games": len(every),
        "failures": failures, "subjects": len(subjects), "unit": "subject", "resamples": resamples, "seed": seed,
        "interval": 0.95, "prior_ties": prior,
        "rating_scale": "Elo points: 1000 + 400 log10(e) theta, theta the Bradley-Terry strength (mean 0)",
    }
