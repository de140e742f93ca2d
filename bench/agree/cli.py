"""`bench agree RATINGS`: human means, inter-rater alpha and metric-human agreement with
bootstrap intervals (docs/agreement.md).

    python -m bench agree eval/human_ratings/Subject-Driven_IG
    python -m bench agree dreambench_plus/ --json agree.json
    python -m bench agree ratings.csv --scores runs/ezigen scores.csv --compare judge/cp,dino/vit-s-16

Exit status: 0 done; 2 bad ratings, scores or options (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from bench import BenchError
from bench.agree.ratings import LEVELS
from bench.agree.readers import FORMATS
from bench.agree.resample import DEFAULT_RESAMPLES, Boot

JSON_HELP = ("write every figure as JSON to FILE (`-`: stdout, and no table). Top-level fields: ratings, settings, "
             "humans (method, aspect, mean, alpha, intervals), metrics (metric, aspect, method, pearson, spearman, "
             "kendall, alpha, intervals, n_items), system, comparisons, notes; docs/agreement.md lists every field")


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options shared with `bench report --humans`."""
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="the ratings' format (default: recognised from the files)")
    parser.add_argument("--level", choices=LEVELS, default=None,
                        help="Krippendorff level of measurement of the human scale (default: the format's own: "
                             "ImagenHub ordinal, DreamBench++ interval, a long table interval)")
    parser.add_argument("--scale", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="the human scale's range (default: the format's, or the ratings' min and max)")
    parser.add_argument("--rescale", choices=["none", "minmax"], default="none",
                        help="before a metric's alpha against the raters, map its values linearly onto the human "
                             "scale (minmax) or use them as they are (none, default: right for a judge that rates on "
                             "the human scale)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Does a score agree with people? Reads human ratings (an ImagenHub task folder of rater "
                          "TSVs, a DreamBench++ release folder, or a long table with the columns rater, method, "
                          "subject, prompt, item, aspect, value) and prints the human mean and Krippendorff's alpha "
                          "per method and aspect; with --scores (or the judge ratings a DreamBench++ release ships) "
                          "each metric's agreement with the raters: Spearman, Pearson, Kendall tau-b, alpha against "
                          "each rater averaged, the system-level ranking, and paired differences between metrics, "
                          "each with a bootstrap interval. See docs/agreement.md.")
    parser.add_argument("ratings", metavar="RATINGS", help="ratings folder or long table")
    parser.add_argument("--scores", nargs="+", action="extend", default=[], metavar="TABLE_OR_RUN",
                        help="scored run directories (the run's method is the rated method) or score tables in "
                             "bench stats' format (the run column names the rated method)")
    parser.add_argument("--compare", action="append", default=[], metavar="A,B",
                        help="paired bootstrap of agreement(A) - agreement(B) on the items both score (repeatable; "
                             "default: on each aspect the best-agreeing metric against every other)")
    add_options(parser)
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level of the intervals (default 0.05)")
    parser.add_argument("--json", default=None, metavar="FILE", help=JSON_HELP)


def boot_from(args) -> Boot:
    if args.resamples < 100 or args.resamples > 100_000:
        raise BenchError(f"--resamples must lie between 100 and 100000, not {args.resamples}")
    if math.isnan(args.alpha) or not 0 < args.alpha < 0.5:
        raise BenchError(f"--alpha must lie between 0 and 0.5, not {args.alpha}")
    if args.seed < 0:
        raise BenchError(f"--seed must be a non-negative integer, not {args.seed}")
    return Boot(args.resamples, args.seed, args.alpha)


def check_scale(scale) -> None:
    if scale and not (math.isfinite(scale[0]) and math.isfinite(scale[1]) and scale[0] < scale[1]):
        raise BenchError(f"--scale {scale[0]:g} {scale[1]:g}: give LO < HI, both finite")


def agree_json(head: bytes) -> bool:
    """An existing file `bench agree --json` may replace: its own output (a JSON object whose first
    field is ``ratings``)."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") and b'"ratings"' in head[:200]


def check_json_target(target, ratings, scores) -> None:
    """--json never replaces an input, a run's own files or a file that is not an agree JSON, and
    never lies inside the ratings folder (the next read would take it for a rating file)."""
    import os

    from bench.output_guard import guard_file

    path = guard_file(target, "--json", [ratings, *scores], agree_json, "a bench agree JSON")
    folder = Path(ratings)
    if folder.is_dir() and Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents:
        raise BenchError(f"--json {target}: lies inside the ratings folder {ratings}; a later read would take it "
                         "for ratings: name a file outside it")


def run(args) -> int:
    from bench.agree.analysis import analyse, pairs_from
    from bench.agree.output import console, write_json
    from bench.agree.readers import read_ratings
    from bench.agree.scores import collect

    boot = boot_from(args)
    check_scale(args.scale)
    compare = pairs_from(args.compare)
    if args.json and args.json != "-":
        check_json_target(args.json, args.ratings, args.scores)
    for source in args.scores:
        if not (Path(source).is_dir() or Path(source).is_file()):
            raise BenchError(f"--scores {source}: neither a run directory nor a score table")
    ratings = read_ratings(args.ratings, args.format, args.level, args.scale)
    scores, notes = collect(args.scores, ratings, strict=True)
    result = analyse(ratings, scores, boot, args.rescale, compare, notes, progress=sys.stderr.isatty())
    if args.json == "-":
        write_json(result, "-")
        return 0
    print(console(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
