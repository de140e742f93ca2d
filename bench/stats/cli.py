"""`bench stats TABLE`: means, cluster-bootstrap intervals and paired comparisons for any
long-format score table (docs/statistics.md).

    python -m bench stats scores.csv
    python -m bench stats scores.parquet --versus sd --resample subject --alpha 0.05 --resamples 2000 --seed 0
    python -m bench stats scores.csv --versus sd --json            # a JSON array on stdout
    python -m bench stats scores.csv --versus sd --json out.json   # the table on stdout, the array in out.json

Exit status: 0 done; 2 a bad table or option (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bench import BenchError
from bench.limits import MAX_RESAMPLES
from bench.stats.analysis import DEFAULT_RESAMPLES, UNITS, Settings, analyse, family_note

JSON_HELP = ("write the results as JSON: one object per (run, metric) in one JSON array. `--json` alone prints "
             "the array on stdout (and nothing else there); `--json FILE` writes it to FILE and prints the "
             "table. Fields: run, metric, n (scores), unit, units (resampled units), subjects, seeds, mean, std "
             "(over seed means, or over all values with --aggregate images), std_over, se, ci_low, ci_high, alpha, "
             "resamples, bootstrap_seed; with --versus also versus, paired (common keys), paired_units, delta "
             "(run - versus), delta_se, delta_ci_low, delta_ci_high, p, min_p (the smallest p this many units can "
             "give), monte_carlo, p_holm, min_p_holm (the smallest adjusted p the family can reach), family "
             "(comparisons in the Holm family; 0 for a judge repeat), significant (p_holm < alpha), mde, mde_alpha "
             "(the level the MDE is computed at: alpha / family), paired_mean, paired_versus_mean (both runs' "
             "means on the common keys), only_in_run, only_in_versus (null on the reference run's own rows)")


def add_settings_options(parser: argparse.ArgumentParser, aggregate: bool = True) -> None:
    """--resample, [--aggregate,] --alpha, --resamples, --seed, --power: shared by stats, report and check."""
    parser.add_argument("--resample", "--unit", dest="resample", choices=list(UNITS), default="subject",
                        help="the unit resampled with replacement (default subject: everything below it is "
                             "averaged inside each drawn subject; cell = (subject, prompt); image = every "
                             "score on its own, which ignores the clustering and gives too narrow intervals; "
                             "subject+prompt = the two-way bootstrap for prompts shared by all subjects, with "
                             "t-test p-values)")
    if aggregate:
        parser.add_argument("--aggregate", choices=["seeds", "images"], default=None,
                            help="the protocol's mean: per seed the mean over images, then the mean over seeds "
                             "(seeds, DreamBench's default) or the mean over all images (images)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="1 - confidence level of the intervals, and the significance level (default 0.05)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples and sign-flip permutations (default {DEFAULT_RESAMPLES}, at most "
                             f"{MAX_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's random numbers (default 0)")
    parser.add_argument("--power", type=float, default=0.8,
                        help="power at which the minimum detectable effect (MDE) is given (default 0.8); the MDE "
                             "is computed at alpha / (comparisons in the Holm family), the level Holm's first step uses")


def settings_from(args, aggregate: str = "seeds") -> Settings:
    return Settings(resample=args.resample, aggregate=getattr(args, "aggregate", None) or aggregate, alpha=args.alpha,
                    resamples=args.resamples, seed=args.seed, power=args.power).check()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Per (run, metric) of a long-format score table (CSV or parquet with the columns run, "
                          "subject, prompt, seed, image, metric, value): n, the protocol's mean and its "
                          "cluster-bootstrap interval; with --versus the paired differences against one run, "
                          "their intervals and Holm-adjusted sign-flip p-values. See docs/statistics.md.")
    parser.add_argument("table", nargs="?", metavar="TABLE", help="CSV (or .tsv) or parquet score table")
    parser.add_argument("--versus", metavar="RUN", default=None,
                        help="compare every other run with this run on the keys both hold")
    add_settings_options(parser)
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE", help=JSON_HELP)


def _fmt(x, digits: int = 4, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if x >= 1e-4 else f"{x:.1e}"


def format_rows(rows: list[dict], versus: str | None) -> str:
    import pandas as pd

    lines = []
    for r in rows:
        line = {"run": r["run"], "metric": r["metric"], "n": r["n"], r["unit"] + "s": r["units"], "seeds": r["seeds"],
                "mean ± std": _fmt(r["mean"]) + ("" if r["std"] is None else f" ± {r['std']:.4f}"),
                f"{100 * (1 - r['alpha']):g}% CI": f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"}
        if versus is not None:
            cmp = r["delta"] is not None
            line.update({"Δ vs " + versus: _fmt(r["delta"], signed=True),
                         "Δ CI": f"[{_fmt(r['delta_ci_low'], signed=True)}, {_fmt(r['delta_ci_high'], signed=True)}]"
                         if cmp else "–",
                         "p": _p(r["p"]), "p (Holm)": _p(r["p_holm"]),
                         "": ("▲" if r["delta"] > 0 else "▼") if cmp and r["significant"] else "",
                         "MDE": _fmt(r["mde"])})
        lines.append(line)
    return pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)


def key_notes(rows: list[dict], alpha: float = 0.05) -> list[str]:
    """One line per comparison whose runs do not hold the same keys, naming some of them; a line
    when nothing in the Holm family can be significant; the rows' own notes."""
    notes = [text for text in (family_note(rows, alpha),) if text]
    if rows and rows[0]["unit"] in ("cell", "image"):
        notes.append(f"intervals over {rows[0]['unit']}s treat the {rows[0]['unit']}s of one subject as independent: "
                     "when subjects differ they cover far less than their level (docs/statistics.md); use --resample "
                     "subject or subject+prompt")
    notes += [r["note"] for r in rows if isinstance(r.get("note"), str)]
    for r in rows:
        for side, other in (("run", "versus"), ("versus", "run")):
            count = r.get(f"only_in_{side}")
            if count:
                names = ", ".join(r[f"only_in_{side}_keys"]) + (", …" if count > len(r[f"only_in_{side}_keys"]) else "")
                notes.append(f"{r['metric']}: {count} key(s) of {r[side]!r} are not in {r[other]!r} and are left out "
                             f"of the comparison: {names}")
    return notes


def json_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_keys")} for r in rows]


def write_json(rows: list[dict], target: str) -> None:
    text = json.dumps(json_rows(rows), allow_nan=False, indent=None if target == "-" else 1)
    if target == "-":
        sys.stdout.write(text + "\n")
        return
    from bench.options import check_output_file

    path = check_output_file(target, "--json")      # /dev/null would be replaced by a file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"--json {target}: cannot write the file ({exc.strerror or exc}); give a writable file "
                         f"path, or --json alone for stdout") from None


def run(args) -> int:
    from bench.stats.table import read_table

    table_arg, json_target = args.table, args.json
    if table_arg is None and json_target not in (None, "-"):      # `bench stats --json TABLE`
        table_arg, json_target = json_target, "-"
    if table_arg is None:
        raise BenchError("give a score table: python -m bench stats TABLE (see --help)")
    settings = settings_from(args)
    if json_target not in (None, "-"):
        from bench.output_guard import guard_file, json_list

        guard_file(json_target, "--json", [table_arg], json_list, "a bench stats JSON list")   # before any work
    versus = None if args.versus is None else args.versus.strip()      # as the table's identifiers are read
    rows = analyse(read_table(table_arg), settings, versus=versus)
    if json_target == "-":
        write_json(rows, "-")
        for note in key_notes(rows, settings.alpha):
            print(f"note: {note}", file=sys.stderr)
        return 0
    if json_target is not None:
        write_json(rows, json_target)          # before the table: a bad path fails with nothing printed
    print(f"{table_arg}: {settings.describe()}.")
    if settings.aggregate == "seeds":
        print("mean: per seed the mean over images, then the mean over seeds; std: over the seeds' means; n: scores.")
    else:
        print("mean: the mean over all images; std: over all images; n: scores.")
    print()
    print(format_rows(rows, versus))
    notes = key_notes(rows, settings.alpha)
    if versus is not None:
        print(f"\n▲/▼: significantly higher/lower than {versus!r} (Holm-adjusted p < {settings.alpha:g}); "
              f"MDE: the smallest difference this design detects with power {settings.power:g} at alpha / "
              "(comparisons in the Holm family).")
    for note in notes:
        print(f"note: {note}")
    if json_target is not None:
        print(f"wrote {json_target}")
    return 0
