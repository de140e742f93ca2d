"""`bench power`: how large an effect a design with S subjects and K seeds can detect, from the
variance components of a scored run (or of the paired differences between two runs).

Model (nested, what the cluster bootstrap assumes): a score is
``mean + subject effect + prompt-within-subject effect + residual`` (the residual holds seed and
image noise), with variances ``var_subject``, ``var_prompt`` and ``var_residual``. They are
estimated by the method of moments (one-way ANOVA at each level, negative estimates set to 0).
The variance of the protocol's mean with S subjects, P prompts per subject, K seeds and I images
per prompt and seed is then

    var_subject / S + var_prompt / (S * P) + var_residual / (S * P * K * I)

and the minimum detectable effect (two-sided test at alpha, given power) is
``(t_{S-1}(1 - alpha/2) + t_{S-1}(power)) * sqrt(that variance)``.

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
from bench.stats.bootstrap import detectable_effect


@dataclass(frozen=True)
class Components:
    var_subject: float
    var_prompt: float
    var_residual: float
    prompts: float          # prompts per subject (mean)
    images: float           # images per prompt and seed (mean)

    def variance(self, subjects: int, seeds: int, prompts: float | None = None) -> float:
        p = self.prompts if prompts is None else prompts
        return (self.var_subject / subjects + self.var_prompt / (subjects * p)
                + self.var_residual / (subjects * p * seeds * self.images))


def components(subject, cell, seed, values) -> Components:
    """Method-of-moments variance components of ``values`` nested as subject > cell > residual
    (``subject``, ``cell``, ``seed``: integer codes per value)."""
    values = np.asarray(values, dtype=np.float64)
    _, cell = np.unique(cell, return_inverse=True)
    n_cells = int(cell.max()) + 1
    size = np.bincount(cell, minlength=n_cells).astype(np.float64)
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
    var_prompt = max(0.0, var_cell_means - var_res / harmonic_size)
    prompts = len(per_subject) / float((1.0 / per_subject).sum())
    var_subject_means = float(np.var(subject_mean, ddof=1)) if n_subjects > 1 else 0.0
    var_subject = max(0.0, var_subject_means - var_prompt / prompts - var_res / (prompts * harmonic_size))
    seeds = len(np.unique(seed))
    return Components(var_subject, var_prompt, var_res, prompts, harmonic_size / max(seeds, 1))


def mde_table(comp: Components, subjects, seeds, alpha: float, power: float) -> "list[list[float]]":
    return [[float(detectable_effect(math.sqrt(comp.variance(s, k)), s, alpha, power)) for k in seeds]
            for s in subjects]


def _int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"expected a comma-separated list of integers, not {text!r}") from None
    if not out or min(out) < 1:
        raise BenchError(f"expected positive integers, not {text!r}")
    return out


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


def load_inputs(inputs: list[str]):
    """A checked score table from one table file or from scored run directories."""
    from bench.stats.table import check_table, from_scores, read_table

    if len(inputs) == 1 and Path(inputs[0]).is_file():
        return read_table(inputs[0])
    from bench.report.load import load_scores

    return check_table(from_scores(load_scores(inputs)), "the runs' scores")


def power_rows(table, versus: str | None, metrics=None):
    """[(run, metric, Components)] of each run (or each run's differences against ``versus``)."""
    from bench.stats.table import KEY_COLUMNS

    runs = [str(r) for r in table["run"].unique()]
    if versus is not None and versus not in runs:
        raise BenchError(f"--versus {versus!r} is not one of the runs ({', '.join(runs)})")
    wanted = metrics or sorted(table["metric"].unique())
    unknown = [m for m in wanted if m not in set(table["metric"])]
    if unknown:
        raise BenchError(f"--metric {unknown[0]!r} is not in the scores (metrics: {', '.join(sorted(set(table['metric'])))})")
    out = []
    for run in runs:
        if run == versus:
            continue
        for metric in wanted:
            mine = table[(table["run"] == run) & (table["metric"] == metric)]
            if versus is not None:
                ref = table[(table["run"] == versus) & (table["metric"] == metric)]
                mine = mine.merge(ref[list(KEY_COLUMNS) + ["value"]], on=list(KEY_COLUMNS), suffixes=("", "_ref"))
                mine = mine.assign(value=mine["value"] - mine["value_ref"])
            if mine["subject"].nunique() < 2:
                continue
            codes = {c: mine.groupby(list(cols), sort=False).ngroup().to_numpy()
                     for c, cols in (("subject", ("subject",)), ("cell", ("subject", "prompt")), ("seed", ("seed",)))}
            out.append((run, metric, components(codes["subject"], codes["cell"], codes["seed"], mine["value"])))
    if not out:
        raise BenchError("no run (or pair of runs) with at least 2 subjects to estimate variance components from")
    return out


def run(args) -> int:
    import pandas as pd

    if not 0 < args.alpha < 0.5 or not 0 < args.power < 1:
        raise BenchError("--alpha must lie in (0, 0.5) and --power in (0, 1)")
    table = load_inputs(args.inputs)
    what = (f"the paired difference against {args.versus!r}" if args.versus else
            "a run's mean against a fixed value (for two runs on different subjects multiply by 1.41; on the "
            "same subjects give --versus)")
    print(f"Minimum detectable effect of {what}: two-sided alpha {args.alpha:g}, power {args.power:g}, "
          "prompts per subject and images per prompt and seed as in the data; rows: subjects, columns: seeds.")
    for run_name, metric, comp in power_rows(table, args.versus, args.metric):
        print(f"\n{run_name} · {metric}: sd subject {math.sqrt(comp.var_subject):.4f}, prompt "
              f"{math.sqrt(comp.var_prompt):.4f}, residual {math.sqrt(comp.var_residual):.4f} "
              f"({comp.prompts:g} prompts, {comp.images:g} image(s) per prompt and seed)\n")
        grid = mde_table(comp, args.subjects, args.seeds, args.alpha, args.power)
        frame = pd.DataFrame([[str(s)] + [f"{v:.4f}" for v in row] for s, row in zip(args.subjects, grid)],
                             columns=["subjects"] + [f"{k} seed(s)" for k in args.seeds])
        print(frame.to_markdown(index=False, disable_numparse=True))
    return 0
