"""Per (run, metric) of a score table: the protocol's mean, its cluster-bootstrap interval, and,
against a reference run, the paired difference with its interval, a sign-flip p-value, Holm's
adjusted p-value and the minimum detectable effect. `bench stats`, the leaderboards and
`bench check` all call :func:`analyse`.

Random numbers: every (run, metric) and every comparison draws from its own
``numpy.random.Generator`` seeded with ``(seed, crc32(names...))``, so a number does not change
when other runs or metrics are added to the table.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bench import BenchError
from bench.stats import bootstrap as bs
from bench.stats.table import KEY_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

# The resampling unit and the table columns that identify it.
UNITS = {"subject": ("subject",), "cell": ("subject", "prompt"), "image": KEY_COLUMNS}
DEFAULT_RESAMPLES = 2000
MIN_RESAMPLES = 100


@dataclass(frozen=True)
class Settings:
    resample: str = "subject"
    aggregate: str = "seeds"
    alpha: float = 0.05
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    power: float = 0.8

    def check(self) -> "Settings":
        if self.resample not in UNITS:
            raise BenchError(f"--resample must be one of {', '.join(UNITS)}, not {self.resample!r}")
        if self.aggregate not in bs.AGGREGATES:
            raise BenchError(f"--aggregate must be one of {', '.join(bs.AGGREGATES)}, not {self.aggregate!r}")
        if not (isinstance(self.alpha, float) and 0 < self.alpha < 0.5):
            raise BenchError(f"--alpha must be a number between 0 and 0.5, not {self.alpha}")
        if not 0 < self.power < 1 or math.isnan(self.power):
            raise BenchError(f"--power must lie between 0 and 1, not {self.power}")
        if self.resamples < MIN_RESAMPLES:
            raise BenchError(f"--resamples must be at least {MIN_RESAMPLES} (default {DEFAULT_RESAMPLES}), "
                             f"not {self.resamples}")
        if self.seed < 0:
            raise BenchError(f"--seed must be a non-negative integer, not {self.seed}")
        return self

    def describe(self) -> str:
        return (f"{100 * (1 - self.alpha):g}% intervals from a cluster bootstrap over {self.resample}s "
                f"({self.resamples} resamples, expanded percentile, bootstrap seed {self.seed}); "
                f"paired p-values from a sign-flip test over {self.resample}s, Holm-adjusted")

    def generator(self, *names: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, *(zlib.crc32(str(n).encode()) for n in names)])


class Prepared:
    """A checked score table with integer codes for keys, resampling units and seeds."""

    def __init__(self, table: "pd.DataFrame", settings: Settings):
        import pandas as pd

        self.table = table.reset_index(drop=True)
        self.settings = settings
        self.values = self.table["value"].to_numpy(dtype=np.float64)
        self.key = self.table.groupby(list(KEY_COLUMNS), sort=False).ngroup().to_numpy()
        self.unit = self.table.groupby(list(UNITS[settings.resample]), sort=False).ngroup().to_numpy()
        self.seed = self.table.groupby("seed", sort=False).ngroup().to_numpy()
        self.subject = self.table.groupby("subject", sort=False).ngroup().to_numpy()
        self.groups = {k: np.asarray(v) for k, v in self.table.groupby(["run", "metric"], sort=False).indices.items()}
        self.runs = [str(r) for r in pd.unique(self.table["run"])]

    def clusters(self, positions, values=None) -> bs.Clusters:
        _, units = np.unique(self.unit[positions], return_inverse=True)
        _, seeds = np.unique(self.seed[positions], return_inverse=True)
        vals = self.values[positions] if values is None else values
        return bs.cluster(units, seeds, vals, self.settings.aggregate)

    def key_names(self, positions, limit: int = 5) -> list[str]:
        rows = self.table.iloc[positions[:limit]]
        return [f"{r.subject}/{r.prompt}/s{r.seed}/i{r.image}" for r in rows.itertuples(index=False)]


def _number(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _too_few(what: str, n_units: int, settings: Settings) -> BenchError:
    return BenchError(f"{what} has {n_units} {settings.resample}(s): a cluster bootstrap over "
                      f"{settings.resample}s needs at least 2 (score more subjects, or choose another --resample)")


def describe_run(prep: Prepared, run: str, metric: str, strict: bool = True) -> dict:
    """n, mean, std over seeds and the interval of one (run, metric). With fewer than 2 units a
    BenchError, or with ``strict=False`` no interval (None) and a ``note``."""
    s = prep.settings
    pos = prep.groups[(run, metric)]
    clusters = prep.clusters(pos)
    n_units = clusters.n_units
    seed_means = bs.per_seed_means(clusters)[:, 0]
    row = {"run": run, "metric": metric, "n": int(len(pos)), "unit": s.resample, "units": n_units,
           "subjects": int(len(np.unique(prep.subject[pos]))), "seeds": int(len(seed_means)),
           "mean": float(bs.estimate(clusters)[0]),
           "std": _number(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None,
           "se": None, "ci_low": None, "ci_high": None,
           "alpha": s.alpha, "resamples": s.resamples, "bootstrap_seed": s.seed}
    if n_units < 2:
        error = _too_few(f"run {run!r}, metric {metric!r}", n_units, s)
        if strict:
            raise error
        return {**row, "note": str(error)}
    reps = bs.replicates(clusters, s.generator("mean", run, metric), s.resamples)
    low, high = bs.interval(reps, s.alpha, n_units)
    return {**row, "se": float(bs.standard_error(reps, n_units)[0]), "ci_low": float(low[0]), "ci_high": float(high[0])}


def compare_runs(prep: Prepared, run: str, reference: str, metric: str) -> dict:
    """The paired difference run - reference on the keys both hold (values of one metric)."""
    s = prep.settings
    pos_a, pos_b = prep.groups[(run, metric)], prep.groups[(reference, metric)]
    common, ia, ib = np.intersect1d(prep.key[pos_a], prep.key[pos_b], assume_unique=True, return_indices=True)
    only_a = np.setdiff1d(np.arange(len(pos_a)), ia, assume_unique=True)
    only_b = np.setdiff1d(np.arange(len(pos_b)), ib, assume_unique=True)
    if len(common) == 0:
        raise BenchError(f"runs {run!r} and {reference!r} share no (subject, prompt, seed, image) key for metric "
                         f"{metric!r}: a paired comparison needs common keys")
    paired = pos_a[ia]
    diff = prep.values[paired] - prep.values[pos_b[ib]]
    clusters = prep.clusters(paired, diff)
    n_units = clusters.n_units
    if n_units < 2:
        raise _too_few(f"the keys runs {run!r} and {reference!r} share for metric {metric!r}", n_units, s)
    rng = s.generator("versus", run, reference, metric)
    reps = bs.replicates(clusters, rng, s.resamples)
    low, high = bs.interval(reps, s.alpha, n_units)
    se = float(bs.standard_error(reps, n_units)[0])
    min_p = 2.0 / 2 ** n_units if n_units <= bs.EXACT_SIGN_FLIP_UNITS else 1.0 / (s.resamples + 1)
    return {"versus": reference, "paired": int(len(common)), "paired_units": n_units,
            "delta": float(bs.estimate(clusters)[0]), "delta_se": se,
            "delta_ci_low": float(low[0]), "delta_ci_high": float(high[0]),
            "p": float(bs.sign_flip_p(clusters, rng, s.resamples)[0]),
            "min_p": min_p,
            # no effect is detectable when even the most extreme sign pattern is not significant
            "mde": float(bs.detectable_effect(se, n_units, s.alpha, s.power)) if min_p < s.alpha else None,
            "only_in_run": int(len(only_a)), "only_in_versus": int(len(only_b)),
            "only_in_run_keys": prep.key_names(pos_a[only_a]), "only_in_versus_keys": prep.key_names(pos_b[only_b])}


COMPARISON_FIELDS = ("versus", "paired", "paired_units", "delta", "delta_se", "delta_ci_low", "delta_ci_high", "p",
                     "min_p", "p_holm", "significant", "mde", "only_in_run", "only_in_versus")


def analyse(table: "pd.DataFrame", settings: Settings = Settings(), versus: str | None = None,
            strict: bool = True) -> list[dict]:
    """One dict per (run, metric), runs in table order and metrics sorted. With ``versus`` (a run
    of the table) every other run's rows gain the paired comparison (COMPARISON_FIELDS; None on
    the reference's own rows and where the reference lacks the metric); ``p_holm`` adjusts over
    all comparisons of the table, ``significant`` is ``p_holm < alpha``. ``strict=False`` (the
    reports): a (run, metric) or comparison that cannot be computed (fewer than 2 units, no
    common key) gets None and a ``note`` instead of raising."""
    settings = settings.check()
    prep = Prepared(table, settings)
    if versus is not None and versus not in prep.runs:
        raise BenchError(f"--versus {versus!r} is not a run of the table (runs: {', '.join(prep.runs)})")
    metrics = sorted({m for _, m in prep.groups})
    rows = []
    for run in prep.runs:
        for metric in metrics:
            if (run, metric) not in prep.groups:
                continue
            row = describe_run(prep, run, metric, strict)
            if versus is not None:
                row.update(dict.fromkeys(COMPARISON_FIELDS))
                if run != versus and (versus, metric) in prep.groups:
                    try:
                        row.update(compare_runs(prep, run, versus, metric))
                    except BenchError as exc:
                        if strict:
                            raise
                        row["note"] = str(exc)
            rows.append(row)
    if versus is not None:
        compared = [r for r in rows if r["p"] is not None]
        for row, p in zip(compared, bs.holm([r["p"] for r in compared])):
            row["p_holm"] = float(p)
            row["significant"] = bool(p < settings.alpha)
    return rows
