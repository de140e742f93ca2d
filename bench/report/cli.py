"""`bench report`: the command line, and ``write_reports`` (every leaderboard, and the HTML page)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import BenchError
from bench.report.aggregate import resolve_versus, summarize
from bench.report.html import write_html
from bench.report.humans import human_section
from bench.report.leaderboard import format_value, print_warnings, write_leaderboard
from bench.report.load import PAPER_DIR, load_runs, load_scores


def write_reports(run_dirs, out: Path | str = "reports", paper_dir: Path = PAPER_DIR,
                  html: bool = False, settings=None, versus: str | None = None, humans=None) -> list[Path]:
    """A leaderboard per suite found among the runs, and with ``html`` the HTML report
    (``<out>/html/index.html``); returns the markdown paths (then the HTML page). ``settings``
    (bench.stats.analysis.Settings) and ``versus`` (a run label, directory or method) shape the
    intervals and the paired comparison (docs/statistics.md)."""
    from bench.options import unique_paths

    from bench.output_guard import guard_folder

    guard_folder(out, "--out", [*run_dirs, paper_dir])
    run_dirs = unique_paths(run_dirs, "bench report")     # RUN RUN would count every image twice
    runs = load_runs(run_dirs)
    df = load_scores(run_dirs)
    versus = resolve_versus(runs, versus)
    humans = human_section(humans, run_dirs, settings) if humans else None      # docs/agreement.md
    paths = [write_leaderboard(df, runs, suite, Path(out), paper_dir, settings, versus, humans=humans)
             for suite in sorted(runs["suite"].unique())]
    if html:
        paths.append(write_html(df, runs, Path(out) / "html", paper_dir, settings=settings, versus=versus,
                                humans=humans))
    return paths


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="scored run directories")
    parser.add_argument("--out", default="reports", help="folder for leaderboard-<suite>.md, its plots and csvs "
                        "(default: reports/)")
    parser.add_argument("--paper-dir", default=str(PAPER_DIR), help="folder of the paper reference csvs "
                        "(default: reports/paper/)")
    parser.add_argument("--html", action="store_true", help="also write a static HTML report to <out>/html/ "
                        "(leaderboard, scatter plot, image gallery; opens from file:// with no network)")
    parser.add_argument("--html-images", choices=["link", "copy"], default="link",
                        help="HTML report: reference the run's images where they are (link, default) or copy "
                        "them into <out>/html/ so the folder can be moved on its own (copy)")
    from bench.stats.cli import add_settings_options

    parser.add_argument("--versus", metavar="RUN_OR_LABEL", default=None,
                        help="compare every other run with this one (a run label as the leaderboard shows it, a run "
                             "directory, or a method name held by one run): paired differences on common keys, "
                             "Holm-adjusted p-values, significant cells marked ▲/▼ (docs/statistics.md)")
    add_settings_options(parser, aggregate=False)
    parser.add_argument("--humans", metavar="RATINGS", default=None, help="add agreement with these human ratings "
                        "(a `bench agree` RATINGS: ImagenHub, DreamBench++ or a long table; docs/agreement.md)")


def run(args) -> int:
    from bench.options import unique_paths
    from bench.output_guard import guard_folder
    from bench.stats.cli import settings_from

    settings = settings_from(args)
    guard_folder(args.out, "--out", [*args.run_dirs, args.paper_dir])    # not a file, an input or a run: before work
    if not Path(args.paper_dir).is_dir():  # a misspelt --paper-dir would silently drop the paper rows
        raise BenchError(f"--paper-dir {args.paper_dir}: not a folder (the paper reference csvs, default "
                         f"{PAPER_DIR})")
    run_dirs = unique_paths(args.run_dirs, "bench report")     # RUN RUN would count every image twice
    runs = load_runs(run_dirs)
    df = load_scores(run_dirs)
    versus = resolve_versus(runs, args.versus)
    humans = (human_section(args.humans, run_dirs, settings, sys.stderr.isatty())
              if getattr(args, "humans", None) else None)
    for suite in sorted(runs["suite"].unique()):
        path = write_leaderboard(df, runs, suite, Path(args.out), Path(args.paper_dir), settings, versus, humans=humans)
        print(path)
        summary = summarize(df[df["suite"] == suite])
        weights = dict(zip(runs["run"], runs["weights"]))
        for rec in summary.itertuples(index=False):
            stamp = f"  ({weights[rec.run]})" if "random weights" in weights.get(rec.run, "") else ""
            print(f"  {rec.run:<28} {rec.metric:<32} {format_value(rec.mean, rec.std):<16} n={rec.n} "
                  f"images={rec.images}{stamp}", file=sys.stderr)
    if getattr(args, "html", False):
        print(write_html(df, runs, Path(args.out) / "html", Path(args.paper_dir),
                         copy_images=getattr(args, "html_images", "link") == "copy", settings=settings, versus=versus,
                         humans=humans))
    print_warnings(df, runs)
    return 0
