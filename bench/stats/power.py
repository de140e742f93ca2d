"""`bench power`: how large an effect a design with S subjects and K seeds can detect, from the
variance components of a scored run (or of the paired differences between two runs).

Model (nested, what the cluster bootstrap assumes): a score is
``mean + subject effect + prompt-within-subject effect + residual`` (the residual holds seed and
image noise), with variances ``var_subject``, ``var_prompt`` and ``var_residual``. They are
estimated by the method of moments (one-way ANOVA at each level, negative estimates set to 0).
The variance of the protocol's mean with S subjects, P prompts per subject, K seeds and I images
per prompt and seed is then

    var_subject / S + var_prompt / (S * P) + var_residual / (S * P * K * I)

and the minimum detectable effect (two-sided test at alpha / --comparisons, given power) is
bench.stats.analysis.mde of sqrt(that variance): the t and sign-flip critical values with the
noncentral t's spread. With one value per (subject, prompt) the residual cannot be estimated:
it is assumed (all of the within-subject spread) or given (--seed-sd), and the output says so.

    python -m bench power runs/dreambench/ezigen                   # one run: its mean vs a fixed value
    python -m bench power runs/dreambench/ezigen runs/dreambench/sd --versus sd   # paired difference
    python -m bench power scores.csv --versus sd --subjects 10,30,100 --seeds 1,4,6
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import BenchError


@dataclass(frozen=True)
class Components:
    var_subject: float
    var_prompt: float
    var_residual: float
    prompts: float          # prompts per subject (mean)
    images: float           # images per prompt and seed (mean)
    seeds: float = 1.0      # seeds per prompt in the data (mean)
    residual: str = "estimated"     # estimated | images (image noise stands in) | assumed | given

    def variance(self, subjects: int, seeds: int, prompts: float | None = None) -> float:
        p = self.prompts if prompts is None else prompts
        return (self.var_subject / subjects + self.var_prompt / (subjects * p)
                + self.var_residual / (subjects * p * seeds * self.images))

    def provenance(self) -> str:
        """Which components were estimated from the data and which assumed (for the output)."""
        if self.residual == "assumed":
            return ("estimated: subject, and prompt + seed noise together (one value per prompt: they cannot be "
                    "told apart); assumed: all of it seed noise, the most that more seeds can buy (give --seed-sd "
                    "to split it)")
        if self.residual == "given":
            return "estimated: subject, prompt (after the given seed sd); given: seed noise (--seed-sd)"
        if self.residual == "images":
            return ("estimated: subject, prompt, residual from the images of one prompt and seed (one seed: image "
                    "noise stands in for seed noise)")
        return "estimated: subject, prompt, residual (seeds and images)"


def components(subject, cell, seed, values, seed_sd: float | None = None) -> Components:
    """Method-of-moments variance components of ``values`` nested as subject > cell > residual
    (``subject``, ``cell``, ``seed``: integer codes per value). Seeds are counted within each
    cell (labels may differ per subject). With one value per cell the residual cannot be
    estimated: it is ``seed_sd ** 2`` when given, else assumed to be all of the within-subject
    variance (and the prompt variance 0)."""
    values = np.asarray(values, dtype=np.float64)
    _, cell = np.unique(cell, return_inverse=True)
    n_cells = int(cell.max()) + 1
    size = np.bincount(cell, minlength=n_cells).astype(np.float64)
    seed_code = np.unique(seed, return_inverse=True)[1].astype(np.int64)
    pairs = np.unique(cell.astype(np.int64) * (int(seed_code.max()) + 1) + seed_code)
    seeds_per_cell = np.bincount(pairs // (int(seed_code.max()) + 1), minlength=n_cells).astype(np.float64)
    cell_mean = np.bincount(cell, values, n_cells) / size
    dof = float((size - 1).sum())
    var_res = float(((values - cell_mean[cell]) ** 2).sum() / dof) if dof > 0 else 0.0
    cell_subject = np.zeros(n_cells, dtype=np.int64)
    cell_subject[cell] = np.unique(subject, return_inverse=True)[1]
    n_subjects = int(cell_subject.max()) + 1
    per_subject = np.bincount(cell_subject, minlength=n_subjects).astype(np.float64)
    subject_mean = np.bincount(cell_subject, cell_mean, n_subjects) / per_subject
    harmonic_size = len(size) / float((1.0 / size).sum())
    spread = np.bincount(cell_subject, (cell_mean - subject_mean[cell_subject]) ** 2, n_subjects)
    cell_dof = float((per_subject - 1).sum())
    var_cell_means = float(spread.sum() / cell_dof) if cell_dof > 0 else 0.0
    residual = "estimated" if float(seeds_per_cell.mean()) > 1 else "images"
    if dof == 0:                            # one value per (subject, prompt): residual not separable
        if seed_sd is None:
            var_res, residual = var_cell_means, "assumed"
        else:
            var_res, residual = float(seed_sd) ** 2, "given"
    var_prompt = max(0.0, var_cell_means - var_res / harmonic_size)
    prompts = len(per_subject) / float((1.0 / per_subject).sum())
    var_subject_means = float(np.var(subject_mean, ddof=1)) if n_subjects > 1 else 0.0
    var_subject = max(0.0, var_subject_means - var_prompt / prompts - var_res / (prompts * harmonic_size))
    seeds = len(seeds_per_cell) / float((1.0 / seeds_per_cell).sum())
    return Components(var_subject, var_prompt, var_res, prompts, harmonic_size / seeds, seeds, residual)


def reachable(subjects: int, level: float) -> bool:
    """Whether a sign-flip test over ``subjects`` units can reach p < ``level`` at all."""
    return subjects >= 2 and 2.0 * 0.5 ** min(subjects, 1074) < level


def mde_table(comp: Components, subjects, seeds, alpha: float, power: float, comparisons: int = 1) \
        -> "list[list[float | None]]":
    """MDEs (None: that many subjects can never be significant) at alpha / comparisons."""
    from bench.stats.analysis import mde

    level = alpha / comparisons
    grid = [[mde(math.sqrt(comp.variance(s, k)), s, level, power) if reachable(s, level) else None for k in seeds]
            for s in subjects]
    return [[v if v is not None and math.isfinite(v) else None for v in row] for row in grid]


def _int_list(text: str) -> list[int]:
    from bench.limits import MAX_POWER_DESIGN, MAX_POWER_GRID

    if len(text) > 20 * MAX_POWER_GRID:
        raise BenchError(f"expected at most {MAX_POWER_GRID} comma-separated integers (bench.limits.MAX_POWER_GRID)")
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"expected a comma-separated list of integers, not {text[:60]!r}") from None
    if not out or min(out) < 1:
        raise BenchError(f"expected positive integers, not {text[:60]!r}")
    if len(out) > MAX_POWER_GRID or max(out) > MAX_POWER_DESIGN:
        raise BenchError(f"expected at most {MAX_POWER_GRID} numbers, each at most {MAX_POWER_DESIGN} "
                         "(bench.limits.MAX_POWER_GRID, MAX_POWER_DESIGN)")
    return out


def _seed_sd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BenchError(f"--seed-sd must be a number, not {text[:40]!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise BenchError(f"--seed-sd must be a finite number >= 0, not {text[:40]!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Minimum detectable effects for given numbers of subjects and seeds, from the variance "
                          "components of scored runs (or a score table). See docs/statistics.md.")
    parser.add_argument("inputs", nargs="+", metavar="RUN_OR_TABLE",
                        help="scored run directories, or one score table (CSV/parquet: run, subject, prompt, seed, "
                             "image, metric, value)")
    parser.add_argument("--versus", metavar="RUN", default=None,
                        help="use the paired differences of each other run against this one (a run label, the "
                             "folder name shown by `bench report`)")
    parser.add_argument("--metric", action="append", default=None, help="only this metric id (repeatable)")
    parser.add_argument("--subjects", type=_int_list, default=[10, 20, 30, 50, 100],
                        help="numbers of subjects (rows), default 10,20,30,50,100")
    parser.add_argument("--seeds", type=_int_list, default=[1, 3, 6, 10], help="numbers of seeds (columns), "
                        "default 1,3,6,10")
    parser.add_argument("--alpha", type=float, default=0.05, help="two-sided significance level (default 0.05)")
    parser.add_argument("--power", type=float, default=0.8, help="power (default 0.8)")
    parser.add_argument("--comparisons", type=int, default=1,
                        help="comparisons in the Holm family the decision is made in (metrics x runs checked; "
                             "default 1): the MDE is computed at alpha / comparisons, as `bench check` does")
    parser.add_argument("--seed-sd", type=_seed_sd, default=None, metavar="SD",
                        help="the sd of seed noise, for data with one seed and one image per prompt (where it cannot "
                             "be told apart from the prompt effect); default: all of the within-subject spread is "
                             "taken as seed noise")


def load_inputs(inputs: list[str]):
    """A checked score table from one table file or from scored run directories."""
    from bench.stats.table import check_table, from_scores, read_table

    if len(inputs) == 1 and Path(inputs[0]).is_file():
        return read_table(inputs[0])
    from bench.report.load import load_scores

    return check_table(from_scores(load_scores(inputs)), "the runs' scores")


def power_rows(table, versus: str | None, metrics=None, seed_sd: float | None = None):
    """[(run, metric, Components)] of each run (or each run's differences against ``versus``).
    Linear in the rows: one merge and one grouping, whatever the number of runs."""
    import pandas as pd

    from bench.limits import MAX_TABLE_ROWS, MAX_TABLE_RUNS
    from bench.stats.table import KEY_COLUMNS

    runs = [str(r) for r in pd.unique(table["run"])]
    if len(table) > MAX_TABLE_ROWS or len(runs) > MAX_TABLE_RUNS:
        raise BenchError(f"the scores hold {len(table)} rows of {len(runs)} runs, more than the limits of "
                         f"{MAX_TABLE_ROWS} rows and {MAX_TABLE_RUNS} runs (bench.limits.MAX_TABLE_ROWS, "
                         "MAX_TABLE_RUNS): split them")
    if versus is not None and versus not in runs:
        raise BenchError(f"--versus {versus!r} is not one of the runs ({', '.join(runs[:20])})")
    present = set(table["metric"])
    wanted = metrics or sorted(present)
    unknown = [m for m in wanted if m not in present]
    if unknown:
        raise BenchError(f"--metric {unknown[0]!r} is not in the scores (metrics: {', '.join(sorted(present))})")
    mine = table[table["metric"].isin(wanted)]
    if versus is not None:
        on = list(KEY_COLUMNS) + ["metric"]
        ref = mine[mine["run"] == versus][on + ["value"]]
        mine = mine[mine["run"] != versus].merge(ref, on=on, suffixes=("", "_ref"))
        own, ref = (mine[c].to_numpy(dtype=np.float64) for c in ("value", "value_ref"))
        mine = mine.assign(value=own - ref)
        if len(mine):           # +-1e17 values hold no difference below 16: refuse, never an MDE of 0.0000
            from bench.stats.analysis import check_pair_precision

            diff = own - ref
            check_pair_precision(own, ref, float(np.std(diff)) + abs(float(diff.mean())),
                                 f"the paired differences against {versus!r}")
    codes = {c: mine.groupby(list(cols), sort=False).ngroup().to_numpy()
             for c, cols in (("subject", ("subject",)), ("cell", ("subject", "prompt")), ("seed", ("seed",)))}
    values = mine["value"].to_numpy(dtype=np.float64)
    groups = mine.groupby(["run", "metric"], sort=False).indices
    out = []
    for run in runs:
        for metric in wanted:
            pos = groups.get((run, metric))
            if pos is None or len(np.unique(codes["subject"][pos])) < 2:
                continue
            out.append((run, metric, components(codes["subject"][pos], codes["cell"][pos], codes["seed"][pos],
                                                values[pos], seed_sd)))
    if not out:
        raise BenchError("no run (or pair of runs) with at least 2 subjects to estimate variance components from")
    return out


def run(args) -> int:
    import pandas as pd

    if not 0 < args.alpha < 0.5 or not 0 < args.power < 1:
        raise BenchError("--alpha must lie in (0, 0.5) and --power in (0, 1)")
    if not 1 <= args.comparisons <= 10_000:
        raise BenchError(f"--comparisons must lie between 1 and 10000, not {args.comparisons}")
    table = load_inputs(args.inputs)
    what = (f"the paired difference against {args.versus!r}" if args.versus else
            "a run's mean against a fixed value (for two runs on different subjects multiply by 1.41; on the "
            "same subjects give --versus)")
    level = args.alpha / args.comparisons
    print(f"Minimum detectable effect of {what}: two-sided level {level:g} (alpha {args.alpha:g} / "
          f"{args.comparisons} comparison(s), Holm's first step), power {args.power:g}, prompts per subject and "
          "images per prompt and seed as in the data; rows: subjects, columns: seeds.")
    never = [s for s in args.subjects if not reachable(s, level)]
    for run_name, metric, comp in power_rows(table, args.versus, args.metric, args.seed_sd):
        print(f"\n{run_name} · {metric}: sd subject {math.sqrt(comp.var_subject):.4f}, prompt "
              f"{math.sqrt(comp.var_prompt):.4f}, residual {math.sqrt(comp.var_residual):.4f} "
              f"({comp.prompts:g} prompts, {comp.seeds:g} seed(s) and {comp.images:g} image(s) per prompt and seed)")
        print(f"{comp.provenance()}\n")
        grid = mde_table(comp, args.subjects, args.seeds, args.alpha, args.power, args.comparisons)
        frame = pd.DataFrame([[str(s)] + ["never" if v is None else f"{v:.4f}" for v in row]
                              for s, row in zip(args.subjects, grid)],
                             columns=["subjects"] + [f"{k} seed(s)" for k in args.seeds])
        print(frame.to_markdown(index=False, disable_numparse=True))
    if never:
        print(f"\nnever: with {', '.join(map(str, never))} subject(s) no sign-flip p-value can fall below "
              f"{level:g} (the smallest is 2/2^subjects), so no effect of any size can be significant")
    return 0
