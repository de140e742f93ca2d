"""Per (run, metric) of a score table: the protocol's mean, its interval, and, against a
reference run, the paired difference with its interval, a p-value, Holm's adjusted p-value and
the minimum detectable effect. `bench stats`, the leaderboards and `bench check` all call
:func:`analyse`.

Intervals (docs/statistics.md): the union of the expanded-percentile cluster bootstrap and the t
interval on the linearised standard error with ``units - 1`` degrees of freedom. Below
SMALL_SAMPLE_UNITS units the bootstrap part alone covers less than 93% (75% at 3 subjects); the
t part keeps the level there, and above it the two nearly coincide. Above
bench.limits.MAX_RESAMPLED_UNITS units only the closed forms are computed (linear cost).

Random numbers: every (run, metric) and every comparison draws from its own
``numpy.random.Generator`` seeded with ``(seed, crc32(names...))``, so a number does not change
when other runs or metrics are added to the table.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bench import BenchError
from bench.limits import MAX_RESAMPLED_UNITS, MAX_RESAMPLES, MAX_TABLE_ROWS, MAX_TABLE_RUNS, MAX_TWO_WAY_WORK
from bench.stats import bootstrap as bs
from bench.stats import linear as ln
from bench.stats import twoway
from bench.stats.table import KEY_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

TWO_WAY = "subject+prompt"
# The resampling unit and the table columns that identify it (two-way: the cells it weights).
UNITS = {"subject": ("subject",), "cell": ("subject", "prompt"), "image": KEY_COLUMNS, TWO_WAY: ("subject", "prompt")}
DEFAULT_RESAMPLES = 2000
MIN_RESAMPLES = 100
#: Below this many units the expanded percentile interval alone covers under 93% (measured:
#: benchmarks/stats_calibration.py); the t part of the interval is what holds the level there.
SMALL_SAMPLE_UNITS = 8
#: A judge's repeated passes (``cp/<judge>/r<k>``): shown for their spread, never in the Holm family.
REPEAT_METRIC = re.compile(r"^[^/]+/[^/]+/r\d+$")
#: The rounding error of a mean (sqrt(n) * eps * mean |value|) may be at most this share of
#: max(|mean|, se); beyond it the values cancel and the digits printed would be noise.
PRECISION_SHARE = 1e-6


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
        if not MIN_RESAMPLES <= self.resamples <= MAX_RESAMPLES:
            raise BenchError(f"--resamples must lie between {MIN_RESAMPLES} and {MAX_RESAMPLES} "
                             f"(bench.limits.MAX_RESAMPLES; default {DEFAULT_RESAMPLES}), not {self.resamples}")
        if self.seed < 0:
            raise BenchError(f"--seed must be a non-negative integer, not {self.seed}")
        return self

    def describe(self) -> str:
        test = ("p-values from a t test on the two-way standard error" if self.resample == TWO_WAY else
                f"paired p-values from a sign-flip test over {self.resample}s")
        return (f"{100 * (1 - self.alpha):g}% intervals from a cluster bootstrap over {self.resample}s "
                f"({self.resamples} resamples, expanded percentile joined with the t interval, bootstrap seed "
                f"{self.seed}); {test}, Holm-adjusted")

    def generator(self, *names: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, *(zlib.crc32(str(n).encode()) for n in names)])


@dataclass(frozen=True)
class Design:
    """The values of one group summed per unit (and, two-way, each cell's subject and prompt)."""
    clusters: bs.Clusters
    cell_subject: np.ndarray | None = None
    cell_prompt: np.ndarray | None = None

    @property
    def units(self) -> int:
        if self.cell_subject is None:
            return self.clusters.n_units
        return twoway.effective_units(self.cell_subject, self.cell_prompt)


class Prepared:
    """A checked score table with integer codes for keys, resampling units and seeds."""

    def __init__(self, table: "pd.DataFrame", settings: Settings):
        import pandas as pd

        if len(table) > MAX_TABLE_ROWS:
            raise BenchError(f"the score table has {len(table)} rows, more than the limit of {MAX_TABLE_ROWS} "
                             "(bench.limits.MAX_TABLE_ROWS): split it")
        self.table = table.reset_index(drop=True)
        self.settings = settings
        self.values = self.table["value"].to_numpy(dtype=np.float64)
        self.key = self.table.groupby(list(KEY_COLUMNS), sort=False).ngroup().to_numpy()
        self.unit = self.table.groupby(list(UNITS[settings.resample]), sort=False).ngroup().to_numpy()
        self.seed = self.table.groupby("seed", sort=False).ngroup().to_numpy()
        self.subject = self.table.groupby("subject", sort=False).ngroup().to_numpy()
        self.prompt = self.table.groupby("prompt", sort=False).ngroup().to_numpy()
        self.groups = {k: np.asarray(v) for k, v in self.table.groupby(["run", "metric"], sort=False).indices.items()}
        self.runs = [str(r) for r in pd.unique(self.table["run"])]
        if len(self.runs) > MAX_TABLE_RUNS:
            raise BenchError(f"the score table has {len(self.runs)} runs, more than the limit of {MAX_TABLE_RUNS} "
                             "(bench.limits.MAX_TABLE_RUNS): split it")

    def design(self, positions, values=None) -> Design:
        _, units = np.unique(self.unit[positions], return_inverse=True)
        _, seeds = np.unique(self.seed[positions], return_inverse=True)
        vals = self.values[positions] if values is None else values
        clusters = bs.cluster(units, seeds, vals, self.settings.aggregate)
        if self.settings.resample != TWO_WAY:
            return Design(clusters)
        first = np.zeros(clusters.n_units, dtype=np.int64)
        first[units] = np.arange(len(units))                    # a row of each cell
        subj = np.unique(self.subject[positions][first], return_inverse=True)[1]
        prom = np.unique(self.prompt[positions][first], return_inverse=True)[1]
        if MAX_TWO_WAY_WORK < clusters.n_units * self.settings.resamples and clusters.n_units <= MAX_RESAMPLED_UNITS:
            raise BenchError(f"the two-way bootstrap over {clusters.n_units} (subject, prompt) cells x "
                             f"{self.settings.resamples} resamples exceeds bench.limits.MAX_TWO_WAY_WORK "
                             f"({MAX_TWO_WAY_WORK:g}): lower --resamples or use --resample subject")
        return Design(clusters, subj, prom)

    def clusters(self, positions, values=None) -> bs.Clusters:
        return self.design(positions, values).clusters

    def key_names(self, positions, limit: int = 5) -> list[str]:
        rows = self.table.iloc[positions[:limit]]
        return [f"{r.subject}/{r.prompt}/s{r.seed}/i{r.image}" for r in rows.itertuples(index=False)]


def _number(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _too_few(what: str, n_units: int, settings: Settings) -> BenchError:
    return BenchError(f"{what} has {n_units} {settings.resample}(s): an interval over "
                      f"{settings.resample}s needs at least 2 (score more subjects, or choose another --resample)")


def interval(design: Design, settings: Settings, rng: np.random.Generator) -> dict:
    """estimate, se, (low, high) and units of one design: the union of the expanded percentile
    bootstrap (skipped above MAX_RESAMPLED_UNITS units) and the t interval on the linearised SE."""
    c, n = design.clusters, design.units
    est = float(bs.estimate(c)[0])
    if design.cell_subject is None:
        lin_se = float(ln.standard_error(c)[0])
    else:
        lin_se = float(twoway.standard_error(c, design.cell_subject, design.cell_prompt)[0])
    low, high = (float(x[0]) for x in ln.t_interval(np.array([est]), np.array([lin_se]), settings.alpha, n))
    se = lin_se
    if c.n_units <= MAX_RESAMPLED_UNITS:
        if design.cell_subject is None:
            reps = bs.replicates(c, rng, settings.resamples)
        else:
            reps = twoway.replicates(c, design.cell_subject, design.cell_prompt, rng, settings.resamples)
        if len(reps) >= 2:
            b_low, b_high = bs.interval(reps, settings.alpha, n)
            low, high = min(low, float(b_low[0])), max(high, float(b_high[0]))
            se = max(se, float(bs.standard_error(reps, n)[0]))
    return {"estimate": est, "se": se, "low": low, "high": high, "units": n,
            "method": "t" if c.n_units > MAX_RESAMPLED_UNITS else "bootstrap+t"}


def check_precision(values: np.ndarray, estimate: float, se: float, what: str) -> None:
    """Refuse a mean whose rounding error could exceed PRECISION_SHARE of max(|mean|, se): values
    so large that they cancel (+-1e17 alternating around a 0.7 difference) leave only noise."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return
    error = math.sqrt(len(values)) * np.finfo(float).eps * float(np.mean(np.abs(values)))
    if error > max(PRECISION_SHARE * max(abs(estimate), se), 1e-12):
        raise BenchError(f"{what}: values up to {float(np.max(np.abs(values))):.3g} cancel in its mean (result "
                         f"{estimate:.4g}, rounding error up to {error:.3g}): float arithmetic cannot resolve it; "
                         "rescale or centre the scores")


def check_pair_precision(a: np.ndarray, b: np.ndarray, scale: float, what: str) -> None:
    """Refuse paired differences finer than the values can hold: a float near 1e17 is a multiple
    of 16, so 1e17 + 0.75 minus 1e17 is 0 and a difference printed as +0.0000 would be noise. The
    inputs' mean resolution (eps * max(|a|, |b|)) may be at most PRECISION_SHARE of the scale of
    the differences (max(|delta|, se)), or 1e-6 in the metric's units (bench check's exact
    tolerance), whichever is larger."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not len(a):
        return
    resolution = float(np.finfo(float).eps * np.mean(np.maximum(np.abs(a), np.abs(b))))
    if resolution > max(PRECISION_SHARE * scale, 1e-6):
        raise BenchError(f"{what}: values up to {float(max(np.max(np.abs(a)), np.max(np.abs(b)))):.3g} hold their "
                         f"differences only to about {resolution:.3g} (float precision), more than the differences "
                         f"themselves resolve (scale {scale:.3g}): rescale or centre the scores")


def no_spread(values: np.ndarray, se: float) -> bool:
    """Whether the units' means are all equal (the standard error is within the rounding error of
    the values): a coarse metric at its ceiling (a judge's 1.0 everywhere) with few subjects.
    Such an interval has zero width and covers the true mean only when it sits on the bound
    (50% of the time with 2 subjects near a judge's ceiling, docs/statistics.md)."""
    values = np.asarray(values, dtype=np.float64)
    return se <= math.sqrt(len(values)) * np.finfo(float).eps * float(np.mean(np.abs(values)))


def describe_run(prep: Prepared, run: str, metric: str, strict: bool = True) -> dict:
    """n, mean, std and the interval of one (run, metric). With fewer than 2 units a
    BenchError, or with ``strict=False`` no interval (None) and a ``note``. std: over the seeds'
    means (aggregate "seeds"), over all values (aggregate "images", FastComposer's protocol)."""
    s = prep.settings
    pos = prep.groups[(run, metric)]
    design = prep.design(pos)
    clusters = design.clusters
    n_units = design.units
    seed_means = bs.per_seed_means(clusters)[:, 0]
    if s.aggregate == "images":
        spread = _number(np.std(prep.values[pos], ddof=1)) if len(pos) > 1 else None
    else:
        spread = _number(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None
    row = {"run": run, "metric": metric, "n": int(len(pos)), "unit": s.resample, "units": n_units,
           "subjects": int(len(np.unique(prep.subject[pos]))), "seeds": int(len(seed_means)),
           "mean": float(bs.estimate(clusters)[0]), "std": spread, "std_over": s.aggregate,
           "se": None, "ci_low": None, "ci_high": None,
           "alpha": s.alpha, "resamples": s.resamples, "bootstrap_seed": s.seed}
    if n_units < 2:
        error = _too_few(f"run {run!r}, metric {metric!r}", n_units, s)
        if strict:
            raise error
        return {**row, "note": str(error)}
    iv = interval(design, s, s.generator("mean", run, metric))
    try:
        check_precision(prep.values[pos], iv["estimate"], iv["se"], f"run {run!r}, metric {metric!r}")
    except BenchError as exc:
        if strict:
            raise
        return {**row, "mean": None, "note": str(exc)}
    if no_spread(prep.values[pos], iv["se"]):
        return {**row, "se": 0.0, "note": f"run {run!r}, metric {metric!r}: its {n_units} units ({s.resample}) all "
                "have the same mean (no spread between them, e.g. a judge's top score everywhere), so no interval can "
                "be estimated: a zero-width interval would cover the true mean far less often than it says"}
    return {**row, "se": iv["se"], "ci_low": iv["low"], "ci_high": iv["high"]}


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
    design = prep.design(paired, diff)
    n_units = design.units
    what = f"the keys runs {run!r} and {reference!r} share for metric {metric!r}"
    if n_units < 2:
        raise _too_few(what, n_units, s)
    rng = s.generator("versus", run, reference, metric)
    iv = interval(design, s, rng)
    check_precision(diff, iv["estimate"], iv["se"], f"the paired differences of {run!r} and {reference!r}, {metric!r}")
    check_pair_precision(prep.values[paired], prep.values[pos_b[ib]], max(abs(iv["estimate"]), iv["se"]),
                         f"the paired differences of {run!r} and {reference!r}, {metric!r}")
    if s.resample == TWO_WAY:
        p, min_p = float(ln.t_p_value(iv["estimate"], iv["se"], n_units)[0]), 0.0
    elif design.clusters.n_units > MAX_RESAMPLED_UNITS:
        p = float(ln.sign_flip_p_normal(bs.unit_contributions(design.clusters))[0])
        min_p = ln.rademacher_tail_bound(n_units)
    else:
        p = float(bs.sign_flip_p(design.clusters, rng, s.resamples)[0])
        min_p = ln.rademacher_tail_bound(n_units) if n_units <= bs.EXACT_SIGN_FLIP_UNITS else 1.0 / (s.resamples + 1)
    means = [float(bs.estimate(prep.design(pos, None).clusters)[0]) for pos in (paired, pos_b[ib])]
    flat = {}
    if no_spread(diff, iv["se"]):          # every unit's difference the same (all 0 at a judge's ceiling)
        flat = {"delta_ci_low": None, "delta_ci_high": None, "delta_note": (
            f"{run!r} - {reference!r}, metric {metric!r}: the paired differences of its {n_units} units "
            f"({s.resample}) all have the same mean, so the change has no interval (a zero-width one would "
            "cover the true change far less often than it says)")}
    return {"versus": reference, "paired": int(len(common)), "paired_units": n_units,
            "delta": iv["estimate"], "delta_se": iv["se"], "delta_ci_low": iv["low"], "delta_ci_high": iv["high"],
            "p": p, "min_p": min_p, "monte_carlo": bool(s.resample != TWO_WAY and bs.EXACT_SIGN_FLIP_UNITS < n_units
                                                          <= MAX_RESAMPLED_UNITS),
            "paired_mean": means[0], "paired_versus_mean": means[1],
            "only_in_run": int(len(only_a)), "only_in_versus": int(len(only_b)),
            "only_in_run_keys": prep.key_names(pos_a[only_a]), "only_in_versus_keys": prep.key_names(pos_b[only_b]),
            **flat}


COMPARISON_FIELDS = ("versus", "paired", "paired_units", "delta", "delta_se", "delta_ci_low", "delta_ci_high", "p",
                     "min_p", "p_holm", "min_p_holm", "family", "significant", "mde", "mde_alpha", "paired_mean",
                     "paired_versus_mean", "only_in_run", "only_in_versus")


def mde(se: float, n_units: int, level: float, power: float, sign_flip: bool = True) -> float:
    """The minimum detectable effect of a two-sided test at ``level`` with ``power``, in units of
    ``se`` (the estimate's standard error over ``n_units`` units, df = units - 1):
    ``(crit + t_df(power) * sqrt(1 + crit^2 / (2 df))) * se``, the second factor the noncentral
    t's extra spread. ``crit`` is t_df(1 - level/2), and for the sign-flip test at least
    ``z * sqrt((U - 1) / (U - z^2))``: its null spread, sqrt(sum of the units' squared shares),
    grows with the shift itself, so it needs more standard errors than a t test, the more the
    stricter the level."""
    from bench.stats.distributions import normal_quantile, t_quantile

    df = max(n_units - 1, 1)
    crit = t_quantile(1 - level / 2, df)
    if sign_flip:
        z = normal_quantile(1 - level / 2)
        if n_units <= z * z:
            return math.inf
        crit = max(crit, z * math.sqrt((n_units - 1) / (n_units - z * z)))
    return float((crit + t_quantile(power, df) * math.sqrt(1 + crit ** 2 / (2 * df))) * se)


def finish_family(rows: list[dict], alpha: float, power: float) -> None:
    """Holm over the comparisons in ``rows`` (judge repeats ``x/judge/r<k>`` left out: they get
    neither p_holm nor a mark), the smallest adjusted p the family can reach (``min_p_holm``), and
    the MDE at the level Holm's first step uses (alpha / family size: the worst case for one
    changed metric among unchanged ones)."""
    family = [r for r in rows if r.get("p") is not None and not REPEAT_METRIC.match(str(r["metric"]))]
    m = len(family)
    if not m:
        return
    floor = min(1.0, m * min(r["min_p"] for r in family))
    for row, p in zip(family, bs.holm([r["p"] for r in family])):
        level = alpha / m
        row.update(p_holm=float(p), significant=bool(p < alpha), min_p_holm=floor, family=m, mde_alpha=level,
                   mde=_mde(row, level, power) if m * row["min_p"] < alpha else None)
    for row in rows:
        if row.get("p") is not None and row.get("family") is None:            # a judge repeat
            row.update(significant=False, family=0, mde_alpha=alpha,
                       mde=_mde(row, alpha, power) if row["min_p"] < alpha else None)


def _mde(row: dict, level: float, power: float) -> float | None:
    if row.get("delta_ci_low") is None:         # no spread: an MDE of 0 would promise to see anything
        return None
    value = mde(row["delta_se"], row["paired_units"], level, power, sign_flip=row["unit"] != TWO_WAY)
    return value if math.isfinite(value) else None


def analyse(table: "pd.DataFrame", settings: Settings = Settings(), versus: str | None = None,
            strict: bool = True) -> list[dict]:
    """One dict per (run, metric), runs in table order and metrics sorted. With ``versus`` (a run
    of the table) every other run's rows gain the paired comparison (COMPARISON_FIELDS; None on
    the reference's own rows and where the reference lacks the metric); ``p_holm`` adjusts over
    all comparisons of the table except judge repeats, ``significant`` is ``p_holm < alpha``.
    ``strict=False`` (the reports): a (run, metric) or comparison that cannot be computed (fewer
    than 2 units, no common key, values that cancel) gets None and a ``note`` instead of raising."""
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
                        if "delta_note" in row:
                            row["note"] = "; ".join(filter(None, (row.get("note"), row.pop("delta_note"))))
                    except BenchError as exc:
                        if strict:
                            raise
                        row["note"] = str(exc)
            rows.append(row)
    if versus is not None:
        finish_family(rows, settings.alpha, settings.power)
    return rows


def family_note(rows: list[dict], alpha: float) -> str | None:
    """A line when no comparison of the family can be significant (its smallest reachable
    Holm-adjusted p is >= alpha), naming why and what would help; else None."""
    family = [r for r in rows if r.get("family")]
    if not family or family[0]["min_p_holm"] < alpha:
        return None
    m, floor = int(family[0]["family"]), float(family[0]["min_p_holm"])
    smallest = min(family, key=lambda r: r["min_p"])
    text = (f"no comparison can be significant: with {m} comparison(s) in the Holm family the smallest reachable "
            f"adjusted p is {floor:.3g} >= alpha {alpha:g}")
    if smallest.get("monte_carlo"):
        need = math.ceil(m / alpha)
        text += (f" (Monte-Carlo sign-flip p-values with {int(smallest['resamples'])} resamples cannot go below "
                 f"1/(resamples+1)): raise --resamples to at least {need}")
    else:
        units = int(smallest["paired_units"])
        text += f" ({units} units: no sign pattern is rarer than 2/2^{units}): score more subjects"
    return text
